"""Errors as people and scripts see them, and the headers every response carries.

An error is an HTML page or, for the API and for clients that ask for JSON, ``{"error": ..., "code": ...}``; never a
traceback, a server path or a library's message.
"""

from __future__ import annotations

from flask import Flask, current_app, jsonify, render_template, request
from flask_limiter import RateLimitExceeded
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from converter import (
    ConversionError,
    DamagedImageError,
    DamagedVideoError,
    ImageTooLargeError,
    ImageTooSmallError,
    ModelUnavailableError,
    OutputError,
    UnsupportedImageError,
    UnsupportedVideoError,
    VideoTooLargeError,
)

from .. import metrics
from ..intake import rate_limits
from ..intake.video_upload import check_upload_size
from ..jobs.backend import QueueFullError
from ..user_error import BUSY, BUSY_RETRY_SECONDS, UserError

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; media-src 'self' blob:; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# The job page's viewer draws Gaussian splats with Spark (static/vendor/spark), which sorts them in WebAssembly:
# that page alone may compile WebAssembly ('wasm-unsafe-eval' allows WebAssembly.compile, not JavaScript eval).
VIEWER_CSP = SECURITY_HEADERS["Content-Security-Policy"].replace(
    "script-src 'self';", "script-src 'self' 'wasm-unsafe-eval';", 1)
STATUS_FOR_ERROR = {
    UnsupportedImageError: 415,
    DamagedImageError: 422,
    ImageTooLargeError: 422,
    ImageTooSmallError: 422,
    ModelUnavailableError: 503,
    OutputError: 507,
    UnsupportedVideoError: 415,
    DamagedVideoError: 422,
    VideoTooLargeError: 413,
}
HTTP_MESSAGES = {404: "There is nothing here. Results expire after a while; convert the image again.",
                 405: "That is not how this address is used.", 400: "The request could not be understood."}
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


def wants_json() -> bool:
    """The API and status paths answer JSON; elsewhere, whatever the client prefers (HTML unless it asks)."""
    if request.path.startswith("/api/") or request.path.endswith("/status"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def wants_html() -> bool:
    """A browser (it names text/html); a script sending ``*/*`` or asking for JSON gets JSON."""
    return not wants_json() and any(value == "text/html" for value, _ in request.accept_mimetypes)


def error_response(status_code: int, code: str, message: str, headers: dict | None = None):
    if request.method == "POST":
        metrics.UPLOADS_REFUSED.labels(reason=code).inc()
    if wants_json():
        response = jsonify({"error": message, "code": code})
    else:  # the page's context (web.service.page_context) comes from the app's context processor
        response = current_app.make_response(render_template("error.html", message=message, status=status_code))
    response.status_code = status_code
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def allow_webassembly(response):
    """Give one response (the job page, which runs the splat viewer) the CSP that also lets it compile WebAssembly."""
    response.headers["Content-Security-Policy"] = VIEWER_CSP
    return response


def init_app(app: Flask) -> None:
    """Register the error handlers and the security headers."""

    @app.after_request
    def security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(UserError)
    def user_error(error):
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
        return error_response(error.status, error.code, error.message, headers)

    @app.errorhandler(RateLimitExceeded)
    def rate_limited(error):
        """A client over its RATE_LIMIT (web.intake.rate_limits): 429 with Retry-After and the sentence."""
        return user_error(rate_limits.refusal(error))

    @app.errorhandler(QueueFullError)
    def queue_full(error):
        """No room in the queue (or no queue at all, with Celery): try again later."""
        return error_response(503, "busy", BUSY, {"Retry-After": str(BUSY_RETRY_SECONDS)})

    @app.errorhandler(ConversionError)
    def conversion_error(error):
        status = next((code for kind, code in STATUS_FOR_ERROR.items() if isinstance(error, kind)), 400)
        return error_response(status, error.code, error.message)

    @app.before_request
    def form_field_limit():
        """A text field over MAX_FIELD_KB is a 413 naming the field (Werkzeug's own cap is higher: see create_app)."""
        if request.method != "POST" or request.mimetype not in FORM_TYPES:
            return
        limit_kb = app.config["MAX_FIELD_KB"]
        boundary = request.mimetype_params.get("boundary", "")
        if not request.form and not request.files and (request.content_length or 0) > len(boundary) + 8:
            # Bytes but not one named part (an empty form is just "--boundary--"): not a form at all.
            raise UserError(400, "unreadable_form", "The form could not be read: send multipart/form-data (or a "
                                                    "urlencoded form) with named fields.")
        check_upload_size(request.files, app.config["MAX_UPLOAD_MB"])
        for name, value in request.form.items(multi=True):
            if len(value) > limit_kb * 1024:
                shown = "".join(character for character in name[:40] if character.isprintable())
                raise UserError(413, "field_too_large", f"The form field '{shown}' is too long: the limit is "
                                                        f"{limit_kb} kB per text field.")

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error):
        length, limit = request.content_length, app.config["MAX_UPLOAD_MB"]
        video_limit = app.config["MAX_VIDEO_MB"]
        if length is None or length > app.config["MAX_CONTENT_LENGTH"]:
            return error_response(413, "too_large", f"The upload is too large: the limit is {limit:g} MB for an "
                                                    f"image and {video_limit:g} MB for a video.")
        return error_response(413, "form_too_large", f"The form has too many parts or too long a field: the limits "
                                                     f"are {app.config['MAX_FORM_PARTS']} parts and "
                                                     f"{app.config['MAX_FIELD_KB']} kB per text field.")

    @app.errorhandler(HTTPException)
    def http_error(error):
        message = HTTP_MESSAGES.get(error.code, error.name)
        allow = {name: value for name, value in error.get_headers() if name == "Allow"}  # RFC 9110: every 405
        return error_response(error.code or 500, error.name.lower().replace(" ", "_"), message, allow)

    @app.errorhandler(Exception)
    def internal_error(error):
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "Something went wrong on our side. Please try again.")
