"""Two depth models on one image: start a comparison (form or API) and read it back."""

from __future__ import annotations

from flask import Blueprint, jsonify, redirect, request, url_for

from .errors import wants_json
from ..intake.rate_limits import creates
from ..service import get_service

bp = Blueprint("comparisons", __name__)


@creates
def create():
    service = get_service()
    comparison = service.compare(request.form, request.files)
    if wants_json():
        body = service.comparison_view(comparison)
        return jsonify(body), 202, {"Location": body["url"]}
    return redirect(url_for("pages.compare_page", comparison_id=comparison["id"]), code=303)


@bp.get("/api/v1/comparisons/<id:comparison_id>")
def read(comparison_id):
    service = get_service()
    return jsonify(service.comparison_view(service.comparison_or_404(comparison_id)))


bp.add_url_rule("/compare", "compare_form", create, methods=["POST"])  # the page's address, then the API's
bp.add_url_rule("/api/v1/comparisons", "create", create, methods=["POST"])
