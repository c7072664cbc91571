"""Triangle meshes from the regular pixel grid of a conversion.

A conversion samples the image on a regular grid (``grid_rows`` × ``grid_columns``) and keeps some samples as
points. The grid makes triangulation free: every quad of four neighbouring samples gives two triangles. This
module builds those triangles, vectorised (no per-face Python), and never joins what should stay apart:

* **Holes.** A triangle needs all three corners kept, so transparent pixels, pixels without depth and pixels the
  cleaning step removed leave holes instead of being bridged.
* **Depth discontinuities.** A triangle is dropped when ``max(depth) / min(depth)`` over its corners exceeds
  ``1 + (max_depth_ratio − 1) · step``, where ``step`` is the grid spacing of its quad in image pixels (the larger
  of the row and column spacing). The default ``max_depth_ratio`` of 1.05 allows a 5 % depth change between
  neighbouring *pixels*. Scaling with the spacing keeps the rule the same whatever ``max_points`` is: across a
  continuous slanted surface (a floor, a wall seen at an angle) the depth ratio between two samples grows
  linearly with the number of pixels between them, while a true discontinuity (an object in front of a wall)
  jumps by far more than that. With depth from a relative model (relief 1: depths 1 … 2) an edge smeared over a
  few pixels still exceeds 5 % per pixel. At full resolution of a 1000-pixel-wide image, a floor 1.5 m below a level
  60° camera is meshed out to about 65 m before neighbouring rows are more than 5 % apart.
* **Diagonal.** Each quad is split along the diagonal that keeps more valid triangles (a quad with one corner
  missing or across an edge still gives one triangle); when both keep the same number, along the diagonal with
  the smaller depth difference (the better fit to a crease).

**Vertices are the point cloud.** Vertex ``i`` is point ``i`` of the cloud (``grid_points[keep]`` in row-major
order), with the same colour; unreferenced vertices (isolated points) are kept so that indices match the cloud.

**Winding.** Triangles are counter-clockwise seen from the camera, so their normals (right-hand rule) face the
camera (+z side for the y-up, −z-forward frame of :mod:`converter.geometry`).

**Texture coordinates.** ``uvs[i] = ((col + 0.5) / W, 1 − (row + 0.5) / H)``: the centre of the image pixel that
vertex ``i`` was back-projected from, in the OpenGL / OBJ convention (origin at the *bottom*-left of the image,
v up), which is what OBJ's ``vt`` and trimesh use. glTF puts the origin at the *top*-left, so the GLB writer
stores ``1 − v`` (see :mod:`converter.exports.mesh_formats`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import geometry

DEFAULT_MAX_DEPTH_RATIO = 1.05
MAX_TEXTURE_SIZE = 8192  # the largest texture most GPUs and WebGL viewers accept


@dataclass
class Mesh:
    """A triangle mesh on the pixel grid.

    vertices [N, 3] float32 (y up, camera looking down −z), faces [F, 3] uint32 (counter-clockwise seen from the
    camera), colors [N, 3] uint8, uvs [N, 2] float32 (OpenGL/OBJ convention, origin bottom-left; see the module
    docstring), normals [N, 3] float32 unit vertex normals facing the camera, or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray
    uvs: np.ndarray
    normals: np.ndarray | None = None

    def __post_init__(self):
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.uint32).reshape(-1, 3)
        self.colors = np.ascontiguousarray(self.colors, dtype=np.uint8)
        self.uvs = np.ascontiguousarray(self.uvs, dtype=np.float32)
        count = len(self.vertices)
        if self.vertices.shape != (count, 3) or self.colors.shape != (count, 3) or self.uvs.shape != (count, 2):
            raise ValueError("vertices, colors and uvs must be [N, 3], [N, 3] and [N, 2] with the same N")
        if self.normals is not None:
            self.normals = np.ascontiguousarray(self.normals, dtype=np.float32)
            if self.normals.shape != (count, 3):
                raise ValueError("normals must be [N, 3]")
        if len(self.faces) and int(self.faces.max()) >= count:
            raise ValueError("a face refers to a vertex that does not exist")

    @property
    def vertex_count(self) -> int:
        return len(self.vertices)

    @property
    def face_count(self) -> int:
        return len(self.faces)

    def face_normals(self) -> np.ndarray:
        """[F, 3] float32 unit normals of the faces (right-hand rule: facing the camera)."""
        return geometry.face_normals(self.vertices, self.faces)


