"""Job lifecycle: stages and queue, time-outs, a worker that died, expiry and the retention sweep."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import png_bytes, wait_for_job, wait_until

from converter.stages import BUILDING_GEOMETRY, ESTIMATING_DEPTH, LOADING_MODEL, WRITING_FILES
from web.jobs.embedded import JobRunner
from web.jobs.record import CANCELLED, DONE, FAILED
from web.jobs.store import JobStore, Upload, process_token


def submit(client, photo, **fields):
    response = client.post("/api/v1/conversions", content_type="multipart/form-data",
                           data={"image": (io.BytesIO(png_bytes(photo)), "p.png"), **fields})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["id"]


def test_stages_are_reported_in_order(tmp_path):
    """A runner with a conversion that reports stages: the stored job passes through them, then is done."""
    store = JobStore(tmp_path / "out")
    seen = []
    started, release = threading.Event(), threading.Event()

    def convert(job, upload, report):
        started.set()
        for stage in (LOADING_MODEL, ESTIMATING_DEPTH, BUILDING_GEOMETRY, WRITING_FILES):
            report(stage)
            seen.append((store.get(job.id).stage, store.get(job.id).progress))
        assert release.wait(60)  # a hang guard only: the test sets it below
        return {"points": 1}

    runner = JobRunner(store, convert, workers=1, max_queued=2)
    (first,) = runner.submit_batch({}, [Upload(image=b"x")])
    assert started.wait(60)  # the first job has left the queue: the second is next (not second in line)
    (second,) = runner.submit_batch({}, [Upload(image=b"y")])
    assert runner.queue_position(second.id) == 1 and store.get(second.id).status == "queued"
    release.set()
    wait_until(lambda: store.get(second.id).status == DONE, timeout=60, interval=0.02)
    runner.shutdown()
    assert store.get(first.id).status == DONE and store.get(second.id).status == DONE
    stages = [stage for stage, _ in seen[:4]]
    progress = [fraction for _, fraction in seen[:4]]
    assert stages == ["loading model", "estimating depth", "building geometry", "writing files"]
    assert progress == sorted(progress) and 0 < progress[0] < progress[-1] < 1


def test_an_unknown_stage_is_an_error_not_a_stuck_progress_bar(tmp_path):
    store = JobStore(tmp_path / "out")
    runner = JobRunner(store, lambda job, upload, report: report("polishing"), workers=1, max_queued=1)
    (job,) = runner.submit_batch({}, [None])
    wait_until(lambda: store.get(job.id).finished, timeout=60, interval=0.02)
    runner.shutdown()
    failed = store.get(job.id)
    assert failed.status == FAILED and failed.error_code == "internal_error"


def test_jobs_still_waiting_when_the_runner_stops_are_cancelled_with_a_sentence(tmp_path):
    store = JobStore(tmp_path / "out")
    started, release = threading.Event(), threading.Event()

    def convert(job, upload, report):
        started.set()
        assert release.wait(60)  # a hang guard only: the test sets it below
        return {}

    runner = JobRunner(store, convert, workers=1, max_queued=2, watch=False)
    (running,) = runner.submit_batch({}, [None])
    assert started.wait(60)
    (waiting,) = runner.submit_batch({}, [None])
    runner.shutdown()
    cancelled = store.get(waiting.id)
    assert (cancelled.status, cancelled.error_code, cancelled.finished) == (CANCELLED, CANCELLED, True)
    assert "stopped before this conversion started" in cancelled.error
    release.set()
    wait_until(lambda: store.get(running.id).finished, timeout=60, interval=0.02)
    assert store.get(running.id).status == DONE and store.get(waiting.id).status == CANCELLED


def test_queue_beyond_capacity_is_503_with_retry_after(make_app, photo):
    app = make_app(MAX_QUEUED_JOBS=0, CONVERSION_WORKERS=1)
    runner = app.extensions["image_to_3d"].runner
    block = threading.Event()
    original = runner.convert
    runner.convert = lambda *args: (block.wait(60), original(*args))[1]
    client = app.test_client()
    first = submit(client, photo)
    busy = client.post("/api/v1/conversions", content_type="multipart/form-data",
                       data={"image": (io.BytesIO(png_bytes(photo)), "p.png")})
    assert busy.status_code == 503 and busy.headers["Retry-After"] == "30"
    assert busy.get_json()["code"] == "busy"
    block.set()
    assert wait_for_job(client, f"/jobs/{first}")["status"] == "done"
    # The runner frees the job's place before "done" is saved: a client that sees "done" finds room at once.
    assert client.post("/api/v1/conversions", content_type="multipart/form-data",
                       data={"image": (io.BytesIO(png_bytes(photo)), "p.png")}).status_code == 202


@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
def test_a_job_over_its_time_limit_fails_and_leaves_no_files(make_app, photo):
    app = make_app(JOB_TIMEOUT_SECONDS=0.2)
    runner = app.extensions["image_to_3d"].runner
    store = app.extensions["image_to_3d"].store
    original = runner.convert

    def slow(job, upload, report):  # an inference still running when the limit passes: it goes on after it
        wait_until(lambda: store.get(job.id).status == "failed", timeout=60, interval=0.01)
        return original(job, upload, report)

    runner.convert = slow
    client = app.test_client()
    job_id = submit(client, photo)
    view = wait_for_job(client, f"/jobs/{job_id}")
    assert view["status"] == "failed" and "timed out" in view["error"] and view["files"] == {}
    wait_until(lambda: runner.room() == runner.capacity, timeout=60, interval=0.01)  # the attempt has ended
    folder = app.extensions["image_to_3d"].store.folder(job_id)
    assert sorted(p.name for p in folder.iterdir()) == ["job.json"]
    assert client.get(f"/jobs/{job_id}/files/ply").status_code == 409  # failed: no files


def test_a_job_whose_process_died_is_failed_by_the_watch_and_never_by_a_read(make_app):
    """A job left 'running' by a process that no longer exists: polling it changes nothing on disk; the embedded
    back-end's watch fails it (not running forever). The watch thread is off: the test runs the watch itself."""
    app = make_app(JOB_WATCH=False)
    client = app.test_client()
    service = app.extensions["image_to_3d"]
    store = service.store
    job = store.create({})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    job.start()
    job.owner = process_token(os.getpid()).replace(str(os.getpid()), str(dead.pid), 1)
    store.save(job)
    record = store.folder(job.id) / "job.json"
    before = record.read_bytes()
    for _ in range(3):
        view = client.get(f"/api/v1/conversions/{job.id}").get_json()
        assert view["status"] == "running"
        assert client.get(f"/jobs/{job.id}").status_code == 200
    assert record.read_bytes() == before  # a read leaves no trace
    service.runner.watch()
    view = client.get(f"/api/v1/conversions/{job.id}").get_json()
    assert view["status"] == "failed" and "stopped" in view["error"] and view["code"] == "worker_died"
    assert json.loads(record.read_text())["status"] == FAILED


