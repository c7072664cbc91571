"""One contract for every job back-end (web.jobs.backend.JobBackend), run against each: the embedded thread pool
here, and Celery against a real redis-server and a real worker process (the slow tier). A batch converts and an
export is written; a full queue refuses (QueueFullError, a 503 with Retry-After) and frees up; a job nobody is on
is left alone by every read and settled by the back-end's watch."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import download, png_bytes, wait_until
from holds import held
from werkzeug.datastructures import MultiDict

from converter.service_api import write_json
from web.intake.forms import parse_request
from web.jobs.backend import BACKENDS, JobBackend, QueueFullError, backend_class
from web.jobs.execution import UPLOAD_IMAGE
from web.jobs.store import Upload, process_token

FINAL = ("done", "failed", "cancelled")


def picture(width: int = 128) -> bytes:
    rows, columns = np.mgrid[0:96, 0:width]
    return png_bytes(np.dstack([columns * 2 % 256, rows * 2 % 256, 255 - columns % 256]).astype(np.uint8))


@pytest.fixture(scope="module")
def celery_setting(tmp_path_factory):
    """A redis-server and one real Celery worker (prefork, one child) on a shared output folder, for the module."""
    from test_celery import Workers, ready_workers, worker_setting

    root = tmp_path_factory.mktemp("backends")
    redis_server, model, outputs, env = worker_setting(root)
    workers = Workers(root, env)
    try:
        workers.start(1)
        wait_until(lambda: ready_workers(redis_server) >= 1 or any(p.poll() is not None for p in workers.processes),
                   timeout=90, interval=0.2)
        assert ready_workers(redis_server) >= 1, workers.logs()
        yield type("Setting", (), {"redis": redis_server, "model": model, "outputs": outputs,
                                   "hold": Path(env["HOLD_CONVERSIONS_WHILE"]), "workers": workers})
    finally:
        workers.stop_all()
        redis_server.stop()


class Harness:
    """One app on one back-end, with its watch thread off (the tests run the watch), and a hold on its work."""

    def __init__(self, name, app, hold: Path, redis=None, workers=None):
        self.name, self.app, self.hold, self.redis, self.workers = name, app, hold, redis, workers
        self.client = app.test_client()
        self.service = app.extensions["image_to_3d"]
        self.runner = self.service.runner
        self.store = self.service.store

    def request(self) -> dict:
        return parse_request(MultiDict(), self.app.config["MODELS"], self.app.config["DEPTH_MODEL"]).to_dict()

    def upload(self, width: int = 128) -> Upload:
        data = picture(width)
        return Upload(image=data, sha256=hashlib.sha256(data).hexdigest())

    @contextlib.contextmanager
    def holding(self):
        """No job ends while inside: an embedded conversion waits before its work (tests/holds.py); Celery's
        workers are stopped (SIGSTOP), so none claims a job and the pending set stays as the test left it."""
        self.hold.touch()
        if self.workers is not None:
            self.workers.pause()
        try:
            yield
        finally:
            if self.workers is not None:
                self.workers.resume()
            self.hold.unlink(missing_ok=True)

    def wait_final(self, job_ids) -> list[str]:
        wait_until(lambda: all((job := self.store.get(job_id)) and job.finished for job_id in job_ids),
                   timeout=120, interval=0.05)
        return [self.store.get(job_id).status for job_id in job_ids]

    def traces(self, job_id: str) -> dict:
        """What a read could change: the job's record, and (Celery) every Redis key about it, the pending and
        active sets and the queue's length."""
        found = {"record": (self.store.folder(job_id) / "job.json").read_bytes()}
        if self.redis is not None:
            with self.redis.client() as client:
                found["keys"] = {key: client.dump(key) for key in client.scan_iter(f"*{job_id}*")}
                found["sets"] = [client.zrange(name, 0, -1, withscores=True)
                                 for name in ("image-to-3d:pending", "image-to-3d:active")]
                found["queue"] = client.llen("image-to-3d")
        return found

    def orphan(self) -> str:
        """A running job nobody is on: its process died (embedded), or its worker's heartbeat is gone and its
        record was last written an hour ago (Celery)."""
        job = self.store.create(self.request())
        (self.store.folder(job.id) / UPLOAD_IMAGE).write_bytes(picture())
        job.start()
        if self.name == "embedded":
            dead = subprocess.Popen([sys.executable, "-c", "pass"])
            dead.wait()
            job.owner = process_token(os.getpid()).replace(str(os.getpid()), str(dead.pid), 1)
        self.store.save(job)
        record = json.loads((self.store.folder(job.id) / "job.json").read_text())
        write_json(self.store.folder(job.id) / "job.json", {**record, "updated": time.time() - 3600})
        return job.id