def build_mesh(
    grid_points: np.ndarray,
    keep: np.ndarray,
    rows: np.ndarray,
    columns: np.ndarray,
    image_size: tuple[int, int],
    colors: np.ndarray,
    *,
    depth: np.ndarray | None = None,
    max_depth_ratio: float = DEFAULT_MAX_DEPTH_RATIO,
    normals: bool = False,
) -> Mesh:
    """Triangulate a grid of back-projected points.

    grid_points [Hg, Wg, 3]: the points of every grid sample (only kept ones are read). keep [Hg, Wg] bool: which
    samples are vertices (vertex i = i-th True in row-major order). rows [Hg], columns [Wg]: the image pixels
    sampled. image_size: (width, height) of the image, for the texture coordinates. colors: [N, 3] (one per kept
    sample) or [Hg, Wg, 3] uint8. depth [Hg, Wg]: depth along the axis (default: −z of the points).
    max_depth_ratio: the discontinuity threshold per pixel of spacing (module docstring). normals: also compute
    area-weighted vertex normals.
    """
    grid_points = np.asarray(grid_points, dtype=np.float32)
    keep = np.asarray(keep, dtype=bool)
    if grid_points.shape != keep.shape + (3,):
        raise ValueError("grid_points must be [Hg, Wg, 3] and keep [Hg, Wg]")
    depth = -grid_points[:, :, 2] if depth is None else depth
    colors = np.asarray(colors, dtype=np.uint8)
    if colors.ndim == 3 and colors.shape[:2] == keep.shape:
        colors = colors[keep]
    return mesh_on_grid(grid_points[keep], keep, rows, columns, image_size, colors, depth=depth,
                        max_depth_ratio=max_depth_ratio, normals=normals)


def mesh_on_grid(
    vertices: np.ndarray,
    keep: np.ndarray,
    rows: np.ndarray,
    columns: np.ndarray,
    image_size: tuple[int, int],
    colors: np.ndarray,
    *,
    depth: np.ndarray,
    max_depth_ratio: float = DEFAULT_MAX_DEPTH_RATIO,
    normals: bool = False,
) -> Mesh:
    """Triangulate the kept samples of a grid whose points are already flattened: vertices [N, 3] and colors [N, 3]
    are the kept samples in row-major order (a conversion's cloud as it is), keep [Hg, Wg] says where they sit,
    depth [Hg, Wg] is the depth along the axis on the grid. See :func:`build_mesh`."""
    keep = np.asarray(keep, dtype=bool)
    grid_h, grid_w = keep.shape
    rows = np.asarray(rows)
    columns = np.asarray(columns)
    if rows.shape != (grid_h,) or columns.shape != (grid_w,):
        raise ValueError("rows must be [Hg] and columns [Wg]")
    depth = np.asarray(depth, dtype=np.float32)
    width, height = image_size
    kept_rows, kept_columns = np.nonzero(keep)
    uvs = np.empty((len(kept_rows), 2), dtype=np.float32)
    uvs[:, 0] = (columns[kept_columns] + 0.5) / width
    uvs[:, 1] = 1.0 - (rows[kept_rows] + 0.5) / height
    faces = triangulate_grid(keep, depth, rows, columns, max_depth_ratio)
    mesh = Mesh(vertices=vertices, faces=faces, colors=colors, uvs=uvs)
    if normals:
        mesh.normals = vertex_normals(mesh.vertices, mesh.faces)
    return mesh


def mesh_from_result(result, *, max_depth_ratio: float = DEFAULT_MAX_DEPTH_RATIO, normals: bool | None = None) -> Mesh:
    """The mesh of a :class:`~converter.pipeline.ConversionResult`: its points and colours as vertices (vertex i is
    ``result.points[i]``), triangulated on its grid. ``normals``: default, whether the conversion asked for them."""
    if normals is None:
        normals = bool(getattr(result.options, "normals", False))
    return mesh_on_grid(
        result.points, result.keep, result.grid_rows, result.grid_columns, (result.image.width, result.image.height),
        result.colors, depth=result.grid_depth(), max_depth_ratio=max_depth_ratio, normals=normals,
    )


FACE_BLOCK_QUADS = 1 << 20  # quads turned into faces at a time


