"""Depth Pro end to end with a tiny random checkpoint loaded like a real one: no torchvision, metric depth from its
field of view, and its camera kept on every path (CPU, device path, micro-batched, cache, rebuild, page)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from conftest import png_bytes, wait_for_job

from converter import ConversionOptions, Converter
from converter.depth import METRIC
from converter.errors import ModelUnavailableError


@pytest.fixture(scope="module")
def depth_pro(tiny_models) -> str:
    return str(tiny_models["depth_pro"])


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rows, columns = np.mgrid[0:60, 0:80]
    return np.dstack([columns * 3, rows * 4, 255 - columns * 2]).astype(np.uint8)


def model_field_of_view(model, rgb: np.ndarray) -> float:
    """The field of view the transformers model's own head gives for ``rgb``, its input prepared here by hand."""
    import torch

    pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    pixels = torch.nn.functional.interpolate((pixels - 0.5) / 0.5, size=(128, 128), mode="bilinear",
                                             align_corners=False)
    with torch.inference_mode():
        return float(model(pixel_values=pixels).field_of_view[0])


def test_depth_pro_loads_without_torchvision_and_gives_metres_and_a_camera(depth_pro, image):
    from converter.depth import get_depth_model

    model = get_depth_model(depth_pro, "cpu")
    assert model.kind == METRIC and model.camera_head
    prediction = model.predict(__import__("PIL.Image", fromlist=["Image"]).fromarray(image))
    fov = model_field_of_view(model.model, image)
    assert 1 < fov < 179
    assert prediction.focal_px == pytest.approx(80 / (2 * math.tan(math.radians(fov) / 2)), rel=1e-4)
    assert prediction.values.shape == (60, 80) and np.all(prediction.values > 0)
    # metric depth is f / (W · inverse depth): independent of the image width, from the raw output
    assert np.isfinite(prediction.native).all() and prediction.native.min() >= 1e-4


def test_the_models_focal_length_is_the_camera_unless_the_user_or_exif_gives_one(depth_pro, image):
    converter = Converter(model=depth_pro, device="cpu")
    own = converter.convert(image)
    camera = own.metadata()["camera"]
    assert camera["source"] == f"model:{depth_pro}"
    assert camera["fx"] == pytest.approx(own.prediction.focal_px)
    assert camera["model_fov_x_deg"] == pytest.approx(camera["fov_x_deg"])

    user = converter.convert(image, options=ConversionOptions(fov_deg=90.0), prediction=own.prediction)
    assert user.intrinsics.source == "user:fov" and user.intrinsics.fov_x_deg == pytest.approx(90.0)
    # the model's depth is rescaled to the camera used, so the shape does not bend
    ratio = user.intrinsics.fx / own.intrinsics.fx
    kept = (own.depth > 0) & (user.depth > 0)
    np.testing.assert_allclose(user.depth[kept], own.depth[kept] * ratio, rtol=1e-5)

    from PIL import Image

    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50  # FocalLengthIn35mmFilm
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95, exif=exif)
    from_exif = converter.convert(buffer.getvalue(), options=ConversionOptions(max_points=0))
    assert from_exif.intrinsics.source.startswith("exif")
    assert from_exif.metadata()["camera"]["model_focal_px"] == pytest.approx(own.prediction.focal_px, rel=0.05)


@pytest.mark.slow  # more model loads (and one OpenVINO conversion)
@pytest.mark.parametrize("settings", [
    {"on_device": True}, {"batch_size": 2, "batch_wait_ms": 1.0}, {"engine": "openvino"},
    {"engine": "openvino", "on_device": True}, {"engine": "openvino", "batch_size": 2, "batch_wait_ms": 1.0},
], ids=["device-path", "micro-batched", "openvino", "openvino-device-path", "openvino-micro-batched"])
def test_the_device_path_micro_batching_and_openvino_keep_the_camera(depth_pro, image, settings):
    plain = Converter(model=depth_pro, device="cpu", engine="torch").convert(image)
    other = Converter(model=depth_pro, device="cpu", **settings).convert(image)
    assert other.metadata()["engine"]["engine"] == settings.get("engine", "torch")  # no silent fallback
    assert other.intrinsics.source == f"model:{depth_pro}"
    assert other.prediction.focal_px == pytest.approx(plain.prediction.focal_px, rel=1e-5)
    # in inverse depth: where a random head's inverse depth is about 0, rounding-level differences between the
    # engines are hundreds of metres (tests/test_engines.py, network_output)
    inverse = 1 / plain.depth
    np.testing.assert_allclose(1 / other.depth, inverse, rtol=1e-4, atol=1e-4 * np.ptp(inverse))


