"""Meshes on the pixel grid and the mesh files (GLB, OBJ, PLY), checked with independent readers.

Results come from user-supplied metric depth maps, so no depth model is needed. The GLB is validated by the Khronos
glTF-Validator (npm package, installed with `npm ci --prefix tests/js`).
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import open3d as o3d
import pytest
import trimesh
from PIL import Image
from plyfile import PlyData

from converter import ConversionOptions
from converter.exports import mesh_formats as mesh_export
from converter.errors import OptionError, OutputError
from converter.mesh import DEFAULT_MAX_DEPTH_RATIO, Mesh, build_mesh, mesh_from_result, texture_image, triangulate_grid
from converter.pipeline import Converter

HERE = Path(__file__).resolve().parent
VALIDATOR_DIR = HERE / "js"
H, W = 24, 32


def npy_bytes(depth: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(depth, dtype=np.float32))
    return buffer.getvalue()


def convert(image: np.ndarray, depth: np.ndarray, **options):
    options.setdefault("max_points", 0)
    return Converter().convert(image, depth=npy_bytes(depth), options=ConversionOptions(depth_kind="metric", **options))


def noise_image(height=H, width=W, channels=3, seed=0) -> np.ndarray:
    """Random colours: any off-by-one between a vertex and its pixel shows."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def vertex_depths(mesh: Mesh) -> np.ndarray:
    return -mesh.vertices[:, 2]


