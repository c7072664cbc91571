"""Fewer triangles for the same shape: quadric edge-collapse decimation (Garland–Heckbert, through Open3D).

A grid mesh has two triangles per pixel sample, far more than a viewer or a phone needs on flat or smooth parts.
Quadric decimation collapses edges where that moves the surface least, so flat regions lose triangles first and
creases keep theirs.

**The texture stays registered.** Open3D carries vertex colours through decimation (a merged vertex gets the
average) but not per-vertex texture coordinates, and the surviving vertices sit at new, optimal positions rather
than on the pixel grid. Each vertex is therefore projected back into the image after decimating, with the inverse
of the mapping that created it (``to_uv``, e.g. :func:`converter.geometry.project_to_pixels` or
:func:`~converter.geometry.relief_to_pixels` followed by :func:`~converter.geometry.pixels_to_uv`): a vertex shows
the part of the picture that lies under it, as every vertex of the undecimated mesh does.

Vertices in no triangle (isolated points the grid mesh keeps so that it matches the point cloud index for index)
are dropped: a decimated mesh no longer shares the cloud's numbering.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..errors import OptionError
from ..mesh import Mesh, vertex_normals

DETAIL_FRACTIONS = {"low": 0.10, "medium": 0.25, "high": 0.50}  # share of the faces kept per detail level
MIN_TARGET_FACES = 4


def faces_for_detail(face_count: int, detail: str) -> int:
    """Target face count for a user's detail level: "low" keeps 10 % of ``face_count``, "medium" 25 %, "high" 50 %."""
    level = detail.strip().lower() if isinstance(detail, str) else None
    if level not in DETAIL_FRACTIONS:
        raise OptionError("The level of detail must be low, medium or high.")
    return int(round(int(face_count) * DETAIL_FRACTIONS[level]))


def decimate_mesh(mesh: Mesh, target_faces: int, to_uv: Callable[[np.ndarray], np.ndarray]) -> Mesh:
    """A copy of ``mesh`` decimated to at most about ``target_faces`` triangles.

    to_uv: vertices [N, 3] float → texture coordinates [N, 2] (OpenGL convention, as :class:`Mesh` holds them):
    the projection back into the image that recomputes every vertex's texture coordinate (module docstring).
    Vertex colours are Open3D's averages of the merged vertices; normals, when the mesh has them, are recomputed
    from the new faces. Winding (counter-clockwise seen from the camera) is kept.

    ``target_faces`` below 4 or not below ``mesh.face_count`` leaves nothing sensible to do: the mesh is returned
    unchanged (the same object). Open3D may stop short of the target on meshes it cannot simplify further.
    """
    import open3d as o3d  # heavy; only decimation needs it

    target_faces = int(target_faces)
    if target_faces < MIN_TARGET_FACES or target_faces >= mesh.face_count:
        return mesh

    source = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(mesh.vertices.astype(np.float64)),
        o3d.utility.Vector3iVector(mesh.faces.astype(np.int32)),
    )
    source.vertex_colors = o3d.utility.Vector3dVector(mesh.colors.astype(np.float64) / 255.0)
    simplified = source.simplify_quadric_decimation(target_faces)
    simplified.remove_degenerate_triangles()
    simplified.remove_unreferenced_vertices()

    vertices = np.asarray(simplified.vertices, dtype=np.float32)
    faces = np.asarray(simplified.triangles, dtype=np.uint32).reshape(-1, 3)
    colors = np.clip(np.rint(np.asarray(simplified.vertex_colors) * 255.0), 0, 255).astype(np.uint8)
    uvs = np.asarray(to_uv(vertices), dtype=np.float32)
    if uvs.shape != (len(vertices), 2):
        raise ValueError("to_uv must return [N, 2] texture coordinates for [N, 3] vertices")
    normals = vertex_normals(vertices, faces) if mesh.normals is not None else None
    return Mesh(vertices=vertices, faces=faces, colors=colors.reshape(-1, 3), uvs=uvs, normals=normals)
