"""The JSON API's contract: an OpenAPI 3.1 document for ``/api/v1``, built from this app's own settings (limits,
models, choices), served at ``/api/v1/openapi.json``, validated and fuzzed by the tests (tests/test_openapi.py).

The document describes what the views do; when a view changes, this changes with it (the schemathesis run in the
slow tier fails otherwise).
"""

from __future__ import annotations

from converter import DEPTH_KIND_CHOICES, DETAIL_LEVELS, MODES, UP_AXES

from .conversion import offered_kinds
from .job_request import JobRequest

JOB_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "A uuid4 in hex, as the server made it."}
ERRORS = {
    400: "A field is wrong or missing; the sentence says which and what is allowed.",
    404: "There is no such thing (results expire after a while).",
    410: "It existed but has expired and was deleted.",
    413: "A limit was hit (upload size, form parts or a text field, images in a batch, a zip's unpacked size, "
         "its number of entries); the sentence names the limit.",
    415: "A file is not an image in a supported format (by content, never by name).",
    422: "An image is damaged, has too many pixels or too few (under 2 a side), or a zip is damaged, empty or unsafe (a path out of the "
         "zip, a link, an encrypted entry); the sentence names the image or the zip's entry.",
    503: "The model is unavailable, or the queue is full (then with Retry-After).",
    507: "The server could not write the result (its disk is full).",
}


