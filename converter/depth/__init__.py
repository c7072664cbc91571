"""Depth sources: transformers models behind an engine (loaded once per process) and user-supplied depth files."""

from __future__ import annotations

import threading

from ..errors import OptionError
from .backend import ENGINE_CHOICES, DepthBackend, check_engine, load_backend, resolve_engine
from .depthmap import INVERSE_RELATIVE, KINDS, METRIC, DepthMap
from .device import DEVICE_CHOICES, resolve_device
from .files import DEPTH_KINDS, fit_depth_to_image, load_depth_file
from .models import DEFAULT_MODEL, KNOWN_MODELS, resolve_model_name

_loaded: dict[tuple, object] = {}
_loading = threading.Lock()


def get_depth_model(model: str | None = None, device: str = "auto", precision: str = "fp32", *,
                    engine: str | None = None, tensor_preprocess: bool | None = None, batch_size: int = 1,
                    batch_wait_ms: float = 0.0) -> DepthBackend:
    """The process-wide back-end for ``model`` on ``device``: loaded on first use (by :func:`load_backend`), then
    reused. Instances differ by every setting that changes behaviour (engine, precision, preprocessing on the
    device, micro-batching)."""
    model_id = resolve_model_name(model)
    device = resolve_device(device)
    key = _key(model_id, device, precision, engine, tensor_preprocess, batch_size, batch_wait_ms)
    with _loading:
        if key not in _loaded:
            _loaded[key] = load_backend(model_id, device, precision, engine, tensor_preprocess=tensor_preprocess,
                                        batch_size=batch_size, batch_wait_ms=batch_wait_ms)
        return _loaded[key]


def _key(model_id: str, device: str, precision: str, engine: str, tensor_preprocess, batch_size: int,
         batch_wait_ms: float) -> tuple:
    if tensor_preprocess is None:  # "auto" is decided by the device: the same instance as saying it outright
        tensor_preprocess = device.startswith("cuda")
    batching = (int(batch_size), float(batch_wait_ms)) if batch_size > 1 else (1, 0.0)
    return (model_id, device, precision, resolve_engine(engine, device), bool(tensor_preprocess), *batching)


def set_torch_threads(threads: int) -> None:
    """Set torch's intra-op threads once per process, before the first forward (N processes × T threads ≤ cores)."""
    import torch

    if threads > 0 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def is_model_loaded(model: str | None = None, device: str = "auto", precision: str = "fp32", *,
                    engine: str | None = None, tensor_preprocess: bool | None = None, batch_size: int = 1,
                    batch_wait_ms: float = 0.0) -> bool:
    if not _loaded:  # nothing loaded yet: answered without importing torch (resolve_device does)
        return False
    try:
        device = resolve_device(device)
        key = _key(resolve_model_name(model), device, precision, engine, tensor_preprocess, batch_size,
                   batch_wait_ms)
    except OptionError:  # a device this machine lacks: nothing can be loaded on it
        return False
    return key in _loaded


__all__ = [
    "DEFAULT_MODEL", "DEPTH_KINDS", "DEVICE_CHOICES", "ENGINE_CHOICES", "INVERSE_RELATIVE", "KINDS", "KNOWN_MODELS",
    "METRIC", "DepthBackend", "DepthMap", "check_engine", "fit_depth_to_image", "get_depth_model", "is_model_loaded",
    "load_depth_file", "resolve_device", "resolve_model_name", "set_torch_threads",
]
