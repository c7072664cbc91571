"""Celery bookkeeping under faults, measured against a real redis-server and real Celery workers: a burst against
the queue limit from two app instances at once, and a Redis restart that forgets queued jobs nobody polls."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import pytest
import requests
from test_celery import Workers, photo, quiet_port, ready_workers, worker_setting

from web.jobs.celery.board import PENDING
from web.jobs.celery.submit import WATCH_WITHIN_SECONDS

pytestmark = pytest.mark.slow  # a Redis server and Celery workers in subprocesses


def _post(app, image: bytes):
    client = app.test_client()
    return client.post("/api/v1/conversions", content_type="multipart/form-data",
                       data={"image": (io.BytesIO(image), "p.png")})


def test_a_burst_on_two_instances_admits_exactly_max_queued_jobs(tmp_path, make_app):
    """30 requests at once, half to each of two app instances, no worker draining the queue: the Redis
    reservation admits exactly MAX_QUEUED_JOBS, the rest get 503 busy."""
    redis_server, model, outputs, _ = worker_setting(tmp_path)
    try:
        apps = [make_app(JOB_BACKEND="celery", REDIS_URL=redis_server.url, OUTPUT_FOLDER=str(outputs),
                         DEPTH_MODEL=str(model), MAX_QUEUED_JOBS=8) for _ in range(2)]
        image, answers, start = photo(), [], threading.Barrier(30)

        def one(index: int) -> None:
            start.wait(60)  # a hang guard only
            answers.append(_post(apps[index % 2], image))

        threads = [threading.Thread(target=one, args=(index,)) for index in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        codes = sorted(answer.status_code for answer in answers)
        assert codes == [202] * 8 + [503] * 22, codes
        assert all(answer.get_json()["code"] == "busy" for answer in answers if answer.status_code == 503)
        with redis_server.client() as client:
            assert client.zcard(PENDING) == 8
        # The refused requests left no job folder behind.
        assert len([path for path in outputs.iterdir() if len(path.name) == 32]) == 8
    finally:
        redis_server.stop()


def test_jobs_redis_forgot_are_queued_again_unpolled_as_the_same_attempt(tmp_path, make_app, caplog):
    """Two jobs wait in the queue (no worker yet); Redis restarts empty; nobody polls. The web instance's watch
    finds them on the shared folder and queues them again, not counting it as a worker death; a worker started
    afterwards converts them."""
    caplog.set_level(logging.WARNING, logger="web.jobs.celery.submit")
    redis_server, model, outputs, env = worker_setting(tmp_path)
    metrics_port, metrics_dir = quiet_port(), tmp_path / "worker-metrics"  # bound later, by the worker
    metrics_dir.mkdir()
    env.update(WORKER_METRICS_PORT=str(metrics_port), PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    workers = Workers(tmp_path, env)
    try:
        app = make_app(JOB_BACKEND="celery", REDIS_URL=redis_server.url, OUTPUT_FOLDER=str(outputs),
                       DEPTH_MODEL=str(model), MAX_QUEUED_JOBS=8)
        ids = [_post(app, photo(96, 128 + 8 * number)).get_json()["id"] for number in range(2)]
        redis_server.stop()
        redis_server.start()  # the same port, empty: the queued messages and the pending set are gone
        restarted = time.monotonic()
        with redis_server.client() as client:
            assert client.llen("image-to-3d") == 0
        workers.start(1)

        def records():
            return [json.loads((outputs / job_id / "job.json").read_text()) for job_id in ids]

        deadline = restarted + WATCH_WITHIN_SECONDS + 90  # re-queued within the stated time; then converted
        while not all(record["status"] == "done" for record in records()):
            assert time.monotonic() < deadline, (records(), workers.logs())
            time.sleep(0.2)
        took = time.monotonic() - restarted
        assert [record["attempt"] for record in records()] == [1, 1]
        said = caplog.text
        assert said.count("the queue lost it before any worker started it") == 2 and "worker died" not in said
        # The worker's own exporter adds up its pool children's events (web.metrics).
        scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert 'image_to_3d_jobs_ended_total{code="",status="done"} 2.0' in scraped, scraped[-2000:]
        print(f"forgotten jobs done {took:.1f} s after the Redis restart (stated re-queue bound "
              f"{WATCH_WITHIN_SECONDS:.0f} s), ready workers: {ready_workers(redis_server)}")
    finally:
        workers.stop_all()
        redis_server.stop()
