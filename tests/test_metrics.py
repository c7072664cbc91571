"""Prometheus metrics at /metrics (web.metrics): jobs by status, stage and export durations, queue length, workers
ready, uploads refused by reason; with several gunicorn workers, one scrape adds up every worker's events."""

from __future__ import annotations

import re

import pytest
import requests
from conftest import download, serve
from test_lazy_downloads import submit, wait_done

from web import metrics


def sample(text: str, name: str, **labels) -> float:
    """The value of one sample of the exposition ``text`` (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))  # as exposed: sorted
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" ([0-9.e+-]+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_jobs_stages_exports_and_refused_uploads(app, client, monkeypatch):
    monkeypatch.setattr(metrics, "STATE_CACHE_SECONDS", 0.0)  # every scrape reads the records again
    before = client.get("/metrics").get_data(as_text=True)
    job_id = submit(client)
    view = wait_done(client, job_id)
    assert download(client, view["files"]["stl"]).status_code == 200
    refused = client.post("/api/v1/conversions", data={}, content_type="multipart/form-data")
    assert refused.status_code == 400
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert sample(text, "image_to_3d_jobs_ended_total", status="done", code="") == \
        sample(before, "image_to_3d_jobs_ended_total", status="done", code="") + 1
    assert sample(text, "image_to_3d_stage_seconds_count", stage="writing files") >= 1
    assert sample(text, "image_to_3d_export_seconds_count", kind="stl", status="done") >= 1
    assert sample(text, "image_to_3d_uploads_refused_total", reason="no_image") == \
        sample(before, "image_to_3d_uploads_refused_total", reason="no_image") + 1
    assert sample(text, "image_to_3d_jobs", status="done") == 1
    assert sample(text, "image_to_3d_jobs", status="failed") == 0
    assert sample(text, "image_to_3d_queue_length") == 0 and sample(text, "image_to_3d_workers_ready") == 1


@pytest.mark.slow  # gunicorn with two worker processes
def test_one_scrape_adds_up_every_gunicorn_worker(dpt_model, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with serve(dpt_model, tmp_path, workers=2, threads=2, PROMETHEUS_MULTIPROC_DIR=metrics_dir) as server:
        for _ in range(12):  # spread over both processes by the kernel
            answer = requests.post(server.url + "/api/v1/conversions", files={"image": ("e.png", b"")}, timeout=10)
            assert answer.status_code == 400
        pids = {path.name.split("_")[-1] for path in metrics_dir.glob("counter_*.db")}
        scrapes = [requests.get(server.url + "/metrics", timeout=10).text for _ in range(6)]
    assert len(pids) == 2, pids  # both workers recorded events
    assert {sample(text, "image_to_3d_uploads_refused_total", reason="no_image") for text in scrapes} == {12.0}
