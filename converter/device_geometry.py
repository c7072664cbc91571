"""The geometry half of a conversion as torch ops on the model's device: only the final arrays come back.

Same names and the same arithmetic as the numpy reference (:mod:`converter.geometry` and
``converter.pipeline.build_point_cloud``), so that a GPU conversion gives the CPU's cloud: the same kept pixels
(but for ties at the percentile cut), points within float32 rounding, colours within one level. What stays on the
CPU: paper-background removal and drawing detection (they need the decoded image anyway), and the intrinsics choice.
All tensors are on one device; shapes as in :mod:`converter.geometry` ([H, W] image, [Hg, Wg] grid, [N, 3] points).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import geometry
from .depth.depthmap import METRIC
from .depth.tensor_preprocess import pil_pass_sizes
from .geometry import DEFAULT_EDGE_RTOL, DEFAULT_RELIEF, RELIEF_HEIGHT, Intrinsics, relief_grid


@dataclass
class DeviceCloud:
    """What :func:`point_cloud_on_device` hands back, as numpy arrays.

    points [N, 3] float32, colors [N, 3] uint8, normals [N, 3] float32 or None: one per kept grid sample.
    depth [H, W] float32: depth along the axis at image size (0 = none). values [H, W] float32: the prediction at
    image size (bicubic from the native map, as ``DepthMap.resized``). keep [Hg, Wg] bool: which samples are points.
    """

    points: np.ndarray
    colors: np.ndarray
    normals: np.ndarray | None
    depth: np.ndarray
    values: np.ndarray
    keep: np.ndarray


def percentile(values, q: float):
    """numpy's ``percentile(values, q)`` (method 'linear') of a 1-D tensor, exactly: two order statistics by
    ``kthvalue`` (linear time; ``torch.quantile`` refuses more than 16 M values) and numpy's own lerp."""
    import torch

    count = values.numel()
    position = q / 100.0 * (count - 1)
    below = int(np.floor(position))
    above = min(below + 1, count - 1)
    fraction = position - below
    low = torch.kthvalue(values, below + 1).values
    high = low if above == below else torch.kthvalue(values, above + 1).values
    fraction = torch.tensor(fraction, dtype=values.dtype, device=values.device)
    # numpy's _lerp: a + (b − a)·t, computed from b when t ≥ 0.5 so that t = 1 gives b exactly
    difference = high - low
    return torch.where(fraction >= 0.5, high - difference * (1 - fraction), low + difference * fraction)


def disparity_bounds(disparity, mask=None, percentiles: tuple[float, float] = (2.0, 98.0)) -> tuple[float, float]:
    """Robust (far, near) disparity levels: the given percentiles over finite values inside ``mask`` [H, W] bool."""
    import torch

    selected = torch.isfinite(disparity)
    if mask is not None:
        inside = selected & mask
        if bool(inside.any()):
            selected = inside
    values = disparity[selected]
    if values.numel() == 0:
        return 0.0, 0.0
    return float(percentile(values, percentiles[0])), float(percentile(values, percentiles[1]))


def disparity_to_depth(disparity, bounds: tuple[float, float], relief: float = DEFAULT_RELIEF, near: float = 1.0):
    """Relative inverse depth [H, W] → depth [H, W] float32, as :func:`converter.geometry.disparity_to_depth`."""
    import torch

    if relief <= 0:
        raise ValueError("relief must be positive")
    disparity = disparity.float()
    low, high = bounds
    span = high - low
    far = near * (1.0 + relief)
    if span <= 1e-12 * max(abs(high), 1.0):
        depth = torch.full_like(disparity, near)
    else:
        # float32 constants rounded as numpy rounds them, so both give the same bits
        t = ((disparity - float(np.float32(low))) * float(np.float32(1.0 / span))).clamp_(0.0, 1.0)
        t = t * float(np.float32(1.0 / near - 1.0 / far)) + float(np.float32(1.0 / far))
        depth = t.reciprocal_()
    return depth.masked_fill_(~torch.isfinite(disparity), 0.0)


def valid_depth(depth):
    """[H, W] bool: finite and strictly positive depth."""
    import torch

    return torch.isfinite(depth) & (depth > 0)


