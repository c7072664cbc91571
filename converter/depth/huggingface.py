"""Depth from any transformers ``AutoModelForDepthEstimation`` checkpoint (Hub id or local folder).

The processor and model are loaded once and reused; the device is chosen at load. ``predict`` follows the
transformers depth-estimation pipeline step for step (same processor, same post-processing), so its values equal
the pipeline's ``predicted_depth``.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np

from ..errors import ModelUnavailableError, OptionError
from .depthmap import INVERSE_RELATIVE, METRIC, DepthMap
from .device import resolve_device

log = logging.getLogger(__name__)

_METRIC_MODEL_TYPES = {"zoedepth", "depth_pro"}
PRECISIONS = ("fp32", "bf16", "fp16")


class HuggingFaceDepthModel:
    """A loaded depth model. Thread-safe: one forward at a time per instance (the device is the bottleneck)."""

    def __init__(self, model_id: str, device: str = "auto", precision: str = "fp32"):
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        self.model_id = model_id
        self.device = resolve_device(device)
        self.dtype = _dtype(precision, self.device)  # before loading: a bad choice should not cost a model load
        self._lock = threading.Lock()
        started = time.perf_counter()
        # The PIL processor backend: torchvision has no CPU wheel here, and the pipeline falls back to it too.
        self.processor = _load(AutoImageProcessor, model_id, backend="pil")
        model = _load(AutoModelForDepthEstimation, model_id)
        self.model = model.to(self.device, dtype=self.dtype).eval()
        self.load_seconds = time.perf_counter() - started
        config = model.config
        metric = getattr(config, "depth_estimation_type", None) == "metric" or config.model_type in _METRIC_MODEL_TYPES
        self.kind = METRIC if metric else INVERSE_RELATIVE
        self.parameters = sum(p.numel() for p in model.parameters())
        log.info("loaded %s on %s in %.1f s (%s)", model_id, self.device, self.load_seconds, self.kind)

    def predict(self, image, timings: dict | None = None) -> DepthMap:
        """PIL RGB image → DepthMap at the image's size (bicubic, as the pipeline resizes) and at native size.

        ``timings``: if given, seconds of "preprocess", "forward" and "postprocess" are added to it."""
        import torch

        clock = time.perf_counter
        target_size = (image.height, image.width)
        started = clock()
        inputs = self.processor(images=image, return_tensors="pt")
        inputs = {name: tensor.to(self.device, dtype=self.dtype) for name, tensor in inputs.items()}
        with self._lock, torch.inference_mode():
            prepared = clock()
            outputs = self.model(**inputs)
            native = outputs.predicted_depth[0].float()
            if self.device != "cpu":
                torch.cuda.synchronize() if self.device.startswith("cuda") else None
            forwarded = clock()
            outputs.predicted_depth = outputs.predicted_depth.float()
            resized = self.processor.post_process_depth_estimation(outputs, target_sizes=[target_size])
            values = resized[0]["predicted_depth"]
            values = values.cpu().numpy().astype(np.float32, copy=False)
            native = native.cpu().numpy()
        if timings is not None:
            for stage, seconds in (("preprocess", prepared - started), ("forward", forwarded - prepared),
                                   ("postprocess", clock() - forwarded)):
                timings[stage] = timings.get(stage, 0.0) + seconds
        return DepthMap(values=values, native=native, kind=self.kind, source=self.model_id)


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
    except ValueError as error:
        if "Unrecognized" in str(error) or "does not appear" in str(error):
            raise ModelUnavailableError(model_id, "it is not a depth-estimation model.") from None
        raise ModelUnavailableError(model_id, "its files could not be read.") from None
    except OSError as error:
        raise ModelUnavailableError(model_id, _explain_os_error(error, local_folder)) from None
    except Exception:  # a damaged checkpoint raises all sorts of things; none of them helps a user
        log.exception("loading %s failed", model_id)
        raise ModelUnavailableError(model_id, "its files are damaged or incomplete.") from None


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