@pytest.mark.slow  # a conversion and a sweep: make test runs it, make test-fast does not
def test_results_expire_with_410_and_the_sweep_deletes_them(make_app, photo):
    app = make_app(RESULT_TTL_SECONDS=3600)
    store = app.extensions["image_to_3d"].store
    client = app.test_client()
    job_id = submit(client, photo)
    view = wait_for_job(client, f"/jobs/{job_id}")
    job = store.get(job_id)
    assert job.expires >= job.created + 3600  # the time to live is counted from the job
    with client.get(view["files"]["ply"]) as download:
        assert download.status_code == 200
    job.expires = time.time() - 1  # its hour is over (set, not slept: a slow machine cannot expire it early)
    store.save(job)
    gone = client.get(f"/jobs/{job_id}")
    assert gone.status_code == 410 and "expired" in gone.get_data(as_text=True)
    assert client.get(view["files"]["ply"]).status_code == 410
    removed = app.extensions["image_to_3d"].sweeper.run_once()
    assert removed >= 1 and not app.extensions["image_to_3d"].store.folder(job_id).exists()
    assert client.get(f"/jobs/{job_id}").status_code == 404


@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
def test_the_sweep_runs_by_itself(make_app, photo):
    app = make_app(RESULT_TTL_SECONDS=0.5, SWEEP_INTERVAL_SECONDS=0.2)
    client = app.test_client()
    job_id = submit(client, photo)  # not polled: the sweep may delete the result before a poll would see it
    folder = app.extensions["image_to_3d"].store.folder(job_id)
    wait_until(lambda: not folder.exists(), timeout=60)  # a hang guard: the sweep runs every 0.2 s
    app.extensions["image_to_3d"].sweeper.stop()


def test_unwritable_output_folder_is_507_and_keeps_nothing(make_app, photo, tmp_path):
    import shutil

    app = make_app()
    outputs = app.config["OUTPUT_FOLDER"]
    shutil.rmtree(outputs)
    with open(outputs, "w") as blocker:  # the output folder is now a file: nothing can be created inside
        blocker.write("x")
    client = app.test_client()
    response = client.post("/convert", content_type="multipart/form-data",
                           data={"image": (io.BytesIO(png_bytes(photo)), "p.png")})
    assert response.status_code == 507
    assert "cannot store results" in response.get_data(as_text=True)
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("blocked", ["cloud.ply"])
def test_a_write_failure_in_a_job_fails_it_cleanly(app, client, photo, blocked):
    """A file that cannot be written (here: a folder is in its way) fails the job with words, not a traceback."""
    store = app.extensions["image_to_3d"].store
    original_create = store.create

    def create_with_obstacle(options, **fields):
        job = original_create(options, **fields)
        (store.folder(job.id) / blocked).mkdir()
        return job

    store.create = create_with_obstacle
    job_id = submit(client, photo)
    view = wait_for_job(client, f"/jobs/{job_id}")
    assert view["status"] == "failed" and view["code"] == "output_failed"
    assert "cloud.ply" in view["error"] and "Traceback" not in view["error"]
    assert view["files"] == {}
    assert sorted(p.name for p in store.folder(job_id).iterdir()) == ["job.json"]


def test_a_record_from_newer_or_older_code_reads_here(tmp_path):
    """A rolling upgrade: web instances and workers of two versions share the job folders. A field this code does not
    know is left out, a missing one takes its default; the job is never "not found" for it."""
    store = JobStore(tmp_path)
    job = store.create({"detail": "low"})
    path = store.folder(job.id) / "job.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "a_field_from_a_later_version": [1, 2]}))
    assert store.get(job.id) is not None and store.get(job.id).request == {"detail": "low"}
    del record["upload_sha256"], record["delete_token_sha256"], record["memory_mb"]  # written before they existed
    path.write_text(json.dumps(record))
    older = store.get(job.id)
    assert older is not None and older.upload_sha256 == "" and older.memory_mb == 0.0
    path.write_text("[1, 2]")  # not a record at all
    assert store.get(job.id) is None
