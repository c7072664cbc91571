"""The pages people see: upload, a job's progress and result, a comparison, and the files a job offers."""

from __future__ import annotations

import math

from flask import Blueprint, abort, current_app, jsonify, render_template, request, send_file

from ..deletion import holds_token
from ..jobs.conversion import ensure_output, offered_kinds
from ..jobs.video import VIDEO_MEDIA_TYPES, frame_cloud
from .errors import allow_webassembly, wants_html
from ..jobs.exports import Target
from ..intake.job_request import JobRequest
from ..jobs.record import DONE
from ..jobs.store import DOWNLOADS, PREVIEWS
from ..service import get_service, model_label, still_converting

bp = Blueprint("pages", __name__)
PREPARING_RETRY_SECONDS = 2


@bp.app_template_filter("filesize")
def filesize(size: int) -> str:
    """Bytes for people: 812 B, 4.2 kB, 31 MB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if size < 10 * scale else f"{size / scale:.0f} {unit}"
    return f"{size} B"


@bp.app_template_filter("duration")
def duration(seconds: float) -> str:
    """Seconds for people: 45 s, 2 min 5 s, 1 h 20 min (static/js/app.js words time left the same way)."""
    seconds = max(0, int(math.ceil(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@bp.get("/")
def index():
    return render_template("index.html")


@bp.get("/jobs/<id:job_id>")
def job_page(job_id):
    service = get_service()
    job = service.job_or_404(job_id)
    page = render_template("job.html", job=job, view=service.job_view(job), downloads=DOWNLOADS,
                           can_cancel=holds_token(job.delete_token_sha256))  # its creator's browser: the cookie
    return allow_webassembly(current_app.make_response(page))


@bp.get("/jobs/<id:job_id>/result")
def job_result_fragment(job_id):
    service = get_service()
    job = service.job_or_404(job_id)
    return render_template("_result.html", job=job, view=service.job_view(job), downloads=DOWNLOADS)


@bp.get("/jobs/<id:job_id>/files/<kind>")
@bp.get("/api/v1/conversions/<id:job_id>/files/<kind>", endpoint="job_file_api")  # the same, answering JSON
def job_file(job_id, kind):
    """A finished job's file; one not written yet is queued as an export and the link answers at once
    ("preparing…", 202), then serves the file once it is whole."""
    service = get_service()
    job = service.job_or_404(job_id)
    if JobRequest.from_dict(job.request).is_video:
        return _video_file(service, job, kind)
    entry = DOWNLOADS.get(kind) or PREVIEWS.get(kind)
    if entry is not None:
        still_converting(job, "download its files")
    if entry is None or job.status != DONE or kind not in offered_kinds(JobRequest.from_dict(job.request)):
        abort(404)
    path, state = service.download(Target(job.id, kind))
    if path is None:
        return preparing(entry.label, state)
    if kind in PREVIEWS:
        return send_file(path, mimetype=entry.media_type, max_age=3600)
    return send_file(path, mimetype=entry.media_type, as_attachment=True, download_name=f"{job.id[:8]}-{path.name}")


def _video_file(service, job, kind: str):
    """A video job's output, written by the job: videos answer range requests (a player seeks in them)."""
    still_converting(job, "download its files")
    if job.status != DONE:
        abort(404)
    try:
        path = ensure_output(service.store, job, kind, service.config["MAX_PIXELS"])
    except KeyError:
        abort(404)
    media_type = VIDEO_MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    playable = path.suffix == ".mp4" and request.args.get("play") == "1"  # the result page's players
    return send_file(path, mimetype=media_type, conditional=True, as_attachment=not playable,
                     download_name=f"{job.id[:8]}-{path.name}", max_age=3600)


@bp.get("/jobs/<id:job_id>/frames/<int:index>")
def video_frame(job_id, index):
    """Frame ``index`` of a finished video job's 4D point cloud (one binary .ply, read from its zip): the viewer
    loads frames as it plays them."""
    service = get_service()
    job = service.job_or_404(job_id)
    still_converting(job, "play it")
    data = frame_cloud(service.store, job, index)
    if data is None:
        abort(404)
    return current_app.response_class(data, mimetype="application/octet-stream",
                                      headers={"Cache-Control": "private, max-age=3600"})


def preparing(label: str, state, retry_after: int = PREPARING_RETRY_SECONDS):
    """202 while a download is prepared: a page that reloads itself (no script: CSP) for people, JSON with
    Retry-After for scripts. The same address serves the file once it is whole."""
    headers = {"Retry-After": str(retry_after), "Cache-Control": "no-store"}
    if wants_html():
        page = render_template("preparing.html", label=label, state=state, retry_after=retry_after)
        return page, 202, headers
    body = {"status": "preparing", "stage": state.status, "progress": state.line, "retry_after": retry_after,
            "url": request.full_path.rstrip("?"), "message": f"Preparing the {label}; ask again in {retry_after} s."}
    return jsonify(body), 202, headers


@bp.get("/compare/<id:comparison_id>")
def compare_page(comparison_id):
    service = get_service()
    comparison = service.comparison_or_404(comparison_id)
    sides = []
    for job_id, model in zip(comparison["job_ids"], comparison["models"]):
        job = service.store.get(job_id)
        view = service.job_view(job) if job is not None and not (job.finished and service.store.expired(job)) else None
        sides.append({"job": job, "view": view, "model": model, "label": model_label(model)})
    return render_template("compare.html", comparison=comparison, sides=sides, downloads=DOWNLOADS)
