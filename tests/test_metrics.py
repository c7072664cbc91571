"""Prometheus metrics at /metrics (web.metrics): jobs by status, stage and export durations, queue length, workers
ready, uploads refused by reason; with several gunicorn workers, one scrape adds up every worker's events."""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile

import psutil
import pytest
import requests
from conftest import download, serve, wait_until
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
    # An export is counted before its file is served: the scrape right after the download counts it.
    text = _exported(client.get("/metrics").get_data(as_text=True), before, "stl")
    assert text is not None
    assert sample(text, "image_to_3d_jobs_ended_total", status="done", code="") == \
        sample(before, "image_to_3d_jobs_ended_total", status="done", code="") + 1
    assert sample(text, "image_to_3d_stage_seconds_count", stage="writing files") >= 1
    assert sample(text, "image_to_3d_uploads_refused_total", reason="no_image") == \
        sample(before, "image_to_3d_uploads_refused_total", reason="no_image") + 1
    assert sample(text, "image_to_3d_jobs", status="done") == 1
    assert sample(text, "image_to_3d_jobs", status="failed") == 0
    assert sample(text, "image_to_3d_queue_length") == 0 and sample(text, "image_to_3d_workers_ready") == 1


def _exported(text: str, before: str, kind: str) -> str | None:
    """The scrape ``text`` once it counts one more finished export of ``kind`` than the scrape ``before``."""
    def count(scrape):
        return sample(scrape, "image_to_3d_export_seconds_count", kind=kind, status="done")

    return text if count(text) == count(before) + 1 else None


@pytest.mark.slow  # gunicorn with two worker processes
def test_one_scrape_adds_up_every_gunicorn_worker(dpt_model, tmp_path):
    """Each worker is sent its own number of refused uploads while the other is stopped (SIGSTOP: it cannot accept,
    so the kernel has one taker), then one scrape, answered by either, must add them up."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    sent = {}
    with serve(dpt_model, tmp_path, workers=2, threads=2, PROMETHEUS_MULTIPROC_DIR=metrics_dir) as server:
        workers = wait_until(lambda: _two_children(server.process.pid))
        for count, (worker, other) in zip((5, 7), (workers, workers[::-1])):
            os.kill(other.pid, signal.SIGSTOP)
            try:
                for _ in range(count):
                    answer = requests.post(server.url + "/api/v1/conversions", files={"image": ("e.png", b"")},
                                           timeout=60)
                    assert answer.status_code == 400
            finally:
                os.kill(other.pid, signal.SIGCONT)
            sent[worker.pid] = count
        scrapes = [requests.get(server.url + "/metrics", timeout=60).text for _ in range(6)]
        recorded = {pid: _refused_by_process(metrics_dir, pid) for pid in sent}
    assert recorded == sent  # each worker recorded what it served, in its own files
    assert {sample(text, "image_to_3d_uploads_refused_total", reason="no_image") for text in scrapes} == {12.0}


def _two_children(pid: int):
    children = psutil.Process(pid).children()
    return children if len(children) == 2 else None


def _refused_by_process(metrics_dir, pid: int) -> float:
    """One process's own count of refused uploads, read from its files alone by prometheus_client's collector."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    with tempfile.TemporaryDirectory() as alone:
        for path in metrics_dir.glob(f"*_{pid}.db"):
            shutil.copy(path, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=alone)
        value = registry.get_sample_value("image_to_3d_uploads_refused_total", {"reason": "no_image"})
    return value or 0.0
