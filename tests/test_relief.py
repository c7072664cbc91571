"""Relief mode, paper backgrounds, drawing detection, STL export and the metadata sidecar, read back with real readers
(trimesh, plyfile, json). Results come from user depth maps, so no depth model is needed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import trimesh
from conftest import ROOT, png_bytes
from PIL import Image
from plyfile import PlyData

from converter import geometry
from converter.errors import OptionError
from converter.images import load_image, looks_like_drawing, paper_mask, remove_paper_background
from converter.mesh import mesh_from_result
from converter.options import ConversionOptions
from converter.pipeline import Converter

H, W = 48, 64


def npy_bytes(depth: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(depth, dtype=np.float32))
    return buffer.getvalue()


def convert(image, depth, kind="metric", **options):
    options.setdefault("max_points", 0)
    return Converter().convert(image, depth=npy_bytes(depth), options=ConversionOptions(depth_kind=kind, **options))


def noise_image(height=H, width=W, channels=3, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def ramp_depth(height=H, width=W, near=1.0, far=3.0) -> np.ndarray:
    """Depth linear along x: nearest on the right."""
    return np.tile(np.linspace(far, near, width, dtype=np.float32), (height, 1))


def grid_z(result) -> np.ndarray:
    z = np.full(result.keep.shape, np.nan, dtype=np.float64)
    z[result.keep] = result.points[:, 2]
    return z


def pencil_drawing(height=160, width=200, seed=3) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """White paper with grain, a dark closed ring enclosing white paper, and a grey pencil line outside it."""
    rng = np.random.default_rng(seed)
    paper = 236 + rng.normal(0, 4, (height, width, 1)) + rng.normal(0, 1.5, (height, width, 3))
    paper += np.linspace(-6, 6, width)[None, :, None]  # uneven light
    rows, columns = np.mgrid[0:height, 0:width]
    radius = np.hypot(rows - 80, columns - 80)
    ring = (radius >= 40) & (radius <= 46)
    inside = radius < 38
    line = (np.abs(rows - (20 + columns * 0.3)) <= 1.5) & (columns >= 130) & (columns <= 190)
    picture = paper.copy()
    picture[ring] = 45 + rng.normal(0, 5, (int(ring.sum()), 3))
    picture[line] = 150 + rng.normal(0, 3, (int(line.sum()), 1))
    outside = radius > 49
    line_halo = np.zeros_like(line)
    for dr in range(-3, 4):
        for dc in range(-3, 4):
            line_halo |= np.roll(np.roll(line, dr, 0), dc, 1)
    outside &= ~line_halo
    return np.clip(picture, 0, 255).astype(np.uint8), {"ring": ring, "inside": inside, "line": line, "outside": outside}


# ------------------------------------------------------------------------------------------------- relief geometry


def test_metric_ramp_stays_a_ramp_with_the_image_aspect():
    result = convert(noise_image(), ramp_depth(), mode="relief", relief=2.0, clean=False)
    assert result.keep.all() and result.units == "relative units" and result.mode == "relief"
    z = grid_z(result)
    expected = geometry.RELIEF_HEIGHT * 2.0 * np.linspace(0, 1, W)  # depth 3 → 0, depth 1 → full height
    np.testing.assert_allclose(z, np.broadcast_to(expected, z.shape), atol=1e-5 * expected.max())
    assert np.ptp(z, axis=0).max() == 0  # the same height down every column
    x = result.points[:, 0].reshape(H, W)
    y = result.points[:, 1].reshape(H, W)
    np.testing.assert_allclose(x[0], (np.arange(W) + 0.5) / W - 0.5, atol=1e-6)
    np.testing.assert_allclose(y[:, 0], H / (2 * W) - (np.arange(H) + 0.5) / W, atol=1e-6)
    # Pixel centres, square pixels: the image rectangle (extent + one pixel) keeps the aspect W / H.
    x_extent, y_extent = np.ptp(x) + 1 / W, np.ptp(y) + 1 / W
    assert x_extent == pytest.approx(1.0) and x_extent / y_extent == pytest.approx(W / H, rel=1e-6)
    assert y[0, 0] > y[-1, 0]  # image top = +y


def test_disparity_ramp_is_linear_in_the_models_disparity():
    disparity = np.tile(np.linspace(0.5, 4.0, W, dtype=np.float32), (H, 1))
    result = convert(noise_image(), disparity, kind="disparity", mode="relief", clean=False)
    low, high = np.percentile(disparity, [2.0, 98.0])
    t = np.clip((disparity - low) / (high - low), 0, 1)
    np.testing.assert_allclose(grid_z(result), geometry.RELIEF_HEIGHT * t, atol=1e-5 * geometry.RELIEF_HEIGHT)


def test_constant_depth_gives_a_flat_relief():
    result = convert(noise_image(), np.full((H, W), 2.0), mode="relief")
    assert result.keep.all() and np.all(result.points[:, 2] == 0)


def test_relief_keeps_the_same_pixels_colours_and_mesh_as_perspective():
    depth = ramp_depth()
    depth[10:30, 20:40] = 0.8  # a step: cleaning drops its edges
    depth[40:, :5] = 0  # no depth
    rgba = noise_image(channels=4)
    rgba[:, :, 3] = 255
    rgba[:8, 50:, 3] = 0  # transparent
    for max_points in (0, 900):
        perspective = convert(rgba, depth, max_points=max_points)
        relief = convert(rgba, depth, max_points=max_points, mode="relief", normals=True)
        np.testing.assert_array_equal(relief.keep, perspective.keep)
        np.testing.assert_array_equal(relief.grid_rows, perspective.grid_rows)
        np.testing.assert_array_equal(relief.grid_columns, perspective.grid_columns)
        np.testing.assert_array_equal(relief.colors, perspective.colors)
        assert len(relief.points) == len(perspective.points) < relief.keep.size
        relief_mesh, perspective_mesh = mesh_from_result(relief), mesh_from_result(perspective)
        np.testing.assert_array_equal(relief_mesh.faces, perspective_mesh.faces)
        assert relief_mesh.face_count > 0 and np.all(relief_mesh.face_normals()[:, 2] > 0)  # facing the viewer
        assert np.all(relief.normals[:, 2] > 0)
        # Nearer is higher: the step in front (depth 0.8) is the top of the relief.
        kept_depth = relief.depth[np.ix_(relief.grid_rows, relief.grid_columns)][relief.keep]
        assert relief.points[np.argmin(kept_depth), 2] == pytest.approx(relief.points[:, 2].max())


def test_mode_is_validated():
    with pytest.raises(OptionError, match="mode must be 'perspective'"):
        ConversionOptions(mode="orthographic")
    assert ConversionOptions().mode == "perspective" and ConversionOptions().paper_background is False
    with pytest.raises(OptionError, match="paper_background must be true or false"):
        ConversionOptions(paper_background="false")
    assert ConversionOptions(paper_background=np.True_).paper_background is True


# -------------------------------------------------------------------------------------------- paper and drawings


def test_paper_background_removes_the_paper_and_keeps_the_drawing_and_enclosed_white():
    picture, parts = pencil_drawing()
    cleaned = remove_paper_background(load_image(picture))
    transparent = cleaned.alpha == 0
    assert transparent[parts["outside"]].mean() > 0.99
    assert not transparent[parts["ring"]].any()
    assert not transparent[parts["line"]].any()
    assert not transparent[parts["inside"]].any()  # white paper enclosed by the ring is not background
    np.testing.assert_array_equal(cleaned.rgb, picture)

    plain = convert(picture, np.full(picture.shape[:2], 2.0))
    assert plain.keep.all()
    result = convert(picture, np.full(picture.shape[:2], 2.0), paper_background=True, mode="relief")
    assert not result.keep[parts["outside"]].any() or result.keep[parts["outside"]].mean() < 0.01
    assert result.keep[parts["inside"]].all() and result.keep[parts["ring"]].all()
    assert "paper_background" in result.timings and result.options.paper_background is True


def test_paper_background_leaves_photos_and_dark_borders_alone(photo):
    assert remove_paper_background(load_image(photo)).alpha is None
    dark = np.full((40, 50, 3), 30, np.uint8)
    assert not paper_mask(load_image(dark)).any()


@pytest.mark.slow  # a third of a second or more: the fast tier stays under 30 s
def test_paper_background_on_megapixels():
    """Three megapixels of noisy paper: the border's paper goes, the drawing and the white inside it stay. (How
    long it takes is bench/geometry_speed.py's business: a duration asserted here would depend on the machine.)"""
    rng = np.random.default_rng(0)
    picture = (232 + rng.integers(-8, 9, (1500, 2000, 3))).astype(np.uint8)
    picture[300:1200, 400:1600] = 40
    picture[500:1000, 600:1400] = 235
    mask = paper_mask(load_image(picture))
    assert mask[:300].all() and not mask[300:1200, 400:1600].any()


