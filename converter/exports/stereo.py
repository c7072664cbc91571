"""Stereo pairs from one image and its depth map: side-by-side for VR viewers and 3D TVs, red-cyan anaglyphs.

Geometry. A pixel's horizontal shift is proportional to its *normalised inverse depth* t ∈ [0, 1]: the 2nd and 98th
percentiles of 1/depth over the opaque pixels with depth are the far (t = 0) and near (t = 1) planes, values beyond
are clamped. Inverse depth makes nearer pixels move more, and the percentiles make the result independent of the
depth's units (metres or relative) and robust to a few wild values. ``convergence`` is the t that lands on the screen
plane (zero disparity): nearer pixels pop out of the screen, farther ones sit behind it. For a metric depth map this is
exactly a parallel camera pair with a horizontal image shift (disparity = a/z − b); for relative models it is the best
one can do without knowing their scale and shift. A flat depth map carries no shape: the pair is the image itself.

Warping. Every source pixel is forward-warped to its nearest target pixel; a z-buffer keeps the nearest one where
several land (``np.maximum.at`` on a key of quantised nearness and pixel index: no per-pixel Python). Each kept
pixel's colour is then resampled at its exact sub-pixel source position (bilinear, only from source neighbours on
the same depth layer, so edges never bleed), which keeps motion smooth in parallax clips.

Disocclusions (target pixels nothing lands on) are filled from the BACKGROUND side. Cracks first: a gap of one or two
pixels between filled pixels (a surface stretched by the move, e.g. rows of a receding floor when the camera rises)
takes the farther of its two neighbours. Then every other hole looks for the nearest filled pixel to the left, right,
above and below: the nearest in depth of those (and any within 5 % of the depth range of it) is the occluder and is
never copied; the closest of the others is the background. In a stereo pair that is the wall beside the gap that a
foreground object left (along the row: the farther neighbour), never the object. The hole takes the background's
texture mirrored across the hole's edge (pixel k inside the hole copies pixel k beyond the edge), so the revealed
strip continues the background instead of smearing the foreground or repeating one colour. Mirrored pixels that are
not background (nearer than the anchor by more than 5 % of the depth range, or themselves holes, or outside the
image) fall back to the anchor pixel's colour.

Pixels without depth (0, NaN, inf) but opaque are treated as the far plane (t = 0): sky and other "infinitely far"
regions. Transparent pixels (alpha 0) carry no content: their colour is replaced by ``background`` and they sit behind
everything, so the background colour shows wherever the input was transparent, and holes next to them are filled with
it rather than with the object.

Arrays: ``rgb [H, W, 3] uint8``, ``alpha [H, W] uint8 | None``, ``depth [H, W] float32`` along the optical axis,
pixel (u, v) = column u (right), row v (down).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError, OptionError
from .files import atomic_output

DEFAULT_STRENGTH = 0.03
DEFAULT_CONVERGENCE = 0.5
NEARNESS_PERCENTILES = (2.0, 98.0)
LAYER_TOLERANCE = 0.05  # in units of the far-to-near range: neighbours closer than this are one surface
_KEY_LEVELS = 1 << 20  # quantisation of nearness in the z-buffer key
_TRANSPARENT = -10.0  # z-buffer nearness of transparent pixels: behind everything (finite: no inf − inf)
_BLOCK_PIXELS = 1 << 15  # per-pixel float work goes this many pixels at a time: its temporaries stay in cache

# Dubois' least-squares red-cyan matrices (rows: output R, G, B; columns: input R, G, B), applied in linear light.
_DUBOIS_LEFT = np.array(
    [[0.456, 0.500, 0.176], [-0.040, -0.038, -0.016], [-0.015, -0.021, -0.005]], dtype=np.float32
)
_DUBOIS_RIGHT = np.array(
    [[-0.043, -0.088, -0.002], [0.378, 0.734, -0.018], [-0.072, -0.113, 1.226]], dtype=np.float32
)


@dataclass(frozen=True)
class Scene:
    """An image prepared for warping to new viewpoints; build it once with :func:`prepare_scene`, warp many times.

    ``colour [H, W, 3] float32`` (background colour where transparent), ``parallax [H, W] float32`` = t − convergence
    (0 on the screen plane, > 0 in front; 0 everywhere for a flat depth map), ``order [H, W] float32`` = the z-buffer
    nearness (parallax, or −inf where transparent), ``key [H·W] int64`` = quantised order << 32 | pixel index.
    """

    colour: np.ndarray
    parallax: np.ndarray
    order: np.ndarray
    key: np.ndarray
    background: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return self.parallax.shape


def normalised_nearness(depth: np.ndarray, keep: np.ndarray | None = None,
                         bounds: tuple[float, float] | None = None) -> tuple[np.ndarray, bool]:
    """Depth [H, W] → (t [H, W] float32 in [0, 1], flat).

    t is inverse depth mapped linearly from its 2nd percentile (0, far) to its 98th (1, near) over valid pixels inside
    ``keep``, clamped; pixels without depth get 0. ``flat`` is True when those percentiles coincide (no shape).
    ``bounds``: (far, near) in inverse depth, given instead of the percentiles (a video keeps one pair for a shot, so
    its frames do not flicker).
    """
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    inverse = np.zeros(depth.shape, dtype=np.float32)
    np.divide(1.0, depth, out=inverse, where=valid)
    selected = valid if keep is None or not (valid & keep).any() else valid & keep
    if not selected.any():
        return np.zeros(depth.shape, dtype=np.float32), True
    far, near = bounds if bounds is not None else np.percentile(inverse[selected], NEARNESS_PERCENTILES)
    span = float(near - far)
    if span <= 1e-6 * max(abs(float(near)), 1e-30):
        return np.zeros(depth.shape, dtype=np.float32), True
    t = np.clip((inverse - np.float32(far)) * np.float32(1.0 / span), 0.0, 1.0)
    t[~valid] = 0.0
    return t.astype(np.float32, copy=False), False


def prepare_scene(
    rgb: np.ndarray,
    depth: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    convergence: float = DEFAULT_CONVERGENCE,
    background: tuple[int, int, int] = (0, 0, 0),
    bounds: tuple[float, float] | None = None,
) -> Scene:
    """Check the inputs and compute what every view of this image shares (nearness, z-buffer keys). ``bounds``: the
    far and near planes in inverse depth (see :func:`normalised_nearness`; None: the depth's own percentiles)."""
    rgb, depth, opaque = _check_inputs(rgb, depth, alpha)
    if not 0.0 <= convergence <= 1.0:
        raise OptionError(
            "The convergence must be between 0 (far plane on the screen) and 1 (near plane on the screen)."
        )
    if len(background) != 3 or not all(0 <= c <= 255 for c in background):
        raise OptionError("The background colour must be three numbers from 0 to 255 (red, green, blue).")
    t, flat = normalised_nearness(depth, opaque, bounds)
    parallax = np.zeros_like(t) if flat else t - np.float32(convergence)
    colour = rgb.astype(np.float32)
    colour[~opaque] = background
    order = np.where(opaque, parallax, np.float32(_TRANSPARENT)).astype(np.float32)
    # Nearness in [-1, 1] → levels in [1, 3] · 2^20; transparent → 0, below every opaque pixel.
    levels = np.where(opaque, np.rint((parallax + 2.0) * _KEY_LEVELS), 0).astype(np.int64)
    key = (levels.ravel() << 32) | np.arange(parallax.size, dtype=np.int64)
    return Scene(colour=colour, parallax=parallax, order=order, key=key, background=tuple(int(c) for c in background))


def render_view(scene: Scene, shift_x: float, shift_y: float = 0.0) -> np.ndarray:
    """The view where a pixel of parallax p moves by (p · shift_x, p · shift_y) px: [H, W, 3] uint8, holes filled."""
    height, width = scene.shape
    size = height * width
    position_u = np.arange(width, dtype=np.float32)[None, :] + scene.parallax * np.float32(shift_x)
    position_v = np.arange(height, dtype=np.float32)[:, None] + scene.parallax * np.float32(shift_y)
    target_u = np.floor(position_u + 0.5)
    target_v = np.floor(position_v + 0.5)
    inside = ((target_u >= 0) & (target_u < width) & (target_v >= 0) & (target_v < height)).ravel()
    target = (target_v.astype(np.int64) * width + target_u.astype(np.int64)).ravel()[inside]

    zbuffer = np.full(size, -1, dtype=np.int64)
    np.maximum.at(zbuffer, target, scene.key[inside])
    hole = zbuffer < 0
    source = (zbuffer & 0xFFFFFFFF).astype(np.intp)
    source[hole] = 0  # placeholder: holes are painted below

    # Where the target pixel's centre falls in the source, relative to the winning source pixel: within ±0.5.
    offset_u = np.take((target_u - position_u).ravel(), source)
    offset_v = np.take((target_v - position_v).ravel(), source) if shift_y else None
    image = _sample_same_layer(scene, source, offset_u, offset_v)
    image[hole] = scene.background
    order = np.take(scene.order.ravel(), source)
    order[hole] = _TRANSPARENT

    image = image.reshape(height, width, 3)
    order = order.reshape(height, width)
    hole = hole.reshape(height, width)
    _fill_holes(image, order, hole)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def stereo_pair(
    rgb: np.ndarray,
    depth: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    strength: float = DEFAULT_STRENGTH,
    convergence: float = DEFAULT_CONVERGENCE,
    background: tuple[int, int, int] = (0, 0, 0),
) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) eye views, each [H, W, 3] uint8.

    ``strength``: the disparity between the far and the near plane, as a fraction of the image width (0.03 = 3 %);
    each eye moves half of it, in opposite directions, so with ``convergence`` 0 it is the largest |disparity|.
    ``convergence`` ∈ [0, 1]: the normalised inverse depth that lands on the screen (0.5: half in front, half behind).
    ``background``: the colour shown where the input is transparent. See the module docstring for the fill rules.
    """
    if not 0.0 <= strength <= 0.2:
        raise OptionError("The stereo strength must be between 0 and 0.2 (a fraction of the image width).")
    scene = prepare_scene(rgb, depth, alpha, convergence=convergence, background=background)
    half = strength * scene.shape[1] / 2.0
    # Left camera sits to the left: nearer points appear further right in its image (u_left − u_right = f·b/z).
    return render_view(scene, +half), render_view(scene, -half)


def side_by_side(left: np.ndarray, right: np.ndarray, *, half: bool = False) -> np.ndarray:
    """[H, 2W, 3] with the left eye on the left (parallel view, as VR players and 3D TVs' "SBS" mode expect).

    ``half=True`` gives half-width SBS ([H, W, 3] for even W; each eye squeezed 2:1 by averaging column pairs), the
    format most 3D TVs and broadcast SBS use.
    """
    left, right = _check_pair(left, right)
    if half:
        left, right = _squeeze_half(left), _squeeze_half(right)
    return np.concatenate([left, right], axis=1)


def top_bottom(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Half top-bottom: [H, W, 3] for even H, the left eye on top, each eye squeezed 2:1 vertically by averaging row
    pairs (the "_TB" layout of VR players and 3D TVs)."""
    left, right = _check_pair(left, right)
    squeeze = lambda view: _squeeze_half(view.transpose(1, 0, 2)).transpose(1, 0, 2)  # noqa: E731
    return np.concatenate([squeeze(left), squeeze(right)], axis=0)


def anaglyph(left: np.ndarray, right: np.ndarray, *, method: str = "color") -> np.ndarray:
    """Red-cyan anaglyph [H, W, 3] uint8 for glasses with the red filter on the left eye.

    ``method="color"``: red from the left eye, green and blue from the right (full colour, some retinal rivalry).
    ``method="dubois"``: Dubois' least-squares projection in linear light (less ghosting and rivalry, duller colours;
    the sRGB curves come from tables, which keep each value within one level of the exact formulas).
    """
    left, right = _check_pair(left, right)
    if method == "color":
        return np.dstack([left[..., 0], right[..., 1], right[..., 2]])
    if method == "dubois":
        picture = np.empty_like(left)
        rows_per_block = max(1, _BLOCK_PIXELS // max(1, left.shape[1]))
        for start in range(0, len(left), rows_per_block):
            rows = slice(start, start + rows_per_block)
            mixed = np.take(_LINEAR, left[rows]) @ _DUBOIS_LEFT.T
            mixed += np.take(_LINEAR, right[rows]) @ _DUBOIS_RIGHT.T
            picture[rows] = _encode_srgb(mixed)
        return picture
    raise OptionError("The anaglyph method must be 'color' or 'dubois'.")


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an [H, W, 3] (or [H, W, 4]) uint8 array as a PNG, atomically."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    with atomic_output(path) as temporary:
        Image.fromarray(array).save(temporary, format="PNG")


def _check_inputs(rgb, depth, alpha) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rgb [H, W, 3] uint8, depth [H, W] float32, opaque [H, W] bool), or InputError with a sentence for people."""
    rgb = np.asarray(rgb)
    depth = np.asarray(depth, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError("The image must be an RGB picture (height × width × 3, 8 bits per channel).")
    if depth.shape != rgb.shape[:2]:
        raise InputError("The depth map must have the same size as the image.")
    if rgb.shape[0] < 2 or rgb.shape[1] < 2:
        raise InputError("The image is too small for stereo: it needs at least 2 × 2 pixels.")
    if rgb.shape[0] * rgb.shape[1] >= 1 << 32:
        raise InputError("The image is too large for stereo.")
    if alpha is None:
        opaque = np.ones(depth.shape, dtype=bool)
    else:
        alpha = np.asarray(alpha)
        if alpha.shape != depth.shape:
            raise InputError("The transparency mask must have the same size as the image.")
        opaque = alpha > 0
    return rgb, depth, opaque


def _sample_same_layer(
    scene: Scene, source: np.ndarray, offset_u: np.ndarray, offset_v: np.ndarray | None
) -> np.ndarray:
    """Bilinear colour [N, 3] at source pixel + (offset_u, offset_v) (each within ±0.5 pixel), using only neighbours
    on the same depth layer as the pixel itself (an edge never blends foreground into background)."""
    height, width = scene.shape
    colour = scene.colour.reshape(-1, 3)
    order = scene.order.ravel()
    own = np.take(order, source)

    def gather(neighbour, weight):
        """Colour [N, 3] of ``neighbour`` and its weight, 0 where it lies on another layer."""
        other = np.take(order, neighbour)
        same = (np.abs(other - own) <= LAYER_TOLERANCE)
        return np.take(colour, neighbour, axis=0), np.where(same, weight, np.float32(0))

    column = source % width
    step_u = np.where(offset_u >= 0, 1, -1)
    side_u = np.where((column + step_u >= 0) & (column + step_u < width), source + step_u, source)
    abs_u = np.abs(offset_u)
    total = np.take(colour, source, axis=0)
    if offset_v is None:
        colour_u, weight_u = gather(side_u, abs_u)
        colour_u -= total
        colour_u *= weight_u[:, None]
        total += colour_u  # (1 − w)·own + w·side
        return total
    abs_v = np.abs(offset_v)
    total *= ((1 - abs_u) * (1 - abs_v))[:, None]  # the pixel's own weight, ≥ 1/4: the sum is never 0
    weight_sum = (1 - abs_u) * (1 - abs_v)
    row = source // width
    down = offset_v >= 0
    has_v = np.where(down, row + 1 < height, row > 0)
    step_v = np.where(has_v, np.where(down, width, -width), 0)
    for neighbour, weight in ((side_u, abs_u * (1 - abs_v)), (source + step_v, (1 - abs_u) * abs_v),
                              (side_u + step_v, abs_u * abs_v)):
        colour_n, weight_n = gather(neighbour, weight)
        colour_n *= weight_n[:, None]
        total += colour_n
        weight_sum += weight_n
    total /= weight_sum[:, None]
    return total


# Directions searched for a hole's background: (axis, look after the hole?) = left, right, up, down.
_DIRECTIONS = ((1, False), (1, True), (0, False), (0, True))
_FAR = 1 << 40  # the distance of a neighbour that does not exist (sums of two never overflow)


def _fill_holes(image: np.ndarray, order: np.ndarray, hole: np.ndarray) -> None:
    """Fill ``hole`` [H, W] in ``image`` [H, W, 3] and ``order`` [H, W] in place, from the background side.

    First cracks (gaps of one or two pixels between filled pixels, where a surface was stretched) take the farther
    of their two neighbours. Then, for each remaining hole pixel, the nearest filled pixel is found in each of the
    four directions; those within LAYER_TOLERANCE of the nearest in depth are the occluder and never used (unless all
    are one surface); the closest of the others is the background. The hole copies the background mirrored across
    the hole's edge, or the background pixel itself where the mirror is not background.
    """
    _fill_round(image, order, hole, cracks_only=True)
    for _ in range(2):  # a second round only for holes whose whole row and column were empty
        if not hole.any():
            return
        _fill_round(image, order, hole, cracks_only=False)


def _fill_round(image: np.ndarray, order: np.ndarray, hole: np.ndarray, cracks_only: bool) -> None:
    rows, columns = np.nonzero(hole)
    if rows.size == 0:
        return
    coordinates = (rows, columns)
    positions, orders, distances = [], [], []
    for axis, after in _DIRECTIONS:
        position = _nearest_filled(hole, axis, after)[rows, columns]
        exists = (position < hole.shape[axis]) & (position >= 0)
        safe = np.clip(position, 0, hole.shape[axis] - 1)
        anchor = (rows, safe) if axis == 1 else (safe, columns)
        positions.append(safe)
        orders.append(np.where(exists, order[anchor], np.inf))
        distances.append(np.where(exists, np.abs(position - coordinates[axis]), _FAR))
    orders, distances = np.stack(orders), np.stack(distances)
    if cracks_only:
        # A crack: filled pixels on both sides along one axis, at most two pixels apart; take the farther side.
        vertical = distances[2] + distances[3] <= 3
        horizontal = ~vertical & (distances[0] + distances[1] <= 3)
        choice = np.where(vertical, np.where(orders[2] <= orders[3], 2, 3), np.where(orders[0] <= orders[1], 0, 1))
        selected = vertical | horizontal
        mirrored = False
    else:
        farthest = orders.min(axis=0)
        nearest = np.where(np.isfinite(orders), orders, -np.inf).max(axis=0)
        # The occluder: the nearest neighbours, when the neighbours are not all one surface.
        occluder = (orders >= nearest - LAYER_TOLERANCE) & (nearest - farthest > LAYER_TOLERANCE)
        choice = np.argmin(np.where(occluder, _FAR, distances), axis=0)
        selected = np.isfinite(farthest)
        mirrored = True
    source = [rows.copy(), columns.copy()]
    for direction, (axis, after) in enumerate(_DIRECTIONS):
        chosen = selected & (choice == direction)
        position = positions[direction][chosen]
        if mirrored:
            own = coordinates[axis][chosen]
            mirror = 2 * position - 1 - own if after else 2 * position + 1 - own
            inside = (mirror >= 0) & (mirror < hole.shape[axis])
            mirror = np.clip(mirror, 0, hole.shape[axis] - 1)
            other = coordinates[1 - axis][chosen]
            at = (other, mirror) if axis == 1 else (mirror, other)
            usable = inside & ~hole[at] & (order[at] <= orders[direction][chosen] + LAYER_TOLERANCE)
            position = np.where(usable, mirror, position)
        source[axis][chosen] = position
    rows, columns = rows[selected], columns[selected]
    source = (source[0][selected], source[1][selected])
    image[rows, columns] = image[source]
    order[rows, columns] = order[source]
    hole[rows, columns] = False


def _nearest_filled(hole: np.ndarray, axis: int, after: bool) -> np.ndarray:
    """[H, W] index along ``axis`` of the nearest non-hole pixel at or before (or after) each pixel; −1 (or the
    axis length) where there is none."""
    length = hole.shape[axis]
    index = np.arange(length).reshape((-1, 1) if axis == 0 else (1, -1))
    if not after:
        return np.maximum.accumulate(np.where(hole, -1, index), axis=axis)
    flipped = np.flip(np.where(hole, length, index), axis=axis)
    return np.flip(np.minimum.accumulate(flipped, axis=axis), axis=axis)


def _check_pair(left, right) -> tuple[np.ndarray, np.ndarray]:
    left = np.asarray(left)
    right = np.asarray(right)
    if left.shape != right.shape or left.ndim != 3 or left.shape[2] != 3:
        raise InputError("The left and right views must be RGB pictures of the same size.")
    return left.astype(np.uint8, copy=False), right.astype(np.uint8, copy=False)


def _squeeze_half(view: np.ndarray) -> np.ndarray:
    """[H, W, 3] → [H, ceil(W / 2), 3] by averaging column pairs (the last column alone when W is odd)."""
    if view.shape[1] % 2:
        view = np.concatenate([view, view[:, -1:]], axis=1)
    pairs = view.reshape(view.shape[0], -1, 2, 3).astype(np.uint16)
    return ((pairs[:, :, 0] + pairs[:, :, 1] + 1) // 2).astype(np.uint8)


def _to_linear(image: np.ndarray) -> np.ndarray:
    """The sRGB decoding formula, uint8 → float32 linear light (tabulated in ``_LINEAR``)."""
    x = image.astype(np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _to_srgb(linear: np.ndarray) -> np.ndarray:
    """The sRGB encoding formula, linear light in [0, 1] → uint8 (tabulated in ``_SRGB``)."""
    x = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1 / 2.4) - 0.055)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _encode_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light (clipped to [0, 1]) → uint8 sRGB through ``_SRGB``. The value is rounded to a multiple of
    1 / _SRGB_STEPS first: the result differs from the formula's only for values within half a step of a level's
    edge, and by one level (about 0.1 % of all float32 in [0, 1] differ)."""
    steps = np.clip(linear, 0.0, 1.0)
    steps *= np.float32(_SRGB_STEPS)
    np.rint(steps, out=steps)
    return np.take(_SRGB, steps.astype(np.intp))


# The sRGB formulas as tables: a power per pixel costs more than the rest of the anaglyph.
_LINEAR = _to_linear(np.arange(256, dtype=np.uint8))  # exact: one entry per 8-bit value
_SRGB_STEPS = 1 << 16  # a power of two: scaling a float32 by it is exact
_SRGB = _to_srgb(np.arange(_SRGB_STEPS + 1, dtype=np.float32) / np.float32(_SRGB_STEPS))
