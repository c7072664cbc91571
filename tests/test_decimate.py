"""Decimation keeps the shape and the texture registration: meshes of analytic surfaces (a tilted plane, a sphere cap
and a relief), built by the real grid mesher from back-projected depth, decimated by Open3D, checked against the
surface and against the undecimated mesh, and read back from a GLB by trimesh."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image

from converter import geometry
from converter.exports.decimate import decimate_mesh, faces_for_detail
from converter.errors import OptionError
from converter.mesh import build_mesh
from converter.exports.mesh_formats import write_glb

W, H = 160, 120
INTRINSICS = geometry.make_intrinsics(W, H)
PLANE_NORMAL = np.array([0.2, 0.3, 1.0]) / np.linalg.norm([0.2, 0.3, 1.0])
PLANE_OFFSET = -2.0  # points X with X · n = −2 (in front of the camera, tilted)
SPHERE_CENTRE = np.array([0.0, 0.0, -3.0])
SPHERE_RADIUS = 1.2  # covers the middle of the picture only: the rest is a hole, so the mesh has a boundary


def rays() -> np.ndarray:
    """[H, W, 3] directions through every pixel centre, scaled so that the depth along the axis is the ray length."""
    x = (np.arange(W) - INTRINSICS.cx) / INTRINSICS.fx
    y = -(np.arange(H) - INTRINSICS.cy) / INTRINSICS.fy
    return np.stack(np.broadcast_arrays(x[None, :], y[:, None], -np.ones((H, W))), axis=-1)


def plane_depth() -> np.ndarray:
    return (PLANE_OFFSET / (rays() @ PLANE_NORMAL)).astype(np.float32)


def sphere_depth() -> np.ndarray:
    """Depth of the near side of the sphere; 0 (no depth) where the ray misses it."""
    d = rays()
    a = (d**2).sum(-1)
    b = -2.0 * (d @ SPHERE_CENTRE)
    c = SPHERE_CENTRE @ SPHERE_CENTRE - SPHERE_RADIUS**2
    disc = b * b - 4 * a * c
    return np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), 0).astype(np.float32)


def picture() -> np.ndarray:
    """A [H, W, 3] texture with detail in every pixel, so that misregistration shows."""
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def perspective_mesh(depth: np.ndarray, normals: bool = False):
    points = geometry.backproject(depth, INTRINSICS)
    return build_mesh(points, depth > 0, np.arange(H), np.arange(W), (W, H), picture(), normals=normals)


def to_uv(vertices: np.ndarray) -> np.ndarray:
    return geometry.pixels_to_uv(geometry.project_to_pixels(vertices, INTRINSICS), (W, H))


def nearest(original: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of the nearest original vertex for every query (brute force, in chunks)."""
    found = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), 512):
        chunk = queries[start : start + 512]
        distances = ((chunk[:, None, :] - original[None, :, :]) ** 2).sum(-1)
        found[start : start + 512] = distances.argmin(axis=1)
    return found


# -------------------------------------------------------------------------------------------------- projections


def test_project_to_pixels_inverts_backproject():
    intrinsics = geometry.make_intrinsics(W, H, focal_px=150.0, principal_point=(70.3, 61.9))
    depth = np.random.default_rng(0).uniform(0.5, 9.0, (H, W)).astype(np.float32)
    points = geometry.backproject(depth, intrinsics).reshape(-1, 3)
    pixels = geometry.project_to_pixels(points, intrinsics)
    rows, columns = np.mgrid[0:H, 0:W]
    np.testing.assert_allclose(pixels[:, 0], columns.ravel(), atol=1e-3)
    np.testing.assert_allclose(pixels[:, 1], rows.ravel(), atol=1e-3)
    behind = geometry.project_to_pixels(np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), intrinsics)
    assert not np.isfinite(behind).any()


def test_relief_to_pixels_inverts_relief_grid():
    columns, rows = np.array([0, 5, 159]), np.array([0, 7, 119])
    x, y = geometry.relief_grid(W, H, columns, rows)
    points = np.column_stack([x, y, [0.0, 0.1, 0.2]])
    np.testing.assert_allclose(geometry.relief_to_pixels(points, (W, H)), np.column_stack([columns, rows]), atol=1e-9)


def test_pixels_to_uv_matches_the_grid_mesher():
    mesh = perspective_mesh(plane_depth())
    rows, columns = np.mgrid[0:H, 0:W]
    pixels = np.column_stack([columns.ravel(), rows.ravel()])
    np.testing.assert_allclose(geometry.pixels_to_uv(pixels, (W, H)), mesh.uvs, atol=1e-7)
    np.testing.assert_allclose(to_uv(mesh.vertices), mesh.uvs, atol=2e-6)


# --------------------------------------------------------------------------------------------------- decimation


