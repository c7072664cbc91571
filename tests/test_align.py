"""Metric from two models: the robust fit on synthetic depth with known truth, the disagreement picture, and a tiny
relative and a tiny metric model through the Python API, the CLI and the web (both predictions cached)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import png_bytes, wait_for_job

from converter.align import (
    Alignment,
    _inlier_counts,
    _line,
    align,
    apply_fit,
    disagreement_layer,
    disagreement_picture,
    fit_inverse_depth,
)
from converter.depth import INVERSE_RELATIVE, METRIC, DepthMap
from converter.errors import OptionError


def scene(seed: int = 0, shape=(120, 160)):
    """Truth z [H, W] in metres (a slanted, wavy room 1.5-4.5 m), and a relative model's disparity of it:
    d = a / z + b (affine in inverse depth, unknown a, b), with 0.1 % noise."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]]
    z = 1.5 + 3.0 * columns / shape[1] + 0.5 * np.sin(rows / 9.0)
    a, b = 0.37, 0.05
    clean = a / z + b
    noisy = clean * (1 + rng.normal(0, 0.001, z.shape))
    return z, clean, noisy, rng


def test_twenty_percent_outliers_do_not_drag_the_fit_depth_comes_back_within_one_percent():
    z, clean, noisy, rng = scene()
    metric = z * (1 + rng.normal(0, 0.01, z.shape))  # the metric model: 1 % noise...
    outliers = rng.random(z.shape) < 0.20  # ...and 20 % garbage: sky at 80 m, glass, reflections
    metric[outliers] = rng.choice([80.0, 0.3], outliers.sum()) * rng.uniform(0.8, 1.2, outliers.sum())
    fit = fit_inverse_depth(noisy.astype(np.float32), metric.astype(np.float32))
    recovered = apply_fit(clean, fit)
    assert np.abs(recovered / z - 1).max() < 0.01
    assert np.median(np.abs(apply_fit(noisy, fit) / z - 1)) < 0.01
    assert fit.inlier_share == pytest.approx(0.8, abs=0.03)  # the outliers, and only they, are out
    assert fit.residual_percent < 1.5  # the metric model's own 1 % noise
    # a plain least-squares fit on the same pixels is dragged far off: the robust fit is what makes the difference
    target = 1 / metric.ravel()
    s, t = np.linalg.lstsq(np.stack([noisy.ravel(), np.ones(noisy.size)], 1), target, rcond=None)[0]
    with np.errstate(divide="ignore"):
        plain = 1 / (s * clean + t)
    assert np.nanmedian(np.abs(plain / z - 1)) > 0.05


def test_align_gives_metres_with_the_relative_detail_and_a_disagreement_map():
    z, clean, _, rng = scene(1)
    blurred_metric = z.copy()
    blurred_metric[:, 120:] = z[:, 120:] * 1.5  # where the metric model is wrong (a quarter), the map says so
    relative = DepthMap(values=clean.astype(np.float32), native=clean[::2, ::2].astype(np.float32),
                        kind=INVERSE_RELATIVE, source="relative")
    reference = DepthMap(values=blurred_metric.astype(np.float32), native=blurred_metric.astype(np.float32),
                         kind=METRIC, source="metric", focal_px=140.0)
    aligned, alignment = align(relative, reference)
    assert isinstance(alignment, Alignment) and aligned.kind == METRIC
    assert aligned.source == "relative aligned to metric" and aligned.focal_px == 140.0  # the metric model's camera
    np.testing.assert_allclose(aligned.values[:, :120], z[:, :120], rtol=1e-3)
    assert aligned.native.shape == (60, 80)
    assert np.abs(alignment.disagreement[:, :120]).max() < 1e-3
    np.testing.assert_allclose(alignment.disagreement[:, 120:], 1 / 1.5 - 1, rtol=1e-3)
    assert alignment.describe()["disagreement_over_25_percent_share"] == pytest.approx(0.25)
    assert alignment.fit.inlier_share == pytest.approx(0.75)


