"""Gaussian splats (converter.exports.splats, the ``splat_ply`` output): the file as 3DGS tools read it, the Gaussians'
shapes on analytic surfaces, and renders by an independent rasterizer (tests/splat_render.py) from the original
camera and from a camera moved 5° around the scene.

Results come from a user-supplied metric depth map, so the true surface is known and no model runs. The pictures
are a generated photo-like one and real photographs bundled with scikit-image (no network).
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from conftest import download as fetch_download
from conftest import png_bytes, wait_for_job
from PIL import Image, ImageDraw, ImageFilter
from plyfile import PlyData
from splat_render import Camera, psnr, read_splats, render

from converter import ConversionOptions
from converter.__main__ import main
from converter.exports.outputs import OUTPUTS, kind_for_path
from converter.pipeline import Converter
from converter.exports.splats import FOOTPRINT_SIGMA, OPACITY, PROPERTIES, SH_C0, splats_from_result

H, W = 96, 128


def photo_like(height=H, width=W, seed=0) -> np.ndarray:
    """[H, W, 3] uint8 with a photo's statistics: smooth shading at several scales, a few sharp-edged round objects,
    a slight blur (a lens) and sensor grain."""
    rng = np.random.default_rng(seed)
    picture = np.zeros((height, width, 3))
    for cells, weight in ((3, 0.5), (8, 0.3), (24, 0.15), (64, 0.08)):
        coarse = (rng.random((cells, max(2, cells * width // height), 3)) * 255).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), float) / 255
        picture += weight * (smooth - 0.5)
    image = Image.fromarray((np.clip(0.5 + picture, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(4, 20))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    grain = rng.integers(-6, 7, (height, width, 3))
    return np.clip(np.asarray(image.filter(ImageFilter.GaussianBlur(0.6)), np.int16) + grain, 0, 255).astype(np.uint8)


def bump_depth(rows, columns, height=H, width=W) -> np.ndarray:
    """Metres at (fractional) pixel positions of a height × width picture: a plane sloping away to the right and
    down, with a smooth round bump half a metre towards the camera. Continuous, so nothing is hidden from a camera
    moved a few degrees."""
    r2 = ((columns - 0.55 * width) ** 2 + (rows - 0.45 * height) ** 2) / (0.22 * width) ** 2
    return 3.0 + 0.6 * columns / width + 0.3 * rows / height - 0.5 * np.exp(-r2)


def npy_bytes(depth: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(depth, dtype=np.float32))
    return buffer.getvalue()


def convert(image, depth, **options):
    options.setdefault("max_points", 0)
    return Converter().convert(image, depth=npy_bytes(depth), options=ConversionOptions(depth_kind="metric",
                                                                                         **options))


def camera_of(result) -> Camera:
    k = result.intrinsics
    return Camera(k.width, k.height, k.fx, k.fy, k.cx, k.cy)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """(picture, result, path of its .splat.ply) for the photo-like picture on the bump."""
    picture = photo_like()
    rows, columns = np.mgrid[0:H, 0:W].astype(np.float64)
    result = convert(picture, bump_depth(rows, columns))
    path = tmp_path_factory.mktemp("splats") / "scene.splat.ply"
    result.save(path)
    return picture, result, path


# ------------------------------------------------------------------------------------------------ the file itself


def test_plyfile_reads_every_3dgs_property_as_float32(scene):
    _, result, path = scene
    ply = PlyData.read(str(path))
    assert not ply.text and ply.byte_order == "<" and [element.name for element in ply.elements] == ["vertex"]
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2",
                                                   "opacity", "scale_0", "scale_1", "scale_2",
                                                   "rot_0", "rot_1", "rot_2", "rot_3"] == list(PROPERTIES)
    assert all(p.val_dtype == "f4" for p in vertex.properties)
    assert vertex.count == len(result.points) == H * W
    for name in PROPERTIES:
        assert vertex[name].dtype == np.float32 and np.isfinite(vertex[name]).all(), name
    assert any(comment.startswith("units: metres") for comment in ply.comments)


def test_values_are_stored_as_3dgs_stores_them(scene):
    _, result, path = scene
    vertex = PlyData.read(str(path))["vertex"]
    np.testing.assert_array_equal(np.column_stack([vertex["x"], vertex["y"], vertex["z"]]), result.points)
    colour = 0.5 + SH_C0 * np.column_stack([vertex[f"f_dc_{c}"] for c in range(3)])
    np.testing.assert_allclose(colour * 255, result.colors, atol=1e-3)
    np.testing.assert_allclose(1 / (1 + np.exp(-vertex["opacity"].astype(np.float64))), OPACITY, rtol=1e-6)
    quaternions = np.column_stack([vertex[f"rot_{i}"] for i in range(4)])
    np.testing.assert_allclose(np.linalg.norm(quaternions, axis=1), 1.0, atol=1e-5)
    normals = np.column_stack([vertex["nx"], vertex["ny"], vertex["nz"]])
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)
    scales = np.exp(np.column_stack([vertex[f"scale_{i}"] for i in range(3)]))
    assert (scales[:, 2] < 0.05 * scales[:, 1]).all()  # flat along the third axis


def test_the_kind_is_a_download_a_suffix_and_a_cli_format():
    kind = OUTPUTS["splat_ply"]
    assert kind.download and kind.suffix == ".splat.ply" and kind.file_name.endswith(".splat.ply")
    assert kind_for_path("x.splat.ply") is kind and kind_for_path("x.ply") is OUTPUTS["ply"]


# ------------------------------------------------------------------------------------- shapes on known surfaces


def test_a_fronto_parallel_wall_gets_round_flat_splats_of_its_pixel_footprint():
    depth = np.full((24, 32), 2.5, np.float32)
    result = convert(photo_like(24, 32), depth)
    splats = splats_from_result(result)
    k = result.intrinsics
    np.testing.assert_allclose(splats.scales[:, :2], FOOTPRINT_SIGMA * 2.5 / k.fx, rtol=1e-4)
    np.testing.assert_allclose(splats.normals, np.tile([0, 0, 1], (len(splats), 1)), atol=1e-6)


def test_a_slanted_plane_turns_its_splats_to_its_normal_and_stretches_them_along_the_slope():
    rows, columns = np.mgrid[0:24, 0:32].astype(np.float64)
    # A wall turned away, 2 … 3.2 m, through a long lens: each pixel's patch is about 2.5 × longer across than high.
    result = convert(photo_like(24, 32), 1.0 / (0.5 - 0.006 * columns), clean=False, focal_px=200.0)
    points = result.points.astype(np.float64)
    centred = points - points.mean(axis=0)
    plane_normal = np.linalg.svd(centred, full_matrices=False)[2][2]
    plane_normal *= np.sign(plane_normal[2])  # facing the camera (+z)
    splats = splats_from_result(result)
    assert np.degrees(np.arccos(np.clip(splats.normals @ plane_normal, -1, 1))).max() < 0.5
    w, x, y, z = splats.rotations.T  # the Gaussian's own x axis (its longest) is the first column of R
    major = np.column_stack([1 - 2 * (y * y + z * z), 2 * (x * y + w * z), 2 * (x * z - w * y)])
    slope = np.cross([0.0, 1.0, 0.0], plane_normal)  # the horizontal direction within the plane
    assert (np.abs(major @ (slope / np.linalg.norm(slope))) > 0.99).all()
    depth = -points[:, 2]
    stretch = splats.scales[:, 0] / (FOOTPRINT_SIGMA * depth / result.intrinsics.fx)
    assert stretch.min() > 2 and (splats.scales[:, 1] / splats.scales[:, 0] < 0.5).all()


def test_splats_are_sized_to_the_grid_cell_when_the_grid_is_coarser_than_the_picture():
    depth = np.full((48, 64), 2.0, np.float32)
    result = convert(photo_like(48, 64), depth, max_points=48 * 64 // 16)  # 4 × 4 pixels per sample
    assert (len(result.grid_rows), len(result.grid_columns)) == (12, 16)
    splats = splats_from_result(result)
    np.testing.assert_allclose(splats.scales[:, :2], FOOTPRINT_SIGMA * 4 * 2.0 / result.intrinsics.fx, rtol=1e-4)


def test_splats_do_not_bridge_a_depth_discontinuity():
    depth = np.full((24, 32), 4.0, np.float32)
    depth[:, :16] = 2.0  # a box in front of a wall, kept edge pixels included
    result = convert(photo_like(24, 32), depth, clean=False)
    splats = splats_from_result(result)
    footprint = FOOTPRINT_SIGMA * -result.points[:, 2] / result.intrinsics.fx
    np.testing.assert_allclose(splats.scales[:, :2], np.column_stack([footprint, footprint]), rtol=1e-4)


def test_transparent_pixels_make_no_splats_and_partial_alpha_lowers_opacity():
    picture = np.dstack([photo_like(24, 32), np.full((24, 32), 255, np.uint8)])
    picture[:, :8, 3] = 0
    picture[:, 8:12, 3] = 128
    result = Converter().convert(png_bytes(picture), depth=npy_bytes(np.full((24, 32), 2.0)),
                                 options=ConversionOptions(depth_kind="metric", max_points=0))
    splats = splats_from_result(result)
    assert len(splats) == 24 * 24
    opacity = splats.opacities.reshape(24, 24)
    np.testing.assert_allclose(opacity[:, :4], OPACITY * 128 / 255, rtol=1e-6)
    np.testing.assert_allclose(opacity[:, 4:], OPACITY, rtol=1e-6)


@pytest.mark.parametrize("height, width, max_points, alpha", [(2, 400, 200, 255), (300, 2, 150, 255), (8, 8, 0, 0)],
                         ids=["one-row", "one-column", "all-transparent"])
def test_degenerate_grids_give_finite_splats_or_none(tmp_path, height, width, max_points, alpha):
    """A grid of one row or one column (the smallest image is 2 pixels a side; a thin one sampled coarsely gives
    one line of samples) has neighbours along one direction only."""
    picture = np.dstack([photo_like(height, width), np.full((height, width), alpha, np.uint8)])
    result = Converter().convert(png_bytes(picture), depth=npy_bytes(np.full((height, width), 2.0)),
                                 options=ConversionOptions(depth_kind="metric", max_points=max_points))
    assert 1 in result.keep.shape or not alpha
    path = result.save(tmp_path / "thin.splat.ply")
    vertex = PlyData.read(str(path))["vertex"]
    assert vertex.count == (result.keep.size if alpha else 0)
    assert all(np.isfinite(vertex[name]).all() for name in PROPERTIES)


def test_relief_mode_splats_the_height_field(tmp_path):
    result = convert(photo_like(24, 32), np.full((24, 32), 2.0, np.float32), mode="relief")
    splats = splats_from_result(result)
    np.testing.assert_array_equal(splats.centres, result.points)
    np.testing.assert_allclose(splats.scales[:, :2], FOOTPRINT_SIGMA / 32, rtol=1e-4)  # a cell is 1/W wide
    np.testing.assert_allclose(splats.normals[:, 2], 1.0, atol=1e-6)
    assert PlyData.read(str(result.save(tmp_path / "relief.splat.ply")))["vertex"].count == 24 * 32


@pytest.mark.parametrize("mode", ["perspective", "relief"])
def test_a_known_length_scales_the_splats_with_the_points(mode):
    depth = np.full((24, 32), 2.0, np.float32)
    depth[10:14, 14:18] = np.nan  # a hole: samples beside it take one-sided steps
    depth[3, 3] = 1.0  # alone in front: a splat without neighbours on its surface
    plain = convert(photo_like(24, 32), depth, mode=mode, clean=False)
    scaled = convert(photo_like(24, 32), depth, mode=mode, clean=False, known_length=(0, 23, 31, 23, 5.0))
    factor = scaled.scale["factor"]
    assert factor != pytest.approx(1.0)
    np.testing.assert_allclose(splats_from_result(scaled).scales, factor * splats_from_result(plain).scales,
                               rtol=1e-4)


# ------------------------------------------------------------------------------------------------------ renders


def test_rendered_from_the_original_camera_the_splats_are_the_picture(scene):
    picture, result, path = scene
    rgb, coverage = render(read_splats(path), camera_of(result))
    assert coverage.min() > 0.95  # every pixel closed
    assert psnr(rgb, picture / 255.0) >= 25.0


def test_a_box_in_front_of_a_wall_renders_closed_from_the_camera(tmp_path):
    """Depth edges: every splat keeps its own depth's footprint, so from the camera nothing opens between the box
    and the wall (cleaning off keeps the edge pixels; on, it drops them and only a few corner pixels stay open)."""
    depth = np.full((H, W), 4.0, np.float32)
    depth[20:70, 30:90] = 2.0
    picture = photo_like(seed=1)
    result = convert(picture, depth, clean=False)
    path = result.save(tmp_path / "box.splat.ply")
    rgb, coverage = render(read_splats(path), camera_of(result))
    assert coverage.min() > 0.95 and psnr(rgb, picture / 255.0) >= 25.0


def real_photo(name: str, shrink: int = 1) -> np.ndarray:
    """[h, w, 3] uint8: the middle 3:4 band of one of scikit-image's bundled photographs (``chelsea`` 300 × 400,
    ``astronaut`` 384 × 512), box-shrunk ``shrink`` times. Shrinking packs several pixels' detail into each one,
    sharper than a camera delivers at its own resolution, so the fast case shrinks only 2 × (the astronaut shrunk
    4 × renders at 21.5 dB: the splats' σ = 0.6 cell plus the viewer's 0.3 px² filter blur single-pixel detail)."""
    from skimage import data

    photo = getattr(data, name)()
    height, width = photo.shape[:2]
    band = min(height, width * 3 // 4), min(width, height * 4 // 3)
    top, left = (height - band[0]) // 2, (width - band[1]) // 2
    photo = Image.fromarray(photo[top:top + band[0], left:left + band[1]])
    return np.asarray(photo.resize((band[1] // shrink, band[0] // shrink), Image.Resampling.BOX))


@pytest.fixture(scope="module")
def photo_scene(tmp_path_factory):
    """(name, shrink) -> (photo, result, path of its .splat.ply): a real photograph on the bump, made once."""
    made = {}

    def make(name, shrink=1):
        if (name, shrink) not in made:
            photo = real_photo(name, shrink)
            height, width = photo.shape[:2]
            rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
            result = convert(photo, bump_depth(rows, columns, height, width))
            path = tmp_path_factory.mktemp("splats") / f"{name}-{shrink}.splat.ply"
            result.save(path)
            made[name, shrink] = photo, result, path
        return made[name, shrink]

    return make


@pytest.mark.parametrize("name, shrink", [("chelsea", 2), pytest.param("chelsea", 1, marks=pytest.mark.slow),
                                          pytest.param("astronaut", 1, marks=pytest.mark.slow)],
                         ids=["chelsea-half", "chelsea", "astronaut"])
def test_a_real_photograph_rendered_from_the_original_camera_is_the_photograph(photo_scene, name, shrink):
    photo, result, path = photo_scene(name, shrink)
    splats = read_splats(path)
    assert len(splats["centres"]) == photo.shape[0] * photo.shape[1]  # every pixel is opaque: each is a splat
    rgb, coverage = render(splats, camera_of(result))
    assert coverage.min() > 0.95  # every opaque pixel closed
    assert psnr(rgb, photo / 255.0) >= 25.0


def surface_mask(camera: Camera, result, margin: int) -> np.ndarray:
    """[h, w] bool: the pixels the true bump surface covers in ``camera``'s view, ``margin`` pixels in from its
    outline (from the analytic surface sampled 4 × finer than the picture)."""
    k = result.intrinsics
    rows, columns = np.mgrid[0:4 * k.height, 0:4 * k.width].astype(np.float64)
    v, u = (rows + 0.5) / 4 - 0.5, (columns + 0.5) / 4 - 0.5
    depth = bump_depth(v, u, k.height, k.width)
    points = np.stack([(u - k.cx) * depth / k.fx, -(v - k.cy) * depth / k.fy, -depth], axis=-1).reshape(-1, 3)
    pu, pv, _ = camera.project(camera.view(points))
    pu, pv = np.rint(pu).astype(int), np.rint(pv).astype(int)
    inside = (pu >= 0) & (pu < camera.width) & (pv >= 0) & (pv < camera.height)
    mask = np.zeros((camera.height, camera.width), bool)
    mask[pv[inside], pu[inside]] = True
    for _ in range(margin):
        padded = np.pad(mask, 1)
        mask = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask


@pytest.mark.parametrize("picture", ["photo-like", pytest.param("chelsea-half", marks=pytest.mark.slow)])
@pytest.mark.parametrize("degrees", [5.0, pytest.param(-5.0, marks=pytest.mark.slow)])
def test_a_camera_moved_five_degrees_around_the_scene_sees_no_holes(scene, photo_scene, picture, degrees):
    """At twice the picture's resolution, so the viewer's 0.3 px² screen-space filter cannot hide gaps."""
    _, result, path = scene if picture == "photo-like" else photo_scene("chelsea", 2)
    height, width = result.depth.shape
    centre = -result.depth[height // 2, width // 2]
    camera = camera_of(result).orbited(degrees, (0.0, 0.0, centre)).zoomed(2)
    surface = surface_mask(camera, result, margin=4)
    splats = read_splats(path)
    _, coverage = render(splats, camera)
    assert surface.sum() > 0.8 * camera.width * camera.height
    assert np.mean(coverage[surface] >= 0.5) == 1.0 and coverage[surface].min() > 0.9
    splats["scales"] = splats["scales"] / 3  # the same centres as points: the check sees the gaps
    _, sparse = render(splats, camera)
    assert np.mean(sparse[surface] >= 0.5) < 0.9


# --------------------------------------------------------------------------------------------- CLI and the web


def test_the_cli_writes_splats(tmp_path):
    image, depth = tmp_path / "photo.png", tmp_path / "d.npy"
    Image.fromarray(photo_like(24, 32)).save(image)
    np.save(depth, np.full((24, 32), 2.0, np.float32))
    assert main([str(image), "--depth", str(depth), "--format", "splat_ply,ply", "-q"]) == 0
    splats, cloud = PlyData.read(tmp_path / "photo.splat.ply")["vertex"], PlyData.read(tmp_path / "photo.ply")["vertex"]
    assert splats.count == cloud.count == 24 * 32 and "rot_0" in [p.name for p in splats.properties]
    assert (tmp_path / "photo.json").is_file()


def test_the_web_offers_splats_as_a_download(client):
    form = {"max_points": "0", "image": (io.BytesIO(png_bytes(photo_like(24, 32))), "p.png"),
            "depth": (io.BytesIO(npy_bytes(np.full((24, 32), 2.0))), "d.npy"), "depth_kind": "metric"}
    answer = client.post("/api/v1/conversions", data=form, content_type="multipart/form-data")
    assert answer.status_code == 202, answer.get_data(as_text=True)
    view = wait_for_job(client, f"/jobs/{answer.get_json()['id']}")
    assert view["status"] == "done", view
    download = fetch_download(client, view["files"]["splat_ply"])  # written by an export task: 202 until whole
    data = download.get_data()
    assert download.status_code == 200 and download.mimetype == "application/octet-stream"
    assert "attachment" in download.headers["Content-Disposition"]
    assert download.headers["Content-Disposition"].rstrip('"').endswith("splats.splat.ply")
    vertex = PlyData.read(io.BytesIO(data))["vertex"]
    assert vertex.count == 24 * 32 and math.isfinite(float(vertex["scale_0"][0]))

