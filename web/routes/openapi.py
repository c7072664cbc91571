"""The JSON API's contract: an OpenAPI 3.1 document for ``/api/v1``, built from this app's own settings (limits,
models, choices), served at ``/api/v1/openapi.json``, validated and fuzzed by the tests (tests/test_openapi.py).

The document describes what the views do; when a view changes, this changes with it (the schemathesis run in the
slow tier fails otherwise).
"""

from __future__ import annotations

import re
import struct

from converter import KNOWN_MODELS, OUTPUTS, VIDEO_OUTPUTS, VideoOptions
from converter.service_api import (
    ANAGLYPH_METHODS,
    DECIMAL_GRAMMAR,
    DEPTH_KIND_CHOICES,
    DETAIL_LEVELS,
    FOCAL_PX_RANGE,
    MODES,
    UP_AXES,
    WHOLE_GRAMMAR,
)

from ..deletion import TOKEN_HEADER
from ..jobs.conversion import offered_kinds
from ..intake.forms import FLAG_WORDS
from ..intake.job_request import JobRequest
from ..jobs.video import VIDEO_MEDIA_TYPES



def _example_picture() -> str:
    """A 4 × 4 24-bit BMP whose every byte is ASCII, so that the JSON document carries it exactly: the example
    image of the upload fields (fuzzers send it as it is; a real image lets them follow the links to the views)."""
    pixels = bytes((16 * row + 3 * column + channel) & 0x7F for row in range(4) for column in range(4)
                   for channel in range(3))
    header = b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, 4, 4, 1, 24, 0, len(pixels), 0, 0, 0, 0)
    return (header + pixels).decode("ascii")


EXAMPLE_PICTURE = _example_picture()
JOB_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "A uuid4 in hex, as the server made it."}
ERRORS = {
    400: "A field is wrong or missing; the sentence says which and what is allowed.",
    403: "Not yours to delete: the request carries no delete token, or another one than the creator was given.",
    404: "There is no such thing (results expire after a while).",
    410: "It existed but has expired and was deleted.",
    409: "The job (or a job of the batch) is still converting: ask again when it is done (Retry-After says when "
         "to look again); or it failed, so it has no result (code 'failed', with the reason).",
    413: "A limit was hit (upload size, form parts or a text field, files in a batch, a zip's unpacked size, "
         "its number of entries; a video's size, pixels a frame, declared length or frames); the sentence names the "
         "limit (and, in a batch, the part).",
    415: "A file is not an image in a supported format nor a video this server reads (by content, never by name), "
         "a video holds no pictures (sound only), or a zip holds a video.",
    422: "An image or a video is damaged or incomplete, an image has too many pixels or too few (under 2 a side), "
         "a job needs more memory than the server has for conversions (JOB_MEMORY_MB), or a zip is damaged, empty "
         "or unsafe (a path out of the zip, a link, an encrypted entry); the sentence names the image, the video or "
         "the zip's entry.",
    503: "The model is unavailable, the queue is full, or preparing a download failed (then ask again); "
         "Retry-After says when.",
    507: "The server could not write the result (its disk is full).",
}
URI_TOO_LONG = {"description": "The request line is longer than the server accepts (gunicorn: 4094 bytes); "
                               "answered by the HTTP server itself, as plain text.",
                "content": {"text/html": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}}}
DELETE_TOKEN = {"type": "string", "minLength": 40,
                "description": "Only in the creating answer: send it as X-Delete-Token to delete what was created "
                               "(the server keeps only its hash)."}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "string", "pattern": "^[0-9]+$"},
                               "description": "Seconds to wait before asking again."}}