def test_the_disagreement_picture_has_a_colour_scale_and_grey_where_nothing_was_compared():
    disagreement = np.zeros((40, 60), np.float32)
    disagreement[:, :20] = -0.5  # nearer: saturated blue
    disagreement[:, 40:] = 0.5  # farther: saturated red
    disagreement[:5] = np.nan
    picture = np.asarray(disagreement_picture(disagreement, "metric"))
    assert picture.shape[0] > 40 and picture.shape[1] >= 60  # the legend lies below the map
    left = (picture.shape[1] - 60) // 2
    assert tuple(picture[20, left + 5]) == (33, 102, 172) and tuple(picture[20, left + 55]) == (178, 24, 43)
    assert tuple(picture[2, left + 30]) == (128, 128, 128)
    bar = picture[48]  # the colour scale: blue on the left, white in the middle, red on the right
    assert bar[22][2] > bar[22][0] and bar[-23][0] > bar[-23][2]
    text = picture[60:]
    assert (text.sum(axis=2) < 200).any()  # the labels are drawn
    layer = np.asarray(disagreement_layer(disagreement, max_side=30))  # the page's layer: no legend, transparent gaps
    assert layer.shape == (20, 30, 4)
    assert tuple(layer[10, 2]) == (33, 102, 172, 255) and layer[1, 15, 3] == 0


def test_a_relative_model_is_not_a_reference():
    z, clean, _, _ = scene()
    relative = DepthMap(values=clean.astype(np.float32), native=clean.astype(np.float32), kind=INVERSE_RELATIVE)
    with pytest.raises(OptionError, match="metric model"):
        align(relative, relative)


# --- through the product -------------------------------------------------------------------------------------------

@pytest.fixture
def photo_bytes() -> bytes:
    rows, columns = np.mgrid[0:48, 0:64]
    return png_bytes(np.dstack([columns * 3, rows * 4, 255 - columns * 2]).astype(np.uint8))