def test_looks_like_drawing():
    picture, _ = pencil_drawing()
    assert looks_like_drawing(load_image(picture))
    logo = np.zeros((80, 80, 4), np.uint8)
    logo[20:60, 20:60] = (200, 30, 30, 255)
    assert looks_like_drawing(load_image(logo))  # transparent background
    flat_logo = np.full((80, 120, 3), 250, np.uint8)
    flat_logo[20:60, 20:50] = (0, 90, 200)
    flat_logo[30:50, 70:100] = (240, 180, 0)
    assert looks_like_drawing(load_image(flat_logo))
    assert not looks_like_drawing(load_image(noise_image()))
    rows, columns = np.mgrid[0:96, 0:128]
    gradient = np.dstack([columns * 2, rows * 2, 255 - columns]).astype(np.uint8)
    assert not looks_like_drawing(load_image(gradient))
    assert convert(picture, np.full(picture.shape[:2], 2.0)).looks_like_drawing is True
    assert convert(gradient, np.full((96, 128), 2.0)).looks_like_drawing is False


# ---------------------------------------------------------------------------------------------------------- STL


def read_stl(path) -> trimesh.Trimesh:
    mesh = trimesh.load(str(path), file_type="stl")
    assert isinstance(mesh, trimesh.Trimesh)
    return mesh


