"""The public API end to end with a tiny real model: inputs, result arrays, options, transparency, saving."""

from __future__ import annotations

import io
import math

import numpy as np
import plyfile
import pytest
from PIL import Image

import converter
from converter import (
    ConversionOptions,
    ConversionResult,
    Converter,
    ImageTooLargeError,
    OptionError,
    Sources,
    UnsupportedImageError,
    convert,
    geometry,
)
from converter.options import DEFAULT_MAX_POINTS


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, np.float32))
    return buffer.getvalue()


def check_arrays(result: ConversionResult, height: int, width: int) -> None:
    assert isinstance(result, ConversionResult)
    assert result.points.dtype == np.float32 and result.points.ndim == 2 and result.points.shape[1] == 3
    assert result.colors.dtype == np.uint8 and result.colors.shape == result.points.shape
    assert result.depth.dtype == np.float32 and result.depth.shape == (height, width)
    assert len(result.points) > 0
    assert np.all(np.isfinite(result.points))
    assert np.all(result.points[:, 2] < 0)  # everything is in front of the camera


def test_public_api():
    for name in converter.__all__:
        assert hasattr(converter, name), name
    assert DEFAULT_MAX_POINTS == ConversionOptions().max_points == 1_000_000


def test_every_input_kind_gives_the_same_result(dpt_model, photo, tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png(photo))
    model = Converter(model=dpt_model, device="cpu")  # bit-exact repeats: the CPU path (a GPU need not be)
    results = [
        model.convert(source)
        for source in (str(path), path, path.read_bytes(), io.BytesIO(path.read_bytes()), Image.fromarray(photo), photo)
    ]
    for result in results:
        check_arrays(result, 96, 128)
        np.testing.assert_array_equal(result.points, results[0].points)
        np.testing.assert_array_equal(result.colors, results[0].colors)
        np.testing.assert_array_equal(result.depth, results[0].depth)


def test_result_record(dpt_model, photo):
    result = Converter(model=dpt_model).convert(photo)
    assert result.model == dpt_model
    assert result.units == "relative units"
    assert result.notes == []
    assert result.options == ConversionOptions()
    assert result.intrinsics.source == "default:fov60"
    assert (result.intrinsics.width, result.intrinsics.height) == (128, 96)
    assert result.prediction.values.shape == (96, 128)
    assert len(result.points) == int(result.keep.sum())
    lines = result.describe()
    assert any(dpt_model in line for line in lines)
    assert "units: relative units" in lines


def test_timings(dpt_model, photo):
    """The numpy path's stages (on CUDA, geometry is one "device_geometry" stage: tests/test_pipeline_on_device.py)."""
    converter = Converter(model=dpt_model, device="cpu")
    result = converter.convert(photo)
    for stage in ("decode", "model", "geometry", "depth_units", "cleaning", "backproject"):
        assert stage in result.timings and result.timings[stage] >= 0
    assert result.timings["geometry"] >= result.timings["backproject"]
    assert "cleaning" not in converter.convert(photo, options=ConversionOptions(clean=False)).timings


def test_progress_reports_the_stages(dpt_model, photo):
    stages = []
    Converter(model=dpt_model).load().convert(photo, progress=stages.append)
    assert stages == ["decoding", "estimating depth", "building geometry"]
    stages.clear()
    Converter(model=dpt_model).convert(photo, depth=npy(np.full((96, 128), 2.0)), progress=stages.append)
    assert stages == ["decoding", "building geometry"]


def test_a_model_not_yet_loaded_is_reported_before_decoding(tmp_path, photo):
    """The converter, not its caller, says "loading model": only when the model will run and is not loaded."""
    import model_factory

    folder = model_factory.dpt_hybrid(tmp_path / "fresh")  # a model no other test has loaded
    stages = []
    converter = Converter(model=str(folder))
    converter.convert(photo, depth=npy(np.full((96, 128), 2.0)), progress=stages.append)
    assert stages == ["decoding", "building geometry"] and not converter.is_loaded  # no model needed, none loaded
    converter.convert(photo, progress=stages.append)
    assert stages[2:] == ["loading model", "decoding", "estimating depth", "building geometry"]
    stages.clear()
    converter.convert(photo, progress=stages.append)
    assert stages == ["decoding", "estimating depth", "building geometry"]


