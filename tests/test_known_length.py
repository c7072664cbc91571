"""True scale from one known length: two pixels and the real distance between them rescale the whole result."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData

from converter import ConversionOptions, Converter, OptionError
from converter.geometry import make_intrinsics

H, W = 60, 80


def npy_bytes(depth: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(depth, dtype=np.float32))
    return buffer.getvalue()


def picture(height=H, width=W) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width]
    return np.dstack([columns * 3 % 256, rows * 4 % 256, (columns + rows) % 256]).astype(np.uint8)


def tilted_depth(height=H, width=W) -> np.ndarray:
    """A plane seen at an angle (depth 2 … 3.6 across the image): every pixel has a different distance."""
    rows, columns = np.mgrid[0:height, 0:width]
    return (2.0 + 0.02 * columns + 0.003 * rows).astype(np.float32)


def point_at(result, x: int, y: int) -> np.ndarray:
    """The cloud's point of pixel (x, y) (every pixel kept: max_points=0, no cleaning, all opaque)."""
    return result.points[y * result.image.width + x].astype(np.float64)


@pytest.mark.parametrize("kind", ["metric", "disparity"])
def test_the_measured_distance_equals_the_given_one(kind):
    depth = tilted_depth() if kind == "metric" else 1.0 / tilted_depth()
    options = ConversionOptions(max_points=0, clean=False, depth_kind=kind, known_length=(10, 12, 70, 50, 0.3))
    result = Converter().convert(picture(), depth=npy_bytes(depth), options=options)
    distance = np.linalg.norm(point_at(result, 70, 50) - point_at(result, 10, 12))
    assert distance == pytest.approx(0.3, rel=1e-4)
    assert result.units == "metres"
    info = result.metadata()
    assert info["units"] == "metres" and info["scale"]["known_length_m"] == 0.3
    assert info["scale"]["pixels"] == [[10, 12], [70, 50]]
    assert np.linalg.norm(np.subtract(*info["scale"]["points"])) == pytest.approx(0.3, rel=1e-9)


def test_the_scale_is_uniform_and_keeps_the_shape():
    plain = Converter().convert(picture(), depth=npy_bytes(tilted_depth()),
                                options=ConversionOptions(max_points=0, clean=False))
    scaled = Converter().convert(picture(), depth=npy_bytes(tilted_depth()),
                                 options=ConversionOptions(max_points=0, clean=False, known_length=(0, 0, 79, 0, 1.0)))
    factor = scaled.scale["factor"]
    true_width = np.linalg.norm(point_at(plain, 79, 0) - point_at(plain, 0, 0))
    assert factor == pytest.approx(1.0 / true_width, rel=1e-6)
    np.testing.assert_allclose(scaled.points, plain.points * factor, rtol=1e-5)
    np.testing.assert_allclose(scaled.depth, plain.depth * factor, rtol=1e-5)
    assert np.array_equal(scaled.colors, plain.colors)


def test_relief_mode_scales_its_height_field():
    options = ConversionOptions(max_points=0, clean=False, mode="relief", known_length=(5, 5, 75, 55, 0.25))
    result = Converter().convert(picture(), depth=npy_bytes(tilted_depth()), options=options)
    assert np.linalg.norm(point_at(result, 75, 55) - point_at(result, 5, 5)) == pytest.approx(0.25, rel=1e-4)
    assert result.units == "metres"


def test_pixels_are_the_files_pixels_even_when_a_jpeg_is_decoded_smaller():
    """A 1600 × 1200 JPEG decoded at 1/2 (max_points small): the pixels given are still the file's."""
    big = np.asarray(Image.fromarray(picture()).resize((1600, 1200), Image.Resampling.BILINEAR))
    buffer = io.BytesIO()
    Image.fromarray(big).save(buffer, format="JPEG", quality=95)
    k = make_intrinsics(1600, 1200)
    rows, columns = np.mgrid[0:600, 0:800]
    depth = np.full((600, 800), 2.0, np.float32)  # a wall square to the camera, 2 units away
    options = ConversionOptions(max_points=200_000, clean=False, fov_deg=60, known_length=(100, 600, 1500, 600, 7.0))
    result = Converter().convert(buffer.getvalue(), depth=None, options=options,
                                 prediction=_flat_prediction(depth))
    assert result.image.scale == 0.5
    # At constant depth the distance is proportional to the pixel distance: 1400 file pixels = 7 m.
    metres_per_file_pixel = 7.0 / 1400
    assert result.intrinsics.fx * 2 == pytest.approx(k.fx)
    left, right = result.points[:, 0].min(), result.points[:, 0].max()
    assert right - left == pytest.approx(metres_per_file_pixel * (1600 - 2 * 1), rel=0.01)


def _flat_prediction(depth):
    from converter.depth import METRIC, DepthMap

    return DepthMap(values=depth, native=depth, kind=METRIC, source="user")


@pytest.mark.parametrize("known_length, words", [
    ((10, 10, 10, 10, 1.0), "two different pixels"),
    ((10, 10, 20, 20, 0.0), "above 0"),
    ((10, 10, 20, 20), "five numbers"),
    ((10, 10, 20, float("nan"), 1.0), "five numbers"),
    ("10 10 20 20 1", "five numbers"),
])
def test_bad_known_lengths_are_clear_option_errors(known_length, words):
    with pytest.raises(OptionError, match=words):
        ConversionOptions(known_length=known_length)


def test_a_pixel_without_depth_or_outside_the_image_is_refused():
    depth = tilted_depth()
    depth[:, :20] = 0  # no depth on the left
    convert = Converter().convert
    with pytest.raises(OptionError, match="no depth"):
        convert(picture(), depth=npy_bytes(depth), options=ConversionOptions(known_length=(5, 5, 60, 5, 1.0)))
    with pytest.raises(OptionError, match="outside the image"):
        convert(picture(), depth=npy_bytes(tilted_depth()),
                options=ConversionOptions(known_length=(5, 5, 500, 5, 1.0)))


def test_the_files_carry_the_scale(tmp_path):
    options = ConversionOptions(max_points=0, clean=False, known_length=(10, 12, 70, 50, 0.3))
    result = Converter().convert(picture(), depth=npy_bytes(tilted_depth()), options=options)
    result.save(tmp_path / "scaled.ply", sidecar=True)
    ply = PlyData.read(str(tmp_path / "scaled.ply"))
    assert any(comment.startswith("scale: scaled x") for comment in ply.comments)
    assert "units: metres" in ply.comments
    vertex = ply["vertex"]
    points = np.column_stack([vertex["x"], vertex["y"], vertex["z"]]).astype(np.float64)
    assert np.linalg.norm(points[50 * W + 70] - points[12 * W + 10]) == pytest.approx(0.3, rel=1e-4)
    sidecar = json.loads((tmp_path / "scaled.json").read_text())
    assert sidecar["scale"]["factor"] == pytest.approx(result.scale["factor"])
    assert sidecar["options"]["known_length"] == [10, 12, 70, 50, 0.3]
