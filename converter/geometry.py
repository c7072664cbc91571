"""Camera model and back-projection: depth map → 3D points.

Camera model: pinhole, no distortion. Pixel (u, v) is the integer index of a pixel's centre, u to the right,
v down; the principal point defaults to the image centre ((W - 1) / 2, (H - 1) / 2). Depth z is the distance along
the optical axis (not along the ray).

Output frame: right-handed, **y up, camera at the origin looking down −z** (OpenGL / glTF). From the OpenCV camera
frame (x right, y down, z forward) that is a flip of y and z:  x = (u − cx)·z / fx,  y = −(v − cy)·z / fy,  z = −z.

All arrays are float32; shapes are given as [H, W] (image) or [N, 3] (points).

One engine for both places a conversion runs: the functions on depth maps and grids (depth units, cleaning,
back-projection, normals, relief heights, :func:`grid_cloud`) are written once against the array API standard
(``array-api-compat``), so the same code runs on numpy arrays on the CPU and on torch tensors on the model's device
(CUDA), where only the final arrays come back. numpy's own kernels are kept where the standard has none
(percentiles, the colours' box filter: :mod:`converter.torch_kernels` gives torch's). Small host arrays (pixel
indices, per-column factors) stay numpy and go to the data's device. Camera, grid and pixel↔UV helpers are numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace, is_numpy_array
from array_api_compat import device as device_of

from . import torch_kernels

DEFAULT_FOV_DEG = 60.0
DEFAULT_EDGE_RTOL = 0.04
DEFAULT_RELIEF = 1.0


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of ``width`` × ``height`` pixels; ``source`` records where fx came from."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    source: str = "default"

    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.fx)))

    @property
    def fov_y_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.height / (2.0 * self.fy)))

    def as_matrix(self) -> np.ndarray:
        """[3, 3] K in the OpenCV convention, as Open3D's PinholeCameraIntrinsic takes it."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], dtype=np.float64)

    def to_dict(self) -> dict:
        return {
            "width": self.width, "height": self.height, "fx": self.fx, "fy": self.fy, "cx": self.cx,
            "cy": self.cy, "fov_x_deg": self.fov_x_deg, "source": self.source,
        }


def make_intrinsics(
    width: int,
    height: int,
    *,
    fov_deg: float | None = None,
    focal_px: float | None = None,
    principal_point: tuple[float, float] | None = None,
    exif_focal_px: float | None = None,
    exif_source: str | None = None,
    model_focal_px: float | None = None,
    model_name: str | None = None,
) -> Intrinsics:
    """Intrinsics by precedence: user focal length, user field of view, EXIF, the depth model's own estimate
    (``model_focal_px``, source ``model:<model_name>``), then a 60° horizontal FoV.

    fov_deg is the horizontal field of view; pixels are square (fy = fx).
    """
    if focal_px is not None:
        fx, source = float(focal_px), "user:focal_px"
    elif fov_deg is not None:
        fx, source = focal_from_fov(width, fov_deg), "user:fov"
    elif exif_focal_px:
        fx, source = float(exif_focal_px), exif_source or "exif"
    elif model_focal_px and math.isfinite(model_focal_px) and model_focal_px > 0:
        fx, source = float(model_focal_px), f"model:{model_name or 'depth model'}"
    else:
        fx, source = focal_from_fov(width, DEFAULT_FOV_DEG), "default:fov60"
    if principal_point is None:
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    else:
        cx, cy = float(principal_point[0]), float(principal_point[1])
    return Intrinsics(width=width, height=height, fx=fx, fy=fx, cx=cx, cy=cy, source=source)


