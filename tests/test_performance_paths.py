"""The fast paths keep the geometry: JPEG draft decoding (reduced DCT scale) and its intrinsics."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from converter import Converter
from converter.depth import METRIC, DepthMap
from converter.images import load_image
from converter.options import ConversionOptions
from converter.pipeline import build_point_cloud

WIDTH, HEIGHT = 800, 600


def jpeg(exif: Image.Exif | None = None, size=(WIDTH, HEIGHT)) -> bytes:
    rows, columns = np.mgrid[0:size[1], 0:size[0]]
    picture = np.dstack([columns % 256, rows % 256, (columns + rows) % 256]).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, "JPEG", quality=95, **({"exif": exif} if exif is not None else {}))
    return buffer.getvalue()


def test_draft_decodes_at_the_smallest_scale_that_keeps_the_grid():
    full = load_image(jpeg())
    assert (full.width, full.height, full.scale) == (WIDTH, HEIGHT, 1.0)
    quarter = load_image(jpeg(), draft_points=20_000)  # grid 163 x 122: 1/4 gives 200 x 150
    assert (quarter.width, quarter.height, quarter.scale) == (200, 150, 0.25)
    assert load_image(jpeg(), draft_points=0).scale == 1.0
    assert load_image(jpeg(), draft_points=WIDTH * HEIGHT).scale == 1.0


def test_dct_draft_is_for_jpeg_and_other_formats_are_reduced_by_whole_factors():
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(buffer, "PNG")
    loaded = load_image(buffer.getvalue(), draft_points=1000)
    factor = round(1 / loaded.scale)
    assert factor >= 2 and loaded.scale == 1 / factor and loaded.width == -(-WIDTH // factor)
    assert load_image(buffer.getvalue()).scale == 1.0  # no point budget: full size


@pytest.mark.parametrize("tags", [
    {0xA405: 28},  # FocalLengthIn35mmFilm
    {0x920A: 4.2, 0xA20E: 1000.0, 0xA210: 4},  # FocalLength + FocalPlaneXResolution (mm), no recorded size
    {0x920A: 4.2, 0xA20E: 1000.0, 0xA210: 4, 0xA002: WIDTH, 0xA003: HEIGHT},  # ... with the recorded size
])
def test_exif_focal_length_scales_with_the_decoded_size(tags):
    exif = Image.Exif()
    exif.get_ifd(0x8769).update(tags)
    full = load_image(jpeg(exif))
    small = load_image(jpeg(exif), draft_points=20_000)
    assert small.scale == 0.25 and full.focal_px
    fov_full = np.degrees(2 * np.arctan(full.width / (2 * full.focal_px)))
    fov_small = np.degrees(2 * np.arctan(small.width / (2 * small.focal_px)))
    assert fov_small == pytest.approx(fov_full, abs=0.05)


def _smooth_depth(loaded) -> DepthMap:
    """A metric depth map that is the same surface at any resolution: a tilted plane plus a bump."""
    v, u = np.mgrid[0:loaded.height, 0:loaded.width].astype(np.float32)
    s, t = (u + 0.5) / loaded.width, (v + 0.5) / loaded.height
    depth = 2.0 + s + 0.5 * np.exp(-((s - 0.5) ** 2 + (t - 0.5) ** 2) * 20)
    return DepthMap(values=depth, native=depth, kind=METRIC)


@pytest.mark.parametrize("options", [
    {}, {"fov_deg": 45.0}, {"focal_px": 900.0, "principal_point": (380.0, 310.0)},
])
def test_draft_decoding_gives_the_same_shape(options):
    """The same JPEG, decoded in full and at 1/4 scale, gives the same cloud up to the sampling."""
    opts = ConversionOptions(max_points=20_000, clean=False, **options)
    full = load_image(jpeg())
    small = load_image(jpeg(), draft_points=opts.max_points)
    assert small.scale == 0.25
    a = build_point_cloud(full, _smooth_depth(full), opts)
    b = build_point_cloud(small, _smooth_depth(small), opts)
    assert a.intrinsics.fov_x_deg == pytest.approx(b.intrinsics.fov_x_deg, rel=1e-3)
    assert abs(len(a.points) - len(b.points)) <= 0.02 * len(a.points)
    np.testing.assert_allclose(a.points.min(axis=0), b.points.min(axis=0), atol=0.02)
    np.testing.assert_allclose(a.points.max(axis=0), b.points.max(axis=0), atol=0.02)
    np.testing.assert_allclose(a.points.mean(axis=0), b.points.mean(axis=0), atol=0.01)


def test_converter_uses_draft_for_jpeg_and_full_size_for_max_points_0(dpt_model):
    converter = Converter(model=dpt_model)
    small = converter.convert(jpeg(), options=ConversionOptions(max_points=20_000))
    assert small.image.scale == 0.25
    assert small.depth.shape == (150, 200) == (small.intrinsics.height, small.intrinsics.width)
    assert {"preprocess", "forward", "postprocess"} <= set(small.timings)
    full = converter.convert(jpeg(), options=ConversionOptions(max_points=0))
    assert full.image.scale == 1.0 and full.depth.shape == (HEIGHT, WIDTH)
    assert small.intrinsics.fov_x_deg == pytest.approx(full.intrinsics.fov_x_deg, rel=1e-3)


@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
def test_large_non_jpeg_images_are_box_reduced_before_heavy_work_keeping_orientation_and_focal():
    """A PNG (no DCT scaling) far larger than the point grid is averaged down k × k once, upright, focal scaled."""
    import io

    from PIL import Image

    from converter.images import load_image

    rows, columns = np.mgrid[0:1500, 0:2000]
    picture = np.dstack([columns % 256, rows % 256, (columns // 8) % 256]).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90°
    exif.get_ifd(0x8769)[0xA405] = 28  # 35 mm-equivalent focal length
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG", exif=exif.tobytes())
    full = load_image(buffer.getvalue())
    reduced = load_image(buffer.getvalue(), draft_points=100_000)
    assert full.rgb.shape == (2000, 1500, 3) and full.scale == 1.0
    factor = round(1 / reduced.scale)
    assert factor >= 2 and reduced.rgb.shape == (2000 // factor, 1500 // factor, 3)
    expected = full.rgb[: reduced.height * factor, : reduced.width * factor].astype(float)
    expected = expected.reshape(reduced.height, factor, reduced.width, factor, 3).mean(axis=(1, 3))
    assert np.abs(reduced.rgb.astype(float) - expected).max() <= 1.0  # the same picture, upright, averaged
    assert reduced.focal_px == pytest.approx(full.focal_px / factor)
