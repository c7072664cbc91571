"""Faults injected for real into gunicorn: a worker killed mid-job, a disk that fills up, a corrupt model."""

from __future__ import annotations

import os
import resource
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import holding, png_bytes, serve

pytestmark = pytest.mark.slow  # real gunicorn or the CLI in subprocesses


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as status:
                    if any(line.startswith("PPid:") and int(line.split()[1]) == pid for line in status):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def poll(server, status_url: str, until, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            view = requests.get(server.url + status_url, timeout=60).json()
            if until(view):
                return view
        except (requests.ConnectionError, ValueError):
            pass  # the worker is being replaced
        time.sleep(0.05)
    raise AssertionError(f"no status matched in {timeout} s")


def test_a_worker_killed_mid_job_fails_the_job_and_the_next_job_succeeds(tiny_models, tmp_path):
    holds = holding(tmp_path)
    hold = Path(holds["HOLD_CONVERSIONS_WHILE"])
    hold.touch()  # the job starts, then waits inside its conversion: it is mid-job when its worker is killed
    picture = png_bytes(np.full((120, 160, 3), 90, np.uint8))
    with serve(tiny_models["dpt_hybrid"], tmp_path, workers=1, threads=4, **holds) as server:
        accepted = requests.post(server.url + "/api/v1/conversions", files={"image": ("p.png", picture)},
                                 data={"detail": "full"}, timeout=60)
        assert accepted.status_code == 202
        status_url = accepted.json()["status_url"]
        poll(server, status_url, lambda view: view["status"] == "running")
        (worker,) = children(server.process.pid)
        os.kill(worker, signal.SIGKILL)
        view = poll(server, status_url, lambda view: view["status"] != "running")
        assert view["status"] == "failed" and "stopped" in view["error"] and view["files"] == {}
        hold.unlink()
        small = png_bytes(np.full((30, 40, 3), 120, np.uint8))
        again = requests.post(server.url + "/api/v1/conversions", files={"image": ("s.png", small)}, timeout=60)
        assert poll(server, again.json()["status_url"], lambda v: v["status"] in ("done", "failed"))["status"] == \
            "done"


def _limit_file_size():
    # Any file over 64 kB fails with EFBIG, as on a full disk (Python ignores SIGXFSZ, so writes just fail).
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_a_full_disk_fails_the_job_clearly_and_leaves_no_partial_file(tiny_models, tmp_path):
    rows, columns = np.mgrid[0:120, 0:160]
    photo = png_bytes(np.dstack([columns, rows, columns + rows]).astype(np.uint8))  # small upload, big outputs
    with serve(tiny_models["dpt_hybrid"], tmp_path, workers=1, threads=2, preexec_fn=_limit_file_size) as server:
        accepted = requests.post(server.url + "/api/v1/conversions", files={"image": ("p.png", photo)},
                                 data={"detail": "full"}, timeout=60)
        assert accepted.status_code == 202
        view = poll(server, accepted.json()["status_url"], lambda v: v["status"] in ("done", "failed"))
        assert view["status"] == "failed" and view["code"] == "output_failed"
        assert "disk space" in view["error"] and view["files"] == {}
        job_folder = server.outputs / view["id"]
        assert sorted(path.name for path in job_folder.iterdir()) == ["job.json"]
        assert requests.get(server.url + f"/jobs/{view['id']}/files/ply", timeout=60).status_code == 409  # failed
        assert requests.get(server.url + "/healthz", timeout=60).status_code == 200


def test_a_corrupt_model_folder_is_unavailable_not_a_crash(tiny_models, tmp_path):
    import shutil

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_models["dpt_hybrid"], broken)
    weights = next(broken.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:1000])  # a download that stopped half-way
    (tmp_path / "srv").mkdir()
    with serve(broken, tmp_path / "srv", workers=1, threads=2, EXPECT_UNREADY=1) as server:
        deadline = time.monotonic() + 60
        while requests.get(server.url + "/readyz", timeout=60).json()["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        ready = requests.get(server.url + "/readyz", timeout=60)
        assert ready.status_code == 503 and "unavailable" in ready.json()["message"]
        assert requests.get(server.url + "/healthz", timeout=60).status_code == 200
        page = requests.get(server.url + "/", timeout=60).text
        assert "broken-model" in page and "DEPTH_MODEL" in page
        refused = requests.post(server.url + "/convert", files={"image": ("p.png", png_bytes(
            np.zeros((20, 20, 3), np.uint8)))}, timeout=60)
        assert refused.status_code == 503 and "unavailable" in refused.text