def document(config) -> dict:
    """The OpenAPI 3.1 document for this app (its limits and models as configured)."""
    limits = {
        "MAX_UPLOAD_MB": config["MAX_UPLOAD_MB"], "MAX_PIXELS": config["MAX_PIXELS"],
        "MAX_BATCH_IMAGES": config["MAX_BATCH_IMAGES"], "MAX_BATCH_UNPACKED_MB": config["MAX_BATCH_UNPACKED_MB"],
        "MAX_FORM_PARTS": config["MAX_FORM_PARTS"], "MAX_FIELD_KB": config["MAX_FIELD_KB"],
        "RATE_LIMIT": config.get("RATE_LIMIT") or "none",
        "MAX_VIDEO_MB": config["MAX_VIDEO_MB"], "MAX_VIDEO_SECONDS": config["MAX_VIDEO_SECONDS"],
        "MAX_VIDEO_FRAMES": config["MAX_VIDEO_FRAMES"], "MAX_VIDEO_PIXELS": config["MAX_VIDEO_PIXELS"],
    }
    options = _option_fields(config)
    video = _video_fields(config)
    limited = _rate_limited(config)  # every operation that creates something
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Image-to-3D API", "version": "1",
            "description": "Turn one image into a 3D point cloud and mesh, or a video into 3D videos, depth and a "
                           "4D point cloud. Jobs run in the background: create one, "
                           "then poll its status until it is done and fetch its files. Limits of this server: "
                           + ", ".join(f"{name} = {value}" for name, value in limits.items()) + ".",
            "x-limits": limits,
        },
        "paths": {
            "/api/v1/conversions": {"post": {
                "operationId": "createConversion",
                "summary": "Convert one image or one video (several files or a zip: a batch)",
                "description": "The image field takes an image or a video, told apart by content (never by name). "
                               "A video's job reads the video fields (max_fps, start, end, max_frames, stabilise, "
                               "strength, convergence, anaglyph, ply_points, video_formats, with model, fov, "
                               "focal_px and relief) and ignores the image-only ones (an image's job ignores the "
                               "video fields, though a wrong value is a 400 wherever it is sent); a video is checked "
                               "before any job "
                               f"exists: at most {config['MAX_VIDEO_MB']:g} MB (MAX_VIDEO_MB), "
                               f"{config['MAX_VIDEO_PIXELS']:,} pixels a frame, a declared length of at most "
                               f"{config['MAX_VIDEO_SECONDS']:g} s and {config['MAX_VIDEO_FRAMES']:,} frames to "
                               "convert (413), a video container with a picture track (415), readable (422). A video "
                               "damaged further on fails its job with a sentence (status failed, error).",
                "requestBody": _form({"image": _file("The image or video (or, several times, or as a zip of "
                                                     "images: a batch).", EXAMPLE_PICTURE),
                                      "depth": _file("Optional depth map (PNG/TIFF/.npy) to use instead of the "
                                                     "model (images only)."),
                                      **options, **video}, required=["image"]),
                "responses": {"202": _accepted({"anyOf": [_ref("JobCreated"), _ref("Batch")]},
                                               {**JOB_LINKS, **DELETE_LINKS["conversion"],
                                                **{name: BATCH_LINKS[name] for name in ("getBatch", "downloadBatch")}}),
                              **_errors(400, 413, 415, 422, 503, 507), **limited},
            }},
            "/api/v1/conversions/{job_id}": {"get": {
                "operationId": "getConversion", "summary": "A job's status, progress, files and result",
                "parameters": [_path("job_id")],
                "responses": {"200": _json(_ref("Job"), "The job.", links=_links_from_body(JOB_LINKS, "getConversion")),
                              **_errors(404, 410)},
            }, "delete": _delete("deleteConversion", "job_id", "the conversion: its upload and every file made from it "
                                 "(a queued job never runs, a running one stops at its next stage)")},
            "/api/v1/conversions/{job_id}/cancel": {"post": {
                "operationId": "cancelConversion",
                "summary": "Stop a queued or running conversion (a video stops at its next frame); nothing of its "
                           "work is kept and its status becomes cancelled",
                "parameters": [_path("job_id"), _token_header()],
                "responses": {"200": _json(_ref("Job"), "The job, cancelled or stopping."),
                              **_errors(400, 403, 404, 409, 410, 413)},
            }},
            "/api/v1/conversions/{job_id}/rebuild": {"post": {
                "operationId": "rebuildConversion",
                "summary": "A new job from a finished job's kept image and depth, with new geometry options (no "
                           "model run)",
                "parameters": [_path("job_id")],
                "requestBody": _form({name: field for name, field in options.items()
                                       if name not in ("model", "align_to")}),
                "responses": {"202": _accepted(_ref("JobCreated"), {**JOB_LINKS, **DELETE_LINKS["conversion"]}),
                              **_errors(400, 404, 409, 410, 413, 503, 507), **limited},
            }},
            "/api/v1/conversions/{job_id}/files/{kind}": {"get": {
                "operationId": "getConversionFile",
                "summary": "One of a finished job's files (the same as its files' addresses under /jobs, with JSON "
                           "answers); one not written yet is prepared first: 202 with Retry-After, then the file",
                "parameters": [_path("job_id"), {"name": "kind", "in": "path", "required": True,
                                                 "schema": {"type": "string", "enum": list(dict.fromkeys(
                                                     list(OUTPUTS) + list(VIDEO_OUTPUTS)))},
                                                 "description": "A download kind (the job's files list those it "
                                                                "offers)."}],
                "responses": {"200": _download_body(), "202": _preparing(), **_errors(404, 409, 410, 503)},
            }},
            "/api/v1/batches": {"post": {
                "operationId": "createBatch",
                "summary": "Several images or videos, or a zip of images: one job each, accepted whole or not at "
                           "all",
                "description": "Each part is told by its content: an image's job takes the image fields, a video's "
                               "job the video fields (as createConversion's). Every video is received and checked "
                               "as a single video upload is before any job exists; a refused part refuses the whole "
                               "batch, its sentence naming the part ('Video 2 of the batch: ...'). Videos count "
                               "against the batch's files; a zip holds images only (a video inside one is a 415 "
                               f"naming the entry). The images together take at most {config['MAX_UPLOAD_MB']} MB, "
                               f"the whole request at most {max(config['MAX_UPLOAD_MB'], config['MAX_VIDEO_MB']):g} "
                               "MB.",
                "requestBody": _form({
                    "images": {"anyOf": [{"type": "array", "items": _file("An image or a video.", EXAMPLE_PICTURE)},
                                         _file("One image or video.", EXAMPLE_PICTURE)],
                               "description": f"Repeated: at most {config['MAX_BATCH_IMAGES']} files, videos included "
                                              "(413 beyond: a limit of this server, like the upload size)."},
                    "zip": _file(f"A zip of images (stored, deflate, bzip2 or lzma), at most "
                                 f"{config['MAX_BATCH_IMAGES']} files and {config['MAX_BATCH_UNPACKED_MB']} MB "
                                 "unpacked; folders, hidden files and __MACOSX are skipped; no videos."),
                    **options, **video}),
                "responses": {"202": _accepted(_ref("Batch"), {**BATCH_LINKS, **DELETE_LINKS["batch"]}),
                              **_errors(400, 413, 415, 422, 503, 507), **limited},
            }},
            "/api/v1/batches/{batch_id}": {"get": {
                "operationId": "getBatch", "summary": "A batch's jobs, in upload order",
                "parameters": [_path("batch_id")],
                "responses": {"200": _json(_ref("Batch"), "The batch.",
                                           links=_links_from_body(BATCH_LINKS, "getBatch")),
                              **_errors(404, 410)},
            }, "delete": _delete("deleteBatch", "batch_id", "the batch, every job of it and its zips")},
            "/api/v1/batches/{batch_id}/download": {"get": {
                "operationId": "downloadBatch",
                "summary": "One zip of every job's files once every job has finished (a failed job gives its "
                           "error.txt; a video's job every file it made: NN/video_LRF_Full_SBS.mp4, NN/video.json, "
                           "...); prepared first: 202 with Retry-After, then the zip",
                "parameters": [_path("batch_id"), {
                    "name": "formats", "in": "query", "required": False,
                    "schema": {"type": "string"},
                    "description": "Comma-separated kinds of the image jobs, a set (default ply,glb,json): "
                                   + ", ".join(offered_kinds(JobRequest(mesh=True)))
                                   + ". A video's job always gives every file it made."}],
                "responses": {"200": {"description": "The zip.",
                                      "content": {"application/zip": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}},
                              "202": _preparing(), **_errors(400, 404, 409, 410, 503)},
            }},
            "/api/v1/comparisons": {"post": {
                "operationId": "createComparison", "summary": "One image converted by two models, side by side",
                "requestBody": _form({"image": _file("The image.", EXAMPLE_PICTURE),
                                      "model_a": _choice(config["MODELS"], "The first model (default: model)."),
                                      "model_b": _choice(config["MODELS"], "The second model.", blank=False),
                                      **options}, required=["image", "model_b"]),
                "responses": {"202": _accepted(_ref("Comparison"), {**COMPARISON_LINKS, **DELETE_LINKS["comparison"]}),
                              **_errors(400, 413, 415, 422, 503, 507), **limited},
            }},
            "/api/v1/comparisons/{comparison_id}": {"get": {
                "operationId": "getComparison", "summary": "A comparison's two jobs",
                "parameters": [_path("comparison_id")],
                "responses": {"200": _json(_ref("Comparison"), "The comparison.",
                                           links=_links_from_body(COMPARISON_LINKS, "getComparison")),
                              **_errors(404, 410)},
            }, "delete": _delete("deleteComparison", "comparison_id", "the comparison and both of its jobs")},
            "/api/v1/openapi.json": {"get": {
                "operationId": "getOpenApi", "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "The OpenAPI document.")},
            }},
        },
        "components": {"schemas": _schemas()},
    }


