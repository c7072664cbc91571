"""The API's contract: /api/v1/openapi.json is a valid OpenAPI 3.1 document that names every route of /api/v1, and
(slow tier) schemathesis fuzzes every operation against real gunicorn: no status >= 500 but 503, every response
matching its schema (FUZZ_EXAMPLES examples per operation and mode, 25 by default; the same examples every run
unless FUZZ_RANDOM=1)."""

from __future__ import annotations

import io
import os
import re

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
            if method == "post":
                assert {"400", "413", "503"} <= set(operation["responses"]), (path, method)


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


@pytest.mark.slow
def test_schemathesis_fuzzes_every_operation_against_real_gunicorn(tiny_models, tmp_path):
    import schemathesis
    from schemathesis.generation.modes import GenerationMode
    from hypothesis import HealthCheck, settings
    from hypothesis import given as hypothesis_given
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    with serve(tiny_models["dpt_hybrid"], tmp_path, workers=1, threads=4, MAX_QUEUED_JOBS=2) as server:
        schema = schemathesis.openapi.from_url(server.url + "/api/v1/openapi.json")
        results = list(schema.get_all_operations())
        assert [str(result.err()) for result in results if hasattr(result, "err")] == []
        operations = [result.ok() for result in results]
        document = requests.get(server.url + "/api/v1/openapi.json", timeout=10).json()
        assert {operation.label for operation in operations} == {
            f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
        } - {"GET /api/v1/openapi.json"}  # schemathesis leaves out the document it was loaded from
        statuses: dict[str, set[int]] = {}
        def fuzz(operation, mode):
            @settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", 25)), deadline=None, database=None,
                      derandomize=not os.environ.get("FUZZ_RANDOM"),  # CI repeats itself; FUZZ_RANDOM=1 explores
                      suppress_health_check=list(HealthCheck))
            @hypothesis_given(case=operation.as_strategy(mode))
            def run(case):
                response = case.call(base_url=server.url, timeout=30)
                statuses.setdefault(operation.label, set()).add(response.status_code)
                assert response.status_code < 500 or response.status_code == 503, (operation.label, response.text)
                checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
                if response.status_code != 503:
                    checks.append(not_a_server_error)
                case.validate_response(response, checks=checks)

            run()

        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):  # valid fields, then invalid ones
                fuzz(operation, mode)
        assert set(statuses) == {operation.label for operation in operations}
        log = server.log.read_text()
        assert "Traceback" not in log and "unhandled error" not in log