def assert_solid(mesh: trimesh.Trimesh, width_mm: float, aspect: float):
    assert mesh.is_watertight
    assert mesh.is_winding_consistent
    assert mesh.volume > 0
    (x0, y0, z0), (x1, y1, _) = mesh.bounds
    assert (x0, y0, z0) == pytest.approx((0, 0, 0), abs=1e-4)
    assert x1 == pytest.approx(width_mm, rel=1e-6) and y1 == pytest.approx(width_mm * aspect, rel=1e-6)


@pytest.mark.parametrize("mode", ["perspective", "relief"])
def test_stl_is_a_watertight_relief_in_millimetres(tmp_path, mode):
    result = convert(noise_image(), ramp_depth(), mode=mode, relief=1.5, clean=False)
    path = result.save(tmp_path / "ramp.stl", width_mm=80.0, base_mm=3.0)
    mesh = read_stl(path)
    assert_solid(mesh, 80.0, H / W)
    top = 3.0 + geometry.RELIEF_HEIGHT * 1.5 * 80.0
    assert mesh.bounds[1, 2] == pytest.approx(top, rel=1e-6)
    # A linear ramp from base to top across the full width: the volume is exact.
    assert mesh.volume == pytest.approx(80.0 * 80.0 * H / W * (3.0 + (top - 3.0) / 2), rel=1e-5)
    # Stored normals are unit, outward (they match the winding) and the file is 84 + 50 bytes per triangle.
    raw = path.read_bytes()
    count = int(np.frombuffer(raw[80:84], "<u4")[0])
    assert len(raw) == 84 + 50 * count and count == len(mesh.faces) and not raw.startswith(b"solid")
    records = np.frombuffer(raw[84:], dtype=[("n", "<f4", (3,)), ("v", "<f4", (3, 3)), ("a", "<u2")])
    v = records["v"].astype(np.float64)
    cross = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    cross /= np.linalg.norm(cross, axis=1, keepdims=True)
    assert np.einsum("ij,ij->i", cross, records["n"]).min() > 0.999


