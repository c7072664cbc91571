"""Depth models: tiny random checkpoints of the real architectures, loaded through the real code path.

Parity with the transformers depth-estimation pipeline, one load per process, kinds and units, device choice,
and the errors for models that cannot be loaded.
"""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from converter import ConversionOptions, Converter, ModelUnavailableError, OptionError
from converter.depth import (
    DEFAULT_MODEL,
    INVERSE_RELATIVE,
    KNOWN_MODELS,
    METRIC,
    get_depth_model,
    is_model_loaded,
    resolve_device,
    resolve_model_name,
)

MODEL_NAMES = ["dpt_hybrid", "dpt_swinv2", "depth_anything", "depth_anything_metric"]
EXPECTED_KIND = {
    "dpt_hybrid": INVERSE_RELATIVE, "dpt_swinv2": INVERSE_RELATIVE, "depth_anything": INVERSE_RELATIVE,
    "depth_anything_metric": METRIC,
}
EXPECTED_UNITS = {INVERSE_RELATIVE: "relative units", METRIC: "metres"}


@pytest.fixture(scope="module")
def pil_image() -> Image.Image:
    """150 × 100: non-square, so swapped axes would show."""
    rows, columns = np.mgrid[0:100, 0:150]
    rgb = np.dstack([columns * 1.7, rows * 2.5, (columns + rows) % 256]).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


@pytest.fixture(scope="module")
def reference_pipelines(tiny_models):
    """transformers' own depth-estimation pipeline for each tiny model (built once)."""
    from transformers import pipeline

    return {name: pipeline("depth-estimation", model=str(tiny_models[name]), device="cpu") for name in MODEL_NAMES}


# ------------------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("size", [(150, 100), (61, 97)])
def test_prediction_equals_the_transformers_pipeline(tiny_models, reference_pipelines, pil_image, name, size):
    image = pil_image.resize(size)
    # CPU parity with the CPU pipeline: on a GPU our model prepares its input with torch ops, not PIL.
    prediction = get_depth_model(str(tiny_models[name]), device="cpu").predict(image)
    expected = reference_pipelines[name](image)["predicted_depth"]
    expected = np.asarray(expected.numpy() if isinstance(expected, torch.Tensor) else expected, np.float32)
    assert prediction.values.shape == (size[1], size[0]) == expected.shape
    assert prediction.values.dtype == np.float32
    assert np.all(np.isfinite(prediction.values))
    scale = float(np.abs(expected).max())
    assert scale > 0
    np.testing.assert_allclose(prediction.values, expected, rtol=1e-4, atol=1e-6 * scale)


@pytest.mark.parametrize(
    "name, native_shape",
    [("dpt_hybrid", (64, 64)), ("dpt_swinv2", (64, 64)), ("depth_anything", (56, 84)), ("depth_anything_metric", (56, 84))],
)
def test_native_prediction_is_the_model_output_grid(tiny_models, pil_image, name, native_shape):
    prediction = get_depth_model(str(tiny_models[name])).predict(pil_image)
    assert prediction.native.shape == native_shape
    assert prediction.native.dtype == np.float32
    # The image-size values are a smooth enlargement of the native grid: same range, give or take the overshoot.
    span = np.ptp(prediction.native)
    assert prediction.values.min() >= prediction.native.min() - 0.5 * span
    assert prediction.values.max() <= prediction.native.max() + 0.5 * span


def test_predictions_are_deterministic(tiny_models, pil_image):
    model = get_depth_model(str(tiny_models["dpt_hybrid"]), device="cpu")  # cuDNN may pick kernels per call
    np.testing.assert_array_equal(model.predict(pil_image).values, model.predict(pil_image).values)


# ------------------------------------------------------------------------------------------- loaded once