def depth_edges(depth, rtol: float = DEFAULT_EDGE_RTOL):
    """[H, W] bool: pixels whose 3 × 3 depth range exceeds ``rtol`` × their depth (invalid neighbours ignored)."""
    import torch

    valid = valid_depth(depth)
    high = torch.where(valid, depth, float("-inf"))[None, None]
    low = torch.where(valid, depth, float("inf"))[None, None]
    pool = torch.nn.functional.max_pool2d  # pads with −inf: outside the image counts as no neighbour
    high = pool(high, 3, stride=1, padding=1)[0, 0]
    low = -pool(-low, 3, stride=1, padding=1)[0, 0]
    edges = (high - low) > depth * float(np.float32(rtol))
    return edges & valid


def backproject(depth, intrinsics: Intrinsics, columns: np.ndarray, rows: np.ndarray):
    """Depth [Hg, Wg] at pixel ``columns`` [Wg] and ``rows`` [Hg] → points [Hg, Wg, 3] float32 (y up, −z forward)."""
    import torch

    x_over_z = _small(((np.asarray(columns, np.float64) - intrinsics.cx) / intrinsics.fx).astype(np.float32), depth)
    y_over_z = _small(((np.asarray(rows, np.float64) - intrinsics.cy) / intrinsics.fy).astype(np.float32), depth)
    return torch.stack([depth * x_over_z[None, :], depth * -y_over_z[:, None], -depth], dim=-1)


def grid_normals(points):
    """Unit normals [Hg, Wg, 3] of a grid of points [Hg, Wg, 3], facing the camera (central differences)."""
    import torch

    du = torch.zeros_like(points)
    dv = torch.zeros_like(points)
    if points.shape[1] > 1:
        du[:, 1:-1] = points[:, 2:] - points[:, :-2]
        du[:, 0] = points[:, 1] - points[:, 0]
        du[:, -1] = points[:, -1] - points[:, -2]
    if points.shape[0] > 1:
        dv[1:-1] = points[2:] - points[:-2]
        dv[0] = points[1] - points[0]
        dv[-1] = points[-1] - points[-2]
    normals = torch.linalg.cross(dv, du)  # du × dv points away from the camera; this is its flip
    length = torch.linalg.vector_norm(normals, dim=-1, keepdim=True)
    normals = torch.where(length > 0, normals / length, normals)
    return normals.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def relief_heights(depth, keep, inverse: bool, relief: float = DEFAULT_RELIEF):
    """Heights [Hg, Wg] float32 of the relief (image width 1), as :func:`converter.geometry.relief_heights`:
    float64 arithmetic, normalised over ``keep`` [Hg, Wg] bool; samples outside ``keep`` get 0."""
    import torch

    depth = depth.double()
    keep = keep & valid_depth(depth)
    heights = torch.zeros(depth.shape, dtype=torch.float32, device=depth.device)
    kept = depth[keep]
    if kept.numel() == 0:
        return heights
    signal = 1.0 / kept if inverse else -kept  # grows towards the viewer
    low, high = float(signal.min()), float(signal.max())
    span = high - low
    if span <= 1e-12 * max(abs(high), abs(low), 1e-30):
        return heights
    heights[keep] = ((signal - low) * (RELIEF_HEIGHT * relief / span)).float()
    return heights


def relief_backproject(heights, image_size: tuple[int, int], columns: np.ndarray, rows: np.ndarray):
    """Heights [Hg, Wg] → points [Hg, Wg, 3] float32 of the height field (x right, y up, z = height)."""
    import torch

    x, y = relief_grid(image_size[0], image_size[1], columns, rows)
    x, y = _small(x.astype(np.float32), heights), _small(y.astype(np.float32), heights)
    return torch.stack([x[None, :].expand_as(heights), y[:, None].expand_as(heights), heights], dim=-1)


