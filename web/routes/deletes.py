"""Delete now: the API's DELETE on a conversion, a batch or a comparison (its delete token in X-Delete-Token), and
the pages' "Delete now" (a confirmation page, then a POST carrying the creating browser's cookie). web.deletion does
the work; here are the addresses and the answers: 204, or 403/404 with a sentence."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, url_for

from ..deletion import forget_cookie
from ..service import get_service

bp = Blueprint("deletes", __name__)

# kind → (Deletion method, the page whose path scopes the cookie, what a person calls it)
KINDS = {
    "conversion": ("job", "pages.job_page", "job_id", "this conversion"),
    "batch": ("batch", "batches.batch_page", "batch_id", "this batch and every conversion in it"),
    "comparison": ("comparison", "pages.compare_page", "comparison_id", "this comparison and both of its conversions"),
}


def _delete(kind: str, resource_id: str) -> None:
    method = KINDS[kind][0]
    getattr(get_service().deletion, method)(resource_id)


def api_delete(kind: str):
    def view(**ids):
        _delete(kind, next(iter(ids.values())))
        return "", 204, {"Cache-Control": "no-store"}
    return view


def confirm_page(kind: str):
    def view(**ids):
        _, endpoint, name, what = KINDS[kind]
        return render_template("delete.html", what=what, back=url_for(endpoint, **ids),
                               action=url_for(f"deletes.{kind}_delete_form", **ids))
    return view


def form_delete(kind: str):
    def view(**ids):
        _, endpoint, _, _ = KINDS[kind]
        _delete(kind, next(iter(ids.values())))
        response = redirect(url_for("deletes.deleted"), code=303)
        return forget_cookie(response, url_for(endpoint, **ids))
    return view


for kind, api_path, page_path in (("conversion", "/api/v1/conversions/<id:job_id>", "/jobs/<id:job_id>"),
                                  ("batch", "/api/v1/batches/<id:batch_id>", "/batches/<id:batch_id>"),
                                  ("comparison", "/api/v1/comparisons/<id:comparison_id>",
                                   "/compare/<id:comparison_id>")):
    bp.add_url_rule(api_path, f"{kind}_delete", api_delete(kind), methods=["DELETE"])
    bp.add_url_rule(page_path + "/delete", f"{kind}_delete_page", confirm_page(kind), methods=["GET"])
    bp.add_url_rule(page_path + "/delete", f"{kind}_delete_form", form_delete(kind), methods=["POST"])


@bp.get("/deleted")
def deleted():
    return render_template("deleted.html")
