"""The API's contract: /api/v1/openapi.json is a valid OpenAPI 3.1 document that names every route of /api/v1, and
(slow tier) schemathesis fuzzes every operation against real gunicorn: no status >= 500 but 503, every response
matching its schema (FUZZ_EXAMPLES examples per operation and mode, 25 by default; the same examples every run
unless FUZZ_RANDOM=1)."""

from __future__ import annotations

import io
import os
import re
import sys

import pytest
import requests
from conftest import serve
from openapi_spec_validator import validate
from test_batches import pictures


def test_the_document_is_valid_openapi_and_covers_every_api_route(app, client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"].startswith("3.1")
    routes = {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert routes == documented
    limits = document["info"]["x-limits"]
    assert limits["MAX_UPLOAD_MB"] == app.config["MAX_UPLOAD_MB"] and limits["MAX_FIELD_KB"] == 64
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "post" and not path.endswith("/cancel"):  # every POST but cancel creates something
                assert {"400", "413", "429", "503"} <= set(operation["responses"]), (path, method)


def test_the_video_fields_are_described_where_a_video_may_be_sent(client):
    """A video in the image field (createConversion) or among a batch's parts (createBatch) takes the video fields
    (web.intake.forms.VIDEO_FIELDS): each is in both forms, with the server's choices and video limits."""
    from web.intake.forms import VIDEO_FIELDS

    document = client.get("/api/v1/openapi.json").get_json()
    for path in ("/api/v1/conversions", "/api/v1/batches"):
        operation = document["paths"][path]["post"]
        fields = operation["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
        assert set(VIDEO_FIELDS) <= set(fields), (path, set(VIDEO_FIELDS) - set(fields))
        assert "video" in operation["description"]
    fields = document["paths"]["/api/v1/conversions"]["post"]["requestBody"]["content"]["multipart/form-data"][
        "schema"]["properties"]
    formats = re.compile(fields["video_formats"]["pattern"])
    assert all(formats.match(text) for text in ("", "sbs_full", " SBS_full , json,", "tb,anaglyph,ply_sequence"))
    assert not any(formats.match(text) for text in ("sbs", "sbs_full json", "json,exe"))
    assert re.match(fields["anaglyph"]["pattern"], "Dubois") and not re.match(fields["anaglyph"]["pattern"], "red")
    assert {"MAX_VIDEO_MB", "MAX_VIDEO_SECONDS", "MAX_VIDEO_FRAMES", "MAX_VIDEO_PIXELS"} <= set(
        document["info"]["x-limits"])


def test_real_responses_match_their_schemas(client):
    """A few real answers checked against the document with the same validator schemathesis uses."""
    from jsonschema import Draft202012Validator

    document = client.get("/api/v1/openapi.json").get_json()

    def check(body, name):
        schema = {**document["components"]["schemas"][name], "components": document["components"]}  # for $refs
        Draft202012Validator(schema).validate(body)

    created = client.post("/api/v1/batches", data={"images": [(io.BytesIO(data), "a.png") for data in pictures(2)]})
    assert created.status_code == 202
    check(created.get_json(), "Batch")
    missing = client.get("/api/v1/conversions/" + "0" * 32)
    assert missing.status_code == 404
    check(missing.get_json(), "Error")


ID_OPERATIONS = {"GET /api/v1/conversions/{job_id}", "POST /api/v1/conversions/{job_id}/rebuild",
                 "GET /api/v1/conversions/{job_id}/files/{kind}", "GET /api/v1/batches/{batch_id}",
                 "GET /api/v1/batches/{batch_id}/download", "GET /api/v1/comparisons/{comparison_id}",
                 "DELETE /api/v1/conversions/{job_id}", "DELETE /api/v1/batches/{batch_id}",
                 "DELETE /api/v1/comparisons/{comparison_id}", "POST /api/v1/conversions/{job_id}/cancel"}


def test_every_operation_that_takes_an_id_is_reached_by_a_link_from_the_operation_that_makes_it(client):
    document = client.get("/api/v1/openapi.json").get_json()
    operations = {operation["operationId"]: f"{method.upper()} {path}"
                  for path, item in document["paths"].items() for method, operation in item.items()}
    linked = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for response in operation["responses"].values():
                for link in response.get("links", {}).values():
                    linked.setdefault(operations[link["operationId"]], set()).add(operations[operation["operationId"]])
    assert set(linked) == ID_OPERATIONS
    creators = {"POST /api/v1/conversions", "POST /api/v1/batches", "POST /api/v1/comparisons"}
    assert all(sources & (creators | {"POST /api/v1/conversions/{job_id}/rebuild"}) for sources in linked.values())


def test_every_405_says_what_is_allowed(client):
    """RFC 9110: a 405 carries Allow. Every operation's address, asked with a method it does not take."""
    document = client.get("/api/v1/openapi.json").get_json()
    for path, item in document["paths"].items():
        url = path.replace("{kind}", "ply")
        url = re.sub(r"\{\w+\}", "0" * 32, url)
        for method in ("trace", "patch", "delete", "put", "post", "get"):
            if method in item:
                continue
            response = client.open(url, method=method.upper())
            assert response.status_code == 405, (method, url)
            allowed = {name.strip() for name in response.headers["Allow"].split(",")}
            assert {name.upper() for name in item} <= allowed, (method, url, allowed)


def test_unfinished_jobs_and_malformed_forms_get_declared_answers(app, client):
    """A rebuild or a download of a job still converting is 409 with Retry-After (declared); a multipart body that
    holds bytes but no named field is a 400, not an empty form."""
    import threading

    service = app.extensions["image_to_3d"]
    release = threading.Event()
    convert = service.converter.convert

    def held(*args, **kwargs):
        release.wait(30)
        return convert(*args, **kwargs)

    service.converter.convert = held  # the job stays running until released (the real conversion, later)
    try:
        created = client.post("/api/v1/conversions", data={"image": (io.BytesIO(pictures(1)[0]), "a.png")})
        job_id = created.get_json()["id"]
        for response in (client.post(f"/api/v1/conversions/{job_id}/rebuild", data={"fov": "40"}),
                         client.get(f"/api/v1/conversions/{job_id}/files/ply")):
            assert response.status_code == 409 and response.headers["Retry-After"] == "2"
            assert response.get_json()["code"] == "not_finished"
    finally:
        release.set()
        service.converter.convert = convert
    boundary = "0123456789abcdef"
    garbage = client.post(f"/api/v1/conversions/{job_id}/rebuild", data=f"--{boundary}\r\n[1, 2]--{boundary}--\r\n",
                          content_type=f"multipart/form-data; boundary={boundary}")
    assert garbage.status_code == 400 and garbage.get_json()["code"] == "unreadable_form"
    document = client.get("/api/v1/openapi.json").get_json()
    rebuild = document["paths"]["/api/v1/conversions/{job_id}/rebuild"]["post"]["responses"]
    assert "Retry-After" in rebuild["409"]["headers"] and {"400", "414"} <= set(rebuild)


@pytest.mark.slow
def test_schemathesis_fuzzes_every_operation_against_real_gunicorn(tiny_models, tmp_path):
    """The schemathesis command line (with the project's schemathesis.toml: 413 refuses a form over a limit), every
    phase and check (but authentication's, and positive_data_acceptance: a valid form can still carry an image the
    server refuses), against real gunicorn: no failure, no server error, and
    stateful testing follows the links to every operation that takes an id and gets past its 404 (a view, a rebuild,
    a file: 200, 202 or 409). File fields get real pictures too (schemathesis.toml loads tests/schemathesis_hooks.py). The
    same examples every
    run unless FUZZ_RANDOM=1 (with FUZZ_SEED=N: a failed run's seed); FUZZ_SECONDS (default 60) is the time budget."""
    import json
    import subprocess
    from pathlib import Path

    from conftest import ROOT

    report = tmp_path / "report"
    # A queue that never fills (a full one is a 503, which counts as a server error), and a worker that is stopped
    # after 3 s when the test ends instead of finishing the jobs still queued. The fuzzer is one client sending
    # thousands of creating requests: serve() keeps the rate limit on (its 429 declared) but out of its reach, or
    # stateful testing would meet 429s instead of the links' operations (the 429 itself: tests/test_rate_limits.py).
    with serve(tiny_models["dpt_hybrid"], tmp_path, workers=1, threads=4, MAX_QUEUED_JOBS=100_000,
               GUNICORN_CMD_ARGS="--graceful-timeout 3") as server:
        command = [str(Path(sys.executable).parent / "st"), "run", server.url + "/api/v1/openapi.json",
                   "--checks", "all", "--exclude-checks",
                   "ignored_auth,object_level_authorization,positive_data_acceptance",
                   "--phases", "examples,coverage,fuzzing,stateful",
                   "--max-time", os.environ.get("FUZZ_SECONDS", "60"), "--no-color", "--request-timeout", "30",
                   "--report", "ndjson", "--report-dir", str(report), "--workers", "1"]
        if os.environ.get("FUZZ_RANDOM"):
            command += ["--generation-database", "none"]  # nothing kept in the checkout
            if os.environ.get("FUZZ_SEED"):  # the seed a failing run printed
                command += ["--seed", os.environ["FUZZ_SEED"]]
        else:
            command += ["--seed", "23", "--generation-deterministic"]  # which implies no database
        environment = {name: value for name, value in os.environ.items() if name != "SCHEMATHESIS_HOOKS"}
        done = subprocess.run(command, capture_output=True, text=True, env=environment,
                              cwd=ROOT, timeout=900)  # schemathesis.toml: its hooks and expected statuses
        log = server.log.read_text()
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[output.find("= FAILURES ="):][:20000]
    statuses: dict[str, set[int]] = {}
    for line in next(report.glob("*.ndjson")).read_text().splitlines():
        event = json.loads(line).get("ScenarioFinished")
        if not event:
            continue
        recorder = event["recorder"]
        for case_id, case in recorder.get("cases", {}).items():
            response = (recorder.get("interactions", {}).get(case_id) or {}).get("response") or {}
            if response:
                label = f"{case['value']['method']} {case['value']['path']}"
                statuses.setdefault(label, set()).add(response["status_code"])
    assert all(code < 500 for codes in statuses.values() for code in codes), statuses
    for operation in ID_OPERATIONS:  # reached with ids that exist
        assert statuses.get(operation, set()) - {400, 404, 405, 414}, (operation, statuses.get(operation))
    assert "Traceback" not in log and "unhandled error" not in log


def test_a_field_given_twice_is_a_400_naming_it(client):
    """A repeated field would be read as its first value: refused (schemathesis sent arrays for one-value fields)."""
    from werkzeug.datastructures import MultiDict

    for url, extra in (("/api/v1/conversions", {}), ("/api/v1/comparisons", {"model_b": "x"})):
        form = MultiDict([("image", (io.BytesIO(pictures(1)[0]), "a.png")), ("max_points", "5"),
                          ("max_points", "7"), *extra.items()])
        response = client.post(url, data=form)
        assert response.status_code == 400 and "'max_points' was given more than once" in response.get_json()["error"]


@pytest.mark.parametrize("form, read_as_valid", [
    ({"relief": 3, "paper_background": True, "mesh": False, "clean": 1}, True),  # text on the wire: valid
    ({"relief": [], "detail": ["full"]}, True),  # a list of none is a field left out; of one, that value
    ({"relief": {"a": 1}}, False),  # JSON text is no number
    ({"paper_background": None}, False),  # "null" is no flag word
    ({"relief": [2, 3]}, False),  # a field given twice
    ({"max_points": 2.5}, False),
])
def test_the_fuzzers_filter_judges_a_form_as_this_server_does(client, form, read_as_valid):
    """tests/schemathesis_hooks.py's filter_case drops a negative multipart case that the server reads as a valid
    form; here each judgement is checked against the server itself (202 or 400)."""
    import jsonschema_rs
    from schemathesis.core.transforms import to_wire_text
    from schemathesis_hooks import as_read
    from werkzeug.datastructures import MultiDict

    document = client.get("/api/v1/openapi.json").get_json()
    schema = document["paths"]["/api/v1/conversions"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    image = pictures(1)[0]
    read = as_read({"image": image, **form}, schema["properties"])
    assert jsonschema_rs.validator_for(schema).is_valid(read) is read_as_valid
    parts = MultiDict([("image", (io.BytesIO(image), "a.png"))])
    for name, value in form.items():
        for item in value if isinstance(value, list) else [value]:
            parts.add(name, to_wire_text(item))
    response = client.post("/api/v1/conversions", data=parts)
    assert response.status_code == (202 if read_as_valid else 400), response.get_json()
    assert as_read({"image": None}, schema["properties"]) is None  # a file sent as text is never judged valid
