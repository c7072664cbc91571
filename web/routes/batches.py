"""Batches: several images or videos (or a zip of images) in one upload, one job each, followed on one page and
downloaded as one zip.

Limits, checked before any job is queued (a batch is accepted whole or not at all, as one unit of admission): room
in the queue for one more job (``503`` with ``Retry-After``), at most ``MAX_BATCH_IMAGES`` files, videos included
(``413``), a zip unpacking to at most ``MAX_BATCH_UNPACKED_MB`` and each file to at most ``MAX_UPLOAD_MB``, counted
as unpacked (``413``: web.intake.unzip), every file an image by its headers (``415``/``422`` naming it). A damaged
or unsafe zip is ``422`` naming the entry. Pixels are decoded by each job, not by the request.
A video among the parts is told by its content (web.intake.video_upload) and received and probed as a single video
upload is (``MAX_VIDEO_MB``, its declared size, length and frames: ``413``/``415``/``422`` naming the part); its job
takes the form's video fields (web.intake.forms.parse_video_request), the images' jobs the image fields. A zip holds
images only: a video inside one is refused (``415`` naming the entry), as a video must be its own part.
Names are never used: files are numbered in upload order (zip entries in the zip's order), and the zip
download holds ``01/cloud.ply``, ``02/video_LRF_Full_SBS.mp4``, …; an error about a zip's entry shows the sender its
own name for it.
"""

from __future__ import annotations

import hashlib

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, send_file, url_for

from converter import InputError, OptionError
from converter.service_api import VIDEO_SNIFF_BYTES, check_convertible_size, probe_header, sniff_video

from ..intake import unzip
from ..intake.client import current_client
from ..intake.rate_limits import creates
from ..jobs.conversion import offered_kinds
from .errors import UserError, wants_json
from ..deletion import new_token, set_token_cookie
from ..intake.forms import parse_request, parse_video_request
from ..intake.video_upload import is_video_part, receive_video
from ..intake.job_request import JobRequest
from ..jobs.backend import QueueFullError
from ..jobs.record import CANCELLED, DONE, FAILED
from ..jobs.store import Upload
from ..jobs.exports import Target
from .pages import preparing
from ..service import get_service
from ..settings import video_limits

DEFAULT_FORMATS = ("ply", "glb", "json")
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip's first entry, or the end record of an empty zip

bp = Blueprint("batches", __name__)


def is_zip(part) -> bool:
    """Whether an uploaded part is a zip, by its first bytes (the stream is left at its start)."""
    head = part.stream.read(4)
    part.stream.seek(0)
    return head in ZIP_MAGICS


def read_uploads(files, config, video_request) -> list[Upload]:
    """The batch's files as Uploads, in order: every ``image``/``images`` part, a zip's files in the zip's order.
    An image is checked from its headers alone (format, pixels of every frame) as soon as it is read: nothing is
    decoded here, and a zip is unpacked under web.intake.unzip's budget. A video part is received into
    UPLOAD_FOLDER and probed (web.intake.video_upload) with the options of ``video_request()`` (a JobRequest,
    asked for at the first video). On any refusal the videos received so far are removed."""
    limit = config["MAX_BATCH_IMAGES"]
    uploads: list[Upload] = []
    unpacked = 0  # bytes from every zip of this request: one budget for all of them
    parts = files.getlist("image") + files.getlist("images") + files.getlist("zip")
    try:
        for part in parts:
            if is_video_part(part):
                _check_count(len(uploads) + 1, limit)  # before a large file is copied
                uploads.append(_received_video(f"Video {len(uploads) + 1} of the batch", part, config,
                                               video_request()))
                continue
            data = part.read()
            if not data:
                continue
            if data.startswith(ZIP_MAGICS):
                entries = unzip.unpack(data, max_files=limit,
                                       max_total_bytes=config["MAX_BATCH_UNPACKED_MB"] * 1024 * 1024,
                                       max_entry_bytes=config["MAX_UPLOAD_MB"] * 1024 * 1024,
                                       already_unpacked=unpacked)
                for entry in entries:
                    unpacked += len(entry.data)
                    uploads.append(_image(f"Image {len(uploads) + 1} of the batch (the zip's {entry.label})",
                                          entry.data, config, zipped=True))
                    _check_count(len(uploads), limit)
            else:
                uploads.append(_image(f"Image {len(uploads) + 1} of the batch", data, config))
            _check_count(len(uploads), limit)
    except BaseException:
        discard_videos(uploads)
        raise
    if not uploads:
        raise UserError(400, "no_image", "No image was uploaded. Choose one or more image files and try again.")
    return uploads


def _check_count(count: int, limit: int) -> None:
    if count > limit:
        raise UserError(413, "too_many_images", f"Too many images: a batch holds at most {limit} (videos "
                                                "included).")


def _image(label: str, data: bytes, config, zipped: bool = False) -> Upload:
    """An image's Upload once its headers pass: format by content, declared pixels of every frame."""
    if zipped and sniff_video(data[:VIDEO_SNIFF_BYTES]) is not None:
        raise UserError(415, "video_in_zip", f"{label} is a video: a zip holds images only. Send a video as a "
                                             "part of its own in the batch, beside the zip.")
    try:
        _, width, height = probe_header(data, config["MAX_PIXELS"])
        check_convertible_size(width, height)
    except InputError as error:
        error.message = f"{label}: {error.message}"
        raise
    return Upload(image=data, sha256=hashlib.sha256(data).hexdigest())