def depth_for_focal(depth: np.ndarray, made_with_focal_px: float | None, used_focal_px: float) -> np.ndarray:
    """Metric depth made with the model's focal length, rescaled for the camera actually used.

    A model that estimates the camera (Depth Pro) turns its scale-free output into metres with its focal length:
    depth = f / (W · canonical inverse depth), so depth is proportional to f. When the user or EXIF gives another
    focal length, back-projecting the model's depth with it would bend the geometry; scaling depth by
    ``used / made_with`` gives what the model would have said with that camera (as Depth Pro's own ``infer`` does
    with a known f_px). Unchanged when the model gave no focal length or when it is the one used."""
    if not made_with_focal_px or made_with_focal_px == used_focal_px:
        return depth
    return depth * _f32(used_focal_px / made_with_focal_px)


def fov_from_focal(width: int, focal_px: float) -> float:
    """Horizontal field of view in degrees of a focal length of ``focal_px`` over ``width`` pixels."""
    return math.degrees(2.0 * math.atan(width / (2.0 * focal_px)))


def focal_from_fov(width: int, fov_deg: float) -> float:
    """Focal length in pixels that gives a horizontal field of view of ``fov_deg`` over ``width`` pixels."""
    return width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))


def namespace(*arrays):
    """The array API namespace of ``arrays`` (None entries ignored): numpy's or torch's, as wrapped by
    ``array-api-compat``."""
    return array_namespace(*[a for a in arrays if a is not None])


class _HostKernels:
    """numpy's (and PIL's) own kernels for what the array API standard has no name for."""

    @staticmethod
    def percentile(values, q):
        return np.percentile(values, q)

    @staticmethod
    def grid_colors(rgb, alpha, size: tuple[int, int]):
        from PIL import Image

        if alpha is None:
            return np.asarray(Image.fromarray(rgb, "RGB").resize(size, Image.Resampling.BOX))
        rgba = np.dstack([rgb, alpha])
        premultiplied = Image.fromarray(rgba, "RGBA").convert("RGBa").resize(size, Image.Resampling.BOX)
        return np.asarray(premultiplied.convert("RGBA"))[:, :, :3]

    @staticmethod
    def as_float32(array):
        return np.asarray(array, dtype=np.float32)

    @staticmethod
    def from_host(array: np.ndarray, like, dtype=None):
        return array if dtype is None else array.astype(dtype, copy=False)

    @staticmethod
    def to_host(array) -> np.ndarray:
        return array


class _DeviceKernels:
    """The same for torch tensors on the model's device: :mod:`converter.torch_kernels`, made to give numpy's
    numbers, and the copies between host and device."""

    @staticmethod
    def percentile(values, q):
        if isinstance(q, tuple):
            return [torch_kernels.percentile(values, one) for one in q]
        return torch_kernels.percentile(values, q)

    grid_colors = staticmethod(torch_kernels.grid_colors)

    @staticmethod
    def as_float32(array):
        xp = namespace(array)
        return xp.astype(array, xp.float32, copy=False)

    @staticmethod
    def from_host(array: np.ndarray, like, dtype=None):
        return namespace(like).asarray(np.ascontiguousarray(array), device=device_of(like), dtype=dtype)

    @staticmethod
    def to_host(array) -> np.ndarray:
        return np.asarray(namespace(array).asarray(array, device="cpu") if device_of(array) != "cpu" else array)


def kernels(array):
    """The one place that tells numpy from torch: the kernels for ``array``'s namespace. Everything else here is
    written once against the array API (:func:`namespace`)."""
    return _HostKernels if is_numpy_array(array) else _DeviceKernels


def as_float32(array):
    """``array`` as float32 in its own namespace (no copy when it already is)."""
    return kernels(array).as_float32(array)


def on_device_of(array: np.ndarray, like, dtype=None):
    """A small host array (indices, per-column factors) as an array of ``like``'s namespace and device."""
    return kernels(like).from_host(array, like, dtype)


def _f32(value: float) -> float:
    """A Python float holding ``value`` rounded to float32: with a float32 array it acts as numpy's float32 scalar,
    so numpy and torch round the same constants the same way."""
    return float(np.float32(value))


