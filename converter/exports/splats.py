"""Gaussian splats from the pixel grid: one flat, coloured 3D Gaussian per kept sample, written as a ``.splat.ply``
in the 3D Gaussian Splatting convention (Kerbl et al. 2023) that splat viewers and editors read.

**Position** is the sample's point of the cloud (splat ``i`` is ``result.points[i]``), in the same axes and units as
every other file (y up, camera at the origin looking down −z; or the relief's height field).

**Shape.** A sample stands for one grid cell of the image: ``W / Wg`` × ``H / Hg`` pixels. Its tangents ``t_u`` and
``t_v`` are the 3D steps to the next sample along the grid's columns and rows (central differences of the grid's
points, one-sided next to a hole or a depth discontinuity; on its own, the cell as seen at its depth,
``step · depth / focal``), so they span the piece of surface that the cell shows. The Gaussian lies in their plane
(its normal is the surface normal, facing the camera) with covariance ``k² (t_u t_uᵀ + t_v t_vᵀ)``, ``k =``
:data:`FOOTPRINT_SIGMA`: a fronto-parallel cell of side ``a`` gets ``σ = k · a`` in both directions, a slanted one
is stretched along the slope exactly as much as the surface is. Seen from the original camera every Gaussian
therefore covers its own cell, ``k · cell`` pixels wide whatever the depth, and neighbours overlap so the surface
closes; seen from a little aside, the Gaussians turn with the surface they lie on instead of staying camera-facing
discs, so the surface stays closed and sharpens or blurs gracefully rather than opening cracks. Its thickness
along the normal is :data:`THICKNESS` of its smaller in-plane size (flat, but never a zero scale, which has no
logarithm). Two samples count as one surface by the mesh's rule (:mod:`converter.mesh`): their depth ratio within
``1 + (max_depth_ratio − 1) · spacing``.

**Stored as** 3DGS stores it: ``scale_0..2`` are natural logarithms of the standard deviations along the
Gaussian's own axes, ``rot_0..3`` the unit quaternion (w, x, y, z) turning those axes into the scene's,
``opacity`` the logit of :data:`OPACITY` (times the picture's alpha at the sample), ``f_dc_0..2`` the colour as the
degree-0 spherical-harmonic coefficient, ``(rgb − 0.5) / C0`` with rgb the sRGB colour in [0, 1]. No view-dependent
colour (no ``f_rest_*``: degree 0), ``nx ny nz`` the unit normal. All properties are float32, binary little-endian.

**Relief mode** is the same on the height field: the cells are 1/Wg of the image width, tangents come from the
height field, and the "original camera" is the orthographic view from +z that shows the picture.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .. import geometry
from ..mesh import DEFAULT_MAX_DEPTH_RATIO
from . import files as export

SH_C0 = 0.28209479177387814  # the degree-0 spherical harmonic, 1 / (2 √π): colour = 0.5 + SH_C0 · f_dc
FOOTPRINT_SIGMA = 0.6  # σ per grid cell: neighbours overlap enough to close the surface at any zoom, little blur
OPACITY = 0.98  # per splat, before the picture's alpha: nearly opaque, a finite logit
THICKNESS = 0.01  # σ along the normal per σ in the plane: flat
PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


@dataclass
class Splats:
    """N Gaussians: centres [N, 3] float32, normals [N, 3] float32 unit, scales [N, 3] float32 standard deviations
    (linear, in the result's units) along the axes of rotations [N, 4] float32 unit quaternions (w, x, y, z),
    colors [N, 3] uint8 sRGB, opacities [N] float32 in (0, 1)."""

    centres: np.ndarray
    normals: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    colors: np.ndarray
    opacities: np.ndarray

    def __len__(self) -> int:
        return len(self.centres)


def splats_from_result(result, max_depth_ratio: float = DEFAULT_MAX_DEPTH_RATIO) -> Splats:
    """The splats of a :class:`~converter.pipeline.ConversionResult` (module docstring), splat i at point i."""
    keep = result.keep
    grid = np.zeros(keep.shape + (3,), dtype=np.float32)
    grid[keep] = result.points  # the cloud's own points: known-length scaling and relief heights included
    depth = result.grid_depth().astype(np.float32)
    rows, columns = np.asarray(result.grid_rows), np.asarray(result.grid_columns)
    width, height = result.image.width, result.image.height
    cell_u, cell_v = width / len(columns), height / len(rows)  # pixels per grid cell
    same = _same_surface(keep, depth, rows, columns, max_depth_ratio)
    t_u = _tangent(grid, same[0], axis=1)
    t_v = _tangent(grid, same[1], axis=0)
    if result.mode == "relief":  # the height field seen from +z: a cell is cell/W of the unit-wide image
        factor = result.scale["factor"] if result.scale else 1.0  # a known length scaled the points
        across, down = np.full(len(result.points), factor * cell_u / width), np.full(len(result.points),
                                                                                     factor * cell_v / width)
    else:  # the cell seen at the sample's depth, facing the camera
        k = result.intrinsics
        across, down = depth[keep] * (cell_u / k.fx), depth[keep] * (cell_v / k.fy)
    zero = np.zeros_like(across)
    seen_u = np.column_stack([across, zero, zero]).astype(np.float32)
    seen_v = np.column_stack([zero, -down, zero]).astype(np.float32)  # rows go down the picture, y goes up
    t_u, t_v = t_u[keep], t_v[keep]
    t_u = np.where(np.isfinite(t_u[:, :1]), t_u, seen_u)  # no neighbour on that axis: the cell as seen
    t_v = np.where(np.isfinite(t_v[:, :1]), t_v, seen_v)
    # t_v follows the rows, which go down the picture: t_v × t_u faces the camera (+z).
    normal = np.cross(t_v, t_u)
    lengths = np.linalg.norm(t_u, axis=1) * np.linalg.norm(t_v, axis=1)
    lonely = ~(np.linalg.norm(normal, axis=1) > 1e-3 * lengths)[:, None]  # the tangents are (nearly) parallel
    t_u, t_v = np.where(lonely, seen_u, t_u), np.where(lonely, seen_v, t_v)
    normal = np.where(lonely, np.cross(seen_v, seen_u), normal)
    scales, rotations, normal = _plane_gaussians(t_u, t_v, normal, FOOTPRINT_SIGMA)
    return Splats(centres=result.points.astype(np.float32), normals=normal, scales=scales, rotations=rotations,
                  colors=result.colors, opacities=OPACITY * _grid_alpha(result)[keep])


def _same_surface(keep, depth, rows, columns, max_depth_ratio) -> tuple[np.ndarray, np.ndarray]:
    """([Hg, Wg − 1], [Hg − 1, Wg]) bool: whether each sample and its right / lower neighbour are one surface."""
    valid = keep & geometry.valid_depth(depth)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_u = np.maximum(depth[:, 1:], depth[:, :-1]) / np.minimum(depth[:, 1:], depth[:, :-1])
        ratio_v = np.maximum(depth[1:], depth[:-1]) / np.minimum(depth[1:], depth[:-1])
    step_u = np.diff(columns).astype(np.float32)[None, :]
    step_v = np.diff(rows).astype(np.float32)[:, None]
    across = (ratio_u <= 1 + (max_depth_ratio - 1) * step_u) & valid[:, 1:] & valid[:, :-1]
    down = (ratio_v <= 1 + (max_depth_ratio - 1) * step_v) & valid[1:] & valid[:-1]
    return across, down


def _tangent(grid: np.ndarray, joined: np.ndarray, axis: int) -> np.ndarray:
    """[Hg, Wg, 3]: the 3D step per grid sample along ``axis`` (1: columns, 0: rows), central where both neighbours
    are on the same surface (``joined``: each sample with its next one), one-sided where one is, NaN where none."""
    step = np.where(joined[..., None], np.diff(grid, axis=axis), np.float32(np.nan))
    pad = [(0, 0), (0, 0), (0, 0)]
    pad[axis] = (1, 0)
    before = np.pad(step, pad, constant_values=np.nan)  # from the previous sample
    pad[axis] = (0, 1)
    after = np.pad(step, pad, constant_values=np.nan)  # to the next sample
    both = np.isfinite(before[..., 0]) & np.isfinite(after[..., 0])
    tangent = np.where(np.isfinite(before), before, after)
    tangent[both] = 0.5 * (before[both] + after[both])
    return tangent.astype(np.float32)


def _plane_gaussians(t_u, t_v, normal, sigma: float):
    """Per splat, the Gaussian with covariance σ² (t_u t_uᵀ + t_v t_vᵀ) in the plane of t_u, t_v [N, 3]:
    (scales [N, 3], quaternions [N, 4] (w, x, y, z), unit normals [N, 3])."""
    n = _unit(normal)
    e1 = _unit(t_u)
    e2 = np.cross(n, e1)
    # t_u = (a, 0), t_v = (b, c) in the orthonormal in-plane basis (e1, e2): M = σ² (a² + b², bc; bc, c²).
    a = np.linalg.norm(t_u, axis=1)
    b, c = np.einsum("ij,ij->i", t_v, e1), np.einsum("ij,ij->i", t_v, e2)
    m00, m01, m11 = sigma ** 2 * (a * a + b * b), sigma ** 2 * (b * c), sigma ** 2 * (c * c)
    theta = 0.5 * np.arctan2(2.0 * m01, m00 - m11)
    mean, spread = 0.5 * (m00 + m11), np.sqrt((0.5 * (m00 - m11)) ** 2 + m01 ** 2)
    major, minor = np.sqrt(mean + spread), np.sqrt(np.maximum(mean - spread, 0.0))
    minor = np.maximum(minor, 1e-3 * major)  # a degenerate cell still gets a width
    # The Gaussian's own x axis is the major direction, turned θ from e1 in the plane; its z axis is the normal.
    axis_x = np.cos(theta)[:, None] * e1 + np.sin(theta)[:, None] * e2
    axis_y = np.cross(n, axis_x)
    rotations = _quaternions(axis_x, axis_y, n)
    scales = np.column_stack([major, minor, THICKNESS * minor]).astype(np.float32)
    return scales, rotations.astype(np.float32), n.astype(np.float32)


def _quaternions(x_axis: np.ndarray, y_axis: np.ndarray, z_axis: np.ndarray) -> np.ndarray:
    """The rotations whose columns are the unit axes [N, 3] → unit quaternions [N, 4] (w, x, y, z), w ≥ 0. Each
    row is built from the largest of its four squared components, so it is stable for every rotation."""
    (m00, m10, m20), (m01, m11, m21), (m02, m12, m22) = x_axis.T, y_axis.T, z_axis.T
    trace = m00 + m11 + m22
    squares = [1 + trace, 1 + 2 * m00 - trace, 1 + 2 * m11 - trace, 1 + 2 * m22 - trace]  # 4 w², 4 x², 4 y², 4 z²
    largest = np.argmax(np.stack(squares, axis=1), axis=1)
    wx, wy, wz = m21 - m12, m02 - m20, m10 - m01  # 4 w x, 4 w y, 4 w z
    xy, xz, yz = m01 + m10, m02 + m20, m12 + m21  # 4 x y, 4 x z, 4 y z
    # Row by row, 4 q_largest · (w, x, y, z): proportional to the quaternion, so normalising gives it.
    q = np.stack([np.choose(largest, [squares[0], wx, wy, wz]), np.choose(largest, [wx, squares[1], xy, xz]),
                  np.choose(largest, [wy, xy, squares[2], yz]), np.choose(largest, [wz, xz, yz, squares[3]])], axis=1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    return q


def _grid_alpha(result) -> np.ndarray:
    """[Hg, Wg] float32 in [0, 1]: the picture's alpha averaged over each grid cell (1 without alpha)."""
    alpha = result.image.alpha
    rows, columns = result.grid_rows, result.grid_columns
    if alpha is None:
        return np.ones((len(rows), len(columns)), dtype=np.float32)
    if len(rows) == result.image.height and len(columns) == result.image.width:
        return alpha.astype(np.float32) / 255.0
    reduced = Image.fromarray(alpha, "L").resize((len(columns), len(rows)), Image.Resampling.BOX)
    return np.asarray(reduced, dtype=np.float32) / 255.0


def splat_records(splats: Splats) -> np.ndarray:
    """The splats as one structured array of float32 PLY properties :data:`PROPERTIES`, stored as 3DGS stores them
    (log scales, logit opacity, SH DC colour)."""
    records = np.empty(len(splats), dtype=[(name, "<f4") for name in PROPERTIES])
    for axis, name in enumerate("xyz"):
        records[name] = splats.centres[:, axis]
        records["n" + name] = splats.normals[:, axis]
    rgb = splats.colors.astype(np.float32) / 255.0
    for channel in range(3):
        records[f"f_dc_{channel}"] = (rgb[:, channel] - 0.5) / SH_C0
        records[f"scale_{channel}"] = np.log(splats.scales[:, channel])
    opacity = np.clip(splats.opacities.astype(np.float64), 1e-6, 1 - 1e-6)
    records["opacity"] = np.log(opacity / (1.0 - opacity))
    for index in range(4):
        records[f"rot_{index}"] = splats.rotations[:, index]
    return records


def write_splat_ply(path: str | os.PathLike, splats: Splats, comments=()) -> None:
    """Binary little-endian PLY, one ``vertex`` per Gaussian with the float properties :data:`PROPERTIES`."""
    records = splat_records(splats)
    header = export.ply_header(comments, [("vertex", len(records), [f"property float {name}" for name in PROPERTIES])])
    with export.atomic_output(path) as temporary, open(temporary, "wb") as handle:
        handle.write(header)
        export.write_array(handle, records)


def _unit(vectors: np.ndarray) -> np.ndarray:
    length = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, length, out=np.zeros_like(vectors), where=length > 0)

