"""The one writer layer (converter.exports.outputs): the kinds table, shared artifacts built once, every kind read back by an
independent reader, output settings and ConversionResult.save.

Results come from a user-supplied metric depth map (a tilted plane), so no depth model is needed.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import av
import laspy
import numpy as np
import open3d as o3d
import pytest
import trimesh
from PIL import Image
from plyfile import PlyData

from converter import ConversionOptions
from converter.exports import mesh_formats as mesh_export
from converter.exports import outputs as outputs_module
from converter.errors import OptionError
from converter.exports.outputs import (
    ALIGNMENT_KINDS,
    OUTPUTS,
    Artifacts,
    OutputSettings,
    kind_for_path,
    parse_kinds,
    parse_simplify,
    write_outputs,
)
from converter.pipeline import Converter

H, W = 24, 32
SUFFIXED = [kind for kind in OUTPUTS.values() if kind.suffixes]


def npy_bytes(depth: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(depth, dtype=np.float32))
    return buffer.getvalue()


def noise_image(height=H, width=W, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def tilted_depth(height=H, width=W) -> np.ndarray:
    """Metres, 2.0 … 2.6 across the image: every pixel has depth and no edge is cut."""
    rows, columns = np.mgrid[0:height, 0:width]
    return (2.0 + 0.015 * columns + 0.005 * rows).astype(np.float32)


def convert(**options):
    options.setdefault("max_points", 0)
    return Converter().convert(noise_image(), depth=npy_bytes(tilted_depth()),
                               options=ConversionOptions(depth_kind="metric", **options))


@pytest.fixture(scope="module")
def result():
    return convert()


def glb_image_png(path: Path) -> bytes:
    """The bytes of the first image embedded in a GLB, found through its JSON chunk's bufferView."""
    data = path.read_bytes()
    magic, _, _ = struct.unpack_from("<4sII", data, 0)
    assert magic == b"glTF"
    json_length, json_type = struct.unpack_from("<I4s", data, 12)
    assert json_type == b"JSON"
    document = json.loads(data[20:20 + json_length])
    binary_start = 20 + json_length
    binary_length, binary_type = struct.unpack_from("<I4s", data, binary_start)
    assert binary_type == b"BIN\x00"
    binary = data[binary_start + 8:binary_start + 8 + binary_length]
    image = document["images"][0]
    assert image["mimeType"] == "image/png"
    view = document["bufferViews"][image["bufferView"]]
    start = view.get("byteOffset", 0)
    return binary[start:start + view["byteLength"]]


# ------------------------------------------------------------------------------------------------ the kinds table


@pytest.mark.parametrize("kind", SUFFIXED, ids=[kind.name for kind in SUFFIXED])
def test_every_suffix_selects_its_kind(kind):
    for suffix in kind.suffixes:
        assert kind_for_path("x" + suffix).name == kind.name
        assert kind_for_path(Path("some/folder") / ("X" + suffix.upper())).name == kind.name


@pytest.mark.parametrize("name, kind", [
    ("a.disagreement.png", "disagreement"),
    ("a.depth.png", "depth_png"), ("a.sbs.png", "sbs"), ("a.anaglyph.png", "anaglyph"), ("a.mesh.ply", "mesh_ply"),
    ("a.ply", "ply"), ("a.simplified.glb", "simplified_glb"), ("a.glb", "glb"), ("a.zip", "obj"), ("a.obj", "obj"),
])
def test_the_longest_suffix_wins(name, kind):
    assert kind_for_path(name).name == kind


@pytest.mark.parametrize("name", ["a.png", "a.txt", "a", "a.gltf"])
def test_an_unknown_suffix_names_the_choices(name):
    with pytest.raises(OptionError) as caught:
        kind_for_path(name)
    message = str(caught.value)
    assert name in message and ".ply" in message and ".glb" in message and ".las" in message


def test_parse_kinds_keeps_order_and_drops_repeats():
    assert parse_kinds("ply, glb,ply") == ["ply", "glb"]
    assert parse_kinds(" STL ,,json") == ["stl", "json"]


@pytest.mark.parametrize("text", ["ply,gltf", "input", "depth_preview", "ply,input", "", " , "])
def test_parse_kinds_refuses_unknown_kinds_and_previews(text):
    with pytest.raises(OptionError) as caught:
        parse_kinds(text)
    message = str(caught.value)
    assert message.endswith(".")
    if text.strip(" ,"):
        choices = message.split("Choose from: ")[1].rstrip(".").split(", ")
        assert "ply" in choices and "las" in choices and not {"input", "depth_preview"} & set(choices)


# ---------------------------------------------------------------------------------------- artifacts built once