def test_points_are_the_back_projected_depth_and_colours_the_pixels(dpt_model, photo):
    converter = Converter(model=dpt_model, device="cpu")  # two runs compared bit for bit: the CPU path
    result = converter.convert(photo, options=ConversionOptions(max_points=0, clean=False))
    assert len(result.points) == 96 * 128
    expected = geometry.backproject(result.depth, result.intrinsics).reshape(-1, 3)
    np.testing.assert_array_equal(result.points, expected)
    np.testing.assert_array_equal(result.colors, photo.reshape(-1, 3))
    cleaned = converter.convert(photo, options=ConversionOptions(max_points=0))
    np.testing.assert_array_equal(cleaned.points, expected.reshape(96, 128, 3)[cleaned.keep])
    np.testing.assert_array_equal(cleaned.colors, photo[cleaned.keep])


def test_relative_depth_spans_the_relief(dpt_model, photo):
    for relief in (0.5, 1.0, 3.0):
        result = Converter(model=dpt_model).convert(photo, options=ConversionOptions(relief=relief, clean=False))
        assert result.depth.min() == pytest.approx(1.0, rel=1e-4)
        assert result.depth.max() == pytest.approx(1.0 + relief, rel=1e-4)


def test_metric_model_gives_metres(tiny_models, photo):
    result = Converter(model=str(tiny_models["depth_anything_metric"])).convert(photo)
    assert result.units == "metres"
    assert "units: metres" in result.describe()


def test_camera_options(dpt_model, photo):
    model = Converter(model=dpt_model)
    assert model.convert(photo, options=ConversionOptions(fov_deg=90)).intrinsics.fx == pytest.approx(64.0)
    k = model.convert(photo, options=ConversionOptions(focal_px=200.0, fov_deg=90, principal_point=(60, 50))).intrinsics
    assert (k.fx, k.fy, k.cx, k.cy, k.source) == (200.0, 200.0, 60.0, 50.0, "user:focal_px")
    options = ConversionOptions(fov_deg=45.0, max_points=500)
    result = model.convert(photo, options=options)
    assert result.options is options
    assert result.intrinsics.fov_x_deg == pytest.approx(45.0)
    assert len(result.points) <= 500


def exif_jpeg(photo, focal_35mm=None, orientation=1) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    if focal_35mm:
        exif.get_ifd(0x8769)[0xA405] = focal_35mm
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, "JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", [1, 6])
def test_exif_focal_length_sets_the_camera(dpt_model, photo, orientation):
    model = Converter(model=dpt_model)
    result = model.convert(exif_jpeg(photo, 24, orientation))
    height, width = (96, 128) if orientation == 1 else (128, 96)
    assert result.depth.shape == (height, width)
    assert result.intrinsics.source == "exif:FocalLengthIn35mmFilm"
    assert result.intrinsics.fx == pytest.approx(24 * math.hypot(128, 96) / math.hypot(36, 24))
    assert (result.intrinsics.cx, result.intrinsics.cy) == ((width - 1) / 2, (height - 1) / 2)
    # The user's choice beats EXIF; no EXIF gives the default.
    assert model.convert(exif_jpeg(photo, 24, orientation), options=ConversionOptions(fov_deg=50)).intrinsics.source == "user:fov"
    assert model.convert(exif_jpeg(photo)).intrinsics.source == "default:fov60"


