"""One attempt of a job (web.jobs.execution.Attempt), as both back-ends run it: the record's status and stages, the
deadline, the failure sentence, and no partial file left; and the one settings object both read."""

from __future__ import annotations

import threading

import pytest
from conftest import wait_until

from converter.errors import ConversionError
from converter.stages import ESTIMATING_DEPTH
from web import settings
from web.jobs.execution import INTERNAL, SUPERSEDED, TIMED_OUT, UPLOAD_IMAGE, Attempt
from web.jobs.record import DONE, FAILED
from web.jobs.store import JobStore


def run_attempt(store, job, work, timeout_seconds, ours=None):
    return Attempt(store, job, timeout_seconds, ours=ours).run(work)


def _job(tmp_path):
    store = JobStore(tmp_path / "out")
    return store, store.create({})


def test_a_done_attempt_records_its_stages_and_info_and_drops_the_upload(tmp_path):
    store, job = _job(tmp_path)
    folder = store.folder(job.id)
    (folder / UPLOAD_IMAGE).write_bytes(b"picture")
    seen = []

    def work(job, report):
        report(ESTIMATING_DEPTH)
        seen.append(store.get(job.id).stage)
        (folder / "cloud.ply").write_bytes(b"ply")
        job.files.append("cloud.ply")
        return {"points": 3}

    assert run_attempt(store, job, work, timeout_seconds=30) == DONE
    record = store.get(job.id)
    assert seen == [ESTIMATING_DEPTH]
    assert (record.status, record.stage, record.progress, record.info) == (DONE, DONE, 1.0, {"points": 3})
    assert not (folder / UPLOAD_IMAGE).exists() and (folder / "cloud.ply").is_file()


def test_a_failed_attempt_says_a_sentence_and_leaves_no_file(tmp_path):
    store, job = _job(tmp_path)
    folder = store.folder(job.id)

    def damaged(job, report):
        (folder / "cloud.ply").write_bytes(b"half")
        raise ConversionError("The image is damaged or incomplete.")

    def broken(job, report):
        (folder / "part").mkdir()
        raise RuntimeError("/secret/path: tensor size mismatch")

    assert run_attempt(store, job, damaged, timeout_seconds=30) == FAILED
    record = store.get(job.id)
    assert (record.error, record.files) == ("The image is damaged or incomplete.", [])
    assert sorted(path.name for path in folder.iterdir()) == ["job.json"]
    _, other = _job(tmp_path)
    assert run_attempt(store, other, broken, timeout_seconds=30) == FAILED
    record = store.get(other.id)
    assert (record.error, record.error_code) == (INTERNAL, "internal_error")
    assert sorted(path.name for path in store.folder(other.id).iterdir()) == ["job.json"]


def test_past_the_deadline_the_job_fails_at_once_and_what_it_writes_later_goes(tmp_path):
    store, job = _job(tmp_path)
    folder = store.folder(job.id)
    release, seen_failed = threading.Event(), []

    def slow(job, report):
        assert release.wait(60)  # a forward that cannot be interrupted (60 s: a hang guard; set below)
        seen_failed.append(store.get(job.id).error)
        (folder / "late.ply").write_bytes(b"late")
        report(ESTIMATING_DEPTH)  # the next stage ends the attempt
        return {}

    worker = threading.Thread(target=lambda: seen_failed.append(run_attempt(store, job, slow, 0.05)))
    worker.start()
    wait_until(lambda: store.get(job.id).status == FAILED, timeout=60, interval=0.01)
    release.set()
    worker.join(60)
    assert not worker.is_alive()
    assert seen_failed == [TIMED_OUT, FAILED]
    assert store.get(job.id).error_code == "timed_out"
    assert sorted(path.name for path in folder.iterdir()) == ["job.json"]


def test_a_superseded_attempt_writes_nothing_into_the_record(tmp_path):
    store, job = _job(tmp_path)
    mine = {"ours": True}

    def work(job, report):
        mine["ours"] = False  # a newer attempt took the job over
        report(ESTIMATING_DEPTH)
        return {}

    assert run_attempt(store, job, work, 30, ours=lambda: mine["ours"]) == SUPERSEDED == "superseded"
    assert store.get(job.id).stage == "running"


def test_the_app_and_the_worker_read_one_settings_object(make_app, monkeypatch):
    monkeypatch.setenv("BATCH_SIZE", "3")
    monkeypatch.setenv("ENGINE", "torch")
    read = settings.from_env()
    assert read["BATCH_SIZE"] == 3 and read["ENGINE"] == "torch"
    assert settings.from_env({})["BATCH_SIZE"] == 0  # one default for both: automatic
    converter = settings.make_converter({**read, "DEVICE": "cpu"})
    assert (converter.batch_size, converter.engine) == (3, "torch")
    app = make_app(DEVICE="cpu")
    assert app.config["ENGINE"] == "torch" and app.config["BATCH_SIZE"] == 3
    other = settings.converter_like(converter, "Intel/dpt-large")
    assert (other.model, other.batch_size, other.engine) == ("Intel/dpt-large", 3, "torch")


@pytest.mark.parametrize("path", [
    "/jobs/..%2F/files/ply", "/jobs/..%2F..%2Fetc%2Fpasswd", "/api/v1/conversions/%2e%2e%2f", "/jobs/ABCDEF",
    "/jobs/" + "0" * 31 + "g", "/jobs/" + "0" * 32 + "%2F..%2Fjob.json", "/api/v1/batches/..%2F", "/compare/x",
    "/api/v1/comparisons/..%2f..%2f",
])
def test_any_id_that_is_not_one_is_a_404_before_routing_never_a_redirect(app, path):
    response = app.test_client().get(path)
    assert response.status_code == 404, (path, response.status_code, response.headers.get("Location"))