def test_mesh_and_texture_are_built_once_for_several_formats(tmp_path, monkeypatch, result):
    calls = {"mesh": 0, "texture": 0}
    real_mesh, real_texture = outputs_module.mesh_from_result, mesh_export.Texture.of.__func__

    def counted_mesh(*args, **kwargs):
        calls["mesh"] += 1
        return real_mesh(*args, **kwargs)

    def counted_texture(cls, texture):  # the writers pass the encoded Texture on; only an image is encoded
        calls["texture"] += texture is not None and not isinstance(texture, mesh_export.Texture)
        return real_texture(cls, texture)

    monkeypatch.setattr(outputs_module, "mesh_from_result", counted_mesh)
    monkeypatch.setattr(mesh_export.Texture, "of", classmethod(counted_texture))
    artifacts = Artifacts(result)
    targets = {"glb": tmp_path / "a.glb", "obj": tmp_path / "a.zip"}
    write_outputs(result, targets, artifacts=artifacts)
    mesh = artifacts.__dict__["mesh"]
    write_outputs(result, {"obj": tmp_path / "b.obj", "mesh_ply": tmp_path / "a.mesh.ply"}, artifacts=artifacts)
    assert artifacts.__dict__["mesh"] is mesh
    assert calls == {"mesh": 1, "texture": 1}

    with zipfile.ZipFile(tmp_path / "a.zip") as bundle:
        assert sorted(bundle.namelist()) == ["mesh.mtl", "mesh.obj", "mesh_texture.png"]
        zipped_texture = bundle.read("mesh_texture.png")
        bundle.extractall(tmp_path / "unzipped")
    assert glb_image_png(tmp_path / "a.glb") == zipped_texture == (tmp_path / "b_texture.png").read_bytes()
    assert zipped_texture == artifacts.texture.png

    glb = trimesh.load(tmp_path / "a.glb", force="mesh", process=False)
    zipped_obj = trimesh.load(tmp_path / "unzipped" / "mesh.obj", force="mesh", process=False)
    plain_obj = trimesh.load(tmp_path / "b.obj", force="mesh", process=False)
    ply = PlyData.read(tmp_path / "a.mesh.ply")
    assert mesh.face_count > 1000
    assert len(glb.faces) == len(zipped_obj.faces) == len(plain_obj.faces) == ply["face"].count == mesh.face_count


def test_nothing_is_built_that_a_written_format_does_not_need(tmp_path, result):
    artifacts = Artifacts(result)
    write_outputs(result, tmp_path, kinds=["ply", "json", "depth_npy"], artifacts=artifacts)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cloud.ply", "depth.npy", "result.json"]
    assert not {"mesh", "texture", "relief_solid", "simplified_mesh", "stereo_pair"} & set(artifacts.__dict__)


def test_relief_heights_are_computed_once_and_are_the_points_heights():
    relief = convert(mode="relief")
    heights = relief.relief_heights()
    assert relief.relief_heights() is heights
    assert heights.shape == relief.keep.shape and heights.dtype == np.float32
    np.testing.assert_array_equal(relief.points[:, 2], heights[relief.keep])
    assert np.ptp(heights[relief.keep]) > 0
    perspective = convert()
    assert perspective.relief_heights() is perspective.relief_heights()  # the STL's heights, in any mode


# ------------------------------------------------------------------------------ every kind, read independently


@pytest.fixture(scope="module")
def written(tmp_path_factory, result) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("every-kind")
    return write_outputs(result, folder, kinds=[name for name in OUTPUTS if name not in ALIGNMENT_KINDS])


def test_every_kind_is_written_under_its_file_name(written):
    assert set(written) == set(OUTPUTS) - set(ALIGNMENT_KINDS)  # those need an aligned result (tests/test_align.py)
    for name, path in written.items():
        assert path.name == OUTPUTS[name].file_name and path.is_file() and path.stat().st_size > 0
    assert not [path for path in next(iter(written.values())).parent.iterdir() if path.name not in
                {kind.file_name for kind in OUTPUTS.values()}]  # no temporaries left


def test_point_clouds_read_back(written, result):
    count = len(result.points)
    assert count == H * W
    cloud = PlyData.read(written["ply"])["vertex"]
    assert cloud.count == count
    np.testing.assert_allclose(np.column_stack([cloud["x"], cloud["y"], cloud["z"]]), result.points)
    pcd = o3d.io.read_point_cloud(str(written["pcd"]))
    assert len(pcd.points) == count and pcd.has_colors()
    np.testing.assert_allclose(np.asarray(pcd.points), result.points, atol=1e-6)
    las = laspy.read(written["las"])
    assert len(las.points) == count
    np.testing.assert_allclose(np.column_stack([las.x, las.y, las.z]), outputs_module.turned_z_up(result.points),
                               atol=1e-3)  # z up