def grid_colors(rgb, alpha, grid_size: tuple[int, int]):
    """[Hg, Wg, 3] uint8 colours of a grid of ``grid_size`` (Wg, Hg) over rgb [H, W, 3] uint8, area-averaged over
    each block like PIL's BOX resize; with alpha [H, W] uint8, premultiplied so transparent pixels add nothing (as
    ``converter.pipeline._grid_colors``). The grid at full image size gives the pixels themselves."""
    import torch

    height, width = rgb.shape[:2]
    if grid_size == (width, height):
        return rgb
    image = rgb.permute(2, 0, 1).long()  # [3, H, W] in PIL's integer arithmetic
    if alpha is not None:
        a = alpha.long()[None]
        image = torch.cat([_muldiv255(image, a), a])  # PIL "RGBa": premultiplied, rounded to uint8
    for step in pil_pass_sizes(height, width, (grid_size[1], grid_size[0])):
        image = _box_resize(image, step)
    if alpha is not None:  # back to straight alpha as PIL does: truncating 255·c/a, clipped; a = 0 or 255 → as is
        a = image[3:]
        divided = torch.div(image[:3] * 255, a.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
        image = torch.where((a > 0) & (a < 255), divided, image[:3])
    return image.permute(1, 2, 0).to(torch.uint8)


def point_cloud_on_device(rgb, alpha, native, *, kind: str, user_depth: bool, options, intrinsics: Intrinsics,
                          columns: np.ndarray, rows: np.ndarray, values=None) -> DeviceCloud:
    """``converter.pipeline.build_point_cloud`` on tensors, minus paper removal, drawing detection and intrinsics.

    rgb [H, W, 3] uint8, alpha [H, W] uint8 or None (after paper removal), native [h, w] float32 (the model's or the
    user's map at its own resolution), all on one device. kind: METRIC or INVERSE_RELATIVE; user_depth: the map is
    the user's (its zeros, NaN and inf mean "no depth"; resized with nearest neighbours). options: ConversionOptions;
    columns [Wg], rows [Hg]: ``geometry.pixel_grid``. values [H, W]: the map at the image's size when the model's
    post-processing made it otherwise than by a bicubic resize of ``native`` (Depth Pro); None: made here.
    Returns numpy arrays (see :class:`DeviceCloud`).
    """
    import torch

    with torch.inference_mode():
        height, width = rgb.shape[:2]
        native = native.float()
        values = _values_at(native, height, width, user_depth) if values is None else values.float()
        opaque = None if alpha is None else alpha > 0
        depth, native_depth = _to_depth(values, native, kind, user_depth, opaque, options.relief)
        rows_t, columns_t = _small(rows, depth, torch.int64), _small(columns, depth, torch.int64)
        grid_depth = depth.index_select(0, rows_t).index_select(1, columns_t)
        keep = valid_depth(grid_depth)
        if alpha is not None:
            keep &= alpha.index_select(0, rows_t).index_select(1, columns_t) > 0
        if options.drop_background_percent > 0 and bool(keep.any()):
            kept_depth = grid_depth[keep]
            cut = percentile(kept_depth, 100.0 - options.drop_background_percent)
            if bool(cut > kept_depth.min()):  # pixels tied with the cut go too: a flat far wall goes as a whole
                keep &= grid_depth < cut
        if options.clean:
            edges = depth_edges(native_depth, options.edge_rtol)
            native_h, native_w = native_depth.shape
            native_rows = geometry.nearest_indices(native_h, height)[rows]
            native_columns = geometry.nearest_indices(native_w, width)[columns]
            keep &= ~edges.index_select(0, _small(native_rows, depth)).index_select(1, _small(native_columns, depth))
        if options.mode == "relief":
            heights = relief_heights(grid_depth, keep, kind != METRIC, options.relief)
            grid_points = relief_backproject(heights, (width, height), columns, rows)
        else:
            grid_points = backproject(grid_depth, intrinsics, columns, rows)
        colors = grid_colors(rgb, alpha, (len(columns), len(rows)))
        normals = grid_normals(grid_points)[keep] if options.normals else None
        return DeviceCloud(
            points=_numpy(grid_points[keep]), colors=_numpy(colors[keep]),
            normals=None if normals is None else _numpy(normals), depth=_numpy(depth), values=_numpy(values),
            keep=_numpy(keep),
        )


def _values_at(native, height: int, width: int, user_depth: bool):
    """The prediction at image size, as ``DepthMap.resized``: bicubic for a model, nearest for a user's map."""
    import torch

    if tuple(native.shape) == (height, width):
        return native
    if user_depth:
        h, w = native.shape
        rows, columns = geometry.nearest_indices(h, height), geometry.nearest_indices(w, width)
        return native.index_select(0, _small(rows, native)).index_select(1, _small(columns, native))
    return torch.nn.functional.interpolate(native[None, None], size=(height, width), mode="bicubic",
                                           align_corners=False)[0, 0]


def _to_depth(values, native, kind: str, user_depth: bool, opaque, relief: float):
    """Depth along the axis at image size and at native size, as ``converter.pipeline._to_depth``."""
    import torch

    if kind == METRIC:
        return (torch.where(valid_depth(values), values, 0.0), torch.where(valid_depth(native), native, 0.0))
    mask = opaque
    if user_depth:  # its "no depth" zeros must not become the far plane
        mask = values > 0 if opaque is None else opaque & (values > 0)
    bounds = disparity_bounds(values, mask)
    depth = disparity_to_depth(values, bounds, relief)
    native_depth = disparity_to_depth(native, bounds, relief)
    if user_depth:
        depth.masked_fill_(~(torch.isfinite(values) & (values > 0)), 0.0)
        native_depth.masked_fill_(~(torch.isfinite(native) & (native > 0)), 0.0)
    return depth, native_depth


_PRECISION_BITS = 22  # PIL's fixed point for 8-bit resampling (Resample.c: 32 − 8 − 2)


def _box_weights(size_in: int, size_out: int, device):
    """PIL's BOX filter taps for one axis, in its fixed point: indices and int64 weights [size_out, K]. Each output
    averages the input pixels whose centres its box covers (out-of-range taps weigh 0)."""
    import torch

    scale = size_in / size_out
    support = 0.5 * max(scale, 1.0)  # PIL: filter support × filterscale (no narrower than a pixel when enlarging)
    centre = (np.arange(size_out) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # PIL: (int)(center - support + 0.5)
    last = np.minimum((centre + support + 0.5).astype(np.int64), size_in)
    taps = int((last - first).max())
    index = first[:, None] + np.arange(taps)[None, :]
    x = (index - centre[:, None] + 0.5) / max(scale, 1.0)  # PIL: filter((x + xmin - center + 0.5) * ss)
    weight = ((x > -0.5) & (x <= 0.5) & (index < last[:, None])).astype(np.float64)
    weight /= weight.sum(axis=1, keepdims=True)
    fixed = (0.5 + weight * (1 << _PRECISION_BITS)).astype(np.int64)  # weights are ≥ 0: PIL's rounding
    index = np.minimum(index, size_in - 1)
    return torch.as_tensor(index, device=device), torch.as_tensor(fixed, device=device)


def _box_resize(image, size: tuple[int, int]):
    """[C, H, W] int64 uint8 levels → [C, h, w], one axis at a time in PIL's integer arithmetic (so a later
    un-premultiplication, which divides by small alphas, amplifies no rounding difference)."""
    for axis, (size_in, size_out) in ((2, (image.shape[2], size[1])), (1, (image.shape[1], size[0]))):
        if size_in == size_out:
            continue
        index, weight = _box_weights(size_in, size_out, image.device)
        gathered = image.index_select(axis, index.reshape(-1))
        if axis == 2:
            gathered = gathered.reshape(image.shape[0], image.shape[1], size_out, -1)
            total = (gathered * weight).sum(-1)
        else:
            gathered = gathered.reshape(image.shape[0], size_out, -1, image.shape[2])
            total = (gathered * weight[:, :, None]).sum(2)
        image = ((total + (1 << (_PRECISION_BITS - 1))) >> _PRECISION_BITS).clamp_(0, 255)
    return image


def _muldiv255(channels, alpha):
    """PIL's premultiplication, c·a/255 rounded as its MULDIV255 macro does it (int64 tensors)."""
    product = channels * alpha + 128
    return (product + (product >> 8)) >> 8


def _small(array: np.ndarray, like, dtype=None):
    """A small host array (indices, per-column factors) on ``like``'s device."""
    import torch

    return torch.as_tensor(np.ascontiguousarray(array), device=like.device, dtype=dtype)


def _numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()
