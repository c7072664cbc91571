"""The app's resources and the actions its routes share (submit, rebuild, compare, describe a job).

One ``Service`` per app, made and started by ``init_app`` (the Flask pattern: configuration in ``create_app``,
resources and their threads here). Pages, the API and comparisons are thin blueprints over it.
"""

from __future__ import annotations

import hashlib
import math
import os

from flask import Flask, current_app, url_for

from converter import KNOWN_MODELS, VIDEO_OUTPUTS, OptionError, load_image
from converter.service_api import (
    DETAIL_LEVELS,
    MODES,
    STATE_FILES,
    UP_AXES,
    check_convertible_size,
    probe_header,
)

from . import metrics
from .intake.client import current_client
from .intake.forms import (
    DEFAULT_VIDEO_OUTPUTS,
    OPTION_FIELDS,
    check_single_values,
    parse_rebuild,
    parse_request,
    parse_video_request,
)
from .intake.video_upload import is_video_part, receive_video
from .intake.job_request import DEFAULT_STL_WIDTH_MM, JobRequest
from .deletion import Deletion
from .jobs.backend import JobBackend, backend_class
from .jobs.conversion import offered_kinds, run_job
from .jobs.depth_cache import DepthCache
from .jobs.execution import CANCEL_REQUESTED, CANCELLED_BY_USER, cancel_requested
from .jobs.video import VIDEO_DOWNLOAD_GROUPS, ChunkPool, output_name, progress_view
from .jobs.exports import EXPORT_TIMEOUT_SECONDS, Exports, Target, size_of
from .jobs.record import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Job
from .memory_budget import JobMemory, default_job_memory_mb
from .jobs.store import DOWNLOAD_GROUPS, BatchStore, ComparisonStore, JobStore, Sweeper, Upload, valid_job_id
from .model_status import UNAVAILABLE
from .settings import conversion_workers, make_converter, uses_cuda, video_limits
from .user_error import EXPIRED, UserError
NOTHING_HERE = "There is nothing here. Results expire after a while; convert the image again."
STILL_CONVERTING_RETRY_SECONDS = 2
# Bigger full-size pictures are decoded by their job, not the request (about 2 x 3 bytes a pixel while decoding).
REQUEST_DECODE_PIXELS = 16_000_000


