"""Image-to-3D web app: upload an image, follow the conversion, view and download the 3D result.

``create_app`` only configures and wires: the routes live in blueprints (web.pages, web.api, web.comparisons), the
resources and their threads in web.service, errors in web.errors; the converter package does the work. Nothing here
imports torch or open3d.
"""

from __future__ import annotations

import logging
import os

from flask import Flask

from converter import DEFAULT_MAX_PIXELS, DEFAULT_MODEL, KNOWN_MODELS
from web import api, batches, comparisons, errors, pages, service
from web.depth_cache import DEFAULT_ENTRIES

ROOT = os.path.dirname(os.path.abspath(__file__))


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def create_app(test_config: dict | None = None) -> Flask:
    """Configure and wire the app. ``test_config`` overrides the defaults read from the environment."""
    app = Flask(__name__)
    app.config.from_mapping(
        DEPTH_MODEL=os.environ.get("DEPTH_MODEL") or DEFAULT_MODEL,
        DEVICE=os.environ.get("DEVICE", "auto"),
        PRECISION=os.environ.get("PRECISION", "fp32"),
        ENGINE=os.environ.get("ENGINE", "auto"),  # what runs the model: auto (OpenVINO on a CPU), torch, openvino
        MODELS=[m for m in os.environ.get("MODELS", "").split(",") if m.strip()] or None,
        UPLOAD_FOLDER=os.environ.get("UPLOAD_FOLDER", os.path.join(ROOT, "uploads")),
        OUTPUT_FOLDER=os.environ.get("OUTPUT_FOLDER", os.path.join(ROOT, "outputs")),
        MAX_UPLOAD_MB=_env_int("MAX_UPLOAD_MB", 25),
        MAX_PIXELS=_env_int("MAX_PIXELS", DEFAULT_MAX_PIXELS),
        CONVERSION_WORKERS=_env_int("CONVERSION_WORKERS", 0),  # 0: 1 on a CPU, 8 on CUDA
        BATCH_SIZE=_env_int("BATCH_SIZE", 0),  # forwards shared by concurrent conversions; 0: 1 on a CPU, 8 on CUDA
        BATCH_WAIT_MS=float(os.environ.get("BATCH_WAIT_MS", 5)),  # how long a forward waits for company
        MAX_QUEUED_JOBS=_env_int("MAX_QUEUED_JOBS", 8),
        PRELOAD_MODEL=os.environ.get("PRELOAD_MODEL", "1") != "0",
        JOB_TIMEOUT_SECONDS=float(os.environ.get("JOB_TIMEOUT_SECONDS", 300)),
        RESULT_TTL_SECONDS=float(os.environ.get("RESULT_TTL_SECONDS", 24 * 3600)),
        SWEEP_INTERVAL_SECONDS=float(os.environ.get("SWEEP_INTERVAL_SECONDS", 600)),
        TORCH_THREADS=_env_int("TORCH_THREADS", 0),
        DEPTH_CACHE_ENTRIES=_env_int("DEPTH_CACHE_ENTRIES", DEFAULT_ENTRIES),
        # "embedded": conversions run in this process's threads; "celery": in Celery workers fed through Redis
        # (web/celery_jobs.py), with OUTPUT_FOLDER on a volume every machine shares.
        JOB_BACKEND=os.environ.get("JOB_BACKEND", "embedded"),
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        MAX_BATCH_IMAGES=_env_int("MAX_BATCH_IMAGES", 20),
        MAX_BATCH_UNPACKED_MB=_env_int("MAX_BATCH_UNPACKED_MB", 200),
        MAX_FORM_PARTS=50,  # a batch's images plus the option fields
        # Werkzeug checks this against its multipart read buffer too (file data arrives in 64 kB chunks), so it
        # must stay well above the chunk size: Flask's default. Text fields are a few bytes each.
        MAX_FORM_MEMORY_SIZE=500_000,
        MAX_FIELD_KB=64,  # the real cap on a text field, checked by web.errors (a 413 naming the field)
    )
    if test_config:
        app.config.update(test_config)
    config = app.config
    config["MAX_CONTENT_LENGTH"] = config["MAX_UPLOAD_MB"] * 1024 * 1024
    config["MODELS"] = config["MODELS"] or [config["DEPTH_MODEL"]] + [
        hub_id for hub_id in KNOWN_MODELS if hub_id != config["DEPTH_MODEL"]]
    os.makedirs(config["UPLOAD_FOLDER"], exist_ok=True)
    os.makedirs(config["OUTPUT_FOLDER"], exist_ok=True)
    logging.basicConfig(level=logging.INFO)

    errors.init_app(app)
    for blueprint in (pages.bp, api.bp, comparisons.bp, batches.bp):
        app.register_blueprint(blueprint)
    service.init_app(app)
    return app
