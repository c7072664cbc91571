"""Depth from any transformers ``AutoModelForDepthEstimation`` checkpoint (Hub id or local folder).

The processor and model are loaded once and reused; the device is chosen at load. On the CPU ``predict`` follows
the transformers depth-estimation pipeline step for step (same PIL processor, same post-processing), so its values
equal the pipeline's ``predicted_depth``. On CUDA the input is prepared by torch ops on the GPU
(:mod:`.tensor_preprocess`, within one uint8 level of the PIL processor) and ``predict_on_device`` keeps the result
there for :mod:`converter.device_geometry`; concurrent requests can share forwards (:mod:`.batching`).
Depth Pro goes through the same class: its processor and post-processing come from :mod:`.depth_pro` (marked
"Depth Pro hook" below), and its field of view becomes ``DepthMap.focal_px`` on every path.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from types import SimpleNamespace

import numpy as np

from ..errors import ModelUnavailableError, OptionError
from . import depth_pro, zoedepth
from .batching import MicroBatcher
from .depthmap import INVERSE_RELATIVE, METRIC, DepthMap
from .device import resolve_device
from .tensor_preprocess import build_tensor_preprocess

log = logging.getLogger(__name__)

_METRIC_MODEL_TYPES = {"zoedepth", "depth_pro"}
PRECISIONS = ("fp32", "bf16", "fp16")


class HuggingFaceDepthModel:
    """A loaded depth model. Thread-safe: one forward at a time per instance (the device is the bottleneck)."""

    def __init__(self, model_id: str, device: str = "auto", precision: str = "fp32", *,
                 tensor_preprocess: bool | None = None, batch_size: int = 1, batch_wait_ms: float = 0.0):
        """``tensor_preprocess``: prepare the input with torch on the device (see :meth:`predict_on_device`);
        None = on CUDA only (the CPU keeps the PIL processor, whose values the transformers pipeline gives).
        ``batch_size`` > 1: concurrent ``predict`` calls share forwards through a :class:`MicroBatcher` that waits
        at most ``batch_wait_ms`` for company."""
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.model_id = model_id
        self.device = resolve_device(device)
        self.dtype = _dtype(precision, self.device)  # before loading: a bad choice should not cost a model load
        self._lock = threading.Lock()
        started = time.perf_counter()
        model = _load(AutoModelForDepthEstimation, model_id)
        # Depth Pro hook: its processor needs torchvision; depth_pro.DepthProProcessor does the same steps in torch,
        # and its field of view becomes the camera (depth_pro.postprocess).
        self.camera_head = depth_pro.is_depth_pro(model.config)
        if self.camera_head:
            self.processor = _load(depth_pro.DepthProProcessor, model_id)
        else:  # the PIL processor backend: torchvision has no CPU wheel here, and the pipeline falls back to it too
            self.processor = _load(AutoImageProcessor, model_id, backend="pil")
        self.model = model.to(self.device, dtype=self.dtype).eval()
        self.load_seconds = time.perf_counter() - started
        config = model.config
        metric = getattr(config, "depth_estimation_type", None) == "metric" or config.model_type in _METRIC_MODEL_TYPES
        self.kind = METRIC if metric else INVERSE_RELATIVE
        self.parameters = sum(p.numel() for p in model.parameters())
        if tensor_preprocess is None:
            tensor_preprocess = self.device.startswith("cuda")
        # None where the processor is not one we reproduce: those models keep the PIL processor on every device.
        # ZoeDepth hook: its post-processing removes the padding with torchvision; zoedepth.postprocess in torch.
        self.padded = zoedepth.is_padded_zoedepth(config, self.processor)
        preprocess = self.processor.tensor if self.camera_head else build_tensor_preprocess(self.processor)
        self.tensor_preprocess = preprocess if tensor_preprocess else None
        self.batcher = MicroBatcher(self.model, batch_size, batch_wait_ms) if batch_size > 1 else None
        log.info("loaded %s on %s in %.1f s (%s)", model_id, self.device, self.load_seconds, self.kind)

    def predict(self, image, timings: dict | None = None) -> DepthMap:
        """PIL RGB image → DepthMap at the image's size (bicubic, as the pipeline resizes) and at native size.

        ``timings``: if given, seconds of "preprocess", "forward" and "postprocess" are added to it."""
        import torch

        if self.tensor_preprocess is not None or self.batcher is not None:
            camera: dict = {}
            native, values = self.predict_on_device(image, timings, camera=camera)
            return DepthMap(values=values.cpu().numpy(), native=native.cpu().numpy(), kind=self.kind,
                            source=self.model_id, focal_px=camera.get("focal_px"))

        clock = time.perf_counter
        target_size = (image.height, image.width)
        started = clock()
        inputs = self.processor(images=image, return_tensors="pt")
        inputs = {name: tensor.to(self.device, dtype=self.dtype) for name, tensor in inputs.items()}
        with self._lock, torch.inference_mode():
            prepared = clock()
            outputs = self.model(**inputs)
            native = outputs.predicted_depth[0].float()
            _synchronize(self.device)
            forwarded = clock()
            focal_px = None
            if self.camera_head:  # Depth Pro hook: metric depth and focal length from its field of view
                fov = outputs.field_of_view
                native, values, focal_px = depth_pro.postprocess(native, None if fov is None else fov[0], target_size)
            elif self.padded:  # ZoeDepth hook: the padding removed without torchvision
                native, values = zoedepth.postprocess(native, target_size)
            else:
                outputs.predicted_depth = outputs.predicted_depth.float()
                resized = self.processor.post_process_depth_estimation(outputs, target_sizes=[target_size])
                values = resized[0]["predicted_depth"]
            values = values.cpu().numpy().astype(np.float32, copy=False)
            native = native.cpu().numpy()
        _add_timings(timings, started, prepared, forwarded, clock())
        return DepthMap(values=values, native=native, kind=self.kind, source=self.model_id, focal_px=focal_px)

    def predict_on_device(self, image, timings: dict | None = None, camera: dict | None = None):
        """Image (PIL RGB, [H, W, 3] uint8 array or tensor) → (native [h, w], values [H, W]) float32 tensors on the
        model's device, for ``converter.device_geometry.point_cloud_on_device`` without a round trip.
        ``camera``: if given, its "focal_px" is set to the model's focal length in pixels at W (None: it has none).

        Preprocessing runs as torch ops on the device when the processor allows it (else the PIL processor on
        the CPU); the forward goes through the micro-batcher when there is one; values are the native map resized
        by the processor's own post-processing (bicubic), on the device."""
        import torch

        clock = time.perf_counter
        started = clock()
        rgb = _rgb_tensor(image)
        height, width = int(rgb.shape[0]), int(rgb.shape[1])
        if self.tensor_preprocess is not None:
            pixel_values = self.tensor_preprocess(rgb.to(self.device, non_blocking=True))
        else:
            from PIL import Image

            picture = Image.fromarray(rgb.cpu().numpy(), "RGB")
            pixel_values = self.processor(images=picture, return_tensors="pt")["pixel_values"]
        pixel_values = pixel_values.to(self.device, dtype=self.dtype)
        if timings is not None:
            _synchronize(self.device)
        prepared = clock()
        if self.batcher is not None:
            native, fov = self.batcher.predict_with_field_of_view(pixel_values)
        else:
            with self._lock, torch.inference_mode():
                outputs = self.model(pixel_values=pixel_values)
                native, fov = outputs.predicted_depth[0], getattr(outputs, "field_of_view", None)
                fov = None if fov is None else fov[0]
        focal_px = None
        with torch.inference_mode():
            native = native.float()
            if timings is not None:
                _synchronize(self.device)
            forwarded = clock()
            if self.camera_head:  # Depth Pro hook: metric depth and focal length from its field of view
                native, values, focal_px = depth_pro.postprocess(native, fov, (height, width))
            elif self.padded:  # ZoeDepth hook: the padding removed without torchvision
                native, values = zoedepth.postprocess(native, (height, width))
            else:
                outputs = SimpleNamespace(predicted_depth=native[None])
                values = self.processor.post_process_depth_estimation(outputs, target_sizes=[(height, width)])
                values = values[0]["predicted_depth"].float()
            if timings is not None:
                _synchronize(self.device)
        _add_timings(timings, started, prepared, forwarded, clock())
        if camera is not None:
            camera["focal_px"] = focal_px
        return native, values

    def close(self) -> None:
        """Stop the micro-batcher's worker, if any (the model itself needs no closing)."""
        if self.batcher is not None:
            self.batcher.close()