def test_meshes_read_back(written, result, tmp_path):
    mesh_ply = PlyData.read(written["mesh_ply"])
    faces = mesh_ply["face"].count
    assert mesh_ply["vertex"].count == len(result.points) and faces == 2 * (H - 1) * (W - 1)
    glb = trimesh.load(written["glb"], force="mesh", process=False)
    assert len(glb.faces) == faces
    simplified = trimesh.load(written["simplified_glb"], force="mesh", process=False)
    assert 0 < len(simplified.faces) <= round(0.10 * faces) + 2  # "low" keeps about 10 %
    with zipfile.ZipFile(written["obj"]) as bundle:
        bundle.extractall(tmp_path)
    obj = trimesh.load(tmp_path / "mesh.obj", force="mesh", process=False)
    assert len(obj.faces) == faces
    with zipfile.ZipFile(written["usdz"]) as package:
        names = package.namelist()
        assert names[0].endswith(".usdc") and any(name.endswith(".png") for name in names)


def test_the_relief_is_a_closed_solid(written):
    solid = trimesh.load(written["stl"], force="mesh")
    assert solid.is_watertight and solid.volume > 0
    assert solid.extents[0] == pytest.approx(OutputSettings().stl_width_mm, rel=1e-3)


def test_json_and_depth_files_read_back(written, result):
    info = json.loads(written["json"].read_text())
    assert info == json.loads(json.dumps(result.metadata()))
    assert info["units"] == "metres" and info["point_count"] == H * W
    stored = np.asarray(Image.open(written["depth_png"]))
    assert stored.dtype == np.uint16 and stored.shape == (H, W)
    np.testing.assert_array_equal(stored, np.rint(tilted_depth() * 1000).astype(np.uint16))
    np.testing.assert_array_equal(np.load(written["depth_npy"]), result.depth)


def test_pictures_read_back(written):
    for name in ("input", "depth_preview", "anaglyph"):
        with Image.open(written[name]) as picture:
            assert picture.format == "PNG" and picture.size == (W, H), name
    with Image.open(written["input"]) as picture:
        np.testing.assert_array_equal(np.asarray(picture.convert("RGB")), noise_image())
    with Image.open(written["sbs"]) as picture:
        assert picture.size == (2 * W, H)


def test_the_parallax_clip_is_h264_with_frames(written):
    with av.open(str(written["mp4"])) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = sum(1 for _ in container.decode(stream))
    assert frames > 0


# ------------------------------------------------------------------------------------------------ settings


@pytest.mark.parametrize("sizes", [
    {"stl_width_mm": 0}, {"stl_width_mm": -3.0}, {"stl_width_mm": float("nan")}, {"stl_width_mm": "100"},
    {"stl_base_mm": float("inf")}, {"stl_base_mm": True}, {"stl_width_mm": 1e9},
])
def test_bad_stl_sizes_are_refused(sizes):
    with pytest.raises(OptionError, match=r"STL .* millimetres\."):
        OutputSettings(**sizes)


@pytest.mark.parametrize("value", ["tiny", 0, 3, -5, True, "3", 2.5, None, ""])
def test_bad_simplify_values_are_refused(value):
    with pytest.raises(OptionError) as caught:
        OutputSettings(simplify=value)
    message = str(caught.value)
    assert message.startswith("Simplify to") and "low, medium, high" in message and message.endswith(".")


@pytest.mark.parametrize("value, parsed", [("medium", "medium"), (" High ", "high"), (5000, 5000), ("5000", 5000),
                                           (np.int64(4), 4)])
def test_good_simplify_values_are_accepted(value, parsed):
    assert OutputSettings(simplify=value).simplify == parsed
    assert parse_simplify(value) == parsed


def test_bad_depth_ratio_is_refused():
    with pytest.raises(OptionError, match="at least 1"):
        OutputSettings(max_depth_ratio=0.5)


def test_simplified_mesh_face_counts_follow_the_setting(result):
    full = Artifacts(result).mesh.face_count
    low = Artifacts(result, OutputSettings(simplify="low")).simplified_mesh.face_count
    medium = Artifacts(result, OutputSettings(simplify="medium")).simplified_mesh.face_count
    counted = Artifacts(result, OutputSettings(simplify=200)).simplified_mesh.face_count
    assert 0 < low <= medium < full
    assert 0 < counted <= 200


# ------------------------------------------------------------------------------------------ ConversionResult.save


@pytest.mark.parametrize("name, kind", [("a.glb", "glb"), ("a.stl", "stl"), ("a.depth.png", "depth_png"),
                                        ("a.las", "las")])
