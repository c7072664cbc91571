"""Image-to-3D web app: upload an image, follow the conversion, view and download the 3D result.

Routes only: configuration and wiring happen in create_app(); conversions run in web.jobs; the converter package
does the work. Nothing here imports torch or open3d.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path

from flask import Flask, abort, jsonify, redirect, render_template, request, send_file, url_for
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from converter import DEFAULT_MODEL, KNOWN_MODELS, Converter
from converter.errors import (
    ConversionError,
    DamagedImageError,
    ImageTooLargeError,
    ModelUnavailableError,
    OptionError,
    OutputError,
    UnsupportedImageError,
)
from converter.images import DEFAULT_MAX_PIXELS, probe_image
from web.conversion import DEFAULT_STL_WIDTH_MM, run_conversion
from web.depth_cache import DEFAULT_ENTRIES, DepthCache
from web.forms import DETAIL_LEVELS, MODES, parse_options, parse_rebuild_options
from web.jobs import (
    DONE,
    DOWNLOADS,
    FAILED,
    IMAGE_FILE,
    PREDICTION_FILE,
    PREVIEWS,
    JobRunner,
    JobStore,
    QueueFullError,
    Sweeper,
    valid_job_id,
)
from web.model_status import UNAVAILABLE, ModelStatus

ROOT = os.path.dirname(os.path.abspath(__file__))
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
STATUS_FOR_ERROR = {
    UnsupportedImageError: 415,
    DamagedImageError: 422,
    ImageTooLargeError: 422,
    ModelUnavailableError: 503,
    OutputError: 507,
}


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def create_app(test_config: dict | None = None) -> Flask:
    """Configure and wire the app. ``test_config`` overrides the defaults read from the environment."""
    app = Flask(__name__)
    default_model = os.environ.get("DEPTH_MODEL") or DEFAULT_MODEL
    app.config.from_mapping(
        DEPTH_MODEL=default_model,
        DEVICE=os.environ.get("DEVICE", "auto"),
        PRECISION=os.environ.get("PRECISION", "fp32"),
        MODELS=[m for m in os.environ.get("MODELS", "").split(",") if m.strip()] or None,
        UPLOAD_FOLDER=os.environ.get("UPLOAD_FOLDER", os.path.join(ROOT, "uploads")),
        OUTPUT_FOLDER=os.environ.get("OUTPUT_FOLDER", os.path.join(ROOT, "outputs")),
        MAX_UPLOAD_MB=_env_int("MAX_UPLOAD_MB", 25),
        MAX_PIXELS=_env_int("MAX_PIXELS", DEFAULT_MAX_PIXELS),
        CONVERSION_WORKERS=_env_int("CONVERSION_WORKERS", 1),
        MAX_QUEUED_JOBS=_env_int("MAX_QUEUED_JOBS", 8),
        PRELOAD_MODEL=os.environ.get("PRELOAD_MODEL", "1") != "0",
        JOB_TIMEOUT_SECONDS=float(os.environ.get("JOB_TIMEOUT_SECONDS", 300)),
        RESULT_TTL_SECONDS=float(os.environ.get("RESULT_TTL_SECONDS", 24 * 3600)),
        SWEEP_INTERVAL_SECONDS=float(os.environ.get("SWEEP_INTERVAL_SECONDS", 600)),
        TORCH_THREADS=_env_int("TORCH_THREADS", 0),
        DEPTH_CACHE_ENTRIES=_env_int("DEPTH_CACHE_ENTRIES", DEFAULT_ENTRIES),
        MAX_FORM_PARTS=20,
        # Werkzeug checks this against its multipart read buffer too (file data arrives in 64 kB chunks), so it
        # must stay well above the chunk size: Flask's default. Text fields are a few bytes each.
        MAX_FORM_MEMORY_SIZE=500_000,
    )
    if test_config:
        app.config.update(test_config)
    config = app.config
    config["MAX_CONTENT_LENGTH"] = config["MAX_UPLOAD_MB"] * 1024 * 1024
    config["MODELS"] = config["MODELS"] or _model_choices(config["DEPTH_MODEL"])
    os.makedirs(config["UPLOAD_FOLDER"], exist_ok=True)
    os.makedirs(config["OUTPUT_FOLDER"], exist_ok=True)
    logging.basicConfig(level=logging.INFO)

    converter = Converter(model=config["DEPTH_MODEL"], device=config["DEVICE"], precision=config["PRECISION"],
                          max_pixels=config["MAX_PIXELS"])
    status = ModelStatus(converter, threads=config["TORCH_THREADS"] or _threads_per_process())
    if config["PRELOAD_MODEL"]:
        status.start()
    store = JobStore(config["OUTPUT_FOLDER"], ttl_seconds=config["RESULT_TTL_SECONDS"])
    cache = DepthCache(os.path.join(config["OUTPUT_FOLDER"], ".cache"), max_entries=config["DEPTH_CACHE_ENTRIES"],
                       ttl_seconds=config["RESULT_TTL_SECONDS"])
    os.makedirs(cache.folder, exist_ok=True)  # made now, not by the first job: the output folder's layout is fixed
    runner = JobRunner(
        store, config["UPLOAD_FOLDER"],
        lambda job, image, depth, report: run_conversion(converter, store, job, image, depth, report, cache),
        workers=config["CONVERSION_WORKERS"], max_queued=config["MAX_QUEUED_JOBS"],
        timeout_seconds=config["JOB_TIMEOUT_SECONDS"],
    )
    sweeper = Sweeper(store, config["UPLOAD_FOLDER"], config["SWEEP_INTERVAL_SECONDS"], cache=cache).start()
    app.extensions["image_to_3d"] = {"converter": converter, "model_status": status, "store": store,
                                     "runner": runner, "sweeper": sweeper, "depth_cache": cache}
    _register_routes(app, status, store, runner)
    return app


def _threads_per_process() -> int:
    """Share the cores between gunicorn's worker processes (WEB_CONCURRENCY) so they do not oversubscribe them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, _env_int("WEB_CONCURRENCY", 1)))