def _rgb_tensor(image):
    """[H, W, 3] uint8 CPU tensor of a PIL image, array or tensor (a tensor stays where it is)."""
    import torch

    if isinstance(image, torch.Tensor):
        return image
    if hasattr(image, "mode") and image.mode != "RGB":
        image = image.convert("RGB")
    return torch.from_numpy(np.array(image, dtype=np.uint8, order="C"))  # a writable copy: torch wants one


def _add_timings(timings: dict | None, started: float, prepared: float, forwarded: float, finished: float) -> None:
    """Add the seconds of "preprocess", "forward" and "postprocess" to ``timings`` (when one is given)."""
    if timings is not None:
        for stage, seconds in (("preprocess", prepared - started), ("forward", forwarded - prepared),
                               ("postprocess", finished - forwarded)):
            timings[stage] = timings.get(stage, 0.0) + seconds


def _synchronize(device: str) -> None:
    """Wait for queued GPU work, so that stage timings measure the work and not its queueing."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def _dtype(precision: str, device: str):
    import torch

    if precision not in PRECISIONS:
        raise OptionError(f"Unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}.")
    if precision == "fp16" and device == "cpu":
        raise OptionError("fp16 precision needs a GPU; on the CPU use fp32 or bf16.")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _load(auto_class, model_id: str, **kwargs):
    """from_pretrained, trying the local cache first so a cached model starts fast and offline."""
    local_folder = os.path.isdir(os.path.expanduser(model_id))
    path = os.path.expanduser(model_id) if local_folder else model_id
    looks_like_path = model_id.startswith((".", "/", "~")) or model_id.count("/") > 1  # Hub ids are "org/name"
    if looks_like_path and not local_folder:
        raise ModelUnavailableError(model_id, "there is no folder at that path.")
    try:
        if not local_folder:
            try:
                return auto_class.from_pretrained(path, local_files_only=True, **kwargs)
            except OSError:
                pass  # not cached yet: download it
            if not _hub_offline() and not _hub_reachable():
                # huggingface_hub would retry for minutes before saying the same thing.
                raise ModelUnavailableError(
                    model_id, "it is not in the local cache and the Hugging Face Hub cannot be reached."
                )
        return auto_class.from_pretrained(path, **kwargs)
    except ModelUnavailableError:
        raise
    except ImportError as error:  # e.g. a processor class that needs torchvision: say what is really missing
        package = _missing_package(error)
        raise ModelUnavailableError(
            model_id, f"it needs the Python package '{package}', which is not installed here." if package else
            "it needs a Python package that is not installed here.",
            fix=f"To fix it, install it (pip install {package or '<package>'}) or choose another model.") from None
    except ValueError as error:
        if "Unrecognized" in str(error) or "does not appear" in str(error):
            raise ModelUnavailableError(model_id, "it is not a depth-estimation model.") from None
        raise ModelUnavailableError(model_id, "its files could not be read.") from None
    except OSError as error:
        raise ModelUnavailableError(model_id, _explain_os_error(error, local_folder)) from None
    except Exception:  # a damaged checkpoint raises all sorts of things; none of them helps a user
        log.exception("loading %s failed", model_id)
        raise ModelUnavailableError(model_id, "its files are damaged or incomplete.") from None


def _missing_package(error: ImportError) -> str:
    """The missing package's name in transformers' or Python's ImportError ("" if it does not say)."""
    import re

    text = str(error)
    match = re.search(r"requires the (\w[\w.-]*) library", text) or re.search(r"No module named '([\w.-]+)'", text)
    name = getattr(error, "name", None) or (match.group(1) if match else "")
    return name.split(".")[0].lower()


def _explain_os_error(error: OSError, local_folder: bool) -> str:
    text = str(error)
    if local_folder:
        return "the folder does not hold a complete model (config, weights and preprocessor config)."
    if "is not a valid model identifier" in text or "Repository Not Found" in text or "404" in text:
        return "there is no such model on the Hugging Face Hub."
    if "connect" in text.lower() or "offline" in text.lower() or "cached" in text.lower() or _hub_offline():
        return "it is not in the local cache and the Hugging Face Hub cannot be reached."
    return "its files could not be found or read."


def _hub_reachable(timeout_seconds: float = 5.0) -> bool:
    """Can we open a TCP connection to the Hub (HF_ENDPOINT, default huggingface.co) within a few seconds?"""
    import socket
    from urllib.parse import urlsplit

    try:
        from huggingface_hub import constants

        endpoint = urlsplit(constants.ENDPOINT)
    except (ImportError, AttributeError, ValueError):
        endpoint = urlsplit("https://huggingface.co")
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout_seconds):
            return True
    except OSError:
        return False


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE is set: transformers' error then often only says the files were not found."""
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except (ImportError, AttributeError):
        return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
