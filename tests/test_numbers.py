"""Every number typed into a form, a query or the command line is read one strict way
(converter.service_api.parse_number): ASCII digits and the decimal float grammar only. Python's own int()/float() (and str.isdigit) also take other
scripts' digits, superscripts, underscores, 'nan' and 'inf'; those are refused with a sentence naming the field, on
every numeric field of every operation (the operations through the Flask test client in the slow tier)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import png_bytes, wait_for_job

from converter import OptionError, OutputSettings
from converter.service_api import parse_number, parse_simplify
from web.intake.forms import parse_rebuild, parse_request
from web.intake.job_request import JobRequest

FOREIGN = ["¹", "٣", "３", "1_000", "0x10", "nan", "inf", "-inf", "1e999", "½", "1,5", "+", "."]
# Every numeric field of the form and API, with a good value; known_length's last number is the one replaced.
FIELDS = {"max_points": "5000", "fov": "60", "focal_px": "120.5", "relief": "0.5", "drop_background": "10",
          "stl_width_mm": "80", "simplify": "500", "known_length": "1 2 30 40 0.9"}


def bad_form(field: str, bad: str) -> dict:
    if field == "known_length":
        return {field: "1 2 30 40 " + bad}
    return {field: bad}


@pytest.mark.parametrize("text, value", [("60", 60.0), (" 2.5 ", 2.5), ("-3", -3.0), (".5", 0.5), ("1e3", 1000.0),
                                         ("+7.", 7.0), ("0", 0.0)])
def test_the_float_grammar_is_read(text, value):
    assert parse_number(text, "fov") == value


@pytest.mark.parametrize("text", FOREIGN + ["", " ", "1 2", "5\n6", "1e", "e5", "--1"])
def test_anything_else_is_refused_naming_the_field(text):
    with pytest.raises(OptionError, match="'fov'") as caught:
        parse_number(text, "fov")
    assert caught.value.message.endswith(".")


@pytest.mark.parametrize("text", ["¹", "٣", "３", "1_000", "0x10", "1.5", "1e3", "5."])
def test_whole_numbers_are_ascii_digits_only(text):
    with pytest.raises(OptionError, match="'max_points'"):
        parse_number(text, "max_points", whole=True)
    assert parse_number("0042", "max_points", whole=True) == 42 and parse_number("-5", "n", whole=True) == -5


@pytest.mark.parametrize("text", ["¹", "²⁰⁰", "٣٠٠", "３００", "1_000", "0x10", "nan", "inf", "1e3"])
def test_simplify_counts_are_ascii_digits(text):
    """The schemathesis find: '¹'.isdigit() is True and int('¹') a ValueError (a 500)."""
    with pytest.raises(OptionError, match="(?i)simplify"):
        parse_simplify(text)
    with pytest.raises(OptionError, match="(?i)simplify"):
        OutputSettings(simplify=text)
    assert parse_simplify(" 300 ") == 300


@pytest.mark.parametrize("field", FIELDS)
def test_every_numeric_field_reads_its_good_value(field):
    new = parse_request({field: FIELDS[field]}, ["m"], "m")
    rebuilt = parse_rebuild({field: FIELDS[field]}, JobRequest(model="m"))
    assert new == rebuilt and new != JobRequest(model="m")


@pytest.mark.parametrize("bad", FOREIGN)
@pytest.mark.parametrize("field", FIELDS)
def test_every_numeric_field_refuses_foreign_numbers_by_name(field, bad):
    for parse in (lambda form: parse_request(form, ["m"], "m"), lambda form: parse_rebuild(form, JobRequest())):
        with pytest.raises(OptionError, match=f"(?i){field}") as caught:
            parse(bad_form(field, bad))
        assert "Traceback" not in caught.value.message


# --- every operation, through the app (slow: a few hundred requests) ----------------------------------------------

def picture() -> bytes:
    import numpy as np

    rows, columns = np.mgrid[0:24, 0:32]
    return png_bytes(np.dstack([columns * 6, rows * 8, 255 - columns * 6]).astype(np.uint8))


@pytest.mark.slow
def test_every_operation_refuses_foreign_numbers_in_every_field(client):
    data = picture()
    created = client.post("/api/v1/conversions", data={"image": (io.BytesIO(data), "a.png"), "detail": "low"})
    job_id = created.get_json()["id"]
    assert wait_for_job(client, f"/jobs/{job_id}")["status"] == "done"
    operations = {
        "/api/v1/conversions": lambda: {"image": (io.BytesIO(data), "a.png")},
        "/convert": lambda: {"image": (io.BytesIO(data), "a.png")},
        "/api/v1/batches": lambda: {"images": [(io.BytesIO(data), "a.png"), (io.BytesIO(data), "b.png")]},
        "/api/v1/comparisons": lambda: {"image": (io.BytesIO(data), "a.png"), "model_b": client.application.config[
            "DEPTH_MODEL"]},
        f"/api/v1/conversions/{job_id}/rebuild": dict,
        f"/jobs/{job_id}/rebuild": dict,
    }
    outputs = Path(client.application.config["OUTPUT_FOLDER"])
    jobs_before = len(list(outputs.glob("*/job.json")))
    for url, files in operations.items():
        for field in FIELDS:
            for bad in FOREIGN:
                response = client.post(url, data={**files(), **bad_form(field, bad)},
                                       headers={"Accept": "application/json"})
                body = response.get_json()
                assert response.status_code == 400, (url, field, bad, response.status_code)
                assert body["code"] == "bad_option" and field in body["error"].lower(), (url, field, bad, body)
    assert len(list(outputs.glob("*/job.json"))) == jobs_before  # nothing was queued


CLI_NUMBERS = [["--fov"], ["--focal-px"], ["--relief"], ["--max-points"], ["--drop-background"], ["--stl-width-mm"],
               ["--stl-base-mm"], ["--principal-point", "1"], ["--known-length", "1", "2", "3", "4"]]


@pytest.mark.parametrize("bad", FOREIGN)
@pytest.mark.parametrize("option", CLI_NUMBERS, ids=lambda option: option[0])
def test_the_command_line_reads_numbers_the_same_strict_way(option, bad, capsys):
    from converter.__main__ import build_parser

    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["photo.png", *option, bad])
    assert caught.value.code == 2
    assert f"argument {option[0]}: " in capsys.readouterr().err
    assert build_parser().parse_args(["photo.png", *option, "5"]) is not None