def _received_video(label: str, part, config, job_request: JobRequest) -> Upload:
    """A video part received and probed as a single video upload is (web.intake.video_upload); a refusal names
    the part."""
    try:
        return receive_video(part, config["UPLOAD_FOLDER"], video_limits(config), job_request.video["options"])
    except (InputError, UserError) as error:
        error.message = f"{label}: {error.message}"
        raise


def discard_videos(uploads) -> None:
    """Remove the received video files still waiting in UPLOAD_FOLDER (a queued job's has moved to its folder)."""
    for upload in uploads:
        if upload is not None and upload.video is not None:
            upload.video.unlink(missing_ok=True)


def create_batch(form, files, delete_token_sha256: str = "") -> dict:
    """Admission before work: the options, the queue's room, then every file's headers (a video's probe); the jobs
    decode.

    A batch is one unit of admission (see JobRunner.submit_batch): accepted whole while the queue has room for one
    more job. The request itself holds only the uploaded bytes (images: at most ``MAX_UPLOAD_MB`` together, a zip's
    files at most ``MAX_BATCH_UNPACKED_MB``; videos wait in UPLOAD_FOLDER, not in memory) and decodes no pixels,
    whatever their number; each job decodes its image or video when it starts, at its working scale. Each job gets
    its own request: the image fields for an image, the video fields for a video.
    """
    service = get_service()
    config = service.config
    job_request = parse_request(form, config["MODELS"], config["DEPTH_MODEL"])
    service.check_model(job_request.model)
    if service.runner.room() < 1:  # the cheapest refusal first: nothing read yet (a 503, web.routes.errors)
        raise QueueFullError()
    videos: list[JobRequest] = []

    def video_request() -> JobRequest:  # parsed once, at the first video: an image batch never reads these fields
        if not videos:
            videos.append(parse_video_request(form, config["MODELS"], config["DEPTH_MODEL"]))
        return videos[0]

    uploads = read_uploads(files, config, video_request)
    requests = [video_request().to_dict() if upload.video is not None else job_request.to_dict()
                for upload in uploads]
    try:
        # Each job takes its own turn among its client's (fair share); QueueFullError if another took the place.
        jobs = service.runner.submit_batch(requests, uploads, client=current_client(),
                                           delete_token_sha256=delete_token_sha256)
    finally:
        discard_videos(uploads)  # moved into their jobs' folders when they were queued; removed on a refusal
    return service.batches.create(job_ids=[job.id for job in jobs], delete_token_sha256=delete_token_sha256)


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
    finished = all(job["status"] in (DONE, FAILED, CANCELLED, "expired") for job in jobs)
    return {"id": batch["id"], "url": url_for("batches.batch_page", batch_id=batch["id"]),
            "status": "done" if finished else "running", "job_ids": batch["job_ids"],
            "jobs": [job.get("status_url") for job in jobs], "views": jobs,
            "download_url": url_for("batches.download", batch_id=batch["id"])}


@creates
def create():
    """POST /convert with several images or a zip comes here too (see web.routes.api)."""
    token, token_sha256 = new_token()
    batch = create_batch(request.form, request.files, token_sha256)
    page = url_for("batches.batch_page", batch_id=batch["id"])
    if wants_json():
        response = jsonify({**batch_view(batch), "delete_token": token})
        response.status_code, response.headers["Location"] = 202, page
    else:
        response = redirect(page, code=303)
    return set_token_cookie(response, token, page, current_app.config["RESULT_TTL_SECONDS"])


bp.add_url_rule("/api/v1/batches", "create", create, methods=["POST"])


@bp.get("/api/v1/batches/<id:batch_id>")
def read(batch_id):
    return jsonify(batch_view(batch_or_404(batch_id)))


@bp.get("/batches/<id:batch_id>")
def batch_page(batch_id):
    view = batch_view(batch_or_404(batch_id))
    return render_template("batch.html", batch=view)


@bp.get("/batches/<id:batch_id>/download")
@bp.get("/api/v1/batches/<id:batch_id>/download", endpoint="download_api")  # the same, answering JSON
def download(batch_id):
    """One zip of every finished job's files (``formats``: comma-separated kinds, default ply,glb,json), numbered
    in upload order; a failed job contributes its error as ``NN/error.txt``. Written once per set of formats, by an
    export task (web.jobs.exports): the link answers "preparing" (202) until the zip is whole."""
    batch = batch_or_404(batch_id)
    service = get_service()
    formats = download_formats(request.args.get("formats"))
    view = batch_view(batch)
    if view["status"] != "done":
        raise UserError(409, "not_finished", "The batch is still converting; download it when every image is done.")
    path, state = service.download(Target(batch_id, "zip", ",".join(formats)))
    if path is None:
        return preparing("zip of the batch", state)
    return send_file(path, mimetype="application/zip", as_attachment=True, download_name=f"batch-{batch_id[:8]}.zip")


def download_formats(text: str | None) -> list[str]:
    """``formats`` as a set: comma-separated kinds, deduplicated, in the fixed order of the downloads table (so
    "glb,ply,ply" and "ply,glb" name the same zip); blank means the defaults; unknown kinds are a 400 naming them."""
    names = {name.strip().lower() for name in (text or "").split(",") if name.strip()} or set(DEFAULT_FORMATS)
    offered = offered_kinds(JobRequest())
    unknown = sorted(names - set(offered))
    if unknown:
        shown = ", ".join(f"'{name[:40]}'" for name in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise OptionError(f"Unknown download formats: {shown}. Formats must be among: {', '.join(offered)}.")
    return [name for name in offered if name in names]