def document(config) -> dict:
    """The OpenAPI 3.1 document for this app (its limits and models as configured)."""
    limits = {
        "MAX_UPLOAD_MB": config["MAX_UPLOAD_MB"], "MAX_PIXELS": config["MAX_PIXELS"],
        "MAX_BATCH_IMAGES": config["MAX_BATCH_IMAGES"], "MAX_BATCH_UNPACKED_MB": config["MAX_BATCH_UNPACKED_MB"],
        "MAX_FORM_PARTS": config["MAX_FORM_PARTS"], "MAX_FIELD_KB": config["MAX_FIELD_KB"],
    }
    options = _option_fields(config)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Image-to-3D API", "version": "1",
            "description": "Turn one image into a 3D point cloud and mesh. Jobs run in the background: create one, "
                           "then poll its status until it is done and fetch its files. Limits of this server: "
                           + ", ".join(f"{name} = {value}" for name, value in limits.items()) + ".",
            "x-limits": limits,
        },
        "paths": {
            "/api/v1/conversions": {"post": {
                "operationId": "createConversion", "summary": "Convert one image (several images or a zip: a batch)",
                "requestBody": _form({"image": _file("The image (or, several times, or as a zip: a batch)."),
                                      "depth": _file("Optional depth map (PNG/TIFF/.npy) to use instead of the "
                                                     "model."),
                                      **options}, required=["image"]),
                "responses": {"202": _accepted({"anyOf": [_ref("JobCreated"), _ref("Batch")]}),
                              **_errors(400, 413, 415, 422, 503, 507)},
            }},
            "/api/v1/conversions/{job_id}": {"get": {
                "operationId": "getConversion", "summary": "A job's status, progress, files and result",
                "parameters": [_path("job_id")],
                "responses": {"200": _json(_ref("Job"), "The job."), **_errors(404, 410)},
            }},
            "/api/v1/conversions/{job_id}/rebuild": {"post": {
                "operationId": "rebuildConversion",
                "summary": "A new job from a finished job's kept image and depth, with new geometry options (no "
                           "model run)",
                "parameters": [_path("job_id")],
                "requestBody": _form({name: field for name, field in options.items()
                                       if name not in ("model", "align_to")}),
                "responses": {"202": _accepted(_ref("JobCreated")), **_errors(400, 404, 410, 413, 503, 507)},
            }},
            "/api/v1/batches": {"post": {
                "operationId": "createBatch",
                "summary": "Several images, or a zip of images: one job each, accepted whole or not at all",
                "requestBody": _form({
                    "images": {"type": "array", "items": _file("An image."),
                               "maxItems": config["MAX_BATCH_IMAGES"]},
                    "zip": _file(f"A zip of images (stored, deflate, bzip2 or lzma), at most "
                                 f"{config['MAX_BATCH_IMAGES']} files and {config['MAX_BATCH_UNPACKED_MB']} MB "
                                 "unpacked; folders, hidden files and __MACOSX are skipped."),
                    **options}),
                "responses": {"202": _accepted(_ref("Batch")), **_errors(400, 413, 415, 422, 503, 507)},
            }},
            "/api/v1/batches/{batch_id}": {"get": {
                "operationId": "getBatch", "summary": "A batch's jobs, in upload order",
                "parameters": [_path("batch_id")],
                "responses": {"200": _json(_ref("Batch"), "The batch."), **_errors(404, 410)},
            }},
            "/api/v1/comparisons": {"post": {
                "operationId": "createComparison", "summary": "One image converted by two models, side by side",
                "requestBody": _form({"image": _file("The image."),
                                      "model_a": _choice(config["MODELS"], "The first model (default: model)."),
                                      "model_b": _choice(config["MODELS"], "The second model."),
                                      **options}, required=["image", "model_b"]),
                "responses": {"202": _accepted(_ref("Comparison")), **_errors(400, 413, 415, 422, 503, 507)},
            }},
            "/api/v1/comparisons/{comparison_id}": {"get": {
                "operationId": "getComparison", "summary": "A comparison's two jobs",
                "parameters": [_path("comparison_id")],
                "responses": {"200": _json(_ref("Comparison"), "The comparison."), **_errors(404, 410)},
            }},
            "/api/v1/openapi.json": {"get": {
                "operationId": "getOpenApi", "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }},
        },
        "components": {"schemas": _schemas()},
    }


def _option_fields(config) -> dict:
    """The conversion options as form fields (text: blank means automatic)."""
    flag = {"type": "string", "enum": ["true", "false"]}
    return {
        "model": _choice(config["MODELS"], "Depth model (default: the server's)."),
        "detail": _choice(list(DETAIL_LEVELS), "Output density; or max_points."),
        "max_points": {"type": "string", "pattern": r"^[0-9]{1,9}$", "description": "Points wanted, 0 = every "
                                                                                     "pixel."},
        "fov": _number("Horizontal field of view, degrees."),
        "focal_px": _number("Focal length in pixels."),
        "relief": _number("Depth range of relative models."),
        "drop_background": _number("Also drop the farthest N % of pixels."),
        "mode": _choice(list(MODES), "perspective (a photo) or relief (drawings, logos)."),
        "clean": {**flag, "description": "Drop flying pixels on depth edges."},
        "paper_background": {**flag, "description": "Make white paper around a drawing transparent."},
        "mesh": {**flag, "description": "Also offer the mesh downloads."},
        "stl_width_mm": _number("Width of the printable relief, 1–2000 mm."),
        "simplify": {"type": "string", "description": "low, medium, high or a triangle count (at least 4)."},
        "up": _choice(list(UP_AXES), "Which axis is up in the .ply and .pcd files: "
                      + "; ".join(f"{name}: {what}" for name, what in UP_AXES.items())
                      + " (.las is always z up, .glb/.obj/.usdz y up, .stl z up). A rebuild keeps the job's."),
        "known_length": {"type": "string", "description": "X1 Y1 X2 Y2 METRES: two pixels and the real distance "
                                                          "between their surface points."},
        "depth_kind": _choice(list(DEPTH_KIND_CHOICES), "What a depth file holds."),
        "align_to": _choice(config["MODELS"], "A metric model to fit the depth model's relative depth to: metres "
                                              "with the relative model's detail (the depth model must differ)."),
    }


def _schemas() -> dict:
    url = {"type": "string"}
    nullable_string = {"type": ["string", "null"]}
    job = {
        "type": "object",
        "required": ["id", "status", "stage", "progress", "error", "code", "queue_position", "files", "result_url",
                     "status_url", "rebuild_url"],
        "properties": {
            "id": JOB_ID, "status": {"type": "string", "enum": ["queued", "running", "done", "failed"]},
            "stage": {"type": "string"}, "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "error": nullable_string, "code": nullable_string,
            "queue_position": {"type": ["integer", "null"], "minimum": 1},
            "files": {"type": "object", "propertyNames": {"enum": offered_kinds(JobRequest(mesh=True))},
                      "additionalProperties": url,
                      "description": "Every download the job offers. One not written yet answers 202 (Retry-After, "
                                     "JSON) while an export task prepares it, then the file."},
            "sizes": {"type": "object", "propertyNames": {"enum": offered_kinds(JobRequest(mesh=True))},
                      "additionalProperties": {"type": "integer", "minimum": 0},
                      "description": "Bytes of each download already written."},
            "result_url": url, "status_url": url, "rebuild_url": url,
            "info": {"type": "object", "description": "The job's result.json (present when done)."},
        },
    }
    expired = {"type": "object", "required": ["id", "status"],
               "properties": {"id": JOB_ID, "status": {"const": "expired"}}, "additionalProperties": False}
    return {
        "Error": {"type": "object", "required": ["error", "code"], "additionalProperties": False,
                  "properties": {"error": {"type": "string", "description": "A sentence for people."},
                                 "code": {"type": "string", "description": "For scripts."}}},
        "JobCreated": {"type": "object", "required": ["id", "status_url"],
                       "properties": {"id": JOB_ID, "status_url": url}},
        "Job": job,
        "Batch": {
            "type": "object",
            "required": ["id", "url", "status", "job_ids", "jobs", "views", "download_url"],
            "properties": {
                "id": JOB_ID, "url": url, "status": {"type": "string", "enum": ["running", "done"]},
                "job_ids": {"type": "array", "items": JOB_ID}, "jobs": {"type": "array", "items": nullable_string},
                "views": {"type": "array", "items": {"anyOf": [_ref("Job"), expired]}},
                "download_url": {"type": "string", "description": "GET: one zip of every job's files; ?formats= "
                                                                  "a comma-separated set of "
                                                                  + ", ".join(offered_kinds(JobRequest(mesh=True)))},
            },
        },
        "Comparison": {"type": "object", "required": ["id", "url", "models", "jobs"],
                       "properties": {"id": JOB_ID, "url": url, "models": {"type": "array", "items": url},
                                      "jobs": {"type": "array", "items": url}}},
    }


def _form(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _file(description: str) -> dict:
    return {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
            "description": description}


def _choice(choices, description: str) -> dict:
    return {"type": "string", "enum": list(choices), "description": description}


def _number(description: str) -> dict:
    return {"type": "string", "pattern": r"^-?[0-9]{1,6}(\.[0-9]{1,6})?$", "description": description}


def _path(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": JOB_ID}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _accepted(schema: dict) -> dict:
    return _json(schema, "Accepted: the work runs in the background; Location is where to follow it.",
                 {"Location": {"required": True, "schema": {"type": "string"}}})


def _errors(*statuses: int) -> dict:
    responses = {}
    for status in statuses:
        headers = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"},
                                   "description": "Seconds to wait when the queue is full."}} if status == 503 else None
        responses[str(status)] = _json(_ref("Error"), ERRORS[status], headers)
    return responses
