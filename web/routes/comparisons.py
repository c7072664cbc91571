"""Two depth models on one image: start a comparison (form or API) and read it back."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, redirect, request, url_for

from .errors import wants_json
from ..deletion import new_token, set_token_cookie
from ..intake.rate_limits import creates
from ..service import get_service

bp = Blueprint("comparisons", __name__)


@creates
def create():
    service = get_service()
    token, token_sha256 = new_token()
    comparison = service.compare(request.form, request.files, token_sha256)
    page = url_for("pages.compare_page", comparison_id=comparison["id"])
    if wants_json():
        body = service.comparison_view(comparison)
        response = jsonify({**body, "delete_token": token})
        response.status_code, response.headers["Location"] = 202, body["url"]
    else:
        response = redirect(page, code=303)
    return set_token_cookie(response, token, page, current_app.config["RESULT_TTL_SECONDS"])


@bp.get("/api/v1/comparisons/<id:comparison_id>")
def read(comparison_id):
    service = get_service()
    return jsonify(service.comparison_view(service.comparison_or_404(comparison_id)))


bp.add_url_rule("/compare", "compare_form", create, methods=["POST"])  # the page's address, then the API's
bp.add_url_rule("/api/v1/comparisons", "create", create, methods=["POST"])
