"""The command line's --format, -o base names and folders, --simplify and --known-length, run in-process.

Most runs use a user depth map (--depth), so no model is loaded; several inputs need the tiny DPT-Hybrid model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image
from plyfile import PlyData

from converter.__main__ import EXIT_FAILED, EXIT_USAGE, main, plan_outputs

H, W = 24, 32


def tilted_depth(height=H, width=W) -> np.ndarray:
    """Metres, a plane seen at an angle: every pixel a different distance."""
    rows, columns = np.mgrid[0:height, 0:width]
    return (2.0 + 0.02 * columns + 0.003 * rows).astype(np.float32)


@pytest.fixture
def inputs(tmp_path) -> tuple[Path, Path]:
    """(photo.png, d.npy) in tmp_path: a noise picture and its metric depth map."""
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(image)
    depth = tmp_path / "d.npy"
    np.save(depth, tilted_depth())
    return image, depth


def run(*args) -> int:
    return main([str(arg) for arg in args])


def names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def check_ply_glb_stl(base: Path) -> None:
    """base.ply (a cloud), base.glb (a mesh), base.stl (a closed relief) and the base.json sidecar, all readable."""
    cloud = PlyData.read(base.with_name(base.name + ".ply"))["vertex"]
    assert cloud.count > 0
    glb = trimesh.load(base.with_name(base.name + ".glb"), force="mesh", process=False)
    assert len(glb.faces) > 0
    assert trimesh.load(base.with_name(base.name + ".stl"), force="mesh").is_watertight
    info = json.loads(base.with_name(base.name + ".json").read_text())
    assert info["point_count"] == cloud.count and info["units"] == "metres"


def test_format_writes_every_kind_next_to_the_input(inputs, tmp_path):
    image, depth = inputs
    assert run(image, "--depth", depth, "--format", "ply,glb,stl", "-q") == 0
    assert names(tmp_path) == {"photo.png", "d.npy", "photo.ply", "photo.glb", "photo.stl", "photo.json"}
    check_ply_glb_stl(tmp_path / "photo")


@pytest.mark.parametrize("output", ["name", "name.ply", "name.stl", "name.mesh.ply", "name.zip"])
def test_format_with_an_output_base_name_drops_a_known_suffix(inputs, tmp_path, output):
    image, depth = inputs
    (tmp_path / "out").mkdir()
    assert run(image, "--depth", depth, "--format", "ply,glb,stl", "-o", tmp_path / "out" / output, "-q") == 0
    assert names(tmp_path / "out") == {"name.ply", "name.glb", "name.stl", "name.json"}
    check_ply_glb_stl(tmp_path / "out" / "name")


def test_format_keeps_an_unknown_suffix_in_the_base_name(inputs, tmp_path):
    image, depth = inputs
    assert run(image, "--depth", depth, "--format", "ply,json", "-o", tmp_path / "scan.v2", "-q") == 0
    assert {"scan.v2.ply", "scan.v2.json"} <= names(tmp_path)


def test_format_with_an_existing_folder_or_a_trailing_slash(inputs, tmp_path):
    image, depth = inputs
    (tmp_path / "existing").mkdir()
    assert run(image, "--depth", depth, "--format", "ply,stl", "-o", tmp_path / "existing", "-q") == 0
    assert names(tmp_path / "existing") == {"photo.ply", "photo.stl", "photo.json"}
    assert run(image, "--depth", depth, "--format", "glb", "-o", f"{tmp_path / 'new'}/", "-q") == 0
    assert names(tmp_path / "new") == {"photo.glb", "photo.json"}


def test_several_inputs_into_a_folder_get_unique_stems(tmp_path, dpt_model):
    picture = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    sources = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(picture).save(tmp_path / folder / "photo.png")
        sources.append(tmp_path / folder / "photo.png")
    out = tmp_path / "out"
    assert run(*sources, "--model", dpt_model, "--device", "cpu", "--format", "ply,glb,stl", "-o", f"{out}/",
               "-q") == 0
    assert names(out) == {f"{stem}{suffix}" for stem in ("photo", "photo-1")
                          for suffix in (".ply", ".glb", ".stl", ".json")}
    for stem in ("photo", "photo-1"):
        assert PlyData.read(out / f"{stem}.ply")["vertex"].count > 0
        assert json.loads((out / f"{stem}.json").read_text())["units"] == "relative units"


def test_plan_outputs_several_inputs_and_kinds(tmp_path):
    sources = [Path("x/photo.jpg"), Path("y/photo.png"), Path("z/photo.webp"), Path("other.png")]
    planned = plan_outputs(sources, str(tmp_path / "out"), kinds=["stl", "glb"])
    assert [source for source, _ in planned] == sources
    stems = [targets["stl"].name[:-len(".stl")] for _, targets in planned]
    assert stems == ["photo", "photo-1", "photo-2", "other"]
    for _, targets in planned:
        assert list(targets) == ["stl", "glb", "json"]
        assert {path.parent for path in targets.values()} == {tmp_path / "out"}


@pytest.mark.parametrize("args, words", [
    (["--format", "ply,gltf"], "Unknown output format 'gltf'"),
    (["--format", "input"], "Unknown output format 'input'"),
    (["--format", "ply", "--mesh"], "--mesh"),
    (["--simplify", "tiny"], "Simplify to"),
    (["--simplify", "3"], "at least 4"),
])
def test_bad_output_options_are_one_line_and_exit_2(inputs, tmp_path, capsys, args, words):
    image, depth = inputs
    assert run(image, "--depth", depth, *args) == EXIT_USAGE
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0]
    assert names(tmp_path) == {"photo.png", "d.npy"}


def simplified_faces(inputs, tmp_path, simplify: str) -> int:
    image, depth = inputs
    base = tmp_path / f"s-{simplify}"
    assert run(image, "--depth", depth, "--max-points", 0, "--format", "simplified_glb", "--simplify", simplify,
               "-o", base, "-q") == 0
    return len(trimesh.load(base.with_name(base.name + ".simplified.glb"), force="mesh", process=False).faces)


def test_simplify_sets_the_simplified_mesh_size(inputs, tmp_path):
    full = 2 * (H - 1) * (W - 1)
    low = simplified_faces(inputs, tmp_path, "low")
    medium = simplified_faces(inputs, tmp_path, "medium")
    counted = simplified_faces(inputs, tmp_path, "500")
    assert 0 < low < medium < full
    assert low <= round(0.10 * full) + 2 and medium <= round(0.25 * full) + 2
    assert 0 < counted <= 500 and counted > low


def test_known_length_scales_the_written_cloud(inputs, tmp_path):
    image, depth = inputs
    output = tmp_path / "scaled.ply"
    assert run(image, "--depth", depth, "--max-points", 0, "--no-clean", "--known-length", 3, 4, 20, 15, 0.25,
               "-o", output, "-q") == 0
    info = json.loads((tmp_path / "scaled.json").read_text())
    assert info["units"] == "metres" and info["scale"]["known_length_m"] == 0.25
    cloud = PlyData.read(output)["vertex"]
    assert cloud.count == H * W  # every pixel a point: point index = y * W + x
    points = np.column_stack([cloud["x"], cloud["y"], cloud["z"]]).astype(np.float64)
    distance = np.linalg.norm(points[15 * W + 20] - points[4 * W + 3])
    assert distance == pytest.approx(0.25, abs=1e-4)
    unscaled = tilted_depth()
    assert points[0, 2] != pytest.approx(-unscaled[0, 0], rel=1e-3)  # it really was rescaled


def test_known_length_on_a_pixel_without_depth_fails_cleanly(inputs, tmp_path, capsys):
    image, _ = inputs
    depth = tilted_depth()
    depth[4, 3] = 0.0  # no depth under the first pixel
    np.save(tmp_path / "holes.npy", depth)
    code = run(image, "--depth", tmp_path / "holes.npy", "--max-points", 0, "--no-clean", "--known-length",
               3, 4, 20, 15, 0.25, "--format", "ply,glb", "-o", tmp_path / "scaled")
    assert code == EXIT_FAILED
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "no depth at the known length's pixel (3, 4)" in lines[0]
    assert names(tmp_path) == {"photo.png", "d.npy", "holes.npy"}


def test_known_length_goes_with_one_image_only(inputs, tmp_path, capsys):
    image, _ = inputs
    assert run(image, image, "-o", tmp_path / "out/", "--known-length", 1, 1, 5, 5, 1.0) == EXIT_USAGE
    assert "one input image only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