def _option_fields(config) -> dict:
    """The conversion options as form fields. A blank field means "automatic" (the page's form sends blanks), so
    every one also takes the empty string; numbers are written in ASCII digits (converter.service_api.parse_number)."""
    flag = _choice([word for word in FLAG_WORDS if word], "", any_case=True)
    metric_models = [model for model in config["MODELS"]
                     if model not in KNOWN_MODELS or KNOWN_MODELS[model].metric]  # what align_to takes
    return {
        "model": _choice(config["MODELS"], "Depth model (default: the server's)."),
        "detail": _choice(list(DETAIL_LEVELS), "Output density; or max_points.", any_case=True),
        "max_points": _number("Points wanted, 0 = every pixel.", type="integer", minimum=0),
        "fov": _number("Horizontal field of view, degrees.", minimum=1, maximum=179),
        "focal_px": _number("Focal length in pixels.", minimum=FOCAL_PX_RANGE[0], maximum=FOCAL_PX_RANGE[1]),
        "relief": _number("Depth range of relative models.", exclusiveMinimum=0, maximum=100),
        "drop_background": _number("Also drop the farthest N % of pixels.", minimum=0, exclusiveMaximum=100),
        "mode": _choice(list(MODES), "perspective (a photo) or relief (drawings, logos).", any_case=True),
        "clean": {**flag, "description": "Drop flying pixels on depth edges (blank: off)."},
        "paper_background": {**flag, "description": "Make white paper around a drawing transparent (blank: off)."},
        "mesh": {**flag, "description": "Also offer the mesh downloads (blank: off)."},
        "stl_width_mm": _number("Width of the printable relief in millimetres.", minimum=1, maximum=2000),
        "simplify": {"anyOf": [_choice(["low", "medium", "high"], "", any_case=True),
                               {"type": "integer", "minimum": 4}],
                     "description": "low, medium, high or a triangle count (at least 4), for the simplified mesh."},
        "up": _choice(list(UP_AXES), "Which axis is up in the .ply and .pcd files: "
                      + "; ".join(f"{name}: {what}" for name, what in UP_AXES.items())
                      + " (.las is always z up, .glb/.obj/.usdz y up, .stl z up). A rebuild keeps the job's.",
                      any_case=True),
        "known_length": {"type": "string",
                         "pattern": rf"^\s*$|^[\s,]*{DECIMAL_GRAMMAR}([\s,]+{DECIMAL_GRAMMAR}){{4}}[\s,]*$",
                         "description": "X1 Y1 X2 Y2 METRES (spaces or commas): two pixels and the real distance "
                                        "between their surface points (the two pixels different, the distance "
                                        "above 0)."},
        "depth_kind": _choice(list(DEPTH_KIND_CHOICES), "What a depth file holds.", any_case=True),
        "align_to": _choice(metric_models, "A metric model to fit the depth model's relative depth to: metres with "
                                           "the relative model's detail (the depth model must differ)."),
    }


