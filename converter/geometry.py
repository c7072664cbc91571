"""Camera model and back-projection: depth map → 3D points.

Camera model: pinhole, no distortion. Pixel (u, v) is the integer index of a pixel's centre, u to the right,
v down; the principal point defaults to the image centre ((W - 1) / 2, (H - 1) / 2). Depth z is the distance along
the optical axis (not along the ray).

Output frame: right-handed, **y up, camera at the origin looking down −z** (OpenGL / glTF). From the OpenCV camera
frame (x right, y down, z forward) that is a flip of y and z:  x = (u − cx)·z / fx,  y = −(v − cy)·z / fy,  z = −z.

All arrays are float32; shapes are given as [H, W] (image) or [N, 3] (points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
    return depth * np.float32(used_focal_px / made_with_focal_px)


def fov_from_focal(width: int, focal_px: float) -> float:
    """Horizontal field of view in degrees of a focal length of ``focal_px`` over ``width`` pixels."""
    return math.degrees(2.0 * math.atan(width / (2.0 * focal_px)))


def focal_from_fov(width: int, fov_deg: float) -> float:
    """Focal length in pixels that gives a horizontal field of view of ``fov_deg`` over ``width`` pixels."""
    return width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))


def disparity_bounds(
    disparity: np.ndarray, mask: np.ndarray | None = None, percentiles: tuple[float, float] = (2.0, 98.0)
) -> tuple[float, float]:
    """Robust (far, near) disparity levels: the given percentiles over finite values inside ``mask``."""
    disparity = np.asarray(disparity, dtype=np.float32)
    selected = np.isfinite(disparity)
    if mask is not None and (selected & mask).any():
        selected &= mask
    if not selected.any():
        return 0.0, 0.0
    low, high = np.percentile(disparity[selected], percentiles)
    return float(low), float(high)


def disparity_to_depth(
    disparity: np.ndarray, bounds: tuple[float, float], relief: float = DEFAULT_RELIEF, near: float = 1.0
) -> np.ndarray:
    """Relative inverse depth [H, W] → depth [H, W] in relative units, from ``near`` to ``near · (1 + relief)``.

    Relative models (MiDaS, DPT, Depth Anything) predict disparity up to an unknown scale and shift, so no mapping
    is exact. This one is robust: the disparity ``bounds`` (see :func:`disparity_bounds`, 2nd and 98th
    percentiles) become the far and near planes, values beyond them are clamped, and the normalised disparity
    t ∈ [0, 1] is mapped *linearly in inverse depth*, 1/z = t/near + (1 − t)/far, which keeps planes planar under
    the model's own affine-invariant assumption. Non-finite input gives 0 (invalid).
    """
    if relief <= 0:
        raise ValueError("relief must be positive")
    disparity = np.asarray(disparity, dtype=np.float32)
    low, high = bounds
    span = high - low
    far = near * (1.0 + relief)
    if span <= 1e-12 * max(abs(high), 1.0):
        depth = np.full(disparity.shape, near, dtype=np.float32)  # a constant prediction carries no shape
    else:
        t = np.clip((disparity - np.float32(low)) * np.float32(1.0 / span), 0.0, 1.0)
        t *= np.float32(1.0 / near - 1.0 / far)
        t += np.float32(1.0 / far)
        depth = np.reciprocal(t, out=t)
    depth[~np.isfinite(disparity)] = 0.0
    return depth


def valid_depth(depth: np.ndarray) -> np.ndarray:
    """[H, W] bool: finite and strictly positive depth."""
    return np.isfinite(depth) & (depth > 0)


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


def depth_edges(depth: np.ndarray, rtol: float = DEFAULT_EDGE_RTOL) -> np.ndarray:
    """[H, W] bool: pixels on a depth discontinuity ("flying pixels").

    A pixel is on an edge when the depth range in its 3 × 3 neighbourhood exceeds ``rtol`` times its own depth.
    Image-space and linear in the number of pixels, unlike a k-NN outlier search over the cloud. Invalid neighbours
    are ignored (they make holes, not edges).
    """
    depth = np.asarray(depth, dtype=np.float32)
    valid = valid_depth(depth)
    high = np.where(valid, depth, -np.inf).astype(np.float32)
    low = np.where(valid, depth, np.inf).astype(np.float32)
    high = _window_3x3(high, np.maximum, -np.inf)
    low = _window_3x3(low, np.minimum, np.inf)
    with np.errstate(invalid="ignore"):
        edges = (high - low) > np.float32(rtol) * depth
    return edges & valid


def _window_3x3(values: np.ndarray, reduce, fill: float) -> np.ndarray:
    """Separable 3 × 3 max/min filter with ``fill`` outside the image."""
    padded = np.pad(values, 1, constant_values=fill)
    rows = reduce(reduce(padded[:-2, :], padded[1:-1, :]), padded[2:, :])
    return reduce(reduce(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


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


def backproject(depth: np.ndarray, intrinsics: Intrinsics, columns=None, rows=None) -> np.ndarray:
    """Depth [Hg, Wg] sampled at pixel ``columns`` [Wg] and ``rows`` [Hg] → points [Hg, Wg, 3] (y up, −z forward).

    Without ``columns``/``rows`` the depth is the full image. Invalid depth gives non-finite or zero-depth points;
    callers select valid ones with :func:`valid_depth`.
    """
    depth = np.asarray(depth, dtype=np.float32)
    height, width = depth.shape
    if columns is None:
        columns = np.arange(width)
    if rows is None:
        rows = np.arange(height)
    x_over_z = ((np.asarray(columns, np.float64) - intrinsics.cx) / intrinsics.fx).astype(np.float32)
    y_over_z = ((np.asarray(rows, np.float64) - intrinsics.cy) / intrinsics.fy).astype(np.float32)
    points = np.empty((height, width, 3), dtype=np.float32)
    np.multiply(depth, x_over_z[None, :], out=points[:, :, 0])
    np.multiply(depth, -y_over_z[:, None], out=points[:, :, 1])  # image rows go down, y goes up
    np.negative(depth, out=points[:, :, 2])  # the camera looks down −z
    return points


def grid_normals(points: np.ndarray) -> np.ndarray:
    """Unit normals [Hg, Wg, 3] of a grid of points [Hg, Wg, 3], facing the camera (central differences)."""
    du = np.zeros_like(points)
    dv = np.zeros_like(points)
    du[:, 1:-1] = points[:, 2:] - points[:, :-2]
    du[:, 0] = points[:, 1] - points[:, 0] if points.shape[1] > 1 else 0
    du[:, -1] = points[:, -1] - points[:, -2] if points.shape[1] > 1 else 0
    dv[1:-1] = points[2:] - points[:-2]
    dv[0] = points[1] - points[0] if points.shape[0] > 1 else 0
    dv[-1] = points[-1] - points[-2] if points.shape[0] > 1 else 0
    # u goes right and v goes down in the image, so du × dv points away from the camera; flip it.
    normals = np.cross(dv, du).astype(np.float32)
    length = np.linalg.norm(normals, axis=-1, keepdims=True)
    np.divide(normals, length, out=normals, where=length > 0)
    normals[~np.isfinite(normals)] = 0.0
    return normals


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


def relief_heights(depth: np.ndarray, keep: np.ndarray, inverse: bool, relief: float = DEFAULT_RELIEF) -> np.ndarray:
    """Heights [Hg, Wg] float32 of a relief in relative units (image width 1): see the section comment above.

    depth [Hg, Wg]: depth along the axis (0 or non-finite = none). keep [Hg, Wg] bool: the samples that count for the
    normalisation. inverse: the depth came from a relative (inverse-depth) model, so the height is linear in 1/depth.
    Samples outside ``keep`` get height 0.
    """
    depth = np.asarray(depth, dtype=np.float64)
    keep = np.asarray(keep, dtype=bool) & valid_depth(depth)
    heights = np.zeros(depth.shape, dtype=np.float32)
    if not keep.any():
        return heights
    kept = depth[keep]
    signal = 1.0 / kept if inverse else -kept  # grows towards the viewer
    low, high = float(signal.min()), float(signal.max())
    span = high - low
    if span <= 1e-12 * max(abs(high), abs(low), 1e-30):
        return heights
    heights[keep] = ((signal - low) * (RELIEF_HEIGHT * relief / span)).astype(np.float32)
    return heights


def relief_grid(width: int, height: int, columns=None, rows=None) -> tuple[np.ndarray, np.ndarray]:
    """x [Wg] and y [Hg] float64 of the pixel centres of ``columns`` and ``rows`` in relief coordinates."""
    columns = np.arange(width) if columns is None else np.asarray(columns)
    rows = np.arange(height) if rows is None else np.asarray(rows)
    x = (columns.astype(np.float64) + 0.5) / width - 0.5
    y = height / (2.0 * width) - (rows.astype(np.float64) + 0.5) / width
    return x, y


def relief_backproject(
    heights: np.ndarray, image_size: tuple[int, int], columns=None, rows=None
) -> np.ndarray:
    """Heights [Hg, Wg] sampled at pixel ``columns`` [Wg] and ``rows`` [Hg] of an image of ``image_size`` (W, H)
    → points [Hg, Wg, 3] float32 of the height field (x right, y up, z = height towards the viewer)."""
    heights = np.asarray(heights, dtype=np.float32)
    x, y = relief_grid(image_size[0], image_size[1], columns, rows)
    points = np.empty(heights.shape + (3,), dtype=np.float32)
    points[:, :, 0] = x.astype(np.float32)[None, :]
    points[:, :, 1] = y.astype(np.float32)[:, None]
    points[:, :, 2] = heights
    return points


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
