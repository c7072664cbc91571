"""Conversions, their status and rebuilds: each action one view on two addresses, the page's form address and the
JSON API's, answering by content negotiation (a redirect to the job's page, or 202 with JSON)."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, request, url_for

from . import batches, openapi
from .errors import wants_json
from ..deletion import check_token, new_token, set_token_cookie
from ..intake.rate_limits import creates
from ..service import get_service

bp = Blueprint("api", __name__)


def created(job, token: str):
    """A new job: the API gets 202 with its status address and its delete token, a browser is sent to its page;
    both keep the token in a cookie for the job's page (web.deletion)."""
    status_url = url_for("api.job_status", job_id=job.id)
    page = url_for("pages.job_page", job_id=job.id)
    if wants_json():
        response = jsonify({"id": job.id, "status_url": status_url, "delete_token": token})
        response.status_code, response.headers["Location"] = 202, status_url
    else:
        response = redirect(page, code=303)
    return set_token_cookie(response, token, page, current_app.config["RESULT_TTL_SECONDS"])


@creates
def create_conversion():
    """One image: one job. Several images, or a zip of them: a batch (web.routes.batches), one job each."""
    images = [part for part in request.files.getlist("image") if part.filename or part.content_length]
    if len(images) > 1 or any(batches.is_zip(part) for part in images):
        return batches.create()
    token, token_sha256 = new_token()
    return created(get_service().submit(request.form, request.files, token_sha256), token)


@creates
def rebuild(job_id):
    token, token_sha256 = new_token()
    return created(get_service().rebuild(job_id, request.form, token_sha256), token)


def cancel(job_id):
    """Stop a queued or running conversion (the delete token, as for deleting it): the API gets its status, a browser
    is sent back to its page."""
    service = get_service()
    job = service.job_or_404(job_id)
    check_token(job.delete_token_sha256)
    job = service.cancel(job)
    if wants_json():
        return jsonify(service.job_view(job))
    return redirect(url_for("pages.job_page", job_id=job.id), code=303)


def job_status(job_id):
    service = get_service()
    return jsonify(service.job_view(service.job_or_404(job_id)))


# One view, two addresses each: the page's (endpoint ``*_form``/``*_page``) and the JSON API's.
bp.add_url_rule("/convert", "convert_form", create_conversion, methods=["POST"])
bp.add_url_rule("/api/v1/conversions", "create_conversion", create_conversion, methods=["POST"])
bp.add_url_rule("/jobs/<id:job_id>/rebuild", "rebuild_form", rebuild, methods=["POST"])
bp.add_url_rule("/api/v1/conversions/<id:job_id>/rebuild", "rebuild", rebuild, methods=["POST"])
bp.add_url_rule("/jobs/<id:job_id>/cancel", "cancel_form", cancel, methods=["POST"])
bp.add_url_rule("/api/v1/conversions/<id:job_id>/cancel", "cancel", cancel, methods=["POST"])
bp.add_url_rule("/jobs/<id:job_id>/status", "job_status_page", job_status)
bp.add_url_rule("/api/v1/conversions/<id:job_id>", "job_status", job_status)


@bp.get("/api/v1/openapi.json")
def openapi_document():
    """The API's contract (web.routes.openapi), with this server's limits and models."""
    return jsonify(openapi.document(current_app.config))


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def prometheus_metrics():
    """Prometheus exposition (web.metrics): this machine's events and the shared state."""
    body, content_type = get_service().metrics()
    return current_app.response_class(body, content_type=content_type)


@bp.get("/readyz")
def readyz():
    status = get_service().model_status
    body = {"status": status.state, "model": status.converter.model, **status.runs, "message": status.message}
    return jsonify(body), (200 if status.ready else 503)
