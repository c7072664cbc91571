"""Blender as an independent reader (Debian's ``blender``, background mode; skipped where it is absent): the GLB,
OBJ, STL, mesh PLY and point-cloud PLY written with ``up="z"`` import upright with the vertex and face counts we
wrote, in the same place, and their colours or texture arrive. The default y-up PLY lies on its back there (Blender's
PLY importer converts no axes), which is why ``up`` exists. The scene: a red top half over a blue bottom half, every
pixel a point, on a plane 2 m ahead that recedes to the right."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
from conftest import ROOT

from converter import ConversionOptions, Converter, OutputSettings, write_outputs
from converter.exports.outputs import turned_z_up

pytestmark = pytest.mark.slow
H, W = 24, 32
RED, BLUE = (230, 40, 40), (40, 80, 230)


@pytest.fixture(scope="module")
def blender():
    path = shutil.which("blender")
    if path is None:
        pytest.skip("needs Blender (Debian's blender and python3-numpy; make setup-test installs them)")
    return path


@pytest.fixture(scope="module")
def result():
    picture = np.zeros((H, W, 3), np.uint8)
    picture[: H // 2], picture[H // 2:] = RED, BLUE
    columns = np.mgrid[0:H, 0:W][1]
    depth = io.BytesIO()
    np.save(depth, (2.0 + 0.01 * columns).astype(np.float32))
    return Converter().convert(picture, depth=depth.getvalue(),
                               options=ConversionOptions(depth_kind="metric", max_points=0, clean=False))


@pytest.fixture(scope="module")
def imported(blender, result, tmp_path_factory):
    """What Blender made of each file: {name: [mesh objects]} (tests/blender_probe.py)."""
    folder = tmp_path_factory.mktemp("blender")
    (folder / "y").mkdir()
    files = write_outputs(result, folder, OutputSettings(up="z"), kinds=["glb", "stl", "ply", "mesh_ply"])
    files["obj"] = write_outputs(result, {"obj": folder / "mesh.obj"})["obj"]  # .obj + .mtl + texture
    files["ply_y_up"] = write_outputs(result, folder / "y", kinds=["ply"])["ply"]
    report = folder / "report.json"
    done = subprocess.run([blender, "-b", "--factory-startup", "--python", str(ROOT / "tests" / "blender_probe.py"),
                           "--", str(report), *map(str, files.values())], capture_output=True, text=True,
                          timeout=300, cwd=folder)
    assert done.returncode == 0 and report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    found = json.loads(report.read_text())["files"]
    return {name: found[str(path)] for name, path in files.items()}, files


def only_mesh(imported, name) -> dict:
    objects = imported[0][name]
    assert len(objects) == 1, objects
    return objects[0]


@pytest.mark.parametrize("name", ["glb", "obj", "mesh_ply", "ply"])
def test_meshes_and_the_z_up_cloud_import_upright_where_they_belong(imported, result, name):
    mesh = only_mesh(imported, name)
    assert mesh["vertices"] == H * W  # every pixel is a point, nothing merged or lost
    assert mesh["faces"] == (0 if name == "ply" else 2 * (H - 1) * (W - 1))
    expected = turned_z_up(result.points.astype(np.float64))  # Blender is z up: x right, y forward, z up
    np.testing.assert_allclose(mesh["min"], expected.min(axis=0), atol=1e-4)
    np.testing.assert_allclose(mesh["max"], expected.max(axis=0), atol=1e-4)
    assert mesh["min"][1] > 1.9  # in front of the camera, which looks along +y
    top, bottom = mesh["halves_by_uv"] or mesh["halves_by_colour"] or mesh["halves_by_order"]
    assert top > bottom + 0.5  # the picture's top half is up: upright, neither on its back nor upside down


@pytest.mark.parametrize("name", ["glb", "obj"])
def test_the_texture_arrives(imported, name):
    (texture,) = only_mesh(imported, name)["textures"]
    assert texture["size"] == [W, H]
    red, blue = texture["top_rgb"], texture["bottom_rgb"]
    assert red[0] > 0.8 > 0.2 > red[2] and blue[2] > 0.8 > 0.3 > blue[0]  # red on top, blue below


@pytest.mark.parametrize("name", ["obj", "mesh_ply"])
def test_vertex_colours_arrive_red_above_blue(imported, name):
    mesh = only_mesh(imported, name)
    assert mesh["colour_attributes"]
    top_red, bottom_blue = mesh["halves_by_colour"]
    assert top_red > bottom_blue + 0.5


def test_the_stl_stands_on_the_print_bed(imported):
    """z up from the bed: the base at z = 0, the relief on top; the counts are the STL's own."""
    path = imported[1]["stl"]
    data = path.read_bytes()
    (triangles,) = struct.unpack_from("<I", data, 80)
    corners = np.frombuffer(data, dtype=np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)),
                                                   ("attribute", "<u2")]), offset=84)["corners"].reshape(-1, 3)
    mesh = only_mesh(imported, "stl")
    assert mesh["faces"] == triangles and mesh["vertices"] == len(np.unique(corners, axis=0))
    np.testing.assert_allclose(mesh["min"], [0, 0, 0], atol=1e-4)
    np.testing.assert_allclose(mesh["max"], [100, 100 * H / W, 2 + 0.2 * 100], atol=1e-3)  # mm: width, base+relief


def test_the_default_y_up_ply_lies_on_its_back_in_blender(imported, result):
    """Why ``up`` exists: Blender's PLY importer takes y-up coordinates as they are."""
    mesh = only_mesh(imported, "ply_y_up")
    np.testing.assert_allclose(mesh["min"], result.points.min(axis=0), atol=1e-4)
    height_in_blender = mesh["max"][2] - mesh["min"][2]
    assert mesh["max"][2] < -1.9 and height_in_blender < 0.4  # below the floor, as flat as the depth range