def test_save_picks_the_writer_from_the_suffix(tmp_path, result, name, kind):
    path = tmp_path / name
    assert result.save(path, sidecar=True) == path
    if kind == "glb":
        assert len(trimesh.load(path, force="mesh", process=False).faces) > 0
    elif kind == "stl":
        assert trimesh.load(path, force="mesh").is_watertight
    elif kind == "depth_png":
        assert np.asarray(Image.open(path)).dtype == np.uint16
    else:
        assert len(laspy.read(path).points) == len(result.points)
    sidecar = path.with_suffix(".json")
    assert json.loads(sidecar.read_text())["point_count"] == len(result.points)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, sidecar.name])


def test_save_without_sidecar_writes_one_file_and_mesh_true_writes_a_mesh_ply(tmp_path, result):
    result.save(tmp_path / "cloud.ply")
    result.save(tmp_path / "mesh.ply", mesh=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cloud.ply", "mesh.ply"]
    assert "face" not in [element.name for element in PlyData.read(tmp_path / "cloud.ply").elements]
    assert PlyData.read(tmp_path / "mesh.ply")["face"].count == 2 * (H - 1) * (W - 1)


def test_save_passes_stl_sizes(tmp_path, result):
    result.save(tmp_path / "small.stl", width_mm=40, base_mm=1)
    assert trimesh.load(tmp_path / "small.stl", force="mesh").extents[0] == pytest.approx(40, rel=1e-3)
    with pytest.raises(OptionError):
        result.save(tmp_path / "bad.stl", width_mm=-1)
    assert not (tmp_path / "bad.stl").exists()


def test_the_disagreement_map_of_a_result_without_alignment_is_a_plain_error(result, tmp_path):
    with pytest.raises(OptionError, match="aligned to a metric model"):
        write_outputs(result, {"disagreement": tmp_path / "d.png"})
    assert not list(tmp_path.iterdir())


# --- which way is up: each file in its own field's convention ----------------------------------------------------

def ply_comments(path: Path) -> list[str]:
    return PlyData.read(str(path)).comments


def test_las_is_z_up_as_survey_tools_expect(result, tmp_path):
    """LAS: x right, y forward into the scene, z up; the picture's top row is the highest."""
    path = write_outputs(result, tmp_path, kinds=["las"])["las"]
    las = laspy.read(path)
    xyz = np.column_stack([las.x, las.y, las.z])
    x, y, z = result.points.T.astype(np.float64)
    np.testing.assert_allclose(xyz, np.column_stack([x, -z, y]), atol=0.001)
    assert las.header.system_identifier.startswith("z up")
    top, bottom = xyz[: W, 2].mean(), xyz[-W:, 2].mean()  # max_points=0: the points are the pixels, row by row
    assert top > bottom and (xyz[:, 1] > 0).all()  # upright, and in front of the camera (forward = +y)


@pytest.mark.parametrize("kind", ["ply", "mesh_ply", "pcd"])
def test_ply_and_pcd_are_y_up_by_default_and_z_up_when_asked(result, tmp_path, kind):
    def positions(up):
        path = write_outputs(result, tmp_path / up, OutputSettings(up=up), kinds=[kind])[kind]
        if kind == "pcd":
            return np.asarray(o3d.io.read_point_cloud(str(path)).points), None
        vertices = PlyData.read(str(path))["vertex"]
        axes = next(line for line in ply_comments(path) if line.startswith("axes:"))
        return np.column_stack([vertices["x"], vertices["y"], vertices["z"]]).astype(np.float64), axes

    (tmp_path / "y").mkdir(), (tmp_path / "z").mkdir()
    y_up, y_axes = positions("y")
    z_up, z_axes = positions("z")
    assert len(y_up) == len(z_up) > 0
    np.testing.assert_allclose(z_up, np.column_stack([y_up[:, 0], -y_up[:, 2], y_up[:, 1]]), atol=1e-6)
    if kind == "ply":
        np.testing.assert_allclose(y_up, result.points, atol=1e-6)
    if y_axes is not None:
        assert "y up" in y_axes and z_axes.startswith("axes: right-handed, z up: x right, y forward")


def test_up_z_turns_the_normals_too(tmp_path):
    result = convert(normals=True)
    path = write_outputs(result, tmp_path, OutputSettings(up="z"), kinds=["ply"])["ply"]
    vertex = PlyData.read(str(path))["vertex"]
    normals = np.column_stack([vertex["nx"], vertex["ny"], vertex["nz"]])
    np.testing.assert_allclose(normals, outputs_module.turned_z_up(result.normals), atol=1e-6)


@pytest.mark.parametrize("up", ["x", "-z", "Z-up", "", None, 2])
def test_unknown_up_values_are_refused_with_a_sentence(up):
    with pytest.raises(OptionError, match=r"up must be one of: y \(.*\), z \(.*\)\.$"):
        OutputSettings(up=up)
    assert OutputSettings(up=" Z ").up == "z"


def test_save_takes_up(result, tmp_path):
    path = result.save(tmp_path / "cloud.ply", up="z")
    assert any("z up" in line for line in ply_comments(path))