def percentile(values, q):
    """numpy's ``percentile(values, q)`` (method 'linear') of a 1-D array of either namespace, ``q`` a number or a
    tuple of them: numpy's own, or for torch the same order statistics and lerp
    (:func:`converter.torch_kernels.percentile`). As numpy: a tuple's lerp is in float64, a number's in the values'
    precision."""
    return kernels(values).percentile(values, q)


def disparity_bounds(
    disparity, mask=None, percentiles: tuple[float, float] = (2.0, 98.0)
) -> tuple[float, float]:
    """Robust (far, near) disparity levels: the given percentiles over finite values inside ``mask`` [H, W] bool."""
    xp = namespace(disparity)
    disparity = as_float32(disparity)
    selected = xp.isfinite(disparity)
    if mask is not None:
        inside = selected & mask
        if bool(xp.any(inside)):
            selected = inside
    values = disparity[selected]
    if values.shape[0] == 0:
        return 0.0, 0.0
    low, high = percentile(values, tuple(percentiles))
    return float(low), float(high)


def disparity_to_depth(
    disparity, bounds: tuple[float, float], relief: float = DEFAULT_RELIEF, near: float = 1.0
):
    """Relative inverse depth [H, W] → depth [H, W] in relative units, from ``near`` to ``near · (1 + relief)``.

    Relative models (MiDaS, DPT, Depth Anything) predict disparity up to an unknown scale and shift, so no mapping
    is exact. This one is robust: the disparity ``bounds`` (see :func:`disparity_bounds`, 2nd and 98th
    percentiles) become the far and near planes, values beyond them are clamped, and the normalised disparity
    t ∈ [0, 1] is mapped *linearly in inverse depth*, 1/z = t/near + (1 − t)/far, which keeps planes planar under
    the model's own affine-invariant assumption. Non-finite input gives 0 (invalid).
    """
    if relief <= 0:
        raise ValueError("relief must be positive")
    xp = namespace(disparity)
    disparity = as_float32(disparity)
    low, high = bounds
    span = high - low
    far = near * (1.0 + relief)
    if span <= 1e-12 * max(abs(high), 1.0):
        depth = xp.full(disparity.shape, near, dtype=xp.float32, device=device_of(disparity))
    else:
        t = xp.clip((disparity - _f32(low)) * _f32(1.0 / span), 0.0, 1.0)
        t *= _f32(1.0 / near - 1.0 / far)
        t += _f32(1.0 / far)
        depth = 1.0 / t
    return xp.where(xp.isfinite(disparity), depth, 0.0)


def valid_depth(depth):
    """[H, W] bool: finite and strictly positive depth."""
    xp = namespace(depth)
    return xp.isfinite(depth) & (depth > 0)


def depth_edges(depth, rtol: float = DEFAULT_EDGE_RTOL):
    """[H, W] bool: pixels on a depth discontinuity ("flying pixels").

    A pixel is on an edge when the depth range in its 3 × 3 neighbourhood exceeds ``rtol`` times its own depth.
    Image-space and linear in the number of pixels, unlike a k-NN outlier search over the cloud. Invalid neighbours
    are ignored (they make holes, not edges).
    """
    xp = namespace(depth)
    depth = as_float32(depth)
    valid = valid_depth(depth)
    high = _window_3x3(xp, xp.where(valid, depth, -math.inf), xp.maximum, -math.inf)
    low = _window_3x3(xp, xp.where(valid, depth, math.inf), xp.minimum, math.inf)
    with np.errstate(invalid="ignore"):
        edges = (high - low) > _f32(rtol) * depth
    return edges & valid


