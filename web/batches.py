"""Batches: several images (or a zip of images) in one upload, one job each, followed on one page and downloaded
as one zip.

Limits, checked before any job is queued (a batch is accepted whole or not at all): at most ``MAX_BATCH_IMAGES``
images (``413``), a zip unpacking to at most ``MAX_BATCH_UNPACKED_MB`` (``413``: no zip bombs), every entry an
image by content (``415``/``422`` naming the entry's number), and room in the queue for all of them (``503``).
Names are never shown or used: images are numbered in upload order (zip entries in the zip's order), and the zip
download holds ``01/cloud.ply``, ``02/cloud.ply``, …
"""

from __future__ import annotations

import io
import zipfile

from flask import Blueprint, abort, jsonify, redirect, render_template, request, send_file, url_for

from converter.errors import ConversionError, InputError, OptionError
from converter.export import atomic_output

from .conversion import ensure_output, offered_kinds
from .errors import UserError, wants_json
from .forms import parse_request
from .job_request import JobRequest
from .jobs import DONE, FAILED, QueueFullError
from .service import BUSY, get_service, page_context

DEFAULT_FORMATS = ("ply", "glb", "json")
ZIP_MAGIC = b"PK\x03\x04"

bp = Blueprint("batches", __name__)


def is_zip(part) -> bool:
    """Whether an uploaded part is a zip, by its first bytes (the stream is left at its start)."""
    head = part.stream.read(len(ZIP_MAGIC))
    part.stream.seek(0)
    return head == ZIP_MAGIC


def read_images(files, config) -> list[bytes]:
    """The uploaded images, in order: every ``image``/``images`` part, a zip's entries in the zip's order."""
    limit = config["MAX_BATCH_IMAGES"]
    images: list[bytes] = []
    for part in files.getlist("image") + files.getlist("images") + files.getlist("zip"):
        data = part.read()
        if not data:
            continue
        images += _zip_entries(data, config) if data.startswith(ZIP_MAGIC) else [data]
        if len(images) > limit:
            raise UserError(413, "too_many_images", f"Too many images: a batch holds at most {limit}.")
    if not images:
        raise UserError(400, "no_image", "No image was uploaded. Choose one or more image files and try again.")
    return images


def _zip_entries(data: bytes, config) -> list[bytes]:
    """The files of a zip (folders, hidden files and macOS metadata skipped), refusing a zip that unpacks to more
    than the limit before reading any entry."""
    limit_mb = config["MAX_BATCH_UNPACKED_MB"]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            entries = [info for info in bundle.infolist() if not info.is_dir() and not _hidden(info.filename)]
            if sum(info.file_size for info in entries) > limit_mb * 1024 * 1024:
                raise UserError(413, "too_large", f"The zip unpacks to more than {limit_mb} MB, the limit for a "
                                                  "batch.")
            if len(entries) > config["MAX_BATCH_IMAGES"]:
                raise UserError(413, "too_many_images",
                                f"Too many images: a batch holds at most {config['MAX_BATCH_IMAGES']}.")
            return [bundle.read(info) for info in entries]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError):
        raise UserError(422, "damaged_zip", "The zip file is damaged or uses an unsupported compression.") from None