def triangulate_grid(
    keep: np.ndarray,
    depth: np.ndarray,
    rows: np.ndarray | None = None,
    columns: np.ndarray | None = None,
    max_depth_ratio: float = DEFAULT_MAX_DEPTH_RATIO,
) -> np.ndarray:
    """Faces [F, 3] uint32 over a grid: indices into the kept samples in row-major order, counter-clockwise seen from
    the camera, at most two per quad, in row-major quad order. See the module docstring for the rules."""
    if not (np.isfinite(max_depth_ratio) and max_depth_ratio >= 1.0):
        raise ValueError("max_depth_ratio must be a number of at least 1")
    keep = np.asarray(keep, dtype=bool)
    grid_h, grid_w = keep.shape
    if grid_h < 2 or grid_w < 2:
        return np.empty((0, 3), dtype=np.uint32)
    depth = np.asarray(depth, dtype=np.float32)
    usable = keep & geometry.valid_depth(depth)
    # Each kept sample's place among the kept ones (row-major); other entries are never read (faces use kept corners).
    index = np.cumsum(keep.ravel(), dtype=np.uint32).reshape(keep.shape)
    index -= np.uint32(1)

    # Quad corners, each [Hg-1, Wg-1]: a top-left, b top-right, c bottom-left, d bottom-right (image rows go down).
    def corners(array):
        return array[:-1, :-1], array[:-1, 1:], array[1:, :-1], array[1:, 1:]

    use_a, use_b, use_c, use_d = corners(usable)
    za, zb, zc, zd = (np.where(u, z, np.float32(np.nan)) for u, z in zip(corners(usable), corners(depth)))

    # The allowed max/min depth ratio of each quad grows with its spacing in pixels.
    row_step = np.diff(rows).astype(np.float32) if rows is not None else np.ones(grid_h - 1, np.float32)
    column_step = np.diff(columns).astype(np.float32) if columns is not None else np.ones(grid_w - 1, np.float32)
    step = np.maximum(row_step[:, None], column_step[None, :])
    tolerance = np.float32(1.0) + np.float32(max_depth_ratio - 1.0) * step

    def fits(u, v, w, zu, zv, zw):
        # All three corners usable and max ≤ tolerance · min (NaN for unusable corners makes the test false).
        with np.errstate(invalid="ignore"):
            low = np.fmin(np.fmin(zu, zv), zw)
            high = np.fmax(np.fmax(zu, zv), zw)
            return u & v & w & (high <= tolerance * low)

    # Split along b–c: triangles (a, c, b) and (b, c, d). Split along a–d: (a, c, d) and (a, d, b).
    # In the image (x right, y down) these run clockwise, which is counter-clockwise seen from the camera (y up).
    t_acb = fits(use_a, use_c, use_b, za, zc, zb)
    t_bcd = fits(use_b, use_c, use_d, zb, zc, zd)
    t_acd = fits(use_a, use_c, use_d, za, zc, zd)
    t_adb = fits(use_a, use_d, use_b, za, zd, zb)
    count_bc = t_acb.astype(np.int8) + t_bcd
    count_ad = t_acd.astype(np.int8) + t_adb
    with np.errstate(invalid="ignore"):
        shorter_ad = np.abs(za - zd) < np.abs(zb - zc)
    split_ad = (count_ad > count_bc) | ((count_ad == count_bc) & shorter_ad)

    # One flag per quad and candidate triangle, in the order (a, c, b), (b, c, d), (a, c, d), (a, d, b); the flagged
    # ones, found in row-major quad order, become faces through the corners' offsets in the flattened grid.
    chosen = np.stack([t_acb & ~split_ad, t_bcd & ~split_ad, t_acd & split_ad, t_adb & split_ad], axis=-1)
    a, b, c, d = 0, 1, grid_w, grid_w + 1
    offsets = np.array([[a, c, b], [b, c, d], [a, c, d], [a, d, b]], dtype=np.int64)
    # A block of quad rows at a time: the flags' int64 indices and corner offsets (about 160 bytes a face) exist for
    # one block only, and each block's faces go straight into the result.
    faces = np.empty((int(np.count_nonzero(chosen)), 3), dtype=np.uint32)
    flat_index = index.ravel()
    rows_per_block = max(1, FACE_BLOCK_QUADS // (grid_w - 1))
    filled = 0
    for start in range(0, grid_h - 1, rows_per_block):
        quad_rows, quad_columns, kind = np.nonzero(chosen[start:start + rows_per_block])
        top_left = (quad_rows.astype(np.int64) + start) * grid_w + quad_columns
        block = flat_index[top_left[:, None] + offsets[kind]]
        faces[filled:filled + len(block)] = block
        filled += len(block)
    return faces


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """[N, 3] float32 area-weighted unit vertex normals; a vertex in no face gets the direction to the camera."""
    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces).reshape(-1, 3).astype(np.intp)
    count = len(vertices)
    cross = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    sums = np.zeros((count, 3), dtype=np.float64)
    for axis in range(3):  # three bincounts: per component, not per face
        weights = np.repeat(cross[:, axis], 3)
        sums[:, axis] = np.bincount(faces.ravel(), weights=weights, minlength=count)
    normals = sums.astype(np.float32)
    lonely = ~np.any(normals != 0, axis=1)
    normals[lonely] = -vertices[lonely]  # towards the camera at the origin
    normals = _normalize(normals)
    normals[~np.any(normals != 0, axis=1)] = (0.0, 0.0, 1.0)
    return normals


def texture_image(loaded, max_size: int = MAX_TEXTURE_SIZE) -> Image.Image:
    """The input picture as a texture: RGB, or RGBA when it has transparency, downscaled (keeping its aspect) when a
    side exceeds ``max_size``. Texture coordinates are relative, so they hold at any texture size."""
    picture = loaded.picture()
    longest = max(picture.size)
    if longest > max_size:
        scale = max_size / longest
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return picture


def _normalize(vectors: np.ndarray) -> np.ndarray:
    length = np.linalg.norm(vectors, axis=-1, keepdims=True)
    out = np.zeros_like(vectors)
    np.divide(vectors, length, out=out, where=length > 0)
    return out
