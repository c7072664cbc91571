"""Stereo pairs from one image and its depth map: side-by-side for VR viewers and 3D TVs, red-cyan anaglyphs.

Geometry. A pixel's horizontal shift is proportional to its *normalised inverse depth* t ∈ [0, 1]: the 2nd and 98th
percentiles of 1/depth over the opaque pixels with depth are the far (t = 0) and near (t = 1) planes, values beyond
are clamped. Inverse depth makes nearer pixels move more, and the percentiles make the result independent of the
depth's units (metres or relative) and robust to a few wild values. ``convergence`` is the t that lands on the screen
plane (zero disparity): nearer pixels pop out of the screen, farther ones sit behind it. For a metric depth map this is
exactly a parallel camera pair with a horizontal image shift (disparity = a/z − b); for relative models it is the best
one can do without knowing their scale and shift. A flat depth map carries no shape: the pair is the image itself.

Warping. Every source pixel is forward-warped to its nearest target pixel; a z-buffer keeps the nearest one where
several land (``np.maximum.at`` on a key of quantised nearness and pixel index: no per-pixel Python). The kept pixel
brings its colour resampled at the exact sub-pixel position that lands on the target's centre (bilinear, only from
source neighbours on the same depth layer, so edges never bleed), which keeps motion smooth in parallax clips. That
colour depends on the source pixel alone, so it is computed for every source pixel, a block of rows at a time, before
the z-buffer picks; for a purely horizontal move (a stereo pair) it is one linear step along the row, from the colour
steps between row neighbours that the scene keeps.

Disocclusions (target pixels nothing lands on) are filled from the BACKGROUND side. Cracks first: a gap of one or two
pixels between filled pixels (a surface stretched by the move, e.g. rows of a receding floor when the camera rises)
takes the farther of its two neighbours. Then every other hole looks for the nearest filled pixel to the left, right,
above and below (the pixels just outside the hole's run of holes along its row and along its column, found from the
sorted hole indices alone): the nearest in depth of those (and any within 5 % of the depth range of it) is the
occluder and is never copied; the closest of the others is the background. In a stereo pair that is the wall
beside the gap that a foreground object left (along the row: the farther neighbour), never the object. The hole takes
the background's texture mirrored across the hole's edge (pixel k inside the hole copies pixel k beyond the edge), so
the revealed strip continues the background instead of smearing the foreground or repeating one colour. Mirrored
pixels that are not background (nearer than the anchor by more than 5 % of the depth range, or themselves holes, or
outside the image) fall back to the anchor pixel's colour.

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
_INDEX_BITS = 0xFFFFFFFF  # the pixel index in the low 32 bits of a z-buffer key
_EMPTY = -(1 << 32)  # an empty z-buffer slot: below every key (nearness level −1), pixel index 0 as a placeholder
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

    ``colour [3, H, W] float32``: red, green and blue planes (background colour where transparent; planes, so that
    per-pixel weights broadcast over them cheaply), ``parallax [H, W] float32`` = t − convergence (0 on the screen
    plane, > 0 in front; 0 everywhere for a flat depth map), ``order [H, W] float32`` = the z-buffer nearness
    (parallax, or ``_TRANSPARENT`` where transparent), ``key [H·W] int64`` = quantised order << 32 | pixel index,
    ``row_step [1 + 3·H·W] float32``: a 0, then the colour planes' steps to the next pixel in the row (next − own)
    where the two are on one depth layer, else 0 (and 0 in the last column): what a horizontal move blends in.
    ``row_step[1:]`` and ``row_step[:-1]``, each seen as [3, H, W], are the steps to the next pixel and from the
    previous one, both contiguous (so arithmetic on them is fast); neither crosses a row's end.
    """

    colour: np.ndarray
    parallax: np.ndarray
    order: np.ndarray
    key: np.ndarray
    row_step: np.ndarray
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
    kept = valid if keep is None else valid & keep
    selected = kept if kept.any() else valid
    if not selected.any():
        return np.zeros(depth.shape, dtype=np.float32), True
    far, near = bounds if bounds is not None else np.percentile(inverse[selected], NEARNESS_PERCENTILES)
    span = float(near - far)
    if span <= 1e-6 * max(abs(float(near)), 1e-30):
        return np.zeros(depth.shape, dtype=np.float32), True
    t = inverse  # in place: no fresh memory
    t -= np.float32(far)
    t *= np.float32(1.0 / span)
    np.clip(t, 0.0, 1.0, out=t)
    t[~valid] = 0.0
    return t, False