@pytest.mark.parametrize(
    "depth, distance_to_surface, tolerance",
    [
        (plane_depth, lambda v: np.abs(v @ PLANE_NORMAL - PLANE_OFFSET), 1e-5),
        (sphere_depth, lambda v: np.abs(np.linalg.norm(v - SPHERE_CENTRE, axis=1) - SPHERE_RADIUS), 2e-3),
    ],
    ids=["plane", "sphere-cap"],
)
@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
def test_decimated_mesh_stays_on_the_surface_with_registered_texture(depth, distance_to_surface, tolerance):
    mesh = perspective_mesh(depth())
    target = mesh.face_count // 10
    decimated = decimate_mesh(mesh, target, to_uv)

    assert 0.8 * target <= decimated.face_count <= target
    assert decimated.vertex_count < mesh.vertex_count / 5
    assert decimated.vertices.dtype == np.float32 and decimated.faces.dtype == np.uint32
    assert np.bincount(decimated.faces.ravel(), minlength=decimated.vertex_count).min() > 0  # no isolated vertex
    assert distance_to_surface(decimated.vertices.astype(np.float64)).max() < tolerance

    # The silhouette survives: the extent of the decimated mesh is the original's within a sample spacing.
    spacing = np.abs(np.diff(mesh.vertices[:2], axis=0)).max() * 2
    np.testing.assert_allclose(decimated.vertices.min(0), mesh.vertices.min(0), atol=spacing)
    np.testing.assert_allclose(decimated.vertices.max(0), mesh.vertices.max(0), atol=spacing)

    # Winding kept: every face still faces the camera at the origin.
    centres = decimated.vertices[decimated.faces].mean(axis=1)
    assert ((decimated.face_normals() * -centres).sum(axis=1) > 0).all()

    # UVs are the projection of the vertices, so they agree with the undecimated mesh's UV at the nearest original
    # vertex to within about a pixel: the nearest vertex in 3D lies in a neighbouring pixel at worst (a flipped or
    # shifted texture would be off by many pixels).
    np.testing.assert_allclose(decimated.uvs, to_uv(decimated.vertices), atol=1e-7)
    closest = nearest(mesh.vertices, decimated.vertices)
    difference = np.abs(decimated.uvs - mesh.uvs[closest]) * (W, H)  # in pixels
    assert difference.max() <= 1.5 and np.median(difference) <= 0.5
    # Colours are Open3D's averages of merged vertices: still bytes, and the overall mean barely moves.
    assert decimated.colors.dtype == np.uint8
    assert np.abs(decimated.colors.mean(0) - mesh.colors.mean(0)).max() < 12


@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
def test_relief_mesh_keeps_its_texture_through_decimation():
    rows, columns = np.mgrid[0:H, 0:W]
    heights = (0.05 * np.sin(columns / 15.0) * np.cos(rows / 11.0)).astype(np.float32)
    points = geometry.relief_backproject(heights, (W, H))
    mesh = build_mesh(points, np.ones((H, W), bool), np.arange(H), np.arange(W), (W, H), picture(),
                      depth=np.full((H, W), 1.0, np.float32))
    relief_uv = lambda v: geometry.pixels_to_uv(geometry.relief_to_pixels(v, (W, H)), (W, H))  # noqa: E731
    np.testing.assert_allclose(relief_uv(mesh.vertices), mesh.uvs, atol=1e-6)

    decimated = decimate_mesh(mesh, mesh.face_count // 4, relief_uv)
    assert decimated.face_count <= mesh.face_count // 4
    closest = nearest(mesh.vertices, decimated.vertices)
    assert (np.abs(decimated.uvs - mesh.uvs[closest]) * (W, H)).max() <= 1.0


def test_glb_of_a_decimated_mesh_keeps_the_texture(tmp_path):
    mesh = perspective_mesh(sphere_depth(), normals=True)
    decimated = decimate_mesh(mesh, mesh.face_count // 10, to_uv)
    assert decimated.normals is not None and decimated.normals.shape == decimated.vertices.shape
    # Recomputed normals face the camera, like the mesh's.
    assert ((decimated.normals * -decimated.vertices).sum(axis=1) > 0).all()

    path = tmp_path / "decimated.glb"
    write_glb(path, decimated, Image.fromarray(picture(), "RGB"))
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == decimated.vertex_count and len(loaded.faces) == decimated.face_count
    np.testing.assert_array_equal(np.asarray(loaded.vertices, np.float32), decimated.vertices)
    np.testing.assert_allclose(loaded.visual.uv, decimated.uvs, atol=1e-6)
    texture = np.asarray(loaded.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(texture, picture())
    # Sampling the texture at a vertex's UV gives the picture at the pixel the vertex projects to.
    pixels = np.rint(geometry.project_to_pixels(decimated.vertices, INTRINSICS)).astype(int)
    inside = (pixels[:, 0] >= 0) & (pixels[:, 0] < W) & (pixels[:, 1] >= 0) & (pixels[:, 1] < H)
    assert inside.all()
    uv = np.asarray(loaded.visual.uv)
    sampled_rows = np.clip(np.floor((1 - uv[:, 1]) * H), 0, H - 1).astype(int)
    sampled_columns = np.clip(np.floor(uv[:, 0] * W), 0, W - 1).astype(int)
    np.testing.assert_array_equal(sampled_columns, pixels[:, 0])
    np.testing.assert_array_equal(sampled_rows, pixels[:, 1])


@pytest.mark.parametrize("target", [0, 3, "all", "more"])
def test_targets_that_leave_nothing_to_do_return_the_mesh_unchanged(target):
    mesh = perspective_mesh(plane_depth())
    target = {"all": mesh.face_count, "more": mesh.face_count + 10}.get(target, target)
    assert decimate_mesh(mesh, target, to_uv) is mesh


def test_faces_for_detail():
    assert faces_for_detail(1000, "low") == 100
    assert faces_for_detail(1000, "medium") == 250
    assert faces_for_detail(1000, " High ") == 500
    for bad in ("ultra", "", None, 0.5):
        with pytest.raises(OptionError, match="low, medium or high"):
            faces_for_detail(1000, bad)
