"""Depth from any transformers ``AutoModelForDepthEstimation`` checkpoint (Hub id or local folder).

The processor and model are loaded once and reused; the device is chosen at load. On the CPU ``predict`` follows
the transformers depth-estimation pipeline step for step (same PIL processor, same post-processing), so its values
equal the pipeline's ``predicted_depth``. On CUDA the input is prepared by torch ops on the GPU
(:mod:`.tensor_preprocess`, within one uint8 level of the PIL processor) and ``predict_on_device`` keeps the result
there for :func:`converter.geometry.grid_cloud`; concurrent requests can share forwards (:mod:`.batching`).
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
from .backend import MODEL_OUTPUTS, DepthBackend
from .depthmap import INVERSE_RELATIVE, METRIC
from .device import resolve_device
from .tensor_preprocess import build_tensor_preprocess

log = logging.getLogger(__name__)

_METRIC_MODEL_TYPES = {"zoedepth", "depth_pro"}
PRECISIONS = ("fp32", "bf16", "fp16")


class HuggingFaceDepthModel(DepthBackend):
    """A loaded depth model run by torch. Thread-safe: one forward at a time per instance (the device is the
    bottleneck)."""

    engine = "torch"

    def __init__(self, model_id: str, device: str = "auto", precision: str = "fp32", *,
                 tensor_preprocess: bool | None = None):
        """``tensor_preprocess``: prepare the input with torch on the device (see :meth:`prepare`); None = on CUDA
        only (the CPU keeps the PIL processor, whose values the transformers pipeline gives)."""
        from transformers import AutoImageProcessor

        self.model_id = model_id
        self.device = resolve_device(device)
        self.precision = precision
        self.dtype = _dtype(precision, self.device)  # before loading: a bad choice should not cost a model load
        self._lock = threading.Lock()
        started = time.perf_counter()
        # Depth Pro hook: the model (or, for the OpenVINO engine, its config) is loaded before the processor, since
        # the processor depends on it. Depth Pro's processor needs torchvision; depth_pro.DepthProProcessor does the
        # same steps in torch, and its field of view becomes the camera (depth_pro.postprocess in postprocess).
        config = self._load_network()
        self.camera_head = depth_pro.is_depth_pro(config)
        if self.camera_head:
            self.processor = _load(depth_pro.DepthProProcessor, model_id)
        else:  # the PIL processor backend: torchvision has no CPU wheel here, and the pipeline falls back to it too
            self.processor = _load(AutoImageProcessor, model_id, backend="pil")
        metric = getattr(config, "depth_estimation_type", None) == "metric" or config.model_type in _METRIC_MODEL_TYPES
        self.kind = METRIC if metric else INVERSE_RELATIVE
        if tensor_preprocess is None:
            tensor_preprocess = self.device.startswith("cuda")
        # None where the processor is not one we reproduce: those models keep the PIL processor on every device.
        # ZoeDepth hook: its post-processing removes the padding with torchvision; zoedepth.postprocess in torch.
        self.padded = zoedepth.is_padded_zoedepth(config, self.processor)
        preprocess = self.processor.tensor if self.camera_head else build_tensor_preprocess(self.processor)
        self.tensor_preprocess = preprocess if tensor_preprocess else None
        self._after_load()
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s on %s in %.1f s (%s, %s %s)", model_id, self.device, self.load_seconds, self.kind,
                 self.engine, self.precision)

    def _load_network(self):
        """Load the torch module (``model``, ``parameters``); returns its config."""
        from transformers import AutoModelForDepthEstimation

        model = _load(AutoModelForDepthEstimation, self.model_id)
        self.model = model.to(self.device, dtype=self._weights_dtype()).eval()
        self.parameters = sum(p.numel() for p in model.parameters())
        return model.config

    def _weights_dtype(self):
        """The dtype the torch module's weights are cast to (engines that convert the module keep float32)."""
        return self.dtype

    def _after_load(self) -> None:
        """Hook for engines built on the loaded torch module (conversion happens here)."""

    def prepare(self, image):
        """Image (PIL RGB, [H, W, 3] uint8 array or tensor) → pixel_values [1, 3, h, w] on the device: torch ops
        on the device when the processor allows it, else the PIL processor on the CPU."""
        if self.tensor_preprocess is not None:
            pixel_values = self.tensor_preprocess(_rgb_tensor(image).to(self.device, non_blocking=True))
        else:
            if not hasattr(image, "mode"):  # an array or tensor: the PIL processor wants a picture
                from PIL import Image

                image = Image.fromarray(_rgb_tensor(image).cpu().numpy(), "RGB")
            elif image.mode != "RGB":
                image = image.convert("RGB")
            pixel_values = self.processor(images=image, return_tensors="pt")["pixel_values"]
        return pixel_values.to(self.device, dtype=self.dtype)

    def forward(self, pixel_values) -> dict:
        """The network alone: pixel_values [B, 3, h, w] → {name: float32 tensor [B, ...]} for each of
        MODEL_OUTPUTS the model returns."""
        import torch

        with self._lock, torch.inference_mode():
            outputs = self.model(pixel_values=pixel_values)
            return {name: getattr(outputs, name).float() for name in MODEL_OUTPUTS
                    if getattr(outputs, name, None) is not None}

    def postprocess(self, outputs: dict, size: tuple[int, int]):
        """The processor's own post-processing (bicubic resize to ``size``, as the pipeline does), on the device;
        Depth Pro's metric depth and focal length from its field of view, ZoeDepth's padding removed, in torch."""
        import torch

        with torch.inference_mode():
            native = outputs["predicted_depth"][0].float()
            if self.camera_head:  # Depth Pro hook: metric depth and focal length from its field of view
                fov = outputs.get("field_of_view")
                return depth_pro.postprocess(native, None if fov is None else fov.reshape(-1)[0], size)
            if self.padded:  # ZoeDepth hook: the padding removed without torchvision
                return (*zoedepth.postprocess(native, size), None)
            resized = self.processor.post_process_depth_estimation(SimpleNamespace(**outputs), target_sizes=[size])
            return native, resized[0]["predicted_depth"].float(), None


def _rgb_tensor(image):
    """[H, W, 3] uint8 CPU tensor of a PIL image, array or tensor (a tensor stays where it is)."""
    import torch

    if isinstance(image, torch.Tensor):
        return image
    if hasattr(image, "mode") and image.mode != "RGB":
        image = image.convert("RGB")
    return torch.from_numpy(np.array(image, dtype=np.uint8, order="C"))  # a writable copy: torch wants one


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


def _load_folder(model_id: str):
    """The folder holding ``model_id``'s files: the local folder itself, or the Hub model's snapshot in the
    local cache (None when there is none)."""
    from pathlib import Path

    local = Path(model_id).expanduser()
    if local.is_dir():
        return local
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached, no such repo, no huggingface_hub: the caller copes
        return None


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