def test_stl_is_the_same_whatever_the_mode(tmp_path):
    depth = ramp_depth()
    perspective = convert(noise_image(), depth).save(tmp_path / "a.stl")
    relief = convert(noise_image(), depth, mode="relief").save(tmp_path / "b.stl")
    assert perspective.read_bytes() == relief.read_bytes()


def test_stl_with_transparent_holes_stays_closed(tmp_path):
    rgba = noise_image(channels=4)
    rgba[:, :, 3] = 255
    rgba[10:20, 10:30, 3] = 0  # a hole inside
    rgba[:, -6:, 3] = 0  # and a transparent strip along the border
    depth = np.full((H, W), 2.0, np.float32)
    depth[25:40, 30:50] = 1.0  # a raised block
    result = convert(rgba, depth, clean=False)
    mesh = read_stl(result.save(tmp_path / "holes.stl", width_mm=64.0, base_mm=2.0))
    assert_solid(mesh, 64.0, H / W)
    # Holes are flat at base level: the top surface over them sits at z = 2 mm exactly.
    pixel = 64.0 / W
    over_hole = (np.abs(mesh.vertices[:, 0] - 20 * pixel) < 8 * pixel) & (
        np.abs(mesh.vertices[:, 1] - (H - 15) * pixel) < 3 * pixel)
    assert over_hole.any() and np.allclose(mesh.vertices[over_hole, 2], 2.0)
    flat = convert(rgba, np.full((H, W), 2.0))
    flat_mesh = read_stl(flat.save(tmp_path / "flat.stl", width_mm=64.0, base_mm=2.0))
    assert flat_mesh.volume == pytest.approx(64.0 * 64.0 * H / W * 2.0, rel=1e-6)


def test_stl_on_a_subsampled_grid_and_bad_sizes(tmp_path):
    result = convert(noise_image(97, 131), ramp_depth(97, 131), max_points=500, mode="relief")
    assert len(result.grid_columns) < 131
    assert_solid(read_stl(result.save(tmp_path / "coarse.stl", width_mm=50.0)), 50.0, 97 / 131)
    for sizes in ({"width_mm": 0.0}, {"base_mm": -1.0}, {"width_mm": float("nan")}):
        with pytest.raises(OptionError, match="millimetres"):
            result.save(tmp_path / "bad.stl", **sizes)
    assert not list(tmp_path.glob("bad*")) and not list(tmp_path.glob(".*.part"))


# ------------------------------------------------------------------------------------------ metadata and headers


def test_sidecar_records_camera_units_mode_and_options(tmp_path):
    result = convert(noise_image(), ramp_depth(), mode="relief", paper_background=True)
    path = result.save(tmp_path / "out.ply", sidecar=True)
    info = json.loads((tmp_path / "out.json").read_text())
    assert info == json.loads(json.dumps(result.metadata()))
    assert info["mode"] == "relief" and info["units"] == "relative units" and "z = height" in info["axes"]
    assert info["camera"]["source"] == "default:fov60" and info["camera"]["fx"] == pytest.approx(result.intrinsics.fx)
    assert info["options"]["mode"] == "relief" and info["options"]["paper_background"] is True
    assert info["options"] == json.loads(json.dumps(result.options.to_dict()))
    assert info["depth_kind"] == "metric" and info["model"] is None
    assert info["image"] == {"width": W, "height": H, "scale": 1.0, "has_alpha": False}
    assert info["point_count"] == len(result.points) and "geometry" in info["timings_s"]
    assert isinstance(info["looks_like_drawing"], bool) and isinstance(info["notes"], list)
    assert path == tmp_path / "out.ply" and not list(tmp_path.glob(".*.part"))

    user = convert(noise_image(), ramp_depth(), fov_deg=50)
    user.save(tmp_path / "user.glb", sidecar=True)
    info = json.loads((tmp_path / "user.json").read_text())
    assert info["camera"]["source"] == "user:fov" and info["camera"]["fov_x_deg"] == pytest.approx(50)
    assert info["mode"] == "perspective" and info["units"] == "metres"


