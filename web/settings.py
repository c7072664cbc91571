"""The service's settings, read from the environment in one place: by the web app (``app.create_app``) and by the
Celery worker (web/jobs/celery/worker.py) alike, so both run with the same defaults. Plus the one factory that turns
them into a ``Converter``.
"""

from __future__ import annotations

import os

from converter import Converter, VideoLimits
from converter.service_api import DEFAULT_MAX_PIXELS, engine_from_environment, model_from_environment

from .jobs.depth_cache import DEFAULT_ENTRIES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_RATE_LIMIT = "20 per minute;200 per hour"
GPU_CONVERSION_WORKERS, GPU_BATCH_SIZE = 8, 8  # the defaults on CUDA (CONVERSION_WORKERS, BATCH_SIZE = 0)


def from_env(environ=os.environ) -> dict:
    """Every setting, from ``environ`` with its default (Flask config keys)."""

    def number(name: str, default, kind=int):
        return kind(environ.get(name) or default)

    return {
        "DEPTH_MODEL": model_from_environment(environ),
        "DEVICE": environ.get("DEVICE", "auto"),
        "PRECISION": environ.get("PRECISION", "fp32"),
        "ENGINE": engine_from_environment(environ),  # what runs the model: auto (OpenVINO on a CPU), torch, openvino
        "MODELS": [m.strip() for m in environ.get("MODELS", "").split(",") if m.strip()] or None,
        "OUTPUT_FOLDER": environ.get("OUTPUT_FOLDER", os.path.join(ROOT, "outputs")),
        "UPLOAD_FOLDER": environ.get("UPLOAD_FOLDER", os.path.join(ROOT, "uploads")),
        "MAX_UPLOAD_MB": number("MAX_UPLOAD_MB", 25),
        "MAX_PIXELS": number("MAX_PIXELS", DEFAULT_MAX_PIXELS),
        "CONVERSION_WORKERS": number("CONVERSION_WORKERS", 0),  # 0: 1 on a CPU, 8 on CUDA
        # Forwards shared by concurrent conversions (of one process); 0: 1 on a CPU, 8 on CUDA.
        "BATCH_SIZE": number("BATCH_SIZE", 0),
        "BATCH_WAIT_MS": number("BATCH_WAIT_MS", 5, float),  # how long a forward waits for company
        "MAX_QUEUED_JOBS": number("MAX_QUEUED_JOBS", 8),
        "PRELOAD_MODEL": environ.get("PRELOAD_MODEL", "1") != "0",
        "JOB_TIMEOUT_SECONDS": number("JOB_TIMEOUT_SECONDS", 300, float),
        "EXPORT_TIMEOUT_SECONDS": number("EXPORT_TIMEOUT_SECONDS", 120, float),  # one later download (web.jobs.exports)
        "RESULT_TTL_SECONDS": number("RESULT_TTL_SECONDS", 24 * 3600, float),
        "SWEEP_INTERVAL_SECONDS": number("SWEEP_INTERVAL_SECONDS", 600, float),
        "TORCH_THREADS": number("TORCH_THREADS", 0),
        "DEPTH_CACHE_ENTRIES": number("DEPTH_CACHE_ENTRIES", DEFAULT_ENTRIES),
        # "embedded": conversions run in this process's threads; "celery": in Celery workers fed through Redis
        # (web/jobs/celery/worker.py), with OUTPUT_FOLDER on a volume every machine shares (web/jobs/backend.py).
        "JOB_BACKEND": environ.get("JOB_BACKEND", "embedded"),
        # Whether this process runs its back-end's watch, which settles jobs nobody is on (0: tests drive it).
        "JOB_WATCH": environ.get("JOB_WATCH", "1") != "0",
        "REDIS_URL": environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        # A Celery worker's own Prometheus exporter (web.metrics); 0: none.
        "WORKER_METRICS_PORT": number("WORKER_METRICS_PORT", 0),
        "MAX_BATCH_IMAGES": number("MAX_BATCH_IMAGES", 20),
        "MAX_BATCH_UNPACKED_MB": number("MAX_BATCH_UNPACKED_MB", 200),
        # Memory the conversions running at once may take together, by their estimates (web.memory_budget);
        # 0: what the machine has free at start, less the resident model.
        "JOB_MEMORY_MB": number("JOB_MEMORY_MB", 0, float),
        # Reverse proxies whose X-Forwarded-For is believed (addresses or networks, comma-separated; web.intake.client):
        # who a client is, for rate limits and the queue's fair share. Empty: the connecting address is the client.
        "TRUSTED_PROXIES": environ.get("TRUSTED_PROXIES", ""),
        # Requests that create something (conversions, rebuilds, batches, comparisons) one client may make, together
        # (web.intake.rate_limits): Flask-Limiter's notation, limits separated by ";". A person converting by hand
        # makes a few a minute (each conversion takes seconds to watch; a rebuild is a click); a script in a loop
        # makes hundreds. Empty: no limit.
        "RATE_LIMIT": environ.get("RATE_LIMIT", DEFAULT_RATE_LIMIT),
        # Videos (web.jobs.video): the limits of converter.video.VideoLimits, read from the same variables.
        "MAX_VIDEO_MB": number("MAX_VIDEO_MB", 200, float),
        "MAX_VIDEO_SECONDS": number("MAX_VIDEO_SECONDS", 600, float),
        "MAX_VIDEO_FRAMES": number("MAX_VIDEO_FRAMES", 18_000),
        "MAX_VIDEO_PIXELS": number("MAX_VIDEO_PIXELS", 3840 * 2160),
        "VIDEO_TIMEOUT_SECONDS": number("VIDEO_TIMEOUT_SECONDS", 3600, float),
        # A clip longer than this many frames is predicted in chunks, on several workers at once (Celery), each
        # predicting this many frames before its own to be joined to the one before (converter.video.chunks).
        "VIDEO_CHUNK_FRAMES": number("VIDEO_CHUNK_FRAMES", 48),
        "VIDEO_CHUNK_OVERLAP": number("VIDEO_CHUNK_OVERLAP", 4),
        # Chunks predicted at once by the embedded back-end (0: its CONVERSION_WORKERS); 1: the clip streams
        # through one pass, which a CPU running one forward at a time does best. Celery: anything but 1 (0 included)
        # sends a long clip's chunks to every worker as tasks (web.jobs.celery.chunks); 1 streams it on one worker.
        "VIDEO_CHUNK_WORKERS": number("VIDEO_CHUNK_WORKERS", 0),
    }