def test_model_is_loaded_once_per_process(tiny_models):
    path = str(tiny_models["dpt_swinv2"])
    first = get_depth_model(path)
    assert get_depth_model(path) is first
    assert get_depth_model(path, device=resolve_device("auto")) is first  # "auto" and what it resolves to
    assert Converter(model=path).depth_model is first
    assert Converter(model=path, device="auto").load().depth_model is first
    assert is_model_loaded(path) and Converter(model=path).is_loaded


def test_concurrent_first_use_loads_one_model(tiny_models, tmp_path):
    path = tmp_path / "fresh-copy"
    shutil.copytree(tiny_models["dpt_hybrid"], path)
    assert not is_model_loaded(str(path))
    models, errors = [], []

    def load():
        try:
            models.append(get_depth_model(str(path)))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(models) == 4 and all(model is models[0] for model in models)


# ------------------------------------------------------------------------------------------ kinds and units


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_kind_and_units(tiny_models, pil_image, name):
    path = str(tiny_models[name])
    model = get_depth_model(path)
    assert model.kind == EXPECTED_KIND[name]
    assert model.predict(pil_image).kind == EXPECTED_KIND[name]
    assert model.parameters > 0 and model.device == resolve_device("auto")
    model = get_depth_model(path, device="cpu")  # below: exact values, which a GPU need not repeat bit for bit
    result = Converter(model=path, device="cpu").convert(pil_image, options=ConversionOptions(max_points=0))
    assert result.units == EXPECTED_UNITS[model.kind]
    assert result.model == path
    assert f"kind={model.kind}" in result.describe()[-1]
    if model.kind == INVERSE_RELATIVE:  # relative: mapped into [near, near · (1 + relief)]
        assert result.depth.min() == pytest.approx(1.0, rel=1e-4)
        assert result.depth.max() == pytest.approx(2.0, rel=1e-4)
    else:  # metric: the model's metres, as they are
        np.testing.assert_allclose(result.depth, model.predict(pil_image).values, rtol=1e-6)


# ------------------------------------------------------------------------------------------------------ device


def test_auto_device_is_the_best_available():
    if torch.cuda.is_available():
        assert resolve_device("auto") == "cuda"
    elif not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        assert resolve_device("auto") == "cpu"
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device(" CPU ") == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "CUDA"])
def test_cuda_without_a_gpu_is_an_option_error(device, tiny_models):
    with pytest.raises(OptionError, match="CUDA") as caught:
        resolve_device(device)
    assert "cpu" in str(caught.value)
    with pytest.raises(OptionError):
        Converter(model=str(tiny_models["dpt_hybrid"]), device=device).load()


def test_unknown_device_is_an_option_error():
    with pytest.raises(OptionError, match="tpu"):
        resolve_device("tpu")


@pytest.mark.parametrize("precision", ["fp8", "double"])
def test_unknown_precision_is_an_option_error(tiny_models, precision):
    with pytest.raises(OptionError, match="precision"):
        get_depth_model(str(tiny_models["dpt_hybrid"]), device="cpu", precision=precision)


def test_fp16_on_the_cpu_is_an_option_error(tiny_models):
    with pytest.raises(OptionError, match="fp16"):
        Converter(model=str(tiny_models["dpt_hybrid"]), device="cpu", precision="fp16").load()


def test_bf16_on_the_cpu_runs_close_to_fp32(tiny_models, pil_image):
    path = str(tiny_models["depth_anything_metric"])
    full = get_depth_model(path, device="cpu").predict(pil_image).values
    half = get_depth_model(path, device="cpu", precision="bf16")
    assert half is not get_depth_model(path, device="cpu")
    values = half.predict(pil_image).values
    assert values.dtype == np.float32 and values.shape == full.shape
    np.testing.assert_allclose(values, full, rtol=0.05, atol=0.05 * np.abs(full).max())


# ---------------------------------------------------------------------------------------------- model names


