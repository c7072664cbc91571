"""The pages people see: upload, a job's progress and result, a comparison, and the files a job offers."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, send_file

from converter.errors import ConversionError

from .conversion import ensure_output
from .errors import EXPIRED, UserError, allow_webassembly
from .jobs import DONE, DOWNLOADS, PREVIEWS
from .service import get_service, model_label, page_context

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    return render_template("index.html", **page_context())


@bp.get("/jobs/<id:job_id>")
def job_page(job_id):
    service = get_service()
    job = service.job_or_404(job_id)
    page = render_template("job.html", job=job, view=service.job_view(job), downloads=DOWNLOADS, **page_context())
    return allow_webassembly(current_app.make_response(page))


@bp.get("/jobs/<id:job_id>/result")
def job_result_fragment(job_id):
    service = get_service()
    job = service.job_or_404(job_id)
    return render_template("_result.html", job=job, view=service.job_view(job), downloads=DOWNLOADS)


@bp.get("/jobs/<id:job_id>/files/<kind>")
def job_file(job_id, kind):
    """A finished job's file; one not written yet is written now (once), so a link never fails or serves a part."""
    service = get_service()
    job = service.job_or_404(job_id)
    entry = DOWNLOADS.get(kind) or PREVIEWS.get(kind)
    if entry is None or job.status != DONE:
        abort(404)
    try:
        path = ensure_output(service.store, job, kind, service.config["MAX_PIXELS"])
    except KeyError:
        abort(404)
    except ConversionError:
        if service.store.expired(job) or not service.store.folder(job.id).is_dir():
            raise UserError(410, "expired", EXPIRED) from None
        raise
    if kind in PREVIEWS:
        return send_file(path, mimetype=entry.media_type, max_age=3600)
    return send_file(path, mimetype=entry.media_type, as_attachment=True, download_name=f"{job.id[:8]}-{path.name}")


@bp.get("/compare/<id:comparison_id>")
def compare_page(comparison_id):
    service = get_service()
    comparison = service.comparison_or_404(comparison_id)
    sides = []
    for job_id, model in zip(comparison["job_ids"], comparison["models"]):
        job = service.store.get(job_id)
        view = service.job_view(job) if job is not None and not (job.finished and service.store.expired(job)) else None
        sides.append({"job": job, "view": view, "model": model, "label": model_label(model)})
    return render_template("compare.html", comparison=comparison, sides=sides, downloads=DOWNLOADS, **page_context())