def _video_fields(config) -> dict:
    """A video's own fields (web.intake.forms.parse_video_request; converter.video.VideoOptions checks them): blank
    means the default; an image's job ignores them."""
    defaults = VideoOptions()
    flag = _choice([word for word in FLAG_WORDS if word], "", any_case=True)
    kinds = "|".join(_any_case(name) for name in VIDEO_OUTPUTS)
    return {
        "max_fps": _number(f"A video: keep frames at most this often, per second (default {defaults.max_fps:g}; 0: "
                           "every frame).", minimum=0, maximum=240),
        "start": _number("A video: the second to start at (default 0).", minimum=0),
        "end": _number("A video: the second to end at, after start (default: its end).", exclusiveMinimum=0),
        "max_frames": _number(f"A video: at most this many frames (default and at most "
                              f"{config['MAX_VIDEO_FRAMES']:,}, MAX_VIDEO_FRAMES).", type="integer", minimum=1),
        "stabilise": {**flag, "description": "A video: steady the depth from frame to frame (default: on)."},
        "strength": _number(f"A video: the stereo disparity, a fraction of the width (default "
                            f"{defaults.strength:g}).", minimum=0, maximum=0.2),
        "convergence": _number(f"A video: what lands on the screen plane, 0 the far plane to 1 the near plane "
                               f"(default {defaults.convergence:g}).",
                               minimum=0, maximum=1),
        "anaglyph": _choice(list(ANAGLYPH_METHODS), f"A video: the anaglyph's colour method (default "
                                                    f"{defaults.anaglyph}).", any_case=True),
        "ply_points": _number(f"A video: points per frame of the 4D point cloud (default {defaults.ply_points:,}).",
                              type="integer", minimum=16, maximum=5_000_000),
        "video_formats": {"type": "string", "pattern": rf"^\s*$|^[\s,]*({kinds})(\s*,[\s,]*({kinds}))*[\s,]*$",
                          "examples": ["sbs_full,json"],
                          "description": "A video: the outputs, comma-separated (default: all; json is always "
                                         "made): " + "; ".join(f"{kind.name}: {kind.label}"
                                                               for kind in VIDEO_OUTPUTS.values()) + "."},
    }


