"""User-supplied depth maps: .npy (metres or disparity), 16-bit PNG (millimetres), resizing and refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from converter import ConversionOptions, Converter, DepthFileError, InputError
from converter.depth import INVERSE_RELATIVE, METRIC, DepthMap, fit_depth_to_image, load_depth_file

H, W = 30, 45


def npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array))
    return buffer.getvalue()


def npz_bytes(array) -> bytes:
    """An .npz archive (a zip of .npy files), which np.load opens lazily instead of returning an array."""
    buffer = io.BytesIO()
    np.savez(buffer, depth=np.asarray(array))
    return buffer.getvalue()


def png_bytes(array, mode=None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, "PNG") if mode else Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def image(height=H, width=W) -> np.ndarray:
    return np.full((height, width, 3), 128, np.uint8)


@pytest.fixture
def depth() -> np.ndarray:
    rows, columns = np.mgrid[0:H, 0:W]
    return (1.0 + 0.005 * columns + 0.003 * rows).astype(np.float32)  # gentle: no depth edges


# ---------------------------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_npy_float_is_metres(depth, dtype, tmp_path):
    data = npy_bytes(depth.astype(dtype))
    path = tmp_path / "depth.npy"
    path.write_bytes(data)
    for source in (data, bytearray(data), path, str(path), io.BytesIO(data)):
        loaded = load_depth_file(source)
        assert isinstance(loaded, DepthMap)
        assert loaded.kind == METRIC and loaded.source == "user"
        assert loaded.values.dtype == np.float32
        np.testing.assert_allclose(loaded.values, depth.astype(dtype).astype(np.float32))
        np.testing.assert_array_equal(loaded.native, loaded.values)


@pytest.mark.parametrize("shape", [(1, H, W), (H, W, 1)])
def test_npy_with_a_single_channel_axis(depth, shape):
    loaded = load_depth_file(npy_bytes(depth.reshape(shape)))
    np.testing.assert_array_equal(loaded.values, depth)


def test_npy_integers_are_taken_as_they_are(depth):
    loaded = load_depth_file(npy_bytes(np.rint(depth * 10).astype(np.int32)))
    np.testing.assert_array_equal(loaded.values, np.rint(depth * 10))


def test_16_bit_png_is_millimetres(depth):
    millimetres = np.rint(depth * 1000).astype(np.uint16)
    data = png_bytes(millimetres)
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.mode.startswith("I")
    loaded = load_depth_file(data)
    assert loaded.kind == METRIC
    np.testing.assert_allclose(loaded.values, millimetres / 1000.0, rtol=1e-6)
    assert loaded.values.max() < 3  # metres, not millimetres


def test_16_bit_tiff_is_millimetres_and_float_tiff_is_metres(depth):
    buffer = io.BytesIO()
    Image.fromarray(np.rint(depth * 1000).astype(np.uint16)).save(buffer, "TIFF")
    np.testing.assert_allclose(load_depth_file(buffer.getvalue()).values, depth, atol=0.0006)
    buffer = io.BytesIO()
    Image.fromarray(depth, "F").save(buffer, "TIFF")
    np.testing.assert_array_equal(load_depth_file(buffer.getvalue()).values, depth)  # not divided by 1000


def test_16_bit_png_as_disparity_is_not_scaled():
    values = np.tile(np.arange(100, 100 + W, dtype=np.uint16), (H, 1))
    loaded = load_depth_file(png_bytes(values), kind="disparity")
    assert loaded.kind == INVERSE_RELATIVE
    np.testing.assert_array_equal(loaded.values, values)


def test_8_bit_png_disparity():
    values = np.tile(np.arange(10, 10 + W, dtype=np.uint8), (H, 1))
    loaded = load_depth_file(png_bytes(values, "L"), kind="disparity")
    np.testing.assert_array_equal(loaded.values, values)


# -------------------------------------------------------------------------------------------------- refusals


def garbage() -> bytes:
    return np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(npy_bytes(np.zeros((H, W), np.float32)), id="all-zero"),
        pytest.param(npy_bytes(np.full((H, W), np.nan, np.float32)), id="all-nan"),
        pytest.param(npy_bytes(np.full((H, W), np.inf, np.float32)), id="all-inf"),
        pytest.param(png_bytes(np.zeros((H, W), np.uint16)), id="all-zero-png"),
        pytest.param(garbage(), id="garbage"),
        pytest.param(b"\x93NUMPY garbage after the magic", id="broken-npy"),
        pytest.param(npy_bytes(np.ones((H, W), np.float32))[:-100], id="truncated-npy"),
        pytest.param(npy_bytes(np.ones((H, W, 3), np.float32)), id="three-channels"),
        pytest.param(npy_bytes(np.ones(W, np.float32)), id="one-dimensional"),
        pytest.param(npy_bytes(np.ones((2, H, W), np.float32)), id="two-maps"),
        pytest.param(npy_bytes(np.ones((H, W), bool)), id="booleans"),
        pytest.param(npy_bytes(np.ones((H, W), np.complex64)), id="complex"),
        pytest.param(npy_bytes(np.array([["a", "b"]])), id="strings"),
        pytest.param(npy_bytes(np.full((H, W), -1.0, np.float32)), id="negative-metric"),
        pytest.param(png_bytes(np.zeros((H, W, 3), np.uint8) + 1), id="rgb-png"),
        pytest.param(b"", id="empty"),
        pytest.param(b"<html>not a depth map</html>", id="html"),
        pytest.param(npz_bytes(np.ones((H, W), np.float32)), id="npz-archive"),
        pytest.param(b"PK\x03\x04" + bytes(64), id="broken-zip"),
    ],
)
def test_bad_depth_files(data):
    with pytest.raises(DepthFileError) as caught:
        load_depth_file(data)
    assert caught.value.code == "bad_depth_file"
    assert isinstance(caught.value, InputError)
    assert "Traceback" not in str(caught.value)


def test_pickled_object_arrays_are_not_loaded():
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DepthFileError):
        load_depth_file(buffer.getvalue())


def test_missing_file_and_unknown_kind(tmp_path, depth):
    with pytest.raises(DepthFileError, match="cannot be read"):
        load_depth_file(tmp_path / "missing.npy")
    with pytest.raises(DepthFileError, match="metric"):
        load_depth_file(npy_bytes(depth), kind="furlongs")
    with pytest.raises(TypeError):
        load_depth_file(12345)


def test_negative_disparity_is_allowed(depth):
    loaded = load_depth_file(npy_bytes(depth - 1.5), kind="disparity")
    assert loaded.values.min() < 0


# -------------------------------------------------------------------------------------------------- resizing


def test_same_size_is_untouched(depth):
    loaded = load_depth_file(npy_bytes(depth))
    fitted, note = fit_depth_to_image(loaded, W, H)
    assert fitted is loaded and note is None


def test_same_aspect_is_resized_with_nearest_neighbour(depth):
    loaded = load_depth_file(npy_bytes(depth))
    fitted, note = fit_depth_to_image(loaded, 2 * W, 2 * H)
    assert fitted.values.shape == (2 * H, 2 * W)
    np.testing.assert_array_equal(fitted.values, np.repeat(np.repeat(depth, 2, axis=0), 2, axis=1))
    np.testing.assert_array_equal(fitted.native, depth)  # edges are still found at the file's own resolution
    assert f"{W} x {H}" in note and f"{2 * W} x {2 * H}" in note
    smaller, _ = fit_depth_to_image(loaded, W // 3, H // 3)
    np.testing.assert_array_equal(smaller.values, depth[1::3, 1::3])  # the centre pixel of each 3 × 3 block
    assert set(np.unique(smaller.values)) <= set(np.unique(depth))  # nothing invented


def test_different_aspect_is_refused(depth):
    loaded = load_depth_file(npy_bytes(depth))
    with pytest.raises(DepthFileError, match="shapes differ"):
        fit_depth_to_image(loaded, W, W)
    with pytest.raises(DepthFileError):
        fit_depth_to_image(loaded, H, W)  # portrait vs landscape


# --------------------------------------------------------------------------------------------- conversions


def test_converting_with_a_metric_npy(depth):
    result = Converter().convert(image(), depth=npy_bytes(depth), options=ConversionOptions(max_points=0, clean=False))
    assert result.units == "metres"
    assert result.model is None
    assert result.notes == []
    np.testing.assert_allclose(-result.points[:, 2], depth.ravel(), rtol=1e-6)
    np.testing.assert_array_equal(result.depth, depth)
    assert "depth_file" in result.timings
    assert result.describe()[-1] == "depth: user depth map kind=metric"


def test_converting_with_a_16_bit_png(depth, tmp_path):
    path = tmp_path / "depth.png"
    path.write_bytes(png_bytes(np.rint(depth * 1000).astype(np.uint16)))
    result = Converter().convert(image(), depth=path, options=ConversionOptions(max_points=0, clean=False))
    np.testing.assert_allclose(-result.points[:, 2], depth.ravel(), atol=0.0006)


def test_missing_depth_gives_no_point(depth):
    depth = depth.copy()
    depth[:5, :5] = 0
    depth[10, 10] = np.nan
    depth[11, 11] = np.inf
    result = Converter().convert(image(), depth=npy_bytes(depth), options=ConversionOptions(max_points=0, clean=False))
    assert len(result.points) == H * W - 25 - 2
    assert np.all(np.isfinite(result.points))
    assert result.depth[10, 10] == 0 and result.depth[11, 11] == 0  # "no depth" is 0 in the result


def test_resized_depth_map_gives_a_note(depth):
    result = Converter().convert(image(2 * H, 2 * W), depth=npy_bytes(depth), options=ConversionOptions(max_points=0))
    assert result.depth.shape == (2 * H, 2 * W)
    assert len(result.notes) == 1 and "resized" in result.notes[0]
    assert len(result.points) == 4 * H * W


def test_different_aspect_fails_the_conversion(depth):
    with pytest.raises(DepthFileError):
        Converter().convert(image(H, H), depth=npy_bytes(depth))


def test_disparity_map_becomes_relative_depth(depth):
    disparity = 1.0 / depth  # larger is nearer
    result = Converter().convert(image(), depth=npy_bytes(disparity), options=ConversionOptions(depth_kind="disparity", max_points=0, clean=False))
    assert result.units == "relative units"
    assert result.prediction.kind == INVERSE_RELATIVE
    z = -result.points[:, 2].reshape(H, W)
    assert z.min() == pytest.approx(1.0, rel=1e-5) and z.max() == pytest.approx(2.0, rel=1e-5)
    # The nearest pixel (top left, smallest depth) stays nearest; order is kept.
    assert z[0, 0] == pytest.approx(1.0, rel=1e-5)
    assert np.all(np.diff(z, axis=1) >= -1e-6)
    relief = Converter().convert(image(), depth=npy_bytes(disparity), options=ConversionOptions(depth_kind="disparity", relief=3.0, max_points=0, clean=False))
    assert -relief.points[:, 2].min() == pytest.approx(4.0, rel=1e-5)


def test_zeros_in_a_disparity_map_are_holes_not_the_far_plane():
    disparity = np.tile(np.linspace(1.0, 2.0, W, dtype=np.float32), (H, 1))
    disparity[:, :10] = 0  # no depth there: more than the 2 % that the percentile clamp would absorb
    result = Converter().convert(image(), depth=npy_bytes(disparity), options=ConversionOptions(depth_kind="disparity", max_points=0, clean=False))
    assert len(result.points) == H * (W - 10)
    z = -result.points[:, 2]
    assert z.min() == pytest.approx(1.0, rel=1e-5)
    assert z.max() == pytest.approx(2.0, rel=1e-5)  # the full relief, not squashed towards the near plane
    assert np.all(result.depth[:, :10] == 0)