@pytest.mark.parametrize("max_points", [0, 1, 1000, 5000, 96 * 128, 10**7])
def test_max_points(dpt_model, photo, max_points):
    result = Converter(model=dpt_model).convert(photo, options=ConversionOptions(max_points=max_points, clean=False))
    count = len(result.points)
    assert count == len(result.grid_rows) * len(result.grid_columns)  # clean=False: every sample is a point
    if max_points == 0 or max_points >= 96 * 128:
        assert count == 96 * 128
    else:
        assert 0.75 * max_points <= count <= max_points
    assert result.depth.shape == (96, 128)  # the depth map stays at the image's size


# ---------------------------------------------------------------------------------------------- transparency


def cut_out(photo: np.ndarray) -> np.ndarray:
    """The photo with a transparent disc-shaped hole and a transparent border."""
    rows, columns = np.mgrid[0:96, 0:128]
    alpha = np.full((96, 128), 255, np.uint8)
    alpha[(rows - 48) ** 2 + (columns - 64) ** 2 < 20**2] = 0
    alpha[:, :10] = 0
    alpha[5:15, 100:110] = 128  # half transparent still counts as there
    return np.dstack([photo, alpha])


@pytest.mark.parametrize("as_file", [False, True])
def test_transparent_pixels_give_no_point(dpt_model, photo, as_file):
    rgba = cut_out(photo)
    opaque = rgba[:, :, 3] > 0
    source = png(rgba) if as_file else rgba
    result = Converter(model=dpt_model).convert(source, options=ConversionOptions(max_points=0, clean=False))
    assert len(result.points) == int(opaque.sum())
    np.testing.assert_array_equal(result.keep, opaque)
    np.testing.assert_array_equal(result.colors, photo[opaque])
    cleaned = Converter(model=dpt_model).convert(source, options=ConversionOptions(max_points=0))
    assert not cleaned.keep[~opaque].any()


def test_transparency_with_a_flat_depth_map_keeps_exactly_the_opaque_pixels(photo):
    rgba = cut_out(photo)
    result = Converter().convert(rgba, depth=npy(np.full((96, 128), 2.0)), options=ConversionOptions(max_points=0, clean=True))
    assert len(result.points) == int((rgba[:, :, 3] > 0).sum())


def test_relative_depth_range_comes_from_the_opaque_pixels(dpt_model, photo):
    result = Converter(model=dpt_model).convert(cut_out(photo), options=ConversionOptions(clean=False, max_points=0))
    opaque = cut_out(photo)[:, :, 3] > 0
    assert result.depth[opaque].min() == pytest.approx(1.0, rel=1e-4)
    assert result.depth[opaque].max() == pytest.approx(2.0, rel=1e-4)


# ------------------------------------------------------------------------------------------- saving, helper


def test_save_and_convert_helper(dpt_model, photo, tmp_path):
    result = Converter(model=dpt_model).convert(photo)
    path = result.save(tmp_path / "x.ply")
    assert path.exists()
    assert plyfile.PlyData.read(str(path))["vertex"].count == len(result.points)
    output = tmp_path / "helper.ply"
    helped = convert(Image.fromarray(photo), output, model=dpt_model, max_points=2000)
    assert output.exists() and len(helped.points) <= 2000
    assert plyfile.PlyData.read(str(output))["vertex"].count == len(helped.points)
    assert len(convert(photo, model=dpt_model).points) == len(result.points)
    with pytest.raises(OptionError):
        result.save(tmp_path / "x.xyz")


def test_bad_options_and_unknown_keywords(dpt_model, photo):
    model = Converter(model=dpt_model)
    with pytest.raises(OptionError):
        model.convert(photo, options=ConversionOptions(fov_deg=0))
    with pytest.raises(OptionError):
        model.convert(photo, options=ConversionOptions(max_points=-5))
    with pytest.raises(TypeError, match="resolution"):
        model.convert(photo, options=ConversionOptions(resolution=3))


def test_the_image_is_checked_before_the_model_is_loaded(photo):
    """A bad upload is reported as such even when the model is unavailable."""
    model = Converter(model="nobody-at-all/unreachable-model")
    with pytest.raises(UnsupportedImageError):
        model.convert(b"this is not an image")
    with pytest.raises(ImageTooLargeError):
        Converter(model="nobody-at-all/unreachable-model", max_pixels=1000).convert(photo)