def test_the_depth_cache_keeps_the_camera(tmp_path, depth_pro, image):
    from web.jobs.depth_cache import load_prediction, save_prediction

    prediction = Converter(model=depth_pro, device="cpu").convert(image).prediction
    stored = load_prediction(save_prediction(tmp_path / "p.npz", prediction))
    assert stored.focal_px == pytest.approx(prediction.focal_px)
    half = stored.resized(40, 30)
    assert half.focal_px == pytest.approx(prediction.focal_px / 2)


def test_a_processor_that_needs_a_missing_package_names_it(depth_pro):
    from transformers import AutoImageProcessor

    from converter.depth.huggingface import _load

    with pytest.raises(ModelUnavailableError) as caught:
        _load(AutoImageProcessor, depth_pro, backend="pil")  # transformers' own class imports torchvision
    message = str(caught.value)
    assert "torchvision" in message and "pip install torchvision" in message
    assert "internet" not in message and "could not be read" not in message


def test_web_shows_the_models_camera_and_a_rebuild_keeps_it(make_app, depth_pro, image):
    app = make_app(DEPTH_MODEL=depth_pro)
    client = app.test_client()
    response = client.post("/api/v1/conversions", data={"image": (io.BytesIO(png_bytes(image)), "p.png")},
                           content_type="multipart/form-data")
    assert response.status_code == 202, response.get_json()
    first = wait_for_job(client, response.get_json()["status_url"].replace("/api/v1/conversions/", "/jobs/"))
    assert first["status"] == "done", first
    camera = first["info"]["camera"]
    assert camera["source"] == f"model:{depth_pro}"
    html = client.get(f"/jobs/{first['id']}").get_data(as_text=True)
    expected = (f"focal length estimated by the model: {camera['model_focal_px']:,.0f} px "
                f"({camera['model_fov_x_deg']:.0f}°")
    assert " ".join(expected.split()) in " ".join(html.split())

    rebuilt = client.post(f"/api/v1/conversions/{first['id']}/rebuild", data={"relief": "2"})
    again = wait_for_job(client, f"/jobs/{rebuilt.get_json()['id']}")
    assert again["status"] == "done" and again["info"]["camera"]["source"] == f"model:{depth_pro}"
    assert again["info"]["camera"]["fx"] == pytest.approx(camera["fx"])

    overridden = client.post(f"/api/v1/conversions/{first['id']}/rebuild", data={"fov": "70"})
    user = wait_for_job(client, f"/jobs/{overridden.get_json()['id']}")
    assert user["info"]["camera"]["source"] == "user:fov"
    assert user["info"]["camera"]["model_focal_px"] == pytest.approx(camera["model_focal_px"])


def test_the_metric_models_are_offered_by_name_each_with_a_line_in_the_readme():
    from pathlib import Path

    from converter.depth import KNOWN_MODELS, resolve_model_name

    assert resolve_model_name("depth-pro") == "apple/DepthPro-hf"
    metric = {info.name for info in KNOWN_MODELS.values() if info.metric}
    assert metric == {"depth-anything-v2-metric-indoor-small", "depth-anything-v2-metric-outdoor-small",
                      "zoedepth-nyu-kitti", "depth-pro"}
    assert [info.name for info in KNOWN_MODELS.values() if info.camera] == ["depth-pro"]
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for info in KNOWN_MODELS.values():
        assert f"| `{info.name}` | `{info.hub_id}` |" in readme, info.name


@pytest.mark.slow  # a third of a second or more: the fast tier stays under 30 s
def test_zoedepth_runs_without_torchvision_its_padding_removed(tiny_models, image):
    """ZoeDepth's processor pads by reflection and its post-processing (torchvision's resize) removes the padding:
    done here in torch, the depth at the image's size is the padded prediction's middle."""
    import torch

    from converter.depth import get_depth_model
    from converter.depth.zoedepth import padding

    model = get_depth_model(str(tiny_models["zoedepth"]), "cpu")
    assert model.kind == METRIC and model.padded
    from PIL import Image

    picture = Image.fromarray(image)
    prediction = model.predict(picture)
    with torch.inference_mode():  # the model's raw output for the padded image, resized and cropped by hand
        raw = model.model(**model.processor(images=picture, return_tensors="pt")).predicted_depth[0]
    pad_h, pad_w = padding(60, 80)
    padded = torch.nn.functional.interpolate(raw[None, None], size=(60 + 2 * pad_h, 80 + 2 * pad_w), mode="bicubic",
                                             align_corners=False)[0, 0]
    np.testing.assert_allclose(prediction.values, padded[pad_h:-pad_h, pad_w:-pad_w].numpy(), rtol=1e-5)
    assert prediction.native.shape[0] < raw.shape[0] and prediction.native.shape[1] < raw.shape[1]
