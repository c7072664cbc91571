"""Watertight relief solids for 3D printing (written as binary STL by :func:`converter.exports.mesh_formats.write_stl`).

A conversion becomes a printable relief whatever its mode: the relief height field of its depth
(:func:`converter.geometry.relief_heights`, nearer = higher) on its sampling grid, standing on a flat base.

Construction (vectorised, no per-triangle Python), in millimetres, x right, y up (image top = +y), z up from the
print bed:

* **Top**: one vertex per grid sample at ``z = base_mm + height · width_mm`` (heights are in image widths), two
  triangles per quad, split along the diagonal with the smaller height difference. Samples that are not points
  (transparent pixels, no depth, cleaned edges) lie at ``z = base_mm``: holes become flat base-level regions, so the
  surface has no gaps. The outermost samples are moved to the image border, so the solid covers the full
  ``width_mm × width_mm · H / W`` rectangle.
* **Walls**: the boundary ring of the top, walked counter-clockwise seen from above, joined to a copy of itself at
  ``z = 0`` by two triangles per boundary edge.
* **Bottom**: a fan from the centre of the rectangle at ``z = 0`` to the bottom ring.

Every edge is shared by exactly two triangles and all triangles wind counter-clockwise seen from outside, so
normals (right-hand rule) point outwards and the solid is closed with a positive volume. Grids above
``MAX_STL_SAMPLES`` samples are thinned evenly (every k-th row and column, the last ones always kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import geometry
from ..errors import OptionError

DEFAULT_WIDTH_MM = 100.0
DEFAULT_BASE_MM = 2.0
MAX_STL_SAMPLES = 500_000  # about a million triangles, a 50 MB STL


@dataclass
class Solid:
    """A closed triangle mesh: vertices [N, 3] float64 (mm), faces [F, 3] int64, counter-clockwise from outside."""

    vertices: np.ndarray
    faces: np.ndarray

    def face_normals(self) -> np.ndarray:
        return geometry.face_normals(self.vertices, self.faces)


def check_size(width_mm: float, base_mm: float) -> None:
    for name, value in (("width", width_mm), ("base thickness", base_mm)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not (
            math.isfinite(value) and 0 < value <= 100_000
        ):
            raise OptionError(f"The STL {name} must be a positive number of millimetres.")


def relief_solid(
    heights: np.ndarray,
    image_size: tuple[int, int],
    columns: np.ndarray,
    rows: np.ndarray,
    *,
    width_mm: float = DEFAULT_WIDTH_MM,
    base_mm: float = DEFAULT_BASE_MM,
    max_samples: int = MAX_STL_SAMPLES,
) -> Solid:
    """The printable solid of a height field: ``heights`` [Hg, Wg] in image widths (0 = base level) sampled at
    pixel ``columns`` [Wg] and ``rows`` [Hg] of an image of ``image_size`` (W, H). See the module docstring."""
    check_size(width_mm, base_mm)
    heights = np.asarray(heights, dtype=np.float64)
    columns, rows = np.asarray(columns), np.asarray(rows)
    grid_h, grid_w = heights.shape
    if grid_h < 2 or grid_w < 2:
        raise OptionError("An STL needs a grid of at least 2 × 2 samples: use more points.")
    if max_samples and grid_h * grid_w > max_samples:
        stride = math.ceil(math.sqrt(grid_h * grid_w / max_samples))
        pick_r = np.unique(np.append(np.arange(0, grid_h, stride), grid_h - 1))
        pick_c = np.unique(np.append(np.arange(0, grid_w, stride), grid_w - 1))
        heights, rows, columns = heights[np.ix_(pick_r, pick_c)], rows[pick_r], columns[pick_c]
        grid_h, grid_w = heights.shape
    width, height = image_size
    x, y = geometry.relief_grid(width, height, columns, rows)
    x, y = x + 0.5, y + height / (2.0 * width)  # image rectangle [0, 1] × [0, H/W]
    x[0], x[-1] = 0.0, 1.0  # the outermost samples reach the border: the solid covers the whole rectangle
    y[0], y[-1] = height / width, 0.0
    z = base_mm + np.where(np.isfinite(heights), np.maximum(heights, 0.0), 0.0) * width_mm

    top_count = grid_h * grid_w
    top = np.empty((grid_h, grid_w, 3), dtype=np.float64)
    top[:, :, 0] = (x * width_mm)[None, :]
    top[:, :, 1] = (y * width_mm)[:, None]
    top[:, :, 2] = z

    # Top surface: quads a (top-left), b (top-right), c (bottom-left), d (bottom-right) in image order.
    index = np.arange(top_count, dtype=np.int64).reshape(grid_h, grid_w)
    a, b, c, d = (corner.ravel() for corner in (index[:-1, :-1], index[:-1, 1:], index[1:, :-1], index[1:, 1:]))
    za, zb, zc, zd = (z.ravel()[corner] for corner in (a, b, c, d))
    split_ad = (np.abs(za - zd) < np.abs(zb - zc))[:, None]
    first = np.where(split_ad, np.stack([a, d, b], 1), np.stack([a, c, b], 1))
    second = np.where(split_ad, np.stack([a, c, d], 1), np.stack([b, c, d], 1))
    top_faces = np.concatenate([first, second])

    # Boundary ring, counter-clockwise seen from above: down the left column, along the bottom row, up the right
    # column, back along the top row.
    ring = np.concatenate([
        index[:, 0], index[-1, 1:], index[-2::-1, -1], index[0, -2:0:-1],
    ])
    count = len(ring)
    bottom_ring = top_count + np.arange(count, dtype=np.int64)
    centre = top_count + count
    following = np.roll(np.arange(count), -1)
    t_i, t_j, b_i, b_j = ring, ring[following], bottom_ring, bottom_ring[following]
    walls = np.concatenate([np.stack([t_i, b_i, b_j], 1), np.stack([t_i, b_j, t_j], 1)])
    bottom = np.stack([np.full(count, centre), b_j, b_i], 1)

    vertices = np.concatenate([
        top.reshape(-1, 3),
        np.column_stack([top.reshape(-1, 3)[ring, :2], np.zeros(count)]),
        [[0.5 * width_mm, 0.5 * width_mm * height / width, 0.0]],
    ])
    return Solid(vertices=vertices, faces=np.concatenate([top_faces, walls, bottom]))


def relief_solid_from_result(
    result, *, width_mm: float = DEFAULT_WIDTH_MM, base_mm: float = DEFAULT_BASE_MM,
    max_samples: int = MAX_STL_SAMPLES,
) -> Solid:
    """The printable relief of a :class:`~converter.pipeline.ConversionResult` (its depth as a relief height field,
    whatever mode it used; the heights of relief mode exactly)."""
    return relief_solid(
        result.relief_heights(), (result.image.width, result.image.height), result.grid_columns, result.grid_rows,
        width_mm=width_mm, base_mm=base_mm, max_samples=max_samples,
    )