def _hidden(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def create_batch(form, files) -> dict:
    """Decode every image (once), check them all and the queue's room, then queue one job per image."""
    service = get_service()
    images = read_images(files, service.config)
    job_request = parse_request(form, service.config["MODELS"], service.config["DEPTH_MODEL"])
    uploads = []
    for number, data in enumerate(images, start=1):
        try:
            uploads.append(service.decode_upload(data, None, job_request))
        except InputError as error:
            error.message = f"Image {number} of the batch: {error.message}"
            raise
    service.check_model(job_request.model)
    room = getattr(service.runner, "room", None)
    if room is not None and room() < len(uploads):
        raise UserError(503, "busy", BUSY, retry_after=30)
    jobs = []
    for upload in uploads:
        try:
            jobs.append(service.runner.submit(job_request.to_dict(), upload))
        except QueueFullError:  # another request took the room meanwhile: the jobs queued so far still run
            raise UserError(503, "busy", BUSY, retry_after=30) from None
    return get_service().batches.create(job_ids=[job.id for job in jobs])


def batch_or_404(batch_id: str) -> dict:
    store = get_service().batches
    batch = store.get(batch_id)
    if batch is None:
        raise UserError(404, "not_found", "There is no such batch. Results expire after a while.")
    if store.expired(batch):
        raise UserError(410, "expired", "This batch has expired and was deleted. Convert the images again.")
    return batch


def batch_view(batch: dict) -> dict:
    service = get_service()
    jobs = []
    for job_id in batch["job_ids"]:
        job = service.store.get(job_id)
        if job is None or (job.finished and service.store.expired(job)):
            jobs.append({"id": job_id, "status": "expired"})
        else:
            jobs.append(service.job_view(job))
    finished = all(job["status"] in (DONE, FAILED, "expired") for job in jobs)
    return {"id": batch["id"], "url": url_for("batches.batch_page", batch_id=batch["id"]),
            "status": "done" if finished else "running", "job_ids": batch["job_ids"],
            "jobs": [job.get("status_url") for job in jobs], "views": jobs,
            "download_url": url_for("batches.download", batch_id=batch["id"])}


def create():
    """POST /convert with several images or a zip comes here too (see web.api)."""
    batch = create_batch(request.form, request.files)
    if wants_json():
        view = batch_view(batch)
        return jsonify(view), 202, {"Location": view["url"]}
    return redirect(url_for("batches.batch_page", batch_id=batch["id"]), code=303)


bp.add_url_rule("/api/v1/batches", "create", create, methods=["POST"])


@bp.get("/api/v1/batches/<batch_id>")
def read(batch_id):
    return jsonify(batch_view(batch_or_404(batch_id)))


@bp.get("/batches/<batch_id>")
def batch_page(batch_id):
    view = batch_view(batch_or_404(batch_id))
    return render_template("batch.html", batch=view, **page_context())


@bp.get("/batches/<batch_id>/download")
def download(batch_id):
    """One zip of every finished job's files (``formats``: comma-separated kinds, default ply,glb,json), numbered
    in upload order; a failed job contributes its error as ``NN/error.txt``. Written once per set of formats."""
    batch = batch_or_404(batch_id)
    service = get_service()
    formats = [name.strip() for name in (request.args.get("formats") or ",".join(DEFAULT_FORMATS)).split(",")
               if name.strip()]
    if not formats or any(name not in offered_kinds(JobRequest()) for name in formats):
        raise OptionError(f"Formats must be among: {', '.join(offered_kinds(JobRequest()))}.")
    view = batch_view(batch)
    if view["status"] != "done":
        raise UserError(409, "not_finished", "The batch is still converting; download it when every image is done.")
    target = service.batches.path(batch_id, f"-{'-'.join(sorted(set(formats)))}.zip")
    if not target.is_file():
        with atomic_output(target) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED,
                                                                 compresslevel=1) as bundle:
            for number, job_id in enumerate(batch["job_ids"], start=1):
                _add_job(bundle, service, job_id, f"{number:02d}", formats)
    if not target.is_file():
        abort(404)
    return send_file(target, mimetype="application/zip", as_attachment=True,
                     download_name=f"batch-{batch_id[:8]}.zip")


def _add_job(bundle: zipfile.ZipFile, service, job_id: str, prefix: str, formats: list[str]) -> None:
    job = service.store.get(job_id)
    if job is None or job.status != DONE:
        reason = job.error if job is not None and job.error else "This result has expired and was deleted."
        bundle.writestr(f"{prefix}/error.txt", reason + "\n")
        return
    offered = offered_kinds(JobRequest.from_dict(job.request))
    for kind in formats:
        if kind not in offered:
            continue
        try:
            path = ensure_output(service.store, job, kind, service.config["MAX_PIXELS"])
        except ConversionError as error:
            bundle.writestr(f"{prefix}/error-{kind}.txt", error.message + "\n")
            continue
        bundle.write(path, arcname=f"{prefix}/{path.name}")