def prepare_scene(
    rgb: np.ndarray,
    depth: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    convergence: float = DEFAULT_CONVERGENCE,
    background: tuple[int, int, int] = (0, 0, 0),
    bounds: tuple[float, float] | None = None,
) -> Scene:
    """Check the inputs and compute what every view of this image shares (nearness, z-buffer keys, colour steps).
    ``bounds``: the far and near planes in inverse depth (see :func:`normalised_nearness`; None: the depth's own
    percentiles)."""
    rgb, depth, opaque = _check_inputs(rgb, depth, alpha)
    if not 0.0 <= convergence <= 1.0:
        raise OptionError(
            "The convergence must be between 0 (far plane on the screen) and 1 (near plane on the screen)."
        )
    if len(background) != 3 or not all(0 <= c <= 255 for c in background):
        raise OptionError("The background colour must be three numbers from 0 to 255 (red, green, blue).")
    t, flat = normalised_nearness(depth, opaque, bounds)
    parallax = t if flat else np.subtract(t, np.float32(convergence), out=t)
    transparent = ~opaque
    colour = np.moveaxis(rgb, 2, 0).astype(np.float32, order="C")
    colour[:, transparent] = np.reshape(background, (3, 1))
    order = np.where(opaque, parallax, np.float32(_TRANSPARENT)) if transparent.any() else parallax
    # Nearness in [-1, 1] → levels in [1, 3] · 2^20; transparent → 0, below every opaque pixel.
    levels = parallax + np.float32(2.0)
    levels *= np.float32(_KEY_LEVELS)
    np.rint(levels, out=levels)
    levels[transparent] = 0
    key = levels.astype(np.int64).ravel()
    key <<= 32
    key |= np.arange(key.size, dtype=np.int64)
    return Scene(colour=colour, parallax=parallax, order=order, key=key, row_step=_row_steps(colour, order),
                 background=tuple(int(c) for c in background))