class Service:
    """Converter, model readiness, job and comparison stores, the depth cache, the job back-end and the sweeper."""

    def __init__(self, config):
        self.config = config
        backend = backend_class(config.get("JOB_BACKEND", "embedded"))
        self.converter = make_converter(config, gpu=backend.runs_here and uses_cuda(config["DEVICE"]))
        self.store = JobStore(config["OUTPUT_FOLDER"], ttl_seconds=config["RESULT_TTL_SECONDS"])
        self.comparisons = ComparisonStore(config["OUTPUT_FOLDER"], ttl_seconds=config["RESULT_TTL_SECONDS"])
        self.batches = BatchStore(config["OUTPUT_FOLDER"], ttl_seconds=config["RESULT_TTL_SECONDS"])
        self.cache = DepthCache(os.path.join(config["OUTPUT_FOLDER"], ".cache"),
                                max_entries=config["DEPTH_CACHE_ENTRIES"], ttl_seconds=config["RESULT_TTL_SECONDS"])
        os.makedirs(self.cache.folder, exist_ok=True)  # made now, not by the first job: the layout is fixed
        self.exports = Exports(self.store, self.batches, config["MAX_PIXELS"],
                               config.get("EXPORT_TIMEOUT_SECONDS", EXPORT_TIMEOUT_SECONDS))
        # Each job's memory is estimated here, before it is queued. Where the jobs run in this process the budget
        # is this machine's; with Celery each worker holds its own (web.jobs.celery.worker), and the web tier
        # refuses only what could never fit the JOB_MEMORY_MB it is given.
        # A long clip's chunks, predicted at once by this many threads when jobs run here (web.jobs.video).
        self.video_chunks = ChunkPool(config.get("VIDEO_CHUNK_WORKERS") or conversion_workers(
            config, backend.runs_here and uses_cuda(config["DEVICE"])))
        limit_mb = config.get("JOB_MEMORY_MB") or (default_job_memory_mb(self.converter) if backend.runs_here
                                                   else math.inf)
        self.memory = JobMemory(self.store, limit_mb)
        self.runner: JobBackend = backend.from_config(
            config, self.store, self.converter,
            lambda job, upload, report: run_job(self.converter, self.store, job, upload, report, self.cache,
                                                config, self.video_chunks),
            self.exports.run, memory=self.memory)
        self.model_status = self.runner.model_status
        self._metrics = metrics.registry_for(self)
        self.deletion = Deletion(self.store, self.batches, self.comparisons, self.cache, self.runner)
        self.sweeper = Sweeper(self.store, config["SWEEP_INTERVAL_SECONDS"], cache=self.cache,
                               records=(self.comparisons, self.batches))

    def start(self) -> "Service":
        if self.config["PRELOAD_MODEL"]:
            self.model_status.start()
        self.sweeper.start()
        return self

    def stop(self, wait: bool = False) -> None:
        """Stop the sweeper and the runner; with ``wait``, once the work running in this process has ended."""
        self.sweeper.stop()
        self.runner.shutdown(wait=wait)

    # ------------------------------------------------------------------------------------------------ actions

    def submit(self, form, files, delete_token_sha256: str = "") -> Job:
        """A new conversion of the uploaded image (or video, told by its content) with the form's options (deletable
        with the token: web.deletion)."""
        part = files.get("image")
        if part is not None and is_video_part(part):
            return self.submit_video(form, part, delete_token_sha256)
        data, depth = _uploads(files)
        job_request = parse_request(form, self.config["MODELS"], self.config["DEPTH_MODEL"])
        upload = self.decode_upload(data, depth, job_request)
        self.check_model(job_request.model, depth)
        return self.runner.submit_batch(job_request.to_dict(), [upload], client=current_client(),
                                        delete_token_sha256=delete_token_sha256)[0]

    def submit_video(self, form, part, delete_token_sha256: str = "") -> Job:
        """A video's job: its fields parsed, its file received into UPLOAD_FOLDER and checked against the limits
        before any work (web.intake.video_upload), then queued; on any refusal the file is removed."""
        job_request = parse_video_request(form, self.config["MODELS"], self.config["DEPTH_MODEL"])
        upload = receive_video(part, self.config["UPLOAD_FOLDER"], video_limits(self.config),
                               job_request.video["options"])
        try:
            self.check_model(job_request.model)
            return self.runner.submit_batch(job_request.to_dict(), [upload], client=current_client(),
                                            delete_token_sha256=delete_token_sha256)[0]
        finally:
            upload.video.unlink(missing_ok=True)  # moved into the job's folder when it was queued

    def cancel(self, job: Job) -> Job:
        """Stop a job: queued, it never runs; running, it stops at its next frame or stage and keeps nothing (its
        record says cancelled). A finished job is left as it is (409)."""
        if job.finished:
            raise UserError(409, "finished", f"This conversion has already ended ({job.status}): there is nothing "
                                             "to cancel.")
        folder = self.store.folder(job.id)
        try:
            (folder / CANCEL_REQUESTED).touch()
        except OSError:
            raise UserError(404, "not_found", NOTHING_HERE) from None
        if job.status == QUEUED:
            self.runner.forget(job.id)
            current = self.store.get(job.id)
            if current is not None and current.status == QUEUED:
                current.cancel(CANCELLED_BY_USER)
                self.store.save(current)
                return current
        return self.store.get(job.id) or job

    def rebuild(self, job_id: str, form, delete_token_sha256: str = "") -> Job:
        """A new job converting a finished job's kept image with its kept depth: no model run."""
        source = self.job_or_404(job_id, missing="There is no such conversion to rebuild. Results expire after a "
                                                 "while; convert the image again.")
        still_converting(source, "rebuild it")
        folder = self.store.folder(source.id)
        if source.status != DONE or not all((folder / name).is_file() for name in STATE_FILES):
            raise UserError(404, "not_rebuildable", "This conversion has no finished result to rebuild (it failed "
                                                    "or is still running). Convert the image again.")
        changed = parse_rebuild(form, JobRequest.from_dict(source.request), (source.info or {}).get("camera"))
        return self.runner.submit_batch(changed.with_changes(rebuild_of=source.id).to_dict(), [None],
                                        client=current_client(), delete_token_sha256=delete_token_sha256)[0]

    def compare(self, form, files, delete_token_sha256: str = "") -> dict:
        """Two jobs, one per model, on the same upload (decoded once for both)."""
        data, _ = _uploads(files)
        check_single_values(form, OPTION_FIELDS + ("model_a", "model_b"))
        fields = form.to_dict()
        for name in ("model", "model_a", "model_b"):  # model and model_a both name the first: each must be offered
            given = (fields.get(name) or "").strip()
            if given and given not in self.config["MODELS"]:
                raise OptionError(f"Unknown model '{given[:80]}' in the field '{name}'. Choose one of: "
                                  f"{', '.join(self.config['MODELS'])}.")
        first = (fields.get("model_a") or fields.get("model") or self.config["DEPTH_MODEL"]).strip()
        second = (fields.get("model_b") or "").strip()
        if not second:
            raise OptionError("Choose a second model to compare with.")
        chosen = [parse_request({**fields, "model": model}, self.config["MODELS"], self.config["DEPTH_MODEL"])
                  for model in (first, second)]
        upload = self.decode_upload(data, None, chosen[0])
        for job_request in chosen:
            self.check_model(job_request.model)
        client = current_client()
        jobs = [self.runner.submit_batch(job_request.to_dict(), [upload], client=client,
                                         delete_token_sha256=delete_token_sha256)[0] for job_request in chosen]
        return self.comparisons.create(job_ids=[job.id for job in jobs],
                                       models=[job_request.model for job_request in chosen],
                                       delete_token_sha256=delete_token_sha256)

    # --------------------------------------------------------------------------------------------- reading

    def job_or_404(self, job_id: str, missing: str = NOTHING_HERE) -> Job:
        """The job, or 404 (``missing`` says why to a person), or 410 once its result has expired."""
        job = self.store.get(job_id) if valid_job_id(job_id) else None
        if job is None:
            raise UserError(404, "not_found", missing)
        if job.finished and self.store.expired(job):
            raise UserError(410, "expired", EXPIRED)
        return job

    def job_view(self, job: Job) -> dict:
        """The job as the API and the page's script see it."""
        files, sizes = {}, {}
        request = JobRequest.from_dict(job.request)
        if job.status == DONE:
            files = {kind: url_for("pages.job_file", job_id=job.id, kind=kind) for kind in offered_kinds(request)}
            paths = ({kind: self.store.folder(job.id) / output_name(kind) for kind in files} if request.is_video else
                     {kind: self.exports.path(Target(job.id, kind)) for kind in files})
            sizes = {kind: size for kind, path in paths.items() if (size := size_of(path))}
        view = {
            "id": job.id, "status": job.status, "stage": job.stage, "progress": round(job.progress, 3),
            "error": job.error if job.status in (FAILED, CANCELLED) else None, "code": job.error_code,
            "queue_position": self.runner.queue_position(job.id), "files": files,
            "memory_estimate_mb": round(job.memory_mb) or None,  # its estimated peak (web.memory_budget)
            "sizes": sizes,  # bytes of each download already written (the others are prepared on request)
            "result_url": url_for("pages.job_result_fragment", job_id=job.id),
            "status_url": url_for("api.job_status", job_id=job.id),
            "rebuild_url": url_for("api.rebuild", job_id=job.id),
        }
        if request.is_video:
            view["kind"] = "video"
            view["cancel_url"] = url_for("api.cancel", job_id=job.id)
            # Asked to stop, not stopped yet (it stops at its next frame): the page says so instead of offering Cancel.
            view["cancel_requested"] = not job.finished and cancel_requested(self.store.folder(job.id))
            if job.status == RUNNING:
                view["video"] = progress_view(self.store.folder(job.id))
                if view["video"]:
                    view["progress"] = max(view["progress"], view["video"].pop("progress"))
        if job.status == DONE:
            view["info"] = job.info
        return view

    def download(self, target: Target):
        """(path, None) of a download that is whole, or (None, its export state) with the export queued once: no
        request writes a download itself. A failed export is a 503 with its sentence (the next request retries);
        a queue that is away, QueueFullError (a 503 too)."""
        path, state = self.exports.request(target, self.runner.submit_export)
        if state is not None and state.status == "failed":
            raise UserError(503, "export_failed", f"{state.error} Open the link again to retry.", retry_after=5)
        return path, state

    def workers_ready(self) -> int:
        """Conversion workers whose model is ready: the Celery workers that say so, or this process."""
        return self.runner.workers_ready()

    def metrics(self) -> tuple[bytes, str]:
        return metrics.exposition(self._metrics)

    def comparison_or_404(self, comparison_id: str) -> dict:
        comparison = self.comparisons.get(comparison_id)
        if comparison is None:
            raise UserError(404, "not_found", "There is no such comparison. Results expire after a while.")
        if self.comparisons.expired(comparison):
            raise UserError(410, "expired", "This comparison has expired and was deleted. Compare again.")
        return comparison

    def comparison_view(self, comparison: dict) -> dict:
        return {"id": comparison["id"], "url": url_for("pages.compare_page", comparison_id=comparison["id"]),
                "models": comparison["models"], "job_ids": comparison["job_ids"],
                "jobs": [url_for("api.job_status", job_id=job_id) for job_id in comparison["job_ids"]]}

    # ------------------------------------------------------------------------------------------------ helpers

    def decode_upload(self, data: bytes, depth: bytes | None, job_request: JobRequest) -> Upload:
        """Check the upload's headers (format, pixels of every frame, size), hash its bytes once, and decode it now
        when its working picture is small (a damaged file is then a 4xx at once). A picture kept at full size
        (``detail=full`` or a depth file) over ``REQUEST_DECODE_PIXELS`` is decoded by its job instead, as every
        upload is with Celery: a request never holds such a picture twice."""
        _, width, height = probe_header(data, self.config["MAX_PIXELS"])
        check_convertible_size(width, height)
        sha256 = hashlib.sha256(data).hexdigest()
        draft = 0 if depth else job_request.options.max_points
        if not self.runner.runs_here or (draft == 0 and width * height > REQUEST_DECODE_PIXELS):
            return Upload(image=data, sha256=sha256, depth=depth or None)
        image = load_image(data, self.config["MAX_PIXELS"], draft_points=draft)
        return Upload(image=image, sha256=sha256, depth=depth or None)

    def check_model(self, model: str, depth: bytes | None = None) -> None:
        if not depth and self.model_status.state == UNAVAILABLE and model == self.converter.model:
            raise UserError(503, "model_unavailable", self.model_status.message)