def _schemas() -> dict:
    url = {"type": "string"}
    nullable_string = {"type": ["string", "null"]}
    kinds = list(dict.fromkeys(offered_kinds(JobRequest(mesh=True)) + list(VIDEO_OUTPUTS)))
    job = {
        "type": "object",
        "required": ["id", "status", "stage", "progress", "error", "code", "queue_position", "files", "result_url",
                     "status_url", "rebuild_url"],
        "properties": {
            "id": JOB_ID, "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
            "stage": {"type": "string"}, "progress": {"type": "number", "minimum": 0, "maximum": 1},
            "error": nullable_string, "code": nullable_string,
            "queue_position": {"type": ["integer", "null"], "minimum": 1,
                               "description": "While the job waits: 1 for the next job to start. Clients take "
                                              "turns, so it can grow as other clients' jobs arrive."},
            "files": {"type": "object", "propertyNames": {"enum": kinds},
                      "additionalProperties": url,
                      "description": "Every download the job offers. One not written yet answers 202 (Retry-After, "
                                     "JSON) while an export task prepares it, then the file."},
            "sizes": {"type": "object", "propertyNames": {"enum": kinds},
                      "additionalProperties": {"type": "integer", "minimum": 0},
                      "description": "Bytes of each download already written."},
            "result_url": url, "status_url": url, "rebuild_url": url,
            "memory_estimate_mb": {"type": ["integer", "null"], "minimum": 0,
                                   "description": "The conversion's estimated peak memory over the loaded model, MB "
                                                  "(it runs only while the running jobs' estimates fit JOB_MEMORY_MB; "
                                                  "null: not estimated)."},
            "info": {"type": "object", "description": "The job's result.json (present when done)."},
            "kind": {"const": "video", "description": "Present for a video's job."},
            "cancel_url": {**url, "description": "A video's job: POST here (with the delete token) to stop it."},
            "cancel_requested": {"type": "boolean", "description": "A video's job: asked to stop and not stopped yet "
                                                                  "(it stops at its next frame)."},
            "video": {"type": ["object", "null"], "description": "A running video's progress (null until its first "
                                                                 "frame): phase, frames done, frames expected, frames "
                                                                 "per second, seconds left.",
                      "properties": {"phase": {"type": "string"}, "frames": {"type": "integer", "minimum": 0},
                                     "expected": {"type": ["integer", "null"]}, "fps": {"type": "number"},
                                     "seconds_left": {"type": ["number", "null"]}}},
        },
    }
    expired = {"type": "object", "required": ["id", "status"],
               "properties": {"id": JOB_ID, "status": {"const": "expired"}}, "additionalProperties": False}
    return {
        "Error": {"type": "object", "required": ["error", "code"], "additionalProperties": False,
                  "properties": {"error": {"type": "string", "description": "A sentence for people."},
                                 "code": {"type": "string", "description": "For scripts."}}},
        "JobCreated": {"type": "object", "required": ["id", "status_url", "delete_token"],
                       "properties": {"id": JOB_ID, "status_url": url, "delete_token": DELETE_TOKEN}},
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
                "delete_token": DELETE_TOKEN,
            },
        },
        "Comparison": {"type": "object", "required": ["id", "url", "models", "job_ids", "jobs"],
                       "properties": {"id": JOB_ID, "url": url, "models": {"type": "array", "items": url},
                                      "job_ids": {"type": "array", "items": JOB_ID},
                                      "jobs": {"type": "array", "items": url}, "delete_token": DELETE_TOKEN}},
        "Preparing": {"type": "object", "required": ["status", "progress", "retry_after", "url", "message"],
                      "properties": {"status": {"const": "preparing"}, "stage": {"type": "string"},
                                     "progress": {"type": ["string", "number", "null"]},
                                     "retry_after": {"type": "integer", "minimum": 1}, "url": url,
                                     "message": {"type": "string"}}},
    }