def test_model_names():
    assert resolve_model_name(None) == DEFAULT_MODEL == "Intel/dpt-hybrid-midas"
    assert resolve_model_name("dpt-swinv2-tiny") == "Intel/dpt-swinv2-tiny-256"
    assert resolve_model_name("depth-anything-v2-small") == "depth-anything/Depth-Anything-V2-Small-hf"
    assert resolve_model_name(" some/model ") == "some/model"
    assert DEFAULT_MODEL in KNOWN_MODELS
    assert Converter().model == DEFAULT_MODEL


# --------------------------------------------------------------------------------------- unavailable models


def corrupt_config(tiny_models, tmp_path):
    folder = tmp_path / "corrupt-config"
    shutil.copytree(tiny_models["dpt_hybrid"], folder)
    (folder / "config.json").write_text("{ this is not json")
    return str(folder)


def empty_folder(tiny_models, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    return str(folder)


def no_weights(tiny_models, tmp_path):
    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_models["dpt_hybrid"], folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    return str(folder)


def damaged_weights(tiny_models, tmp_path):
    folder = tmp_path / "damaged-weights"
    shutil.copytree(tiny_models["dpt_hybrid"], folder)
    for weights in folder.glob("*.safetensors"):
        weights.write_bytes(weights.read_bytes()[:1000])
    return str(folder)


def missing_folder(tiny_models, tmp_path):
    return str(tmp_path / "does-not-exist")


def unknown_hub_id(tiny_models, tmp_path):
    return "nobody-at-all/no-such-depth-model-xyz"


@pytest.mark.parametrize(
    "make", [missing_folder, corrupt_config, empty_folder, no_weights, damaged_weights, unknown_hub_id]
)
def test_unloadable_models_say_how_to_fix_it(tiny_models, tmp_path, pil_image, make):
    model = make(tiny_models, tmp_path)
    with pytest.raises(ModelUnavailableError) as caught:
        get_depth_model(model)
    error = caught.value
    message = str(error)
    assert error.code == "model_unavailable"
    assert error.model == model and f"'{model}'" in message  # names the model
    assert "DEPTH_MODEL" in message and "download" in message  # says how to fix it
    assert "Traceback" not in message and 'File "' not in message and "Error:" not in message
    assert not is_model_loaded(model)
    # Through the public API too, at load and at the first conversion.
    with pytest.raises(ModelUnavailableError):
        Converter(model=model).load()
    with pytest.raises(ModelUnavailableError):
        Converter(model=model).convert(pil_image)


def test_unknown_hub_id_offline_says_the_hub_cannot_be_reached():
    from huggingface_hub import constants

    if not constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE is not set")
    with pytest.raises(ModelUnavailableError) as caught:
        get_depth_model("nobody-at-all/another-missing-model")
    assert caught.value.reason == "it is not in the local cache and the Hugging Face Hub cannot be reached."


def test_not_a_depth_model(tiny_models, tmp_path):
    from transformers import BertConfig, BertModel

    folder = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)).save_pretrained(folder)
    shutil.copy(tiny_models["dpt_hybrid"] / "preprocessor_config.json", folder)
    with pytest.raises(ModelUnavailableError, match="not a depth-estimation model"):
        get_depth_model(str(folder))


def test_a_failed_load_is_not_remembered(tiny_models, tmp_path, pil_image):
    folder = tmp_path / "filled-later"
    folder.mkdir()
    with pytest.raises(ModelUnavailableError):
        get_depth_model(str(folder))
    shutil.copytree(tiny_models["depth_anything"], folder, dirs_exist_ok=True)
    assert get_depth_model(str(folder)).predict(pil_image).values.shape == (100, 150)


def test_converting_with_a_depth_file_never_loads_the_model():
    """A user depth map needs no model, so an unavailable model does not matter."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.full((10, 12), 2.0, np.float32))
    converter = Converter(model="nobody-at-all/unreachable-model")
    result = converter.convert(np.zeros((10, 12, 3), np.uint8), depth=buffer.getvalue())
    assert len(result.points) == 120
    assert not converter.is_loaded
