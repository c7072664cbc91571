"""A long clip in Celery mode (issue 22 point 5), against a real redis-server and two real Celery workers: its chunks
are sent as a Celery group, predicted by both workers, joined and written by the job's own task; a worker killed
mid-chunk has its chunk redone; cancel and delete stop every worker and leave no file and no Redis key; a job whose
own worker (the coordinator) dies is retried as a new attempt that starts its chunks afresh.

Deterministic: the workers' holds (tests/celery_gate.py) decide who predicts what and when, never a sleep. The clip:
16 frames of 48 x 32 at 12 fps, chunks of 4 frames with 2 of overlap: 4 chunks, the job's coordinator starting at the
first, one chunk task for each other chunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import wait_for_job, wait_until
from test_celery import Workers, job_files, keys_naming, wait_ready, worker_setting
from test_web_video import clip_bytes, post_video, probe

from web.deletion import TOKEN_HEADER

pytestmark = pytest.mark.slow  # a Redis server and Celery workers in subprocesses

FRAMES, CHUNK_FRAMES, OVERLAP = 16, 4, 2
CHUNKS = FRAMES // CHUNK_FRAMES
FIRST_CHUNK_FRAMES = 6  # every chunk predicts (16 + 3 · 2) / 4 = 5.5 frames: the first owns 6, the others 3, 3 and 4


class Setting:
    """Redis, two workers (chunks of CHUNK_FRAMES frames; the holds' files under ``root``) and a Celery-mode app."""

    def __init__(self, root: Path, make_app):
        self.redis, self.model, self.outputs, env = worker_setting(
            root, VIDEO_CHUNK_FRAMES=str(CHUNK_FRAMES), VIDEO_CHUNK_OVERLAP=str(OVERLAP),
            HOLD_CHUNKS_WHILE=str(root / "hold-chunks"), HOLD_COORDINATOR_WHILE=str(root / "hold-coordinator"))
        self.hold_chunks, self.hold_coordinator = root / "hold-chunks", root / "hold-coordinator"
        self.workers = Workers(root, env)
        self.workers.start(2)
        wait_ready(self.workers, self.redis, 2)
        self.app = make_app(JOB_BACKEND="celery", REDIS_URL=self.redis.url, OUTPUT_FOLDER=str(self.outputs),
                            DEPTH_MODEL=str(self.model))
        self.client = self.app.test_client()

    def post(self, root: Path, **fields) -> dict:
        created = post_video(self.client, clip_bytes(root, count=FRAMES), video_formats="depth_video", **fields)
        assert created.status_code == 202, created.get_json()
        return created.get_json()

    def folder(self, job_id: str) -> Path:
        return self.outputs / job_id

    def record(self, job_id: str) -> dict:
        return json.loads((self.folder(job_id) / "job.json").read_text())

    def part(self, job_id: str, index: int) -> dict:
        """A chunk's progress part (frames 0 when it has none yet)."""
        try:
            return json.loads((self.folder(job_id) / "progress" / f"chunk{index:04d}.json").read_text())
        except (OSError, ValueError):
            return {"frames": 0}

    def claims(self, job_id: str) -> dict[int, str]:
        """The chunks of attempt 1 claimed now: index -> owner."""
        with self.redis.client() as client:
            keys = list(client.scan_iter(f"image-to-3d:chunk:{job_id}:1:*"))
            return {int(key.rsplit(":", 1)[1]): owner for key, owner in zip(keys, client.mget(keys)) if owner}

    def logged(self, line: str) -> bool:
        return any(line in log.read_text(errors="replace") for log in self.workers.folder.glob("worker*.log"))

    def said(self, prefix: str) -> str | None:
        """What a worker logged after ``prefix`` (the rest of its line), or None."""
        for log in self.workers.folder.glob("worker*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if prefix in line:
                    return line.split(prefix, 1)[1]
        return None

    def close(self) -> None:
        for hold in (self.hold_chunks, self.hold_coordinator):
            hold.unlink(missing_ok=True)
        self.workers.stop_all()
        self.redis.stop()


@pytest.fixture
def setting(tmp_path, make_app):
    built = Setting(tmp_path, make_app)
    try:
        yield built
    finally:
        built.close()


def pid_of(owner: str) -> int:
    return int(owner.split(":")[1])  # "host:pid:start time"


def depth_video_frames(setting: Setting, view: dict, tmp_path: Path) -> int:
    response = setting.client.get(view["files"]["depth_video"])
    data = response.get_data()
    response.close()
    assert response.status_code == 200
    video = next(stream for stream in probe(data, tmp_path)["streams"] if stream["codec_type"] == "video")
    return int(video["nb_read_frames"])


def assert_nothing_left_in_redis(setting: Setting, job_id: str) -> None:
    wait_until(lambda: keys_naming(setting.redis, job_id) == [], 60)  # released after the record is written


def test_a_clips_chunks_are_predicted_by_both_workers_and_assembled_by_the_jobs_own_task(setting, tmp_path):
    setting.hold_coordinator.touch()  # the job's worker sends its chunk tasks, then waits: the other takes them all
    body = setting.post(tmp_path)
    job_id, folder = body["id"], setting.folder(body["id"])
    records = [folder / "chunks" / "attempt1" / f"{index:04d}.json" for index in range(1, CHUNKS)]
    try:
        wait_until(lambda: all(path.is_file() for path in records), 120)
        coordinator = setting.record(job_id)["owner"]
        predicted = [json.loads(path.read_text()) for path in records]
        helpers = {record["worker"] for record in predicted}
        assert len(helpers) == 1 and coordinator not in helpers, (coordinator, predicted)
        # Progress adds up across chunks predicted elsewhere: three chunks done, the first not started.
        view = setting.client.get(body["status_url"]).get_json()
        assert view["status"] == "running", view
        assert view["video"]["expected"] == FRAMES
        assert view["video"]["frames"] == sum(record["frames"] for record in predicted) == FRAMES - FIRST_CHUNK_FRAMES
        assert 0.05 < view["progress"] < 0.98
    finally:
        setting.hold_coordinator.unlink()
    view = wait_for_job(setting.client, f"/jobs/{job_id}", timeout=120)
    assert view["status"] == "done", (view, setting.workers.logs())
    chunks = view["info"]["chunks"]
    assert view["info"]["frames"] == FRAMES and chunks["count"] == CHUNKS
    assert chunks["predicted_by"] == [coordinator, *[record["worker"] for record in predicted]]
    assert [join["frames"] for join in chunks["joins"]] == [0] + [OVERLAP] * (CHUNKS - 1)
    sidecar = setting.client.get(view["files"]["json"])
    assert sidecar.get_json()["chunks"]["count"] == CHUNKS, sidecar.get_json()
    assert sidecar.get_json()["chunks"]["predicted_by"] == chunks["predicted_by"]
    sidecar.close()
    assert depth_video_frames(setting, view, tmp_path) == FRAMES
    assert not (folder / "chunks").exists() and not (folder / "upload.video").exists()
    assert_nothing_left_in_redis(setting, job_id)


def test_a_worker_killed_mid_chunk_has_its_chunk_redone_and_the_job_ends_with_every_frame(setting, tmp_path):
    setting.hold_coordinator.touch()
    setting.hold_chunks.touch()  # the other worker waits after each frame of its chunk, its claim held
    body = setting.post(tmp_path)
    job_id, folder = body["id"], setting.folder(body["id"])
    try:
        wait_until(lambda: setting.part(job_id, 1)["frames"] >= 1, 120)  # the helper is mid-chunk 1
        coordinator = setting.record(job_id)["owner"]
        claims = setting.claims(job_id)
        assert list(claims) == [1] and claims[1] != coordinator, (claims, coordinator)
        victim = setting.workers.owning(pid_of(claims[1]))
        assert victim is not None and victim is not setting.workers.owning(pid_of(coordinator))
        setting.workers.kill(victim)
    finally:
        setting.hold_chunks.unlink()
        setting.hold_coordinator.unlink()
    # Its claim lapses (CHUNK_CLAIM_TTL); the coordinator, done with the others, takes chunk 1 over.
    view = wait_for_job(setting.client, f"/jobs/{job_id}", timeout=120)
    assert view["status"] == "done", (view, setting.workers.logs())
    assert setting.record(job_id)["attempt"] == 1  # the job itself never stopped
    assert view["info"]["chunks"]["predicted_by"] == [coordinator] * CHUNKS
    assert view["info"]["frames"] == FRAMES and depth_video_frames(setting, view, tmp_path) == FRAMES
    assert not [path for path in folder.rglob("*") if path.name.startswith(".") or path.suffix == ".part"]
    assert not (folder / "chunks").exists()
    assert_nothing_left_in_redis(setting, job_id)


@pytest.mark.parametrize("how", ["cancel", "delete"])
def test_cancelling_or_deleting_a_chunked_job_stops_every_worker_and_leaves_nothing(setting, tmp_path, how):
    setting.hold_coordinator.touch()
    setting.hold_chunks.touch()
    body = setting.post(tmp_path)
    job_id = body["id"]
    try:
        wait_until(lambda: setting.part(job_id, 1)["frames"] >= 1, 120)  # the helper is mid-chunk 1
        assert set(setting.claims(job_id)) == {1}
        if how == "cancel":
            cancel_url = setting.client.get(body["status_url"]).get_json()["cancel_url"]
            answer = setting.client.post(cancel_url,
                                         headers={TOKEN_HEADER: body["delete_token"]})
            assert answer.status_code == 200, answer.get_json()
        else:
            answer = setting.client.delete(f"/api/v1/conversions/{job_id}",
                                           headers={TOKEN_HEADER: body["delete_token"]})
            assert answer.status_code == 204
    finally:
        setting.hold_chunks.unlink()
        setting.hold_coordinator.unlink()
    # The helper stops at its next frame, the coordinator at its next look; both let go.
    wait_until(lambda: setting.logged(f"job {job_id} attempt 1 chunk 1: stopped"), 60)
    wait_until(lambda: setting.logged(f"job {job_id} attempt 1: let go"), 60)
    # The chunk tasks still queued find the job over (or its chunks gone) and predict nothing.
    for index in range(2, CHUNKS):
        said = wait_until(lambda: setting.said(f"job {job_id} attempt 1 chunk {index}: "), 60)
        assert said.startswith(("nothing to do", "already done", "claimed elsewhere")), said
    if how == "cancel":
        assert setting.record(job_id)["status"] == "cancelled"
        assert sorted(path.name for path in setting.folder(job_id).rglob("*")) == ["job.json"]
    else:
        assert job_files(setting.outputs, job_id) == []
        assert setting.client.get(body["status_url"]).status_code == 404
    assert_nothing_left_in_redis(setting, job_id)
    again = post_video(setting.client, clip_bytes(tmp_path, count=4), video_formats="depth_video").get_json()
    assert wait_for_job(setting.client, f"/jobs/{again['id']}", timeout=120)["status"] == "done"


def test_a_chunked_job_whose_own_worker_dies_is_retried_as_a_new_attempt_that_starts_its_chunks_afresh(setting,
                                                                                                     tmp_path):
    """The coordinator (the job's own task, holding its heartbeat) is killed while the other worker is mid-chunk: the
    web tier's watch queues attempt 2, which the surviving worker coordinates alone; attempt 1's chunk tasks and
    files count for nothing."""
    setting.hold_coordinator.touch()
    setting.hold_chunks.touch()
    body = setting.post(tmp_path)
    job_id, folder = body["id"], setting.folder(body["id"])
    try:
        wait_until(lambda: setting.part(job_id, 1)["frames"] >= 1, 120)
        coordinator = setting.record(job_id)["owner"]
        helper = setting.claims(job_id)[1]
        victim = setting.workers.owning(pid_of(coordinator))
        assert victim is not None and helper != coordinator
        setting.workers.kill(victim)
    finally:
        setting.hold_chunks.unlink()
        setting.hold_coordinator.unlink()
    view = wait_for_job(setting.client, f"/jobs/{job_id}", timeout=180)
    assert view["status"] == "done", (view, setting.workers.logs())
    assert setting.record(job_id)["attempt"] == 2
    assert view["info"]["chunks"]["predicted_by"] == [helper] * CHUNKS
    assert view["info"]["frames"] == FRAMES and depth_video_frames(setting, view, tmp_path) == FRAMES
    assert not (folder / "chunks").exists()
    # No chunk claim of either attempt is left, nor the dead attempt's claim; the watch's once-only guard for its
    # recovery expires by itself (an hour), as for any retried job.
    with setting.redis.client() as client:
        wait_until(lambda: [key for key in client.scan_iter("*") if job_id in key and ":once:recover:" not in key]
                   == [], 60)