def _row_steps(colour: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``Scene.row_step``: colour steps between row neighbours on one depth layer, 0 across layers and past the ends."""
    width = order.shape[1]
    # Differences along the flattened arrays (contiguous, so fast) are right but in the last column, set to 0.
    colour, order = colour.ravel(), order.ravel()
    steps = np.empty(1 + colour.size, dtype=np.float32)
    steps[0] = 0
    np.subtract(colour[1:], colour[:-1], out=steps[1:-1])
    to_next = steps[1:].reshape(3, order.size)
    to_next.reshape(3, -1, width)[:, :, -1] = 0
    same_layer = np.empty(order.size, dtype=bool)
    order_step = order[1:] - order[:-1]
    np.less_equal(np.abs(order_step, out=order_step), LAYER_TOLERANCE, out=same_layer[:-1])
    same_layer[-1] = False
    to_next *= same_layer
    return steps


def render_view(scene: Scene, shift_x: float, shift_y: float = 0.0) -> np.ndarray:
    """The view where a pixel of parallax p moves by (p · shift_x, p · shift_y) px: [H, W, 3] uint8, holes filled."""
    height, width = scene.shape
    size = height * width
    target = np.empty(size, dtype=np.int64)
    colour = np.empty((3, size), dtype=np.uint8)
    rows_per_block = max(1, _BLOCK_PIXELS // width)
    for start in range(0, height, rows_per_block):
        rows = slice(start, min(start + rows_per_block, height))
        pixels = slice(rows.start * width, rows.stop * width)
        target[pixels], colour[:, pixels] = _warp_rows(scene, rows, shift_x, shift_y)

    zbuffer = np.full(size + 1, _EMPTY, dtype=np.int64)
    np.maximum.at(zbuffer, target, scene.key)
    source = zbuffer[:size]
    hole = source < 0
    source &= _INDEX_BITS
    image = np.take(colour, source, axis=1)
    order = np.take(scene.order.ravel(), source)
    holes = np.flatnonzero(hole)
    image[:, holes] = np.reshape(scene.background, (3, 1))
    order[holes] = _TRANSPARENT
    _fill_holes(image, order, hole, holes, width)
    return np.stack(image.reshape(3, height, width), axis=-1)


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


def _warp_rows(scene: Scene, rows: slice, shift_x: float, shift_y: float) -> tuple[np.ndarray, np.ndarray]:
    """For the n source pixels in ``rows``, in row-major order: (target [n] int64: the flat index of the pixel each
    lands on, or the image's size (a spare slot) where it leaves the image; colour [3, n] uint8 at that pixel's
    centre)."""
    height, width = scene.shape
    parallax = scene.parallax[rows]
    position_u = parallax * np.float32(shift_x)
    position_u += np.arange(width, dtype=np.float32)
    target_u = position_u + np.float32(0.5)
    np.floor(target_u, out=target_u)
    inside = (target_u >= 0) & (target_u < width)
    target = target_u.astype(np.int64)
    # Where each source pixel's target centre falls, relative to the pixel itself: within ±0.5.
    offset_u = np.subtract(target_u, position_u, out=target_u)
    if shift_y:
        position_v = np.arange(rows.start, rows.stop, dtype=np.float32)[:, None] + parallax * np.float32(shift_y)
        target_v = np.floor(position_v + 0.5)
        inside &= (target_v >= 0) & (target_v < height)
        target += target_v.astype(np.int64) * width
        colour = _resample_bilinear(scene, rows, offset_u, target_v - position_v)
    else:  # every pixel stays on its row
        target += np.arange(rows.start * width, rows.stop * width, width, dtype=np.int64)[:, None]
        colour = _resample_along_row(scene, rows, offset_u)
    target[~inside] = height * width
    return target.ravel(), _to_uint8(colour).reshape(3, -1)


def _resample_along_row(scene: Scene, rows: slice, offset_u: np.ndarray) -> np.ndarray:
    """[3, r, W] float32: the colour of each pixel in the r ``rows`` at ``offset_u`` [r, W] (within ±0.5) along its
    row, blended linearly with the next pixel (offset > 0) or the previous one (offset < 0) when that is on the same
    depth layer.

    The step is 0 across layers and past the row's ends, so the pixel then keeps its own colour. The step from the
    previous pixel (own − previous) is multiplied by the negative offset, so every product is the bilinear formula's
    (side − own) · |offset| exactly; the side not taken adds ±0.
    """
    shape = scene.colour.shape
    colour = scene.row_step[1:].reshape(shape)[:, rows] * np.maximum(offset_u, 0)
    colour += scene.row_step[:-1].reshape(shape)[:, rows] * np.minimum(offset_u, 0)
    colour += scene.colour[:, rows]
    return colour


def _resample_bilinear(scene: Scene, rows: slice, offset_u: np.ndarray, offset_v: np.ndarray) -> np.ndarray:
    """[3, r·W] float32: the colour of each pixel in the r ``rows`` at (offset_u, offset_v) [r, W] (each within ±0.5
    pixel), bilinear from only the neighbours on the same depth layer as the pixel itself (an edge never blends
    foreground into background), their weights renormalised."""
    height, width = scene.shape
    colour = scene.colour.reshape(3, -1)
    order = scene.order.ravel()
    offset_u, offset_v = offset_u.ravel(), offset_v.ravel()
    pixel = np.arange(rows.start * width, rows.stop * width)
    own = order[pixel]

    def gather(neighbour, weight):
        """Colour [3, n] of ``neighbour`` and its weight, 0 where it lies on another layer."""
        same = np.abs(np.take(order, neighbour) - own) <= LAYER_TOLERANCE
        return np.take(colour, neighbour, axis=1), np.where(same, weight, np.float32(0))

    column = pixel % width
    step_u = np.where(offset_u >= 0, 1, -1)
    side_u = np.where((column + step_u >= 0) & (column + step_u < width), pixel + step_u, pixel)
    abs_u, abs_v = np.abs(offset_u), np.abs(offset_v)
    weight_sum = (1 - abs_u) * (1 - abs_v)  # the pixel's own weight, ≥ 1/4: the sum is never 0
    total = colour[:, pixel] * weight_sum
    row = pixel // width
    down = offset_v >= 0
    has_v = np.where(down, row + 1 < height, row > 0)
    step_v = np.where(has_v, np.where(down, width, -width), 0)
    for neighbour, weight in ((side_u, abs_u * (1 - abs_v)), (pixel + step_v, (1 - abs_u) * abs_v),
                              (side_u + step_v, abs_u * abs_v)):
        colour_n, weight_n = gather(neighbour, weight)
        colour_n *= weight_n
        total += colour_n
        weight_sum += weight_n
    total /= weight_sum
    return total


def _to_uint8(colour: np.ndarray) -> np.ndarray:
    """Rounded and clipped to 0-255, in place, as uint8."""
    np.rint(colour, out=colour)
    np.clip(colour, 0, 255, out=colour)
    return colour.astype(np.uint8)


# Directions searched for a hole's background: (axis, look after the hole?) = left, right, up, down.
_DIRECTIONS = ((1, False), (1, True), (0, False), (0, True))
_FAR = 1 << 40  # the distance of a neighbour that does not exist (sums of two never overflow)


def _fill_holes(image: np.ndarray, order: np.ndarray, hole: np.ndarray, holes: np.ndarray, width: int) -> None:
    """Fill the ``holes`` (ascending flat indices, also marked in ``hole`` [H·W]) of ``image`` [3, H·W] and ``order``
    [H·W] in place, from the background side: cracks first, then the rest (see the two functions); a second round
    of the rest serves holes whose whole row and column were empty."""
    holes = _fill_cracks(image, order, hole, holes, width)
    for _ in range(2):
        holes = _fill_from_background(image, order, hole, holes, width)


def _fill_cracks(image: np.ndarray, order: np.ndarray, hole: np.ndarray, holes: np.ndarray, width: int) -> np.ndarray:
    """Fill the holes in a gap of one or two pixels between filled pixels (a surface stretched by the move) with the
    farther of those two: along the column if the gap is a crack there, else along the row. Returns the holes left."""
    if holes.size == 0:
        return holes
    height = hole.size // width
    rows, columns = np.divmod(holes, width)
    left, right, up, down = _nearest_filled(holes, rows, columns, (height, width))
    vertical = (up >= 0) & (down < height) & (down - up <= 3)
    crack = vertical | ((left >= 0) & (right < width) & (right - left <= 3))
    # The crack's two ends, as flat indices: above and below, else left and right.
    before = np.where(vertical, up * width + columns, holes - columns + left)[crack]
    after = np.where(vertical, down * width + columns, holes - columns + right)[crack]
    _copy_pixels(image, order, hole, holes[crack], np.where(order[before] <= order[after], before, after))
    return holes[~crack]


def _fill_from_background(image: np.ndarray, order: np.ndarray, hole: np.ndarray, holes: np.ndarray,
                          width: int) -> np.ndarray:
    """Fill each hole from the background side; returns the holes left (no filled pixel in their row or column).

    The nearest filled pixel is found in each of the four directions; those within LAYER_TOLERANCE of the nearest
    in depth are the occluder and never used (unless all are one surface); the closest of the others is the
    background. The hole copies the background mirrored across the hole's edge, or the background pixel itself where
    the mirror is not background. Every hole is judged by the pixels filled before this round.
    """
    if holes.size == 0:
        return holes
    lengths = (hole.size // width, width)
    rows, columns = np.divmod(holes, width)
    coordinates = (rows, columns)
    positions, orders, distances = [], [], []
    for (axis, _), position in zip(_DIRECTIONS, _nearest_filled(holes, rows, columns, lengths)):
        exists = (position < lengths[axis]) & (position >= 0)
        safe = np.clip(position, 0, lengths[axis] - 1)
        anchor = rows * width + safe if axis == 1 else safe * width + columns
        positions.append(safe)
        orders.append(np.where(exists, order[anchor], np.inf))
        distances.append(np.where(exists, np.abs(position - coordinates[axis]), _FAR))
    orders, distances = np.stack(orders), np.stack(distances)
    farthest = orders.min(axis=0)
    nearest = np.where(np.isfinite(orders), orders, -np.inf).max(axis=0)
    # The occluder: the nearest neighbours, when the neighbours are not all one surface.
    occluder = (orders >= nearest - LAYER_TOLERANCE) & (nearest - farthest > LAYER_TOLERANCE)
    choice = np.argmin(np.where(occluder, _FAR, distances), axis=0)
    selected = np.isfinite(farthest)
    source = holes.copy()
    for direction, (axis, after) in enumerate(_DIRECTIONS):
        chosen = selected & (choice == direction)
        position = positions[direction][chosen]
        own = coordinates[axis][chosen]
        other = coordinates[1 - axis][chosen]
        mirror = 2 * position - 1 - own if after else 2 * position + 1 - own
        inside = (mirror >= 0) & (mirror < lengths[axis])
        mirror = np.clip(mirror, 0, lengths[axis] - 1)
        at = other * width + mirror if axis == 1 else mirror * width + other
        usable = inside & ~hole[at] & (order[at] <= orders[direction][chosen] + LAYER_TOLERANCE)
        position = np.where(usable, mirror, position)
        source[chosen] = other * width + position if axis == 1 else position * width + other
    _copy_pixels(image, order, hole, holes[selected], source[selected])
    return holes[~selected]


def _copy_pixels(image: np.ndarray, order: np.ndarray, hole: np.ndarray, targets: np.ndarray,
                 sources: np.ndarray) -> None:
    """Fill the holes ``targets`` with the filled pixels ``sources`` (flat indices)."""
    for plane in image:  # a plane at a time: much faster than image[:, targets]
        plane[targets] = plane[sources]
    order[targets] = order[sources]
    hole[targets] = False


def _nearest_filled(holes: np.ndarray, rows: np.ndarray, columns: np.ndarray,
                    lengths: tuple[int, int]) -> list[np.ndarray]:
    """For all the holes of the image, at ascending flat indices ``holes`` = (rows, columns): the position along the
    row or column of the nearest filled pixel to the left, right, above and below (in ``_DIRECTIONS`` order), −1 or
    the row's or column's length where there is none."""
    height, width = lengths
    left, right = _run_ends(holes, columns, width)
    # Column-major order: a stable sort keeps the rows ascending within a column (a radix sort up to 65536 columns).
    by_column = np.argsort(columns.astype(np.min_scalar_type(width - 1)), kind="stable")
    rows_by_column = rows[by_column]
    up, down = np.empty_like(rows), np.empty_like(rows)
    up[by_column], down[by_column] = _run_ends(columns[by_column] * height + rows_by_column, rows_by_column, height)
    return [left, right, up, down]


def _run_ends(keys: np.ndarray, position: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Holes at ascending ``keys`` (flat indices in lines of ``length`` pixels: rows, or columns in column-major
    order), ``position`` along their line → (before, after): the position of the pixels just before and just after
    each hole's run of consecutive holes, which are its nearest filled pixels; −1 or ``length`` where the run reaches
    the line's end."""
    starts = np.empty(keys.size, dtype=bool)
    starts[0] = True
    np.not_equal(keys[1:], keys[:-1] + 1, out=starts[1:])
    starts |= position == 0  # a run never continues onto the next line
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:]
    ends[-1] = True
    run = np.cumsum(starts) - 1
    return position[starts][run] - 1, position[ends][run] + 1


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