def _delete(operation: str, id_name: str, what: str) -> dict:
    """DELETE of a resource, with the delete token its creator was given (web.deletion)."""
    return {
        "operationId": operation, "summary": f"Delete {what}, now",
        "parameters": [_path(id_name), _token_header()],
        "responses": {"204": {"description": "Deleted: every link of it now answers 404."},
                      **_errors(403, 404)},
    }


def _token_header() -> dict:
    return {"name": TOKEN_HEADER, "in": "header", "required": False, "schema": {"type": "string"},
            "description": "The delete_token the creating request answered with (a browser that created it sends "
                           "its cookie instead). Never put it in a URL."}


def _form(properties: dict, required: list[str] | None = None) -> dict:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


def _file(description: str, example: str | None = None) -> dict:
    schema = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
              "description": description}
    if example is not None:
        schema["examples"] = [example]
    return schema


def _choice(choices, description: str, any_case: bool = False, blank: bool = True) -> dict:
    """One of ``choices`` (``any_case``: in any letter case), blanks around it ignored, or blank: exactly what the
    server takes, as a pattern (an enum would call " relief" invalid, which the server reads as relief)."""
    alternatives = "|".join(_any_case(choice) if any_case else re.escape(choice) for choice in choices)
    optional = "?" if blank else ""
    field = {"type": "string", "pattern": rf"^\s*({alternatives}){optional}\s*$", "examples": list(choices)}
    if description:
        field["description"] = description
    return field