def vertex_pixels(result) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) image pixel of every vertex (= point) of a result."""
    grid_rows, grid_columns = np.nonzero(result.keep)
    return result.grid_rows[grid_rows], result.grid_columns[grid_columns]


def tilted_plane_depth(height=H, width=W, slope=0.3, distance=2.0, fov_deg=60.0) -> np.ndarray:
    """Depth of the plane Z = distance + slope · X (camera frame) under the default camera: a real 3D plane."""
    fx = width / (2.0 * np.tan(np.radians(fov_deg) / 2.0))
    columns = np.arange(width) - (width - 1) / 2.0
    row = distance / (1.0 - slope * columns / fx)
    return np.tile(row, (height, 1)).astype(np.float32)


def glb_json(path: Path) -> dict:
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    assert chunk_type == 0x4E4F534A and chunk_length % 4 == 0
    return json.loads(data[20 : 20 + chunk_length])


def trimesh_texture(loaded) -> np.ndarray:
    material = loaded.visual.material
    picture = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    assert picture is not None, "the reader found no texture"
    return np.asarray(picture.convert("RGBA"))


def sample_texture(texture: np.ndarray, uv_bottom_left: np.ndarray) -> np.ndarray:
    """Nearest texel at texture coordinates with the origin at the bottom-left (trimesh's convention)."""
    height, width = texture.shape[:2]
    columns = np.clip(np.floor(uv_bottom_left[:, 0] * width), 0, width - 1).astype(int)
    rows = np.clip(np.floor((1.0 - uv_bottom_left[:, 1]) * height), 0, height - 1).astype(int)
    return texture[rows, columns]


# ------------------------------------------------------------------------------------------------ triangulation


def test_plane_gives_the_full_grid_facing_the_camera():
    result = convert(noise_image(), np.full((H, W), 2.0, np.float32))
    mesh = mesh_from_result(result)
    assert mesh.vertex_count == H * W
    assert mesh.face_count == 2 * (H - 1) * (W - 1)
    assert mesh.faces.dtype == np.uint32 and mesh.vertices.dtype == np.float32 and mesh.uvs.dtype == np.float32
    # The mesh shares the cloud's vertices: vertex i is point i, with its colour.
    np.testing.assert_array_equal(mesh.vertices, result.points)
    np.testing.assert_array_equal(mesh.colors, result.colors)
    normals = mesh.face_normals()
    np.testing.assert_allclose(normals, np.tile([0.0, 0.0, 1.0], (mesh.face_count, 1)), atol=1e-5)
    # Every vertex is used; every face lies within one quad of neighbouring pixels.
    assert len(np.unique(mesh.faces)) == mesh.vertex_count
    rows, columns = vertex_pixels(result)
    assert np.ptp(rows[mesh.faces], axis=1).max() == 1 and np.ptp(columns[mesh.faces], axis=1).max() == 1


def test_tilted_plane_normals_face_the_camera_and_are_parallel():
    result = convert(noise_image(), tilted_plane_depth(), clean=False)
    mesh = mesh_from_result(result, normals=True)
    assert mesh.face_count == 2 * (H - 1) * (W - 1)
    normals = mesh.face_normals()
    centres = mesh.vertices[mesh.faces].mean(axis=1)
    assert (np.einsum("ij,ij->i", normals, -centres) > 0).all()  # towards the camera at the origin
    assert normals[:, 2].min() > 0.9
    np.testing.assert_allclose(normals, np.tile(normals[0], (len(normals), 1)), atol=1e-3)  # one plane
    assert (np.einsum("ij,ij->i", mesh.normals, -mesh.vertices) > 0).all()
    np.testing.assert_allclose(np.linalg.norm(mesh.normals, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("clean", [False, True])
def test_depth_step_is_never_bridged(clean):
    depth = np.full((H, W), 1.0, np.float32)
    depth[:, W // 2 :] = 3.0
    result = convert(noise_image(), depth, clean=clean)
    mesh = mesh_from_result(result)
    corner_depths = vertex_depths(mesh)[mesh.faces]
    near = (corner_depths < 2.0).all(axis=1)
    far = (corner_depths > 2.0).all(axis=1)
    assert (near | far).all(), "a face has vertices on both planes"
    if not clean:  # every quad inside each half is meshed; the quads across the step give nothing
        assert near.sum() == far.sum() == 2 * (H - 1) * (W // 2 - 1)
    else:
        assert near.sum() > 0 and far.sum() > 0


def test_diagonal_step_is_not_bridged_and_its_edge_is_filled():
    rows, columns = np.mgrid[0:H, 0:W]
    depth = np.where(columns > rows, 1.0, 3.0).astype(np.float32)
    result = convert(noise_image(), depth, clean=False)
    mesh = mesh_from_result(result)
    corner_depths = vertex_depths(mesh)[mesh.faces]
    assert ((corner_depths < 2).all(axis=1) | (corner_depths > 2).all(axis=1)).all()
    # Quads cut by the staircase with three corners on one plane still give that plane's triangle.
    near_quads = ((columns[:-1, :-1] > rows[:-1, :-1]).astype(int) + (columns[:-1, 1:] > rows[:-1, 1:])
                  + (columns[1:, :-1] > rows[1:, :-1]) + (columns[1:, 1:] > rows[1:, 1:]))
    expected = 2 * ((near_quads == 4) | (near_quads == 0)).sum() + ((near_quads == 3) | (near_quads == 1)).sum()
    assert mesh.face_count == expected
    assert (mesh.face_normals()[:, 2] > 0.99).all()


def test_depth_ratio_threshold_and_its_scaling_with_grid_spacing():
    depth = (1.03 ** np.arange(W, dtype=np.float64))[None, :].repeat(H, axis=0).astype(np.float32)
    result = convert(noise_image(), depth, clean=False)
    assert mesh_from_result(result).face_count == 2 * (H - 1) * (W - 1)  # 3 % per pixel < 5 %
    assert mesh_from_result(result, max_depth_ratio=1.02).face_count == 0
    # Plain arrays: 8 % between samples is a step one pixel apart, a slope two pixels apart.
    keep = np.ones((3, 3), bool)
    grid_depth = np.array([[1.0, 1.08, 1.08**2]] * 3, np.float32)
    assert len(triangulate_grid(keep, grid_depth, np.arange(3), np.arange(3))) == 0
    assert len(triangulate_grid(keep, grid_depth, np.arange(3), np.arange(0, 6, 2))) == 8
    assert DEFAULT_MAX_DEPTH_RATIO == 1.05


def test_transparent_pixels_make_holes():
    image = noise_image(channels=4)
    image[:, :, 3] = 255
    image[6:14, 10:20, 3] = 0  # a transparent window
    image[20:, 0:3, 3] = 0  # and a transparent corner
    result = convert(image, np.full((H, W), 2.0, np.float32))
    mesh = mesh_from_result(result)
    rows, columns = vertex_pixels(result)
    assert (image[rows, columns, 3] > 0).all()
    assert (image[rows[mesh.faces], columns[mesh.faces], 3] > 0).all()  # no face touches a transparent pixel
    assert np.ptp(rows[mesh.faces], axis=1).max() <= 1 and np.ptp(columns[mesh.faces], axis=1).max() <= 1
    opaque = (image[:, :, 3] > 0).astype(int)
    corners = opaque[:-1, :-1] + opaque[:-1, 1:] + opaque[1:, :-1] + opaque[1:, 1:]
    assert mesh.face_count == 2 * (corners == 4).sum() + (corners == 3).sum()


def test_build_mesh_from_plain_arrays_on_a_coarse_grid():
    keep = np.ones((3, 4), bool)
    keep[1, 1] = False
    rows, columns = np.array([1, 4, 7]), np.array([0, 3, 6, 9])
    grid_points = np.zeros((3, 4, 3), np.float32)
    grid_points[..., 0], grid_points[..., 1] = columns[None, :], -rows[:, None]
    grid_points[..., 2] = -2.0
    colors = np.arange(36, dtype=np.uint8).reshape(3, 4, 3)
    mesh = build_mesh(grid_points, keep, rows, columns, (10, 9), colors)
    assert mesh.vertex_count == 11
    np.testing.assert_array_equal(mesh.colors, colors[keep])
    np.testing.assert_allclose(mesh.uvs[0], [0.5 / 10, 1 - 1.5 / 9])  # pixel (row 1, column 0)
    np.testing.assert_allclose(mesh.uvs[-1], [9.5 / 10, 1 - 7.5 / 9])  # pixel (row 7, column 9)
    # Quads around the missing sample keep the triangle of their three other corners: 6 quads, 4 of them touched.
    assert mesh.face_count == 2 * 2 + 4 * 1
    assert (mesh.face_normals()[:, 2] > 0.99).all()
    with pytest.raises(ValueError):
        build_mesh(grid_points, keep, rows, columns, (10, 9), colors, max_depth_ratio=0.5)


def test_subsampled_grid_meshes_fully_and_maps_to_the_sampled_pixels(photo):
    height, width = photo.shape[:2]
    result = convert(photo, np.full((height, width), 2.0, np.float32), max_points=1000)
    grid_h, grid_w = result.keep.shape
    assert grid_h < height and grid_w < width
    mesh = mesh_from_result(result)
    assert mesh.face_count == 2 * (grid_h - 1) * (grid_w - 1)
    rows, columns = vertex_pixels(result)
    np.testing.assert_array_equal(np.floor(mesh.uvs[:, 0] * width), columns)
    np.testing.assert_array_equal(np.floor((1 - mesh.uvs[:, 1]) * height), rows)


def test_uvs_point_at_each_vertex_colour():
    image = noise_image(seed=3)
    result = convert(image, tilted_plane_depth(), clean=False)
    mesh = mesh_from_result(result)
    np.testing.assert_array_equal(sample_texture(image, mesh.uvs), mesh.colors)
    texture = np.asarray(texture_image(result.image))
    np.testing.assert_array_equal(texture, image)


# ----------------------------------------------------------------------------------------------------- files


@pytest.fixture
def textured(tmp_path):
    """A result with a step, a transparent window and noise colours, and its mesh."""
    image = noise_image(channels=4, seed=5)
    image[:, :, 3] = 255
    image[3:8, 4:9, 3] = 0
    depth = tilted_plane_depth()
    depth[:, 20:] += 2.0
    result = convert(image, depth, clean=False)
    return result, mesh_from_result(result)


def run_validator(path: Path) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed, so the Khronos glTF-Validator (npm) cannot run")
    if not (VALIDATOR_DIR / "node_modules" / "gltf-validator").is_dir():
        pytest.fail("the glTF validator is not installed: run `npm ci --prefix tests/js` (make test does)")
    completed = subprocess.run(
        [node, str(VALIDATOR_DIR / "validate_gltf.js"), str(path)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def assert_valid_gltf(path: Path) -> dict:
    report = run_validator(path)
    issues = report["issues"]
    serious = [m for m in issues["messages"] if m["severity"] <= 1]  # 0 error, 1 warning
    assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, serious
    return report


def test_glb_with_texture_is_valid_and_reads_back(textured, tmp_path):
    result, mesh = textured
    path = tmp_path / "mesh.glb"
    result.save(path)
    report = assert_valid_gltf(path)
    assert report["info"]["version"] == "2.0"
    assert report["info"]["totalVertexCount"] == mesh.vertex_count
    assert report["info"]["totalTriangleCount"] == mesh.face_count
    document = glb_json(path)
    material = document["materials"][0]
    assert material["pbrMetallicRoughness"]["baseColorTexture"]["index"] == 0
    assert material["alphaMode"] == "MASK"  # the input has transparency
    assert document["images"][0]["mimeType"] == "image/png"
    attributes = document["meshes"][0]["primitives"][0]["attributes"]
    assert "COLOR_0" not in attributes  # glTF would multiply the texture by it
    for view in document["bufferViews"]:
        assert view["byteOffset"] % 4 == 0

    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == mesh.vertex_count and len(loaded.faces) == mesh.face_count
    np.testing.assert_array_equal(np.asarray(loaded.vertices, np.float32), mesh.vertices)
    np.testing.assert_array_equal(loaded.faces, mesh.faces)
    np.testing.assert_allclose(loaded.visual.uv, mesh.uvs, atol=1e-6)
    texture = trimesh_texture(loaded)
    np.testing.assert_array_equal(sample_texture(texture, loaded.visual.uv)[:, :3], mesh.colors)
    np.testing.assert_array_equal(texture[:, :, 3], result.image.alpha)

    o3d_mesh = o3d.io.read_triangle_mesh(str(path))
    assert len(o3d_mesh.vertices) == mesh.vertex_count and len(o3d_mesh.triangles) == mesh.face_count
    order = _order(o3d_mesh, mesh)  # Open3D (assimp) renumbers GLB vertices in the order faces use them
    np.testing.assert_array_equal(order[np.asarray(o3d_mesh.triangles)], mesh.faces)
    model = o3d.io.read_triangle_model(str(path))
    assert np.asarray(model.materials[0].albedo_img).shape[:2] == (H, W)


@pytest.mark.slow  # the Khronos validator in a subprocess (the textured GLB keeps it in the fast tier)
def test_glb_with_vertex_colours_and_normals_is_valid(textured, tmp_path):
    _, mesh = textured
    mesh.normals = mesh_from_result(textured[0], normals=True).normals
    path = tmp_path / "colours.glb"
    mesh_export.write_glb(path, mesh, None)
    assert_valid_gltf(path)
    attributes = glb_json(path)["meshes"][0]["primitives"][0]["attributes"]
    assert {"POSITION", "NORMAL", "COLOR_0"} <= set(attributes) and "TEXCOORD_0" not in attributes
    loaded = trimesh.load(path, force="mesh", process=False, skip_materials=True)
    assert len(loaded.vertices) == mesh.vertex_count and len(loaded.faces) == mesh.face_count
    np.testing.assert_array_equal(loaded.visual.vertex_colors[:, :3], mesh.colors)
    o3d_mesh = o3d.io.read_triangle_mesh(str(path))
    assert len(o3d_mesh.vertices) == mesh.vertex_count and len(o3d_mesh.triangles) == mesh.face_count
    order = _order(o3d_mesh, mesh)  # Open3D (assimp) renumbers GLB vertices in the order faces use them
    np.testing.assert_array_equal(order[np.asarray(o3d_mesh.triangles)], mesh.faces)
    np.testing.assert_allclose(np.asarray(o3d_mesh.vertex_colors) * 255, mesh.colors[order], atol=0.51)


@pytest.mark.slow  # the Khronos validator in a subprocess (the textured GLB keeps it in the fast tier)
def test_glb_without_faces_or_vertices_is_still_valid(tmp_path):
    points_only = Mesh(vertices=np.eye(3), faces=np.empty((0, 3)), colors=np.full((3, 3), 200), uvs=np.zeros((3, 2)))
    mesh_export.write_glb(tmp_path / "points.glb", points_only, None)
    assert_valid_gltf(tmp_path / "points.glb")
    assert glb_json(tmp_path / "points.glb")["meshes"][0]["primitives"][0]["mode"] == 0
    empty = Mesh(vertices=np.empty((0, 3)), faces=np.empty((0, 3)), colors=np.empty((0, 3)), uvs=np.empty((0, 2)))
    mesh_export.write_glb(tmp_path / "empty.glb", empty, Image.new("RGB", (4, 4)))
    assert_valid_gltf(tmp_path / "empty.glb")


def test_obj_with_material_and_texture(textured, tmp_path):
    result, mesh = textured
    path = tmp_path / "mesh.obj"
    assert result.save(path) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh.mtl", "mesh.obj", "mesh_texture.png"]
    text = path.read_text(encoding="ascii")
    assert "mtllib mesh.mtl" in text.splitlines() and "usemtl photo" in text.splitlines()
    mtl = (tmp_path / "mesh.mtl").read_text().splitlines()
    assert "newmtl photo" in mtl and "map_Kd mesh_texture.png" in mtl
    with Image.open(tmp_path / "mesh_texture.png") as png:
        assert png.format == "PNG" and png.size == (W, H) and png.mode == "RGBA"

    # Our own reading of the text: v x y z r g b, vt u v, f a/a b/b c/c (1-based).
    lines = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    v = np.array([line[1:] for line in lines if line[0] == "v"], dtype=np.float64)
    vt = np.array([line[1:] for line in lines if line[0] == "vt"], dtype=np.float64)
    f = np.array([[c.split("/") for c in line[1:]] for line in lines if line[0] == "f"], dtype=np.int64)
    np.testing.assert_allclose(v[:, :3], mesh.vertices, atol=6e-7)
    np.testing.assert_array_equal(np.rint(v[:, 3:] * 255), mesh.colors)
    np.testing.assert_allclose(vt, mesh.uvs, atol=6e-7)
    np.testing.assert_array_equal(f[:, :, 0] - 1, mesh.faces)
    np.testing.assert_array_equal(f[:, :, 1], f[:, :, 0])

    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == mesh.vertex_count and len(loaded.faces) == mesh.face_count
    texture = trimesh_texture(loaded)
    np.testing.assert_array_equal(sample_texture(texture, loaded.visual.uv)[:, :3], mesh.colors[_order(loaded, mesh)])

    o3d_mesh = o3d.io.read_triangle_mesh(str(path))
    assert len(o3d_mesh.vertices) == mesh.vertex_count and len(o3d_mesh.triangles) == mesh.face_count
    model = o3d.io.read_triangle_model(str(path))
    assert np.asarray(model.materials[0].albedo_img).shape[:2] == (H, W)


def _order(loaded, mesh: Mesh) -> np.ndarray:
    """For each vertex a reader returns, the index of the same position in ``mesh`` (readers may reorder)."""
    theirs = np.asarray(loaded.vertices, np.float64)
    distances = np.linalg.norm(theirs[:, None, :] - mesh.vertices[None, :, :].astype(np.float64), axis=-1)
    order = distances.argmin(axis=1)
    assert distances[np.arange(len(theirs)), order].max() < 1e-5
    assert len(np.unique(order)) == mesh.vertex_count == len(theirs)
    return order


def test_mesh_ply_reads_back(textured, tmp_path):
    result, mesh = textured
    path = tmp_path / "mesh.ply"
    result.save(path, mesh=True)
    ply = PlyData.read(str(path))
    assert ply.text is False and ply.byte_order == "<"
    vertex, face = ply["vertex"], ply["face"]
    assert vertex.count == mesh.vertex_count and face.count == mesh.face_count
    positions = np.column_stack([vertex["x"], vertex["y"], vertex["z"]])
    np.testing.assert_array_equal(positions, mesh.vertices)
    np.testing.assert_array_equal(np.column_stack([vertex["red"], vertex["green"], vertex["blue"]]), mesh.colors)
    np.testing.assert_array_equal(np.vstack(face["vertex_indices"]), mesh.faces)
    assert any("axes" in comment for comment in ply.comments)

    o3d_mesh = o3d.io.read_triangle_mesh(str(path))
    assert len(o3d_mesh.vertices) == mesh.vertex_count and len(o3d_mesh.triangles) == mesh.face_count
    np.testing.assert_array_equal(np.asarray(o3d_mesh.triangles), mesh.faces)
    np.testing.assert_allclose(np.asarray(o3d_mesh.vertex_colors) * 255, mesh.colors, atol=0.51)
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.vertices) == mesh.vertex_count and len(loaded.faces) == mesh.face_count


def test_save_chooses_the_format_by_suffix(textured, tmp_path):
    result, mesh = textured
    result.save(tmp_path / "cloud.ply")
    cloud = PlyData.read(str(tmp_path / "cloud.ply"))
    assert [element.name for element in cloud.elements] == ["vertex"] and cloud["vertex"].count == len(result.points)
    result.save(tmp_path / "mesh.ply", mesh=True)
    assert PlyData.read(str(tmp_path / "mesh.ply"))["face"].count == mesh.face_count
    result.save(tmp_path / "UPPER.GLB")
    assert glb_json(tmp_path / "UPPER.GLB")["asset"]["version"] == "2.0"
    with pytest.raises(OptionError):
        result.save(tmp_path / "mesh.xyz")


# ------------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize("suffix", [".glb", ".obj", ".ply"])
def test_failed_write_leaves_no_files(textured, tmp_path, suffix):
    result, mesh = textured
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, not a folder")
    with pytest.raises(OutputError):
        result.save(blocker / f"mesh{suffix}", mesh=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize("writer", [mesh_export.write_glb, mesh_export.write_obj])
def test_failure_midway_leaves_no_partial_files(textured, tmp_path, writer):
    _, mesh = textured
    with pytest.raises(AttributeError):
        writer(tmp_path / "mesh.out", mesh, object())  # not an image: fails after the files were opened
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------- text formatting


def test_vectorised_text_matches_python_formatting():
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.normal(0, 50, 5000), [0.0, -0.0, -4e-7, 4e-7, 999999.9999999, -1e-3, 0.5e-6]])
    text = mesh_export._format_rows("v ", [(values, 6), (-values, 4)], [" "]).decode()
    parsed = np.array([line.split()[1:] for line in text.splitlines()], dtype=np.float64)
    np.testing.assert_allclose(parsed[:, 0], values, atol=5.01e-7, rtol=0)
    np.testing.assert_allclose(parsed[:, 1], -values, atol=5.01e-5, rtol=0)
    integers = rng.integers(1, 10**7, 3000)
    text = mesh_export._format_rows("f ", [(integers, 0), (integers + 1, 0)], ["/"]).decode()
    assert text == "".join(f"f {a}/{a + 1}\n" for a in integers.tolist())
    huge = np.array([1e15, -2.5e13, 1.0])  # beyond fixed point: formatted by Python instead
    text = mesh_export._format_rows("v ", [(huge, 6)], []).decode()
    np.testing.assert_allclose(np.array(text.split()[1::2], dtype=np.float64), huge)


def test_faces_made_a_block_of_quad_rows_at_a_time_are_the_same_faces(monkeypatch):
    """Blocks of 3 quads (under one row of 6: one row a block, the last one short) give the faces of one block."""
    from converter import mesh as mesh_module

    rng = np.random.default_rng(11)
    keep = rng.random((7, 7)) > 0.15
    depth = rng.uniform(1.0, 1.2, (7, 7)).astype(np.float32)
    depth[3, 4] = 5.0  # a discontinuity: its quads lose triangles
    whole = mesh_module.triangulate_grid(keep, depth)
    monkeypatch.setattr(mesh_module, "FACE_BLOCK_QUADS", 3)
    blocks = mesh_module.triangulate_grid(keep, depth)
    assert blocks.dtype == np.uint32 and len(blocks) > 0
    np.testing.assert_array_equal(blocks, whole)
    assert blocks.max() < keep.sum()  # indices of kept samples only