def test_pixel_cap_on_the_converter(dpt_model, photo):
    with pytest.raises(ImageTooLargeError):
        Converter(model=dpt_model, max_pixels=96 * 128 - 1).convert(png(photo))
    assert len(Converter(model=dpt_model, max_pixels=96 * 128).convert(png(photo)).points) > 0


def test_greyscale_and_palette_inputs_work(dpt_model, photo):
    grey = Image.fromarray(photo).convert("L")
    result = Converter(model=dpt_model).convert(grey, options=ConversionOptions(max_points=0, clean=False))
    check_arrays(result, 96, 128)
    assert np.all(result.colors[:, 0] == result.colors[:, 1])
    palette = Image.fromarray(photo).convert("P")
    check_arrays(Converter(model=dpt_model).convert(palette), 96, 128)


def test_normals_from_the_model(dpt_model, photo):
    result = Converter(model=dpt_model).convert(photo, options=ConversionOptions(normals=True))
    assert result.normals.shape == result.points.shape and result.normals.dtype == np.float32
    lengths = np.linalg.norm(result.normals, axis=1)
    assert np.all((np.abs(lengths - 1) < 1e-4) | (lengths == 0))


def test_drop_background_percent_removes_the_far_plane(photo):
    depth = np.full((96, 128), 1.0, np.float32)
    depth[:, 64:] = 3.0
    result = Converter().convert(photo, depth=npy(depth), options=ConversionOptions(max_points=0, clean=False, drop_background_percent=30))
    assert len(result.points) == 96 * 64
    assert np.all(result.points[:, 2] == -1.0)
    flat = Converter().convert(photo, depth=npy(np.full((96, 128), 2.0)), options=ConversionOptions(max_points=0, drop_background_percent=30))
    assert len(flat.points) == 96 * 128  # nothing is behind a flat wall: it stays


class RememberedPredictions(dict):
    """A PredictionCache of one image, in memory."""

    def get(self, model, precision):
        return dict.get(self, (model, precision))

    def put(self, model, precision, prediction):
        self[model, precision] = prediction


class Untouchable:
    """A source the decision must not reach: any use fails the test."""

    def get(self, *args):
        raise AssertionError("the cache was consulted")

    put = get


def test_a_cache_is_consulted_before_the_model_and_filled_by_it(dpt_model, photo, monkeypatch):
    converter = Converter(model=dpt_model, device="cpu")
    cache = RememberedPredictions()
    first = converter.run(Sources(image=photo, cache=cache))
    assert not first.depth_cached and list(cache) == [(converter.model, "fp32")]
    assert cache[converter.model, "fp32"] is first.prediction
    monkeypatch.setattr(converter.depth_model, "predict", Untouchable().get)  # the model must not run again
    again = converter.run(Sources(image=photo, cache=cache))
    assert again.depth_cached and again.engine is None and again.model == converter.model
    np.testing.assert_array_equal(again.points, first.points)


def test_a_kept_state_or_your_own_depth_leaves_the_cache_and_the_model_alone(photo):
    """A state is used as it is, whatever else is offered; a depth file of yours is not looked up in a cache."""
    own = Converter(model="nobody-at-all/unreachable-model").run(
        Sources(image=photo, depth=npy(np.full((96, 128), 2.0)), cache=Untouchable()))
    assert own.model is None and own.prediction.source == "user" and not own.depth_cached
    state = own.state()
    absent = Converter(model="nobody-at-all/unreachable-model", align_to="nobody-at-all/metric")
    kept = absent.run(Sources(state=state, image=b"not an image", depth=b"nor a depth", cache=Untouchable()),
                      ConversionOptions(max_points=500))
    assert len(kept.points) <= 500 and kept.units == own.units
    np.testing.assert_array_equal(kept.points, Converter.reconvert(state, ConversionOptions(max_points=500)).points)