def still_converting(job: Job, wanted: str) -> None:
    """A 409 while ``job`` is queued or running (with Retry-After: what was asked comes when it is done) or when it
    has failed (it exists, but has no result)."""
    if job.status in (FAILED, CANCELLED):
        raise UserError(409, "failed", f"This conversion failed, so it has no result to {wanted.split()[0]}: "
                                       f"{job.error or 'see its status.'}")
    if job.status != DONE:
        raise UserError(409, "not_finished", f"This conversion is still running: {wanted} once it is done.",
                        retry_after=STILL_CONVERTING_RETRY_SECONDS)


def _uploads(files) -> tuple[bytes, bytes]:
    image = files.get("image")
    data = image.read() if image else b""
    if not data:
        raise UserError(400, "no_image", "No image was uploaded. Choose an image file and try again.")
    depth_file = files.get("depth")
    return data, (depth_file.read() if depth_file else b"")


def get_service() -> Service:
    return current_app.extensions["image_to_3d"]


def page_context() -> dict:
    """What every page template needs (the app's template context processor)."""
    service = get_service()
    config = service.config
    return {
        "model_status": service.model_status, "models": config["MODELS"], "known_models": KNOWN_MODELS,
        "max_upload_mb": config["MAX_UPLOAD_MB"], "max_megapixels": config["MAX_PIXELS"] / 1e6,
        "max_batch_images": config["MAX_BATCH_IMAGES"],
        "max_video_mb": config["MAX_VIDEO_MB"], "max_video_seconds": config["MAX_VIDEO_SECONDS"],
        "download_groups": DOWNLOAD_GROUPS, "video_outputs": VIDEO_OUTPUTS,
        "default_video_outputs": DEFAULT_VIDEO_OUTPUTS,
        "video_download_groups": VIDEO_DOWNLOAD_GROUPS, "detail_levels": DETAIL_LEVELS, "modes": MODES,
        "default_stl_width_mm": DEFAULT_STL_WIDTH_MM, "up_axes": UP_AXES,
    }


def model_label(model: str) -> str:
    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model].label
    return os.path.basename(model.rstrip("/")) or model


def init_app(app: Flask) -> Service:
    """Make the app's Service and start its threads (model preload, retention sweep)."""
    service = Service(app.config)
    app.extensions["image_to_3d"] = service
    app.context_processor(page_context)
    return service.start()