@pytest.fixture(params=["embedded", pytest.param("celery", marks=pytest.mark.slow)])
def harness(request, make_app, tmp_path, monkeypatch):
    hold = tmp_path / "hold-conversions"
    if request.param == "embedded":
        app = make_app(JOB_WATCH=False, MAX_QUEUED_JOBS=2, CONVERSION_WORKERS=1)
        monkeypatch.setenv("HOLD_CONVERSIONS_WHILE", str(hold))
        runner = app.extensions["image_to_3d"].runner
        runner.convert = held("HOLD_CONVERSIONS_WHILE", runner.convert)
        return Harness("embedded", app, hold)
    from web.jobs.celery.board import HEARTBEAT_GRACE

    setting = request.getfixturevalue("celery_setting")
    app = make_app(JOB_BACKEND="celery", JOB_WATCH=False, REDIS_URL=setting.redis.url, MAX_QUEUED_JOBS=2,
                   OUTPUT_FOLDER=str(setting.outputs), DEPTH_MODEL=str(setting.model))
    # The watch judges nothing while heartbeats may still be coming back after a Redis (re)start.
    wait_until(lambda: app.extensions["image_to_3d"].runner.board.uptime() >= HEARTBEAT_GRACE, timeout=60)
    return Harness("celery", app, setting.hold, setting.redis, setting.workers)


def test_the_back_end_is_a_registered_job_backend(harness):
    assert isinstance(harness.runner, JobBackend)
    assert type(harness.runner) is backend_class(harness.name)
    assert BACKENDS[harness.name].endswith(":" + type(harness.runner).__name__)
    assert harness.runner.workers_ready() >= 1 and harness.runner.model_status.ready


@pytest.mark.slow  # 0.4 s or more of the fast tier's budget (issue 20)
def test_a_batch_converts_and_a_later_download_is_exported(harness):
    jobs = harness.runner.submit_batch(harness.request(), [harness.upload(128), harness.upload(136)])
    assert harness.wait_final([job.id for job in jobs]) == ["done", "done"]
    assert all(harness.runner.queue_position(job.id) is None for job in jobs)
    view = harness.client.get(f"/api/v1/conversions/{jobs[0].id}").get_json()
    response = download(harness.client, view["files"]["stl"])  # not written with the job: an export task
    assert response.status_code == 200 and len(response.data) > 84


@pytest.mark.slow  # 0.4 s or more of the fast tier's budget (issue 20)
def test_a_full_queue_refuses_until_there_is_room_again(harness):
    accepted = []
    with harness.holding():
        with pytest.raises(QueueFullError):
            for number in range(10):  # the limit: 2 waiting (embedded: and 1 running)
                accepted += harness.runner.submit_batch(harness.request(), [harness.upload(128 + 8 * number)])
        assert len(accepted) == {"embedded": 3, "celery": 2}[harness.name] and harness.runner.room() == 0
        assert harness.runner.queue_position(accepted[-1].id) >= 1
        busy = harness.client.post("/api/v1/conversions", content_type="multipart/form-data",
                                   data={"image": (io.BytesIO(picture()), "p.png")})
        assert busy.status_code == 503 and busy.headers["Retry-After"] == "30" and busy.get_json()["code"] == "busy"
    assert set(harness.wait_final([job.id for job in accepted])) == {"done"}
    wait_until(lambda: harness.runner.room() > 0, timeout=60)  # Celery: the last claim leaves the pending set


def test_reads_leave_no_trace_and_the_watch_settles_a_job_nobody_is_on(harness):
    job_id = harness.orphan()
    before = harness.traces(job_id)
    for _ in range(3):
        assert harness.client.get(f"/api/v1/conversions/{job_id}").get_json()["status"] == "running"
        assert harness.client.get(f"/jobs/{job_id}").status_code == 200
        assert harness.store.get(job_id).status == "running"
    assert harness.traces(job_id) == before
    harness.runner.watch()
    job = harness.store.get(job_id)
    if harness.name == "embedded":  # a thread pool cannot run another process's job: failed with a sentence
        assert (job.status, job.error_code) == ("failed", "worker_died")
    else:  # its upload is on the shared folder: queued again as attempt 2, which the worker runs
        assert job.attempt == 2
        assert harness.wait_final([job_id]) == ["done"]


@pytest.mark.slow  # 0.4 s or more of the fast tier's budget (issue 20)
def test_a_batch_gives_each_job_its_own_request_an_image_and_a_video(harness, tmp_path):
    """submit_batch with one request per upload (a batch of images and videos, web.routes.batches): each job records
    and runs its own; the video's file goes from UPLOAD_FOLDER into its job's folder (on the shared volume)."""
    import video_scenes as scenes

    from web.intake.forms import parse_video_request

    written = tmp_path / "clip.mp4"
    scenes.write_clip(written, scenes.clip(48, 32, 4)[0], fps=12)
    uploads = Path(harness.app.config["UPLOAD_FOLDER"]) / "video-test.part"  # as web.intake.video_upload names it
    written.rename(uploads)
    video = Upload(image=None, video=uploads, video_size=(48, 32))
    config = harness.app.config
    video_request = parse_video_request(MultiDict({"video_formats": "json"}), config["MODELS"], config["DEPTH_MODEL"])
    requests = [harness.request(), video_request.to_dict()]
    jobs = harness.runner.submit_batch(requests, [harness.upload(128), video])
    assert not uploads.exists()
    assert [harness.store.get(job.id).request for job in jobs] == requests
    assert harness.wait_final([job.id for job in jobs]) == ["done", "done"]
    views = [harness.client.get(f"/api/v1/conversions/{job.id}").get_json() for job in jobs]
    assert "ply" in views[0]["files"] and views[1]["kind"] == "video" and views[1]["info"]["frames"] == 4
    with pytest.raises(ValueError):
        harness.runner.submit_batch(requests, [harness.upload(128)])