@pytest.mark.slow  # two models, three conversions
def test_python_api_and_cli_align_a_relative_model_to_a_metric_one(tiny_models, tmp_path, photo_bytes):
    from converter import Converter
    from converter.__main__ import main

    relative, metric = str(tiny_models["depth_anything"]), str(tiny_models["depth_anything_metric"])
    result = Converter(model=relative, device="cpu", align_to=metric).convert(photo_bytes)
    info = result.metadata()
    assert result.units == "metres" and info["depth_kind"] == METRIC
    assert {"scale", "shift", "inlier_share", "residual_percent"} <= set(info["alignment"])
    assert info["alignment"]["metric_model"] == metric and info["depth_source"] == f"{relative} aligned to {metric}"

    image = tmp_path / "photo.png"
    image.write_bytes(photo_bytes)
    code = main([str(image), "-o", str(tmp_path / "out"), "--format", "ply,json,disagreement", "--model", relative,
                 "--align-to", metric, "-q"])
    assert code == 0
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["alignment"]["inlier_share"] == pytest.approx(info["alignment"]["inlier_share"])
    assert (tmp_path / "out.disagreement.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([str(image), "-o", str(tmp_path / "x"), "--format", "disagreement", "--model", relative, "-q"]) == 2


def fetch(client, url: str):
    """GET through the test client, the body read and the response closed (a file download holds the file)."""
    response = client.get(url)
    response.get_data()
    response.close()
    return response


@pytest.mark.slow  # two models, five web jobs
def test_web_aligns_caches_both_predictions_and_a_rebuild_keeps_the_fit(make_app, tiny_models, photo_bytes,
                                                                         monkeypatch):
    from converter.depth import get_depth_model

    relative, metric = str(tiny_models["depth_anything"]), str(tiny_models["depth_anything_metric"])
    app = make_app(DEPTH_MODEL=relative, MODELS=[relative, metric])
    client = app.test_client()

    def convert(**fields):
        response = client.post("/api/v1/conversions", data={"image": (io.BytesIO(photo_bytes), "p.png"), **fields},
                               content_type="multipart/form-data")
        assert response.status_code == 202, response.get_json()
        view = wait_for_job(client, response.get_json()["status_url"].replace("/api/v1/conversions/", "/jobs/"))
        assert view["status"] == "done", view
        return view

    form = client.get("/").get_data(as_text=True)
    assert 'name="align_to"' in form and f'<option value="{metric}">' in form
    first = convert(align_to=metric)
    info = first["info"]
    assert info["units"] == "metres" and info["job"]["options"]["align_to"] == metric
    assert 0 < info["alignment"]["inlier_share"] <= 1 and info["alignment"]["residual_percent"] >= 0
    picture = fetch(client, first["files"]["disagreement"])
    assert picture.status_code == 200 and picture.data[:8] == b"\x89PNG\r\n\x1a\n"
    html = client.get(f"/jobs/{first['id']}").get_data(as_text=True)
    assert 'id="disagreement-layer"' in html and first["files"]["disagreement_layer"] in html
    assert 'id="alignment"' in html and first["files"]["disagreement"] in html  # the download
    layer = fetch(client, first["files"]["disagreement_layer"])
    assert layer.status_code == 200 and layer.data[:8] == b"\x89PNG\r\n\x1a\n"

    calls = []
    for model in (app.extensions["image_to_3d"].converter.depth_model, get_depth_model(metric, "auto")):
        original = model.predict
        monkeypatch.setattr(model, "predict", lambda *a, original=original, **k: calls.append(1) or original(*a, **k))
    again = convert(align_to=metric)
    assert calls == [] and again["info"]["depth_cached"] is True  # both predictions came from the cache
    assert again["info"]["alignment"]["scale"] == pytest.approx(info["alignment"]["scale"])
    plain = convert()  # the relative model alone reuses its cached prediction too
    assert calls == [] and plain["info"]["depth_cached"] is True and "alignment" not in plain["info"]
    assert not {"disagreement", "disagreement_layer"} & set(plain["files"]) and plain["info"]["units"] != "metres"

    response = client.post(f"/api/v1/conversions/{first['id']}/rebuild", data={"fov": "40"})
    rebuilt = wait_for_job(client, f"/jobs/{response.get_json()['id']}")
    assert rebuilt["status"] == "done", rebuilt
    assert rebuilt["info"]["units"] == "metres" and calls == []
    assert rebuilt["info"]["alignment"]["scale"] == pytest.approx(info["alignment"]["scale"])
    assert fetch(client, rebuilt["files"]["disagreement"]).data == picture.data

    refused = client.post("/api/v1/conversions", data={"image": (io.BytesIO(photo_bytes), "p.png"),
                                                       "align_to": relative}, content_type="multipart/form-data")
    assert refused.status_code == 400 and "different" in refused.get_json()["error"]


def test_only_a_positive_scale_is_fitted_even_when_most_pixels_say_otherwise():
    z, clean, _, _ = scene(2)
    metric = z.copy()
    inverted = np.zeros(z.shape, bool)
    inverted[:, :100] = True  # 62 % of the metric map is ordered the wrong way round (a broken model)
    metric[inverted] = 1 / (0.5 - 0.05 * clean[inverted])
    fit = fit_inverse_depth(clean.astype(np.float32), metric.astype(np.float32))
    assert fit.scale > 0
    np.testing.assert_allclose(apply_fit(clean, fit)[:, 100:], z[:, 100:], rtol=0.01)


def test_aligning_does_not_go_with_a_depth_file():
    from converter import Converter

    depth = io.BytesIO()
    np.save(depth, np.ones((8, 8), np.float32))
    with pytest.raises(OptionError, match="own depth map"):
        Converter(align_to="depth-pro").convert(np.zeros((8, 8, 3), np.uint8), depth=depth.getvalue())


def test_ransac_counts_each_hypothesis_inliers_as_the_plain_formula_does():
    """The scoring goes a few hypotheses at a time in a reused buffer: every count must be the plain formula's,
    hypotheses past a multiple of the chunk included."""
    rng = np.random.default_rng(4)
    xs = rng.random(1001) + 0.5
    ys = 0.8 * xs + 0.1 + rng.normal(0, 0.02, xs.size)
    scales, shifts = 0.8 + rng.normal(0, 0.05, 11), 0.1 + rng.normal(0, 0.05, 11)
    counts = _inlier_counts(scales, shifts, xs, ys, 0.05)
    plain = [int(np.sum(np.abs(s * xs + t - ys) <= 0.05 * ys)) for s, t in zip(scales, shifts)]
    assert counts.tolist() == plain and len(set(plain)) > 5


def test_the_refit_line_is_least_squares_and_none_without_spread():
    rng = np.random.default_rng(5)
    x = rng.random(500) * 3
    y = 0.7 * x - 0.2 + rng.normal(0, 0.05, x.size)
    scale, offset = _line(x, y)
    expected, *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], axis=1), y, rcond=None)
    np.testing.assert_allclose([scale, offset], expected, rtol=1e-10)
    assert _line(np.full(5, 2.0), np.arange(5.0)) is None