def _any_case(choice: str) -> str:
    """A pattern for ``choice`` in any letter case."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.upper() != c.lower() else re.escape(c) for c in choice)


def _number(description: str, type: str = "number", **bounds) -> dict:
    """A number in a form field: within the bounds the server checks, or any text the server reads as a number
    (converter.service_api.parse_number's grammar; out of bounds that is a 400 naming the field), or blank."""
    grammar = WHOLE_GRAMMAR if type == "integer" else DECIMAL_GRAMMAR
    text = {"type": "string", "pattern": rf"^[ \t\r\n]*({grammar})?[ \t\r\n]*$"}
    return {"anyOf": [{"type": type, **bounds}, text], "description": description}


def _path(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": JOB_ID}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str, headers: dict | None = None, links: dict | None = None) -> dict:
    response = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    if links:
        response["links"] = links
    return response


def _accepted(schema: dict, links: dict | None = None) -> dict:
    return _json(schema, "Accepted: the work runs in the background; Location is where to follow it.",
                 {"Location": {"required": True, "schema": {"type": "string"}}}, links)


def _preparing() -> dict:
    return _json(_ref("Preparing"), "Accepted: the file is being prepared (an export task); ask the same address "
                                    "again after Retry-After seconds.",
                 {"Retry-After": {**RETRY_AFTER["Retry-After"], "required": True}})


def _download_body() -> dict:
    """A file, in its kind's media type (converter.OUTPUTS)."""
    types = sorted({kind.media_type for kind in OUTPUTS.values()} | set(VIDEO_MEDIA_TYPES.values()))
    binary = {"type": "string", "format": "binary"}
    return {"description": "The file, as an attachment (previews inline).",
            "content": {media_type: {"schema": {"type": "object"} if media_type == "application/json" else binary}
                        for media_type in types}}


def _rate_limited(config) -> dict:
    """The 429 of the operations that create something, while this server has a RATE_LIMIT (none without)."""
    limit = (config.get("RATE_LIMIT") or "").strip()
    if not limit:
        return {}
    at_most = " and ".join(part.strip() for part in limit.split(";") if part.strip())
    return {"429": _json(_ref("Error"), f"Too many requests from this client: this server takes at most {at_most} "
                                        "conversions, rebuilds, batches and comparisons together from one client "
                                        "(its address; behind a trusted proxy, the address the proxy names). "
                                        "Retry-After says when the next is taken.",
                         {"Retry-After": {**RETRY_AFTER["Retry-After"], "required": True}})}


def _errors(*statuses: int) -> dict:
    """Each status's Error body, with every status a request to this server can also meet: 414 (a too-long address,
    from the HTTP server), 503 and 409 with Retry-After."""
    responses = {}
    for status in statuses:
        headers = RETRY_AFTER if status in (409, 503) else None
        responses[str(status)] = _json(_ref("Error"), ERRORS[status], headers)
    responses["414"] = URI_TOO_LONG
    return responses


def _link(operation: str, expression: str) -> dict:
    """An OpenAPI link to ``operation``, its id parameter taken from the response: {name: expression} (and, to a
    delete, the delete token from the creating response's body)."""
    parameters = {_ID_PARAMETER[operation]: expression}
    if operation.startswith(("delete", "cancel")):
        parameters[f"header.{TOKEN_HEADER}"] = "$response.body#/delete_token"
    return {"operationId": operation, "parameters": parameters}


_ID_PARAMETER = {"getConversion": "job_id", "rebuildConversion": "job_id", "getConversionFile": "job_id",
                 "getBatch": "batch_id", "downloadBatch": "batch_id", "getComparison": "comparison_id",
                 "deleteConversion": "job_id", "cancelConversion": "job_id", "deleteBatch": "batch_id", "deleteComparison": "comparison_id"}
# From each creating operation to every operation that takes the id it made (stateful testing follows them).
JOB_LINKS = {name: _link(name, "$response.body#/id")
             for name in ("getConversion", "rebuildConversion", "getConversionFile")}
BATCH_LINKS = {"getBatch": _link("getBatch", "$response.body#/id"),
               "downloadBatch": _link("downloadBatch", "$response.body#/id"),
               "getBatchJob": _link("getConversion", "$response.body#/job_ids/0")}
COMPARISON_LINKS = {"getComparison": _link("getComparison", "$response.body#/id"),
                    "getFirstJob": _link("getConversion", "$response.body#/job_ids/0"),
                    "getSecondJob": _link("getConversion", "$response.body#/job_ids/1")}


# Only the creating response has the token: the delete links leave from there.
DELETE_LINKS = {"conversion": {"deleteConversion": _link("deleteConversion", "$response.body#/id"),
                               "cancelConversion": _link("cancelConversion", "$response.body#/id")},
                "batch": {"deleteBatch": _link("deleteBatch", "$response.body#/id")},
                "comparison": {"deleteComparison": _link("deleteComparison", "$response.body#/id")}}


def _links_from_body(links: dict, leaving_out: str) -> dict:
    """The same links from a view of the thing (its own view left out)."""
    return {name: link for name, link in links.items() if name != leaving_out}
