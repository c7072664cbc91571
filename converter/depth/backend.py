"""The depth back-end seam: what every engine does, the registry of engines and the one factory that picks one.

A back-end turns an image into a :class:`DepthMap` in three steps, so that engines differ only where they must:

- ``prepare(image)``: the model's input, pixel_values [1, 3, h, w] on the back-end's device;
- ``forward(pixel_values)``: the network alone, batched along dim 0; returns every output post-processing needs,
  as float32 tensors by name (:data:`MODEL_OUTPUTS`: ``predicted_depth`` [B, h', w'] and, for models that estimate
  the camera, ``field_of_view`` [B]);
- ``finish(outputs, size)``: one image's outputs → DepthMap at ``size`` (and at the model's native size), with the
  model's own focal length (``DepthMap.focal_px``) when it has a camera head (Depth Pro).

``kind`` (what the values are), ``device``, ``engine`` and ``precision`` say what ran. Micro-batching wraps any
back-end (:class:`BatchedBackend`). Adding an engine is one module with a subclass of
:class:`converter.depth.huggingface.HuggingFaceDepthModel` (or of :class:`DepthBackend`) and one line in
:data:`ENGINES`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import os
import time
from abc import ABC, abstractmethod

import numpy as np

from ..errors import OptionError
from .batching import MicroBatcher
from .depthmap import DepthMap

log = logging.getLogger(__name__)

MODEL_OUTPUTS = ("predicted_depth", "field_of_view")  # what a forward keeps of the model's output, when present

# engine name → "module:class" (imported on first use: OpenVINO is only imported when it is chosen)
ENGINES = {
    "torch": "converter.depth.huggingface:HuggingFaceDepthModel",
    "openvino": "converter.depth.openvino_engine:OpenVinoDepthModel",
}
ENGINE_CHOICES = ("auto", *ENGINES)


class DepthBackend(ABC):
    """A loaded depth model behind one engine. Subclasses set ``model_id``, ``kind``, ``device``, ``engine``,
    ``precision``, ``parameters`` and ``load_seconds``, and implement prepare / forward / finish."""

    model_id: str
    kind: str
    device: str
    engine: str
    precision: str
    batcher = None  # a MicroBatcher when forwards are shared (see BatchedBackend)

    @abstractmethod
    def prepare(self, image):
        """Image (PIL RGB, [H, W, 3] uint8 array or tensor) → pixel_values [1, 3, h, w] on the device."""

    @abstractmethod
    def forward(self, pixel_values) -> dict:
        """pixel_values [B, 3, h, w] → {output name: float32 tensor [B, ...]} (see :data:`MODEL_OUTPUTS`)."""

    @abstractmethod
    def postprocess(self, outputs: dict, size: tuple[int, int]):
        """One image's outputs ({name: tensor [1, ...]}) → (native [h', w'], values [H, W], focal_px): float32
        tensors on the device, ``size`` = (H, W), and the model's own focal length in pixels at W (from its
        ``field_of_view`` output; None for a model without a camera head)."""

    def finish(self, outputs: dict, size: tuple[int, int]) -> DepthMap:
        """One image's outputs → DepthMap at ``size`` = (H, W). Where a model's own camera estimate (the
        ``field_of_view`` output) becomes part of the prediction (``DepthMap.focal_px``)."""
        native, values, focal_px = self.postprocess(outputs, size)
        return DepthMap(values=values.cpu().numpy().astype(np.float32, copy=False), native=native.cpu().numpy(),
                        kind=self.kind, source=self.model_id, focal_px=focal_px)

    def describe(self) -> dict:
        """What runs the model, for result.json and /readyz."""
        return {"engine": self.engine, "precision": self.precision, "device": self.device}

    def predict(self, image, timings: dict | None = None) -> DepthMap:
        """Image → DepthMap at the image's size (bicubic, as the transformers pipeline resizes) and native size.
        ``timings``: if given, seconds of "preprocess", "forward" and "postprocess" are added to it."""
        outputs, size, marks = self._run(image, timings)
        prediction = self.finish(outputs, size)
        _add_timings(timings, *marks, time.perf_counter())
        return prediction

    def predict_on_device(self, image, timings: dict | None = None, camera: dict | None = None):
        """Image → (native [h', w'], values [H, W]) float32 tensors on the device, for
        ``converter.geometry.grid_cloud`` without a round trip. ``camera``: if given, its
        "focal_px" is set to the model's focal length in pixels at W (None: the model has no camera head)."""
        outputs, size, marks = self._run(image, timings)
        native, values, focal_px = self.postprocess(outputs, size)
        if timings is not None:
            _synchronize(self.device)
        _add_timings(timings, *marks, time.perf_counter())
        if camera is not None:
            camera["focal_px"] = focal_px
        return native, values

    def _run(self, image, timings):
        clock = time.perf_counter
        started = clock()
        size = _image_size(image)
        pixel_values = self.prepare(image)
        if timings is not None:
            _synchronize(self.device)
        prepared = clock()
        outputs = self.forward(pixel_values)
        if timings is not None:
            _synchronize(self.device)
        return outputs, size, (started, prepared, clock())

    def close(self) -> None:
        """Release what the back-end holds beyond memory (threads); the default holds nothing."""


