"""Later downloads as queued work (web.jobs.exports): the link answers at once while an export task writes the file,
a browser gets a page that reloads itself, a script 202 with Retry-After; the page lists the downloads by use with
the size of those written."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace

import pytest

from test_lazy_downloads import fetch, submit, wait_done

from converter import OUTPUTS
from web.jobs import exports


def test_a_download_not_written_answers_202_at_once_and_the_file_once_whole(app, client, monkeypatch):
    view = wait_done(client, submit(client))
    release, asked = threading.Event(), threading.Event()
    real = OUTPUTS["stl"]

    def slow_stl(path, artifacts):  # an export that takes its time
        asked.set()
        release.wait(60)  # a hang guard only: the test sets it
        real.write(path, artifacts)

    monkeypatch.setitem(OUTPUTS, "stl", replace(real, write=slow_stl))
    url = view["files"]["stl"]
    first = client.get(url)
    assert first.status_code == 202 and not release.is_set()  # answered while the export is held: not built here
    assert int(first.headers["Retry-After"]) > 0
    body = first.get_json()
    assert body["status"] == "preparing" and body["url"] == url and "relief" in body["message"]
    assert asked.wait(60)  # the export task is on it, in its own thread
    page = client.get(url, headers={"Accept": "text/html"})
    html = page.get_data(as_text=True)
    assert page.status_code == 202 and '<meta http-equiv="refresh"' in html and "Preparing the" in html
    assert "<script>" not in html  # CSP script-src 'self': the page reloads itself without inline script
    release.set()
    status, data = fetch(client, url)
    assert status == 200 and len(data) > 84  # a binary STL: 80-byte header, count, triangles


def test_a_failed_export_says_why_once_and_the_next_request_tries_again(app, client, monkeypatch):
    view = wait_done(client, submit(client))
    real = OUTPUTS["las"]
    calls = []

    def broken(path, artifacts):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("/internal/path exploded")
        real.write(path, artifacts)

    monkeypatch.setitem(OUTPUTS, "las", replace(real, write=broken))
    url = view["files"]["las"]
    deadline = time.monotonic() + 60  # a hang guard only
    while (answer := client.get(url, headers={"Accept": "application/json"})).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert answer.status_code == 503 and answer.get_json()["code"] == "export_failed"
    assert "internal error" in answer.get_json()["error"] and "/internal" not in answer.get_json()["error"]
    status, data = fetch(client, url)
    assert status == 200 and data and len(calls) == 2


def test_the_result_page_groups_downloads_by_use_with_sizes_once_written(app, client):
    job_id = submit(client)
    view = wait_done(client, job_id)
    assert set(view["sizes"]) >= {"ply", "json"} and "stl" not in view["sizes"]
    assert fetch(client, view["files"]["stl"])[0] == 200
    view = client.get(f"/api/v1/conversions/{job_id}").get_json()
    assert view["sizes"]["stl"] > 84
    html = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    groups = re.findall(r'<ul data-group="([^"]+)"', html)
    assert groups[:5] == ["Point clouds", "Meshes", "Depth", "Stereo and video", "Printing"]
    printing = html[html.index('data-group="Printing"'):]
    assert re.search(r'data-kind="stl">[^<]+</a>\s*<span class="size" data-size="\d+">', printing)
    assert ' download data-kind' not in html  # a link may first show the "preparing" page


def test_a_stale_export_state_is_queued_again(app, client, monkeypatch):
    view = wait_done(client, submit(client))
    service = app.extensions["image_to_3d"]
    target = exports.Target(view["id"], "pcd")
    service.exports.state_path(target).write_text('{"status": "running", "line": "x", "created": 0, "updated": 0}')
    assert fetch(client, view["files"]["pcd"])[0] == 200  # its process died long ago: queued again, written


@pytest.mark.slow  # a third of a second or more: the fast tier stays under 30 s
def test_an_export_past_its_deadline_fails_with_a_sentence_at_once(app, client, monkeypatch):
    view = wait_done(client, submit(client))
    service = app.extensions["image_to_3d"]
    real, release = OUTPUTS["sbs"], threading.Event()

    def stuck(path, artifacts):
        release.wait(60)  # a hang guard only: the test sets it
        real.write(path, artifacts)

    monkeypatch.setitem(OUTPUTS, "sbs", replace(real, write=stuck))
    monkeypatch.setattr(service.exports, "timeout_seconds", 0.2)
    url = view["files"]["sbs"]
    deadline = time.monotonic() + 60  # a hang guard only
    while (answer := client.get(url, headers={"Accept": "application/json"})).status_code == 202:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert answer.status_code == 503 and answer.get_json()["error"].startswith(exports.TOO_LONG)
    release.set()  # the writer ends later: its file is whole, and served
    status, data = fetch(client, url)
    assert status == 200 and data.startswith(b"\x89PNG")