def test_sidecar_with_exif_camera_and_obj_files(tmp_path):
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50  # FocalLengthIn35mmFilm
    buffer = io.BytesIO()
    Image.fromarray(noise_image()).save(buffer, "JPEG", exif=exif)
    result = convert(buffer.getvalue(), ramp_depth())
    result.save(tmp_path / "photo.obj", sidecar=True)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["photo.json", "photo.mtl", "photo.obj", "photo_texture.png"]
    info = json.loads((tmp_path / "photo.json").read_text())
    assert info["camera"]["source"].startswith("exif:FocalLengthIn35mm")
    result.save(tmp_path / "print.stl", sidecar=True)
    assert json.loads((tmp_path / "print.json").read_text())["camera"]["source"].startswith("exif:")
    result.save(tmp_path / "plain.ply")
    assert not (tmp_path / "plain.json").exists()  # only when asked


def test_ply_headers_carry_mode_and_options(tmp_path):
    result = convert(noise_image(), ramp_depth(), mode="relief", relief=0.5, fov_deg=70)
    for name, mesh in (("cloud.ply", False), ("mesh.ply", True)):
        comments = PlyData.read(str(result.save(tmp_path / name, mesh=mesh))).comments
        assert "mode: relief" in comments and "units: relative units" in comments
        options = next(c for c in comments if c.startswith("options: "))
        assert "mode=relief" in options and "relief=0.5" in options and "paper_background=False" in options
        assert "fov_deg=70" in options
        assert any(c.startswith("camera: pinhole") and "source=user:fov" in c for c in comments)
    perspective = PlyData.read(str(convert(noise_image(), ramp_depth()).save(tmp_path / "p.ply"))).comments
    assert "mode: perspective" in perspective and "units: metres" in perspective


# ---------------------------------------------------------------------------------------------------------- CLI


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    env.pop("DEPTH_MODEL", None)
    return subprocess.run([sys.executable, "-m", "converter", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=180)


@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
def test_cli_relief_paper_background_and_stl(tmp_path):
    picture, parts = pencil_drawing()
    image = tmp_path / "sketch.png"
    image.write_bytes(png_bytes(picture))
    depth = tmp_path / "depth.npy"
    np.save(depth, np.full(picture.shape[:2], 2.0, np.float32))

    output = tmp_path / "sketch.ply"
    completed = run_cli(image, "--depth", depth, "-o", output, "--model", "/nonexistent/model", "--mode", "relief",
                        "--paper-background", "--max-points", "0")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("\n") == 1 and "relative units" in completed.stdout
    vertices = PlyData.read(str(output))["vertex"]
    assert 0 < vertices.count < picture.shape[0] * picture.shape[1] * 0.6  # the paper is gone
    np.testing.assert_allclose(vertices["z"], 0.0)  # flat depth → flat relief
    info = json.loads((tmp_path / "sketch.json").read_text())
    assert info["mode"] == "relief" and info["options"]["paper_background"] is True

    stl = tmp_path / "sketch.stl"
    completed = run_cli(image, "--depth", depth, "-o", stl, "--model", "/nonexistent/model", "--paper-background",
                        "--stl-width-mm", "50", "--stl-base-mm", "1.5", "--relief", "0.5")
    assert completed.returncode == 0, completed.stderr
    mesh = read_stl(stl)
    assert_solid(mesh, 50.0, picture.shape[0] / picture.shape[1])
    assert mesh.volume == pytest.approx(50.0 * 50.0 * picture.shape[0] / picture.shape[1] * 1.5, rel=1e-6)
    assert json.loads((tmp_path / "sketch.json").read_text())["options"]["relief"] == 0.5


@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
def test_cli_rejects_a_bad_mode_and_bad_sizes(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(noise_image()))
    completed = run_cli(image, "--mode", "cubist", "-o", tmp_path / "out.ply")
    assert completed.returncode == 2
    assert "--mode: invalid choice: 'cubist'" in completed.stderr and "relief" in completed.stderr
    completed = run_cli(image, "--stl-width-mm", "-5", "-o", tmp_path / "out.stl")
    assert completed.returncode == 2 and completed.stderr.strip().splitlines()[-1].startswith("error: The STL width")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photo.png"]