def _window_3x3(xp, values, reduce, fill: float):
    """Separable 3 × 3 max/min filter with ``fill`` outside the image."""
    height, width = values.shape
    side = xp.full((height, 1), fill, dtype=values.dtype, device=device_of(values))
    padded = xp.concat([side, values, side], axis=1)
    edge = xp.full((1, width + 2), fill, dtype=values.dtype, device=device_of(values))
    padded = xp.concat([edge, padded, edge], axis=0)
    rows = reduce(reduce(padded[:-2, :], padded[1:-1, :]), padded[2:, :])
    return reduce(reduce(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def nearest_indices(source_size: int, target_size: int) -> np.ndarray:
    """[target_size] int64: for each pixel of a target grid, the source pixel whose area holds its centre.

    The one nearest-neighbour rule for going between two resolutions of the same image (a model's native depth map
    and the image, a user's depth map and the image): centres map to centres, no half-pixel drift.
    """
    centres = (np.arange(target_size) + 0.5) * (source_size / target_size)
    return np.minimum(centres, source_size - 1).astype(np.int64)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[F, 3] unit normals (right-hand rule) of triangles ``faces`` [F, 3] over ``vertices`` [N, 3], in the vertices'
    precision (at least float32); degenerate triangles get 0."""
    vertices = np.asarray(vertices)
    faces = np.asarray(faces).reshape(-1, 3).astype(np.intp)
    first = vertices[faces[:, 0]]
    normals = np.cross(vertices[faces[:, 1]] - first, vertices[faces[:, 2]] - first)
    if normals.dtype not in (np.float32, np.float64):
        normals = normals.astype(np.float32)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)


def pixel_grid(width: int, height: int, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices (columns [Wg], rows [Hg]) of a regular grid with at most ``max_points`` samples.

    Each grid sample is the pixel nearest to the centre of an equal block of the image, so sampling is uniform and
    the grid stays a grid (meshes are built on it). ``max_points == 0`` keeps every pixel.
    """
    total = width * height
    if max_points <= 0 or total <= max_points:
        return np.arange(width), np.arange(height)
    scale = math.sqrt(max_points / total)
    grid_w = max(1, int(width * scale))
    grid_h = max(1, int(height * scale))
    while grid_w * grid_h > max_points:
        if grid_w >= grid_h:
            grid_w -= 1
        else:
            grid_h -= 1
    columns = np.floor((np.arange(grid_w) + 0.5) * width / grid_w).astype(np.int64)
    rows = np.floor((np.arange(grid_h) + 0.5) * height / grid_h).astype(np.int64)
    return columns, rows


def backproject(depth, intrinsics: Intrinsics, columns=None, rows=None):
    """Depth [Hg, Wg] sampled at pixel ``columns`` [Wg] and ``rows`` [Hg] → points [Hg, Wg, 3] (y up, −z forward).

    Without ``columns``/``rows`` the depth is the full image. Invalid depth gives non-finite or zero-depth points;
    callers select valid ones with :func:`valid_depth`.
    """
    xp = namespace(depth)
    depth = as_float32(depth)
    height, width = depth.shape
    columns = np.arange(width) if columns is None else np.asarray(columns)
    rows = np.arange(height) if rows is None else np.asarray(rows)
    x_over_z = on_device_of(((columns.astype(np.float64) - intrinsics.cx) / intrinsics.fx).astype(np.float32), depth)
    y_over_z = on_device_of(((rows.astype(np.float64) - intrinsics.cy) / intrinsics.fy).astype(np.float32), depth)
    # image rows go down, y goes up; the camera looks down −z
    return xp.stack([depth * x_over_z[None, :], depth * -y_over_z[:, None], -depth], axis=-1)


def grid_normals(points):
    """Unit normals [Hg, Wg, 3] of a grid of points [Hg, Wg, 3], facing the camera (central differences)."""
    xp = namespace(points)
    du = xp.zeros_like(points)
    dv = xp.zeros_like(points)
    if points.shape[1] > 1:
        du[:, 1:-1, :] = points[:, 2:, :] - points[:, :-2, :]
        du[:, 0, :] = points[:, 1, :] - points[:, 0, :]
        du[:, -1, :] = points[:, -1, :] - points[:, -2, :]
    if points.shape[0] > 1:
        dv[1:-1, ...] = points[2:, ...] - points[:-2, ...]
        dv[0, ...] = points[1, ...] - points[0, ...]
        dv[-1, ...] = points[-1, ...] - points[-2, ...]
    # u goes right and v goes down in the image, so du × dv points away from the camera; flip it.
    normals = xp.linalg.cross(dv, du)
    length = xp.linalg.vector_norm(normals, axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        normals = xp.where(length > 0, normals / length, normals)
    return xp.where(xp.isfinite(normals), normals, 0.0)


# ----------------------------------------------------------------------------------------------------- relief mode
#
# Relief mode is a height field, not a camera: the right model for cartoons, sketches, logos and bas-reliefs.
# x and y come from the pixel grid at the image's aspect ratio, in relative units where the image is 1 wide:
# the image spans x ∈ [−0.5, 0.5] and y ∈ [−H/2W, H/2W] (y up, image top = +y), and the sample of pixel (u, v)
# sits at its pixel centre, x = (u + 0.5)/W − 0.5, y = H/(2W) − (v + 0.5)/W (square pixels, spacing 1/W).
# The height is z = RELIEF_HEIGHT · relief · t, nearer = higher, where t ∈ [0, 1] is normalised over the kept
# samples (the farthest kept sample at 0, the nearest at 1):
#   metric depth d:                  t = (d_max − d) / (d_max − d_min)          (linear in depth)
#   relative (inverse-depth) models: t = (1/d − 1/d_max) / (1/d_min − 1/d_max)  (linear in the model's disparity;
#       since the disparity was mapped linearly in inverse depth between its 2nd and 98th percentiles, this is that
#       normalised, clamped disparity itself)
# A constant depth gives a flat relief (t = 0).

RELIEF_HEIGHT = 0.2  # relief height per unit of the ``relief`` option, as a fraction of the image width


def relief_heights(depth, keep, inverse: bool, relief: float = DEFAULT_RELIEF):
    """Heights [Hg, Wg] float32 of a relief in relative units (image width 1): see the section comment above.

    depth [Hg, Wg]: depth along the axis (0 or non-finite = none). keep [Hg, Wg] bool: the samples that count for the
    normalisation. inverse: the depth came from a relative (inverse-depth) model, so the height is linear in 1/depth.
    Samples outside ``keep`` get height 0. float64 arithmetic.
    """
    xp = namespace(depth, keep)
    depth = xp.astype(xp.asarray(depth), xp.float64)
    keep = xp.astype(xp.asarray(keep), xp.bool) & valid_depth(depth)
    heights = xp.zeros(depth.shape, dtype=xp.float32, device=device_of(depth))
    if not bool(xp.any(keep)):
        return heights
    kept = depth[keep]
    signal = 1.0 / kept if inverse else -kept  # grows towards the viewer
    low, high = float(xp.min(signal)), float(xp.max(signal))
    span = high - low
    if span <= 1e-12 * max(abs(high), abs(low), 1e-30):
        return heights
    heights[keep] = xp.astype((signal - low) * (RELIEF_HEIGHT * relief / span), xp.float32)
    return heights


def relief_grid(width: int, height: int, columns=None, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """x [Wg] and y [Hg] float64 of the pixel centres of ``columns`` and ``rows`` in relief coordinates."""
    columns = np.arange(width) if columns is None else np.asarray(columns)
    rows = np.arange(height) if rows is None else np.asarray(rows)
    x = (columns.astype(np.float64) + 0.5) / width - 0.5
    y = height / (2.0 * width) - (rows.astype(np.float64) + 0.5) / width
    return x, y


def relief_backproject(heights, image_size: tuple[int, int], columns=None, rows=None):
    """Heights [Hg, Wg] sampled at pixel ``columns`` [Wg] and ``rows`` [Hg] of an image of ``image_size`` (W, H)
    → points [Hg, Wg, 3] float32 of the height field (x right, y up, z = height towards the viewer)."""
    xp = namespace(heights)
    heights = xp.astype(xp.asarray(heights), xp.float32)
    x, y = relief_grid(image_size[0], image_size[1], columns, rows)
    x, y = on_device_of(x.astype(np.float32), heights), on_device_of(y.astype(np.float32), heights)
    return xp.stack([xp.broadcast_to(x[None, :], heights.shape), xp.broadcast_to(y[:, None], heights.shape), heights],
                    axis=-1)


# ------------------------------------------------------------------------------------------- points back to pixels
#
# The inverses of the back-projections above, for meshes whose vertices moved off the pixel grid (decimation): they
# give the image position each vertex shows, so its texture coordinate can be recomputed and the texture stays
# registered. Pixel positions are continuous (u, v) in the convention of the module docstring (integer = centre).


def project_to_pixels(points: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    """Points [N, 3] (y up, camera looking down −z) → pixel positions [N, 2] float64 (u, v): the inverse of
    :func:`backproject`, u = fx·x/(−z) + cx, v = cy − fy·y/(−z). Points not in front of the camera (z ≥ 0) give
    non-finite positions."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(points[:, 2] < 0, -points[:, 2], np.nan)
        pixels = np.empty((len(points), 2), dtype=np.float64)
        pixels[:, 0] = intrinsics.fx * points[:, 0] / depth + intrinsics.cx
        pixels[:, 1] = intrinsics.cy - intrinsics.fy * points[:, 1] / depth
    return pixels


def relief_to_pixels(points: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Relief points [N, 3] of an image of ``image_size`` (W, H) → pixel positions [N, 2] float64 (u, v): the
    inverse of :func:`relief_grid`, u = (x + 0.5)·W − 0.5, v = H/2 − y·W − 0.5 (the height z plays no part)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    width, height = image_size
    pixels = np.empty((len(points), 2), dtype=np.float64)
    pixels[:, 0] = (points[:, 0] + 0.5) * width - 0.5
    pixels[:, 1] = height / 2.0 - points[:, 1] * width - 0.5
    return pixels


def pixels_to_uv(pixels: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Pixel positions [N, 2] (u, v) in an image of ``image_size`` (W, H) → texture coordinates [N, 2] float32 in
    the OpenGL/OBJ convention (origin bottom-left), ((u + 0.5)/W, 1 − (v + 0.5)/H), as :mod:`converter.mesh`
    gives them to grid vertices."""
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    width, height = image_size
    uvs = np.empty((len(pixels), 2), dtype=np.float32)
    uvs[:, 0] = (pixels[:, 0] + 0.5) / width
    uvs[:, 1] = 1.0 - (pixels[:, 1] + 0.5) / height
    return uvs


# ----------------------------------------------------------------------------------------- the cloud of a depth map
#
# The geometry half of a conversion in one function, on either namespace: ``converter.pipeline`` calls it with numpy
# arrays (the CPU path) or with the model's tensors on its device (CUDA), and brings only the results back.


@dataclass
class GridCloud:
    """What :func:`grid_cloud` makes, as arrays of its inputs' namespace and device.

    depth [H, W] float32: depth along the axis at image size (0 = none). keep [Hg, Wg] bool: the grid samples that
    became points. points [N, 3] float32, colors [N, 3] uint8, normals [N, 3] float32 or None: one per kept sample.
    heights [Hg, Wg] float32: the relief's heights (relief mode), else None.
    """

    depth: object
    keep: object
    points: object
    colors: object
    normals: object | None
    heights: object | None

    def to_host(self) -> "GridCloud":
        """The same cloud as numpy arrays (a copy from the device; numpy arrays as they are)."""
        return GridCloud(*(None if value is None else to_host(value) for value in
                           (self.depth, self.keep, self.points, self.colors, self.normals, self.heights)))


def to_host(array) -> np.ndarray:
    """A numpy array of ``array``'s values (torch: copied from its device)."""
    return kernels(array).to_host(array)


def to_depth(values, native, *, metric: bool, user_depth: bool, opaque=None, relief: float = DEFAULT_RELIEF,
             made_with_focal_px: float | None = None, used_focal_px: float = 1.0):
    """Depth along the axis [H, W] at image size and [h, w] at native size, float32 (0 = none): metric stays metric
    (rescaled for the camera used, :func:`depth_for_focal`); disparity is mapped (:func:`disparity_to_depth`) between
    bounds taken over ``opaque`` [H, W] bool. A user's map (``user_depth``) marks "no depth" with 0, NaN or inf."""
    xp = namespace(values, native)
    if metric:
        depth = xp.astype(xp.where(valid_depth(values), values, 0.0), xp.float32)
        native_depth = xp.astype(xp.where(valid_depth(native), native, 0.0), xp.float32)
        return (depth_for_focal(depth, made_with_focal_px, used_focal_px),
                depth_for_focal(native_depth, made_with_focal_px, used_focal_px))
    mask = opaque
    if user_depth:  # its "no depth" zeros must not become the far plane
        mask = values > 0 if opaque is None else opaque & (values > 0)
    bounds = disparity_bounds(values, mask)
    depth = disparity_to_depth(values, bounds, relief)
    native_depth = disparity_to_depth(native, bounds, relief)
    if user_depth:
        depth = xp.where(xp.isfinite(values) & (values > 0), depth, 0.0)
        native_depth = xp.where(xp.isfinite(native) & (native > 0), native_depth, 0.0)
    return depth, native_depth


def grid_cloud(rgb, alpha, values, native, *, metric: bool, user_depth: bool, options, intrinsics: Intrinsics,
               columns: np.ndarray, rows: np.ndarray, focal_px: float | None = None, clock=None) -> GridCloud:
    """Image and prediction → the kept grid samples as coloured points: depth units, sampling, background drop,
    cleaning at native resolution, back-projection (or the relief's height field), colours and normals.

    rgb [H, W, 3] uint8 and alpha [H, W] uint8 or None (after any paper removal); values [H, W] (the prediction at
    image size) and native [h, w] float32 (at the source's own resolution, where discontinuities are sharp), all of
    one namespace and device. metric: values are metres, else relative disparity; user_depth: the map is the
    user's. options: ConversionOptions; columns [Wg], rows [Hg]: :func:`pixel_grid` (host arrays). focal_px: the
    focal length the metric values were made with, if the model estimated one. ``clock(stage)``: a context manager
    that times a stage ("depth_units", "cleaning", "backproject").
    """
    xp = namespace(rgb, values, native)
    clock = clock or _no_clock
    height, width = values.shape
    with clock("depth_units"):
        opaque = None if alpha is None else alpha > 0
        depth, native_depth = to_depth(values, native, metric=metric, user_depth=user_depth, opaque=opaque,
                                       relief=options.relief, made_with_focal_px=focal_px,
                                       used_focal_px=intrinsics.fx)
    full = len(rows) == height and len(columns) == width  # every pixel: the grid is the image (no copy)
    grid_depth = depth if full else take_grid(depth, rows, columns)
    keep = valid_depth(grid_depth)
    if alpha is not None:
        keep &= (alpha if full else take_grid(alpha, rows, columns)) > 0
    if options.drop_background_percent > 0 and bool(xp.any(keep)):
        kept_depth = grid_depth[keep]
        cut = percentile(kept_depth, 100.0 - options.drop_background_percent)
        if bool(cut > xp.min(kept_depth)):  # pixels tied with the cut go too: a flat far wall goes as a whole
            keep &= grid_depth < cut
    if options.clean:
        with clock("cleaning"):
            edges = depth_edges(native_depth, options.edge_rtol)
            native_h, native_w = native_depth.shape
            native_rows = nearest_indices(native_h, height)[rows]
            native_columns = nearest_indices(native_w, width)[columns]
            keep &= ~take_grid(edges, native_rows, native_columns)
    heights = None
    with clock("backproject"):
        if options.mode == "relief":
            heights = relief_heights(grid_depth, keep, not metric, options.relief)

            def grid_block(start, end):
                return relief_backproject(heights[start:end], (width, height), columns, rows[start:end])
        else:
            def grid_block(start, end):
                return backproject(grid_depth[start:end], intrinsics, columns, rows[start:end])
        points = kept_samples(grid_block, keep, xp.float32)
        normals = None
        if options.normals:
            def normals_block(start, end):
                """The block's normals from it and a row either side: the whole grid's central differences."""
                low, high = max(start - 1, 0), min(end + 1, len(rows))
                return grid_normals(grid_block(low, high))[start - low:end - low]

            normals = kept_samples(normals_block, keep, xp.float32)
        sample_colors = grid_colors(rgb, alpha, columns, rows)
        colors = kept_samples(lambda start, end: sample_colors[start:end], keep, xp.uint8)
    return GridCloud(depth=depth, keep=keep, points=points, colors=colors, normals=normals, heights=heights)


BLOCK_SAMPLES = 1 << 20  # grid samples back-projected at a time (12 MB of points)


def kept_samples(grid_block, keep, dtype=None):
    """[K, C] of the ``keep`` [Hg, Wg] samples of a grid made a block of rows at a time by ``grid_block(start, end)``
    → [end − start, Wg, C] (of ``dtype``, default float32). Neither the whole grid's values nor a mask's indices
    (numpy turns a boolean mask into int64 indices: 8 to 16 bytes a sample) ever exist at once, only the kept
    values: at 49 MP that is 0.6 GB of points instead of 2 GB at the peak."""
    xp = namespace(keep)
    height, width = keep.shape
    rows_per_block = max(1, BLOCK_SAMPLES // max(width, 1))
    blocks = [(start, min(height, start + rows_per_block)) for start in range(0, height, rows_per_block)]
    count = sum(int(xp.sum(xp.astype(keep[start:end], xp.int32))) for start, end in blocks)  # no [Hg, Wg] int copy
    selected = None
    filled = 0
    for start, end in blocks:
        block = grid_block(start, end)[keep[start:end]]
        if selected is None:
            selected = xp.empty((count, block.shape[1]), dtype=block.dtype if dtype is None else dtype,
                                device=device_of(keep))
        selected[filled:filled + block.shape[0], ...] = block
        filled += block.shape[0]
    if selected is None:  # an empty grid
        selected = xp.empty((0, 3), dtype=xp.float32 if dtype is None else dtype, device=device_of(keep))
    return selected


def grid_colors(rgb, alpha, columns: np.ndarray, rows: np.ndarray):
    """[Hg, Wg, 3] uint8: each grid sample's colour, area-averaged over its block when the grid is coarser than the
    image (no aliasing), ignoring transparent pixels (no dark fringes around cut-outs): PIL's BOX resize of the
    premultiplied image on numpy; on torch the same arithmetic (:func:`converter.torch_kernels.grid_colors`)."""
    height, width = rgb.shape[:2]
    if len(columns) == width and len(rows) == height:
        return rgb
    return kernels(rgb).grid_colors(rgb, alpha, (len(columns), len(rows)))


def take_grid(array, rows: np.ndarray, columns: np.ndarray):
    """``array[np.ix_(rows, columns)]`` for host index arrays, in ``array``'s namespace: a grid's samples, or a
    nearest-neighbour resize with :func:`nearest_indices`."""
    xp = namespace(array)
    taken = xp.take(array, on_device_of(np.asarray(rows, np.int64), array), axis=0)
    return xp.take(taken, on_device_of(np.asarray(columns, np.int64), array), axis=1)


class _NoClock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _no_clock(stage: str) -> _NoClock:
    return _NoClock()
