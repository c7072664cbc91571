"""The goal of queued exports, measured: with 24 heavy downloads requested across two web instances (MP4,
simplified GLB, USDZ and zipped OBJ of three jobs on each), ``/healthz`` and a new upload answer within 0.5 s (p99)
on both instances. Embedded mode here; the Celery mode's run is in tests/test_celery.py."""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import pytest
import requests
from conftest import http_download, png_bytes, serve

pytestmark = pytest.mark.slow  # two gunicorn instances under load

HEAVY = ("mp4", "simplified_glb", "usdz", "obj")
P99_LIMIT_S = 0.5


def photo(height: int = 240, width: int = 320) -> bytes:
    rows, columns = np.mgrid[0:height, 0:width]
    return png_bytes(np.dstack([columns % 256, rows % 256, (rows + columns) % 256]).astype(np.uint8))


def converted(server, count: int = 3) -> list[dict]:
    """``count`` finished jobs on ``server`` (full detail: heavy exports), one after the other."""
    views = []
    for number in range(count):
        answer = requests.post(server.url + "/api/v1/conversions", files={"image": ("p.png", photo(240, 320 + number))},
                               data={"detail": "full"}, timeout=30)
        assert answer.status_code == 202, answer.text
        status_url = answer.json()["status_url"]
        deadline = time.monotonic() + 120
        while (view := requests.get(server.url + status_url, timeout=10).json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert view["status"] == "done", view
        views.append(view)
    return views


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(np.ceil(0.99 * len(ordered))) - 1)]


def measure_under_heavy_exports(servers, views_by_server) -> dict:
    """Request the 24 heavy downloads at once (each followed until whole) while probing /healthz and posting
    uploads on every instance; returns the probes' latencies and how long the downloads took."""
    urls = [(server, view["files"][kind]) for server, views in zip(servers, views_by_server) for view in views
            for kind in HEAVY]
    assert len(urls) == 24
    done, latencies = threading.Event(), {"healthz": [], "upload": []}
    fetched = []

    def fetch(server, url):
        response = http_download(server.url + url, timeout=300, poll=0.5)
        fetched.append((url, response.status_code, len(response.content)))

    def probe():
        image = photo(48, 64)
        while not done.is_set():
            for server in servers:
                started = time.monotonic()
                assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
                latencies["healthz"].append(time.monotonic() - started)
                started = time.monotonic()
                answer = requests.post(server.url + "/api/v1/conversions", files={"image": ("s.png", image)},
                                       data={"detail": "low"}, timeout=10)
                latencies["upload"].append(time.monotonic() - started)
                assert answer.status_code in (202, 503), answer.text  # accepted, or the queue is full: at once
            time.sleep(0.1)

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.monotonic()
    threads = [threading.Thread(target=fetch, args=pair) for pair in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(400)
    took = time.monotonic() - started
    done.set()
    prober.join(30)
    assert len(fetched) == 24 and all(status == 200 and size > 0 for _, status, size in fetched), fetched
    return {"healthz_p99": p99(latencies["healthz"]), "upload_p99": p99(latencies["upload"]),
            "probes": len(latencies["healthz"]), "exports_s": took}


def test_heavy_exports_on_two_embedded_instances_leave_healthz_and_uploads_fast(dpt_model, tmp_path):
    with contextlib.ExitStack() as stack:
        servers = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            servers.append(stack.enter_context(serve(dpt_model, tmp_path / name, workers=1, threads=8,
                                                     MAX_UPLOAD_MB=8, MAX_QUEUED_JOBS=64, TORCH_THREADS=1)))
        views = [converted(server) for server in servers]
        figures = measure_under_heavy_exports(servers, views)
    print(f"embedded, 24 heavy downloads on 2 instances: {figures}")
    assert figures["probes"] >= 5
    assert figures["healthz_p99"] < P99_LIMIT_S and figures["upload_p99"] < P99_LIMIT_S, figures
