"""Preprocessing as torch ops (converter.depth.tensor_preprocess) against the PIL image processor, and the
depth model's fast path that uses it (``tensor_preprocess=True`` exercises on the CPU what CUDA runs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil
from transformers.models.zoedepth.image_processing_pil_zoedepth import ZoeDepthImageProcessorPil

from converter.depth import get_depth_model, is_model_loaded
from converter.depth.tensor_preprocess import build_tensor_preprocess

MIDAS = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3)
IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
PROCESSORS = {  # the tiny test models' settings and the published checkpoints'
    "tiny-dpt": dict(size={"height": 64, "width": 64}, keep_aspect_ratio=False, **MIDAS),
    "tiny-depth-anything": dict(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                                resample=3, **IMAGENET),
    "dpt-hybrid-midas": dict(size={"height": 384, "width": 384}, keep_aspect_ratio=False, resample=3, **MIDAS),
    "depth-anything-v2": dict(size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14,
                              resample=3, **IMAGENET),
    "bilinear": dict(size={"height": 64, "width": 96}, resample=2, **MIDAS),
}


def pictures() -> dict[str, np.ndarray]:
    rows, columns = np.mgrid[0:100, 0:150]
    smooth = np.dstack([columns * 1.7, rows * 2.5, (columns + rows) % 256]).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (97, 61, 3), dtype=np.uint8)  # worst case for cubic overshoot
    tall = np.ascontiguousarray(np.random.default_rng(1).integers(0, 256, (700, 90, 3), dtype=np.uint8))
    return {"smooth": smooth, "noise": noise, "tall": tall}


@pytest.mark.parametrize("processor_name", sorted(PROCESSORS))
@pytest.mark.parametrize("picture", sorted(pictures()))
def test_matches_the_pil_processor(processor_name, picture):
    processor = DPTImageProcessorPil(**PROCESSORS[processor_name])
    rgb = pictures()[picture]
    expected = processor(images=Image.fromarray(rgb), return_tensors="pt")["pixel_values"]
    got = build_tensor_preprocess(processor)(torch.from_numpy(rgb))
    assert got.shape == expected.shape and got.dtype == torch.float32
    difference = (got - expected).abs()
    one_level = 1 / 255 / min(processor.image_std) + 1e-6
    # PIL rounds to uint8 between its two passes, in an order Pillow 13 picks by its own rule (we mimic it): one
    # level where the order agrees, two where it does not; rare either way.
    assert float(difference.max()) <= 2 * one_level
    assert float((difference > one_level).float().mean()) <= 0.01
    assert float(difference.mean()) <= 0.002


def test_unknown_processors_and_settings_fall_back():
    assert build_tensor_preprocess(ZoeDepthImageProcessorPil()) is None  # reflect padding before the resize
    assert build_tensor_preprocess(DPTImageProcessorPil(resample=0)) is None  # PIL's nearest is not torch's
    assert build_tensor_preprocess(DPTImageProcessorPil(do_pad=True, size_divisor=32)) is None
    assert build_tensor_preprocess(object()) is None


def test_model_fast_path_on_the_cpu(tiny_models):
    path = str(tiny_models["depth_anything"])
    reference = get_depth_model(path, device="cpu")
    fast = get_depth_model(path, device="cpu", tensor_preprocess=True)
    assert fast is not reference and reference.tensor_preprocess is None and fast.tensor_preprocess is not None
    assert is_model_loaded(path, device="cpu", tensor_preprocess=True)
    rows, columns = np.mgrid[0:100, 0:150]
    image = Image.fromarray(np.dstack([columns * 1.7, rows * 2.5, (columns + rows) % 256]).astype(np.uint8))
    expected = reference.predict(image)
    timings = {}
    got = fast.predict(image, timings=timings)
    assert set(timings) == {"preprocess", "forward", "postprocess"}
    assert got.values.shape == expected.values.shape == (100, 150) and got.native.shape == expected.native.shape
    assert got.values.dtype == np.float32 and got.kind == expected.kind
    scale = float(np.abs(expected.values).max())
    np.testing.assert_allclose(got.values, expected.values, rtol=1e-3, atol=1e-3 * scale)
    native, values = fast.predict_on_device(np.asarray(image))
    assert isinstance(native, torch.Tensor) and native.device.type == "cpu" and values.shape == (100, 150)
    np.testing.assert_allclose(values.numpy(), got.values, rtol=1e-6, atol=1e-6 * scale)
