"""Image-to-3D web app: upload an image, follow the conversion, view and download the 3D result.

``create_app`` only configures and wires: the routes live in blueprints (web/routes/: pages, api, batches,
comparisons), the resources and their threads in web.service, errors in web.routes.errors; the converter package
does the work. Nothing here imports torch or open3d.
"""

from __future__ import annotations

import logging
import os

from flask import Flask

from converter import KNOWN_MODELS
from web import service, settings
from web.intake import client, rate_limits
from web.intake.spool import SpoolingRequest
from web.jobs.store import IdConverter
from web.routes import api, batches, comparisons, deletes, errors, pages


FORM_PART_HEADER_BYTES = 1024  # a part's boundary line and headers (its name, a file name, a type), generously


def create_app(test_config: dict | None = None) -> Flask:
    """Configure and wire the app. ``test_config`` overrides the defaults read from the environment."""
    app = Flask(__name__)
    app.request_class = SpoolingRequest  # a large upload waits in UPLOAD_FOLDER while it is read
    app.config.from_mapping(
        **settings.from_env(),
        MAX_FORM_PARTS=50,  # a batch's images plus the option fields
        # Werkzeug checks this against its multipart read buffer too (file data arrives in 64 kB chunks), so it
        # must stay well above the chunk size: Flask's default. Text fields are a few bytes each.
        MAX_FORM_MEMORY_SIZE=500_000,
        MAX_FIELD_KB=64,  # the real cap on a text field, checked by web.routes.errors (a 413 naming the field)
    )
    if test_config:
        app.config.update(test_config)
    config = app.config
    # The larger of an image's and a video's limit, plus room for the form around the file (its text fields, at most
    # MAX_FORM_MEMORY_SIZE together, and each part's boundary and headers): a file exactly at its limit is taken. An
    # image over MAX_UPLOAD_MB is refused once it is told apart, a video over MAX_VIDEO_MB while it is received.
    form_bytes = config["MAX_FORM_MEMORY_SIZE"] + config["MAX_FORM_PARTS"] * FORM_PART_HEADER_BYTES
    config["MAX_CONTENT_LENGTH"] = int(max(config["MAX_UPLOAD_MB"], config["MAX_VIDEO_MB"]) * 1024 * 1024) + form_bytes
    config["TRUSTED_PROXY_NETWORKS"] = client.parse_proxies(config["TRUSTED_PROXIES"])
    config["MODELS"] = config["MODELS"] or [config["DEPTH_MODEL"]] + [
        hub_id for hub_id in KNOWN_MODELS if hub_id != config["DEPTH_MODEL"]]
    os.makedirs(config["OUTPUT_FOLDER"], exist_ok=True)
    os.makedirs(config["UPLOAD_FOLDER"], exist_ok=True)
    logging.basicConfig(level=logging.INFO)

    # Ids are checked by the route itself (any non-id is a 404), and a path is never "repaired" by a redirect:
    # ``/jobs/..%2F/files/x`` would otherwise be answered 308 to a merged path.
    app.url_map.converters["id"] = IdConverter
    app.url_map.merge_slashes = False
    rate_limits.init_app(app)  # first: its check runs before any other, before the form is read
    errors.init_app(app)
    for blueprint in (pages.bp, api.bp, comparisons.bp, batches.bp, deletes.bp):
        app.register_blueprint(blueprint)
    service.init_app(app)
    return app