def engine_class(engine: str):
    """The back-end class registered under ``engine`` (imported now)."""
    module_name, class_name = ENGINES[engine].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def engine_from_environment(environ=os.environ) -> str:
    """The engine $ENGINE names, lower-cased; auto when it is unset or empty. The one reader of the variable: the
    library, the CLI's default and the service's settings all ask here."""
    return (environ.get("ENGINE") or "").strip().lower() or "auto"


def check_engine(engine: str | None) -> str:
    """``engine`` lower-cased (None or empty: :func:`engine_from_environment`), or an OptionError that lists the
    choices (raised at start, before any job)."""
    engine = (engine or "").strip().lower() or engine_from_environment()
    if engine not in ENGINE_CHOICES:
        raise OptionError(f"Unknown engine '{engine}'; choose one of: {', '.join(ENGINE_CHOICES)}.")
    return engine


def resolve_engine(engine: str | None, device: str) -> str:
    """The engine that runs on ``device`` (resolved): ``auto`` (also None with no $ENGINE) = OpenVINO on the CPU
    when it is installed, otherwise torch (always torch on CUDA and MPS). An OpenVINO request off the CPU is an
    OptionError."""
    engine = check_engine(engine)
    if engine == "auto":
        return "openvino" if device == "cpu" and _installed("openvino") else "torch"
    if engine == "openvino" and device != "cpu":
        raise OptionError("The OpenVINO engine runs on the CPU; use --device cpu, or --engine torch on a GPU.")
    if engine == "openvino" and not _installed("openvino"):
        raise OptionError("The OpenVINO engine is not installed (pip install -r requirements.txt); "
                          "use --engine torch.")
    return engine


class BatchedBackend(DepthBackend):
    """Any back-end whose forwards are shared by concurrent requests: ``forward`` goes through a
    :class:`MicroBatcher`; everything else (prepare, postprocess, attributes) is the wrapped back-end's."""

    def __init__(self, backend: DepthBackend, max_batch: int, max_wait_ms: float):
        self.backend = backend
        self.batcher = MicroBatcher(backend.forward, max_batch, max_wait_ms)

    def __getattr__(self, name):  # model_id, kind, device, engine, precision, processor, model, ...
        return getattr(self.backend, name)

    def prepare(self, image):
        return self.backend.prepare(image)

    def forward(self, pixel_values) -> dict:
        return self.batcher.predict(pixel_values)

    def postprocess(self, outputs: dict, size: tuple[int, int]):
        return self.backend.postprocess(outputs, size)

    def describe(self) -> dict:
        return self.backend.describe()  # the wrapped engine's own account (an OpenVINO fallback says why)

    def close(self) -> None:
        """Stop the micro-batcher's worker, then the wrapped back-end."""
        self.batcher.close()
        self.backend.close()


def load_backend(model_id: str, device: str, precision: str, engine: str | None = None, *,
                 tensor_preprocess: bool | None = None, batch_size: int = 1,
                 batch_wait_ms: float = 0.0) -> DepthBackend:
    """The one factory: load ``model_id`` behind ``engine`` (see :func:`resolve_engine`) on ``device`` (already
    resolved). An engine that cannot run the model falls back to torch inside its own class, with one log line.
    ``batch_size`` > 1 wraps the back-end in a micro-batcher."""
    engine = resolve_engine(engine, device)
    backend = engine_class(engine)(model_id, device=device, precision=precision, tensor_preprocess=tensor_preprocess)
    if batch_size > 1:
        backend = BatchedBackend(backend, batch_size, batch_wait_ms)
    return backend


@functools.lru_cache(maxsize=None)  # asked on every model lookup and readiness probe
def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _image_size(image) -> tuple[int, int]:
    """(H, W) of a PIL image, array or [H, W, 3] tensor."""
    if hasattr(image, "height") and hasattr(image, "width") and not hasattr(image, "shape"):
        return int(image.height), int(image.width)
    return int(image.shape[0]), int(image.shape[1])


def _add_timings(timings: dict | None, started: float, prepared: float, forwarded: float, finished: float) -> None:
    """Add the seconds of "preprocess", "forward" and "postprocess" to ``timings`` (when one is given)."""
    if timings is not None:
        for stage, seconds in (("preprocess", prepared - started), ("forward", forwarded - prepared),
                               ("postprocess", finished - forwarded)):
            timings[stage] = timings.get(stage, 0.0) + seconds


def _synchronize(device: str) -> None:
    """Wait for queued GPU work, so that stage timings measure the work and not its queueing."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