def _model_choices(default_model: str) -> list[str]:
    choices = [default_model] + [hub_id for hub_id in KNOWN_MODELS if hub_id != default_model]
    return choices


def _register_routes(app: Flask, status: ModelStatus, store: JobStore, runner: JobRunner) -> None:
    config = app.config

    def page_context() -> dict:
        return {
            "model_status": status, "models": config["MODELS"], "known_models": KNOWN_MODELS,
            "max_upload_mb": config["MAX_UPLOAD_MB"], "max_megapixels": config["MAX_PIXELS"] / 1e6,
            "detail_levels": DETAIL_LEVELS, "modes": MODES, "default_stl_width_mm": DEFAULT_STL_WIDTH_MM,
        }

    @app.get("/")
    def index():
        return render_template("index.html", **page_context())

    @app.post("/convert")
    def convert_page():
        job = _submit()
        return redirect(url_for("job_page", job_id=job.id), code=303)

    @app.post("/api/v1/conversions")
    def api_create():
        job = _submit()
        status_url = url_for("api_status", job_id=job.id)
        return jsonify({"id": job.id, "status_url": status_url}), 202, {"Location": status_url}

    def _submit():
        data, depth = _uploads()
        options = parse_options(request.form, config["MODELS"], config["DEPTH_MODEL"])
        probe_image(data, config["MAX_PIXELS"])
        _check_model(options["model"], depth)
        return _queue(data, depth or None, options)

    def _uploads() -> tuple[bytes, bytes]:
        image = request.files.get("image")
        data = image.read() if image else b""
        if not data:
            raise _UserError(400, "no_image", "No image was uploaded. Choose an image file and try again.")
        depth_file = request.files.get("depth")
        return data, (depth_file.read() if depth_file else b"")

    def _check_model(model: str, depth: bytes = b"") -> None:
        if not depth and status.state == UNAVAILABLE and model == status.converter.model:
            raise _UserError(503, "model_unavailable", status.message)

    def _queue(data: bytes, depth: bytes | None, options: dict):
        try:
            return runner.submit(data, depth, options)
        except QueueFullError:
            raise _UserError(503, "busy", "The server is busy with other conversions. Please try again in a "
                                          "minute.", retry_after=30) from None

    @app.post("/jobs/<job_id>/rebuild")
    def rebuild_page(job_id):
        job = _rebuild()
        return redirect(url_for("job_page", job_id=job.id), code=303)

    @app.post("/api/v1/conversions/<job_id>/rebuild")
    def api_rebuild(job_id):
        job = _rebuild()
        status_url = url_for("api_status", job_id=job.id)
        return jsonify({"id": job.id, "status_url": status_url}), 202, {"Location": status_url}

    def _rebuild():
        """A new job converting a finished job's stored image with its stored depth: no model run."""
        source_id = request.view_args["job_id"]
        source = store.get(source_id) if valid_job_id(source_id) else None
        if source is None:
            raise _UserError(404, "not_found", "There is no such conversion to rebuild. Results expire after a "
                                               "while; convert the image again.")
        if source.finished and store.expired(source):
            raise _UserError(410, "expired", "This result has expired and was deleted. Convert the image again.")
        folder = store.folder(source.id)
        if source.status != DONE or IMAGE_FILE not in source.files or not (folder / PREDICTION_FILE).is_file():
            raise _UserError(404, "not_rebuildable", "This conversion has no finished result to rebuild (it failed "
                                                     "or is still running). Convert the image again.")
        options = parse_rebuild_options(request.form, source.options)
        camera = (source.info or {}).get("camera") or {}
        source_of_focal = str(camera.get("source", ""))
        if ("fov_deg" not in options and "focal_px" not in options and camera.get("fx")
                and not source_of_focal.startswith(("user", "default"))):
            options["focal_px"] = float(camera["fx"])  # the image.png has no EXIF: keep its focal length
        options["rebuild_of"] = source.id
        try:
            image = (folder / IMAGE_FILE).read_bytes()
        except OSError:
            raise _UserError(410, "expired", "This result has expired and was deleted. Convert the image "
                                             "again.") from None
        return _queue(image, None, options)

    @app.post("/compare")
    def compare_submit():
        comparison = _compare()
        return redirect(url_for("compare_page", comparison_id=comparison["id"]), code=303)

    @app.post("/api/v1/comparisons")
    def api_compare():
        comparison = _compare()
        body = _comparison_view(comparison)
        return jsonify(body), 202, {"Location": body["url"]}

    @app.get("/api/v1/comparisons/<comparison_id>")
    def api_comparison(comparison_id):
        return jsonify(_comparison_view(_comparison_or_404(comparison_id)))

    @app.get("/compare/<comparison_id>")
    def compare_page(comparison_id):
        comparison = _comparison_or_404(comparison_id)
        sides = []
        for job_id, model in zip(comparison["job_ids"], comparison["models"]):
            job = store.get(job_id)
            view = _job_view(job) if job is not None and not (job.finished and store.expired(job)) else None
            sides.append({"job": job, "view": view, "model": model, "label": _model_label(model)})
        return render_template("compare.html", comparison=comparison, sides=sides, downloads=DOWNLOADS,
                               **page_context())

    def _compare() -> dict:
        """Two jobs, one per model, on the same upload; recorded in OUTPUT_FOLDER/compare-<uuid4>.json."""
        data, _ = _uploads()
        form = request.form.to_dict()
        first = (form.get("model_a") or form.get("model") or config["DEPTH_MODEL"]).strip()
        second = (form.get("model_b") or "").strip()
        if not second:
            raise OptionError("Choose a second model to compare with.")
        chosen = []
        for model in (first, second):
            form["model"] = model
            chosen.append(parse_options(form, config["MODELS"], config["DEPTH_MODEL"]))
        probe_image(data, config["MAX_PIXELS"])
        for options in chosen:
            _check_model(options["model"])
        jobs = [_queue(data, None, options) for options in chosen]
        comparison = {"id": uuid.uuid4().hex, "job_ids": [job.id for job in jobs],
                      "models": [options["model"] for options in chosen], "created": time.time()}
        path = _comparison_path(comparison["id"])
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(comparison))
        os.replace(temporary, path)
        return comparison

    def _comparison_path(comparison_id: str) -> Path:
        return Path(config["OUTPUT_FOLDER"]) / f"compare-{comparison_id}.json"

    def _comparison_or_404(comparison_id: str) -> dict:
        if not valid_job_id(comparison_id):
            abort(404)
        try:
            comparison = json.loads(_comparison_path(comparison_id).read_text())
        except (OSError, ValueError):
            abort(404)
        if time.time() - comparison.get("created", 0) > config["RESULT_TTL_SECONDS"]:
            raise _UserError(410, "expired", "This comparison has expired and was deleted. Compare again.")
        return comparison

    def _comparison_view(comparison: dict) -> dict:
        return {"id": comparison["id"], "url": url_for("compare_page", comparison_id=comparison["id"]),
                "models": comparison["models"],
                "jobs": [url_for("api_status", job_id=job_id) for job_id in comparison["job_ids"]]}

    def _model_label(model: str) -> str:
        if model in KNOWN_MODELS:
            return KNOWN_MODELS[model].label
        return os.path.basename(model.rstrip("/")) or model

    @app.get("/jobs/<job_id>")
    def job_page(job_id):
        job = _job_or_404(job_id)
        return render_template("job.html", job=job, view=_job_view(job), downloads=DOWNLOADS, **page_context())

    @app.get("/jobs/<job_id>/result")
    def job_result_fragment(job_id):
        job = _job_or_404(job_id)
        return render_template("_result.html", job=job, view=_job_view(job), downloads=DOWNLOADS)

    @app.get("/jobs/<job_id>/status")
    @app.get("/api/v1/conversions/<job_id>", endpoint="api_status")
    def job_status(job_id):
        return jsonify(_job_view(_job_or_404(job_id)))

    @app.get("/jobs/<job_id>/files/<kind>")
    def job_file(job_id, kind):
        job = _job_or_404(job_id)
        found = store.file(job, kind)
        if found is None:
            abort(404)
        path, media_type = found
        if kind in PREVIEWS:
            return send_file(path, mimetype=media_type, max_age=3600)
        download_name = f"{job.id[:8]}-{path.name}"
        return send_file(path, mimetype=media_type, as_attachment=True, download_name=download_name)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        body = {"status": status.state, "model": status.converter.model, "message": status.message}
        return jsonify(body), (200 if status.ready else 503)

    def _job_or_404(job_id: str):
        job = store.get(job_id) if valid_job_id(job_id) else None
        if job is None:
            abort(404)
        if job.finished and store.expired(job):
            raise _UserError(410, "expired", "This result has expired and was deleted. Convert the image again.")
        return job

    def _job_view(job) -> dict:
        """The job as the API and the page's script see it."""
        files = {}
        if job.status == DONE:
            for kind in list(DOWNLOADS) + list(PREVIEWS):
                if store.file(job, kind):
                    files[kind] = url_for("job_file", job_id=job.id, kind=kind)
        view = {
            "id": job.id, "status": job.status, "stage": job.stage, "progress": round(job.progress, 3),
            "error": job.error if job.status == FAILED else None, "code": job.error_code,
            "queue_position": runner.queue_position(job.id), "files": files,
            "result_url": url_for("job_result_fragment", job_id=job.id),
            "status_url": url_for("api_status", job_id=job.id),
            "rebuild_url": url_for("api_rebuild", job_id=job.id),
        }
        if job.status == DONE:
            view["info"] = job.info
        return view

    @app.after_request
    def security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(_UserError)
    def user_error(error):
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
        return _error_response(error.status, error.code, error.message, headers)

    @app.errorhandler(ConversionError)
    def conversion_error(error):
        status_code = next((code for kind, code in STATUS_FOR_ERROR.items() if isinstance(error, kind)), 400)
        return _error_response(status_code, error.code, error.message)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        return _error_response(413, "too_large", f"The upload is too large: the limit is "
                                                  f"{config['MAX_UPLOAD_MB']} MB.")

    @app.errorhandler(HTTPException)
    def http_error(error):
        messages = {404: "There is nothing here. Results expire after a while; convert the image again.",
                    405: "That is not how this address is used.", 400: "The request could not be understood."}
        message = messages.get(error.code, error.name)
        return _error_response(error.code or 500, error.name.lower().replace(" ", "_"), message)

    @app.errorhandler(Exception)
    def internal_error(error):
        app.logger.exception("unhandled error")
        return _error_response(500, "internal_error", "Something went wrong on our side. Please try again.")

    def _error_response(status_code: int, code: str, message: str, headers: dict | None = None):
        if _wants_json():
            response = jsonify({"error": message, "code": code})
        else:
            response = app.make_response(render_template("error.html", message=message, status=status_code,
                                                         **page_context()))
        response.status_code = status_code
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response


def _wants_json() -> bool:
    if request.path.startswith("/api/") or request.path.endswith("/status"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


class _UserError(Exception):
    """A request the user can fix, with its HTTP status."""

    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