def video_limits(settings: dict):
    """The settings' converter.video.VideoLimits."""
    return VideoLimits(max_bytes=int(settings["MAX_VIDEO_MB"] * (1 << 20)), max_seconds=settings["MAX_VIDEO_SECONDS"],
                       max_frames=settings["MAX_VIDEO_FRAMES"], max_pixels=settings["MAX_VIDEO_PIXELS"],
                       deadline_seconds=settings["VIDEO_TIMEOUT_SECONDS"])


def uses_cuda(device: str) -> bool:
    """Whether conversions will run on CUDA (``auto`` asks torch: call it only where the model runs)."""
    device = (device or "auto").strip().lower()
    if device == "auto":
        import torch

        return torch.cuda.is_available()
    return device.startswith("cuda")


def conversion_workers(settings: dict, gpu: bool) -> int:
    """Conversions run at once by one process: several on a GPU (their forwards batched), one on a CPU."""
    return settings["CONVERSION_WORKERS"] or (GPU_CONVERSION_WORKERS if gpu else 1)


def make_converter(settings: dict, gpu: bool = False) -> Converter:
    """The one way the service builds a Converter: the settings' model, device, engine, precision, pixel cap and
    micro-batching (another model or an alignment: :func:`converter_like`)."""
    return Converter(model=settings["DEPTH_MODEL"], device=settings["DEVICE"],
                     precision=settings["PRECISION"], engine=settings.get("ENGINE") or "auto",
                     max_pixels=settings["MAX_PIXELS"],
                     batch_size=settings["BATCH_SIZE"] or (GPU_BATCH_SIZE if gpu else 1),
                     batch_wait_ms=settings["BATCH_WAIT_MS"])


def converter_like(base: Converter, model: str | None = None, align_to: str | None = None) -> Converter:
    """``base``'s device, engine, precision, pixel cap and micro-batching for another model (or alignment)."""
    if (not model or model == base.model) and not align_to:
        return base
    return Converter(model=model or base.model, device=base.device, precision=base.precision, engine=base.engine,
                     max_pixels=base.max_pixels, align_to=align_to or None, batch_size=base.batch_size,
                     batch_wait_ms=base.batch_wait_ms)
