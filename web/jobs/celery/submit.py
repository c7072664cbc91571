"""The web tier's side of ``JOB_BACKEND=celery``: it only accepts, validates and answers.

The upload's bytes go into the job folder (``OUTPUT_FOLDER``, a volume every machine shares), the job into Redis's
pending set, and a task naming (job id, attempt) onto the broker's queue; a worker (web/jobs/celery/worker.py) runs it.
No result backend: the job record on the shared folder is the state. A watch thread settles jobs whose worker died
(reading a job never does).
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from converter import Converter, OutputError
from converter.service_api import QUEUED, atomic_output

from ...model_status import LOADING, READY, UNAVAILABLE
from ..backend import QueueFullError, job_requests
from ..execution import UPLOAD_DEPTH, UPLOAD_IMAGE, UPLOAD_VIDEO, WORKER_DIED, drop_uploads, keep_video, remove_outputs
from ..record import Job
from ..store import JobStore, Upload

from .board import (
    BROKER_ERRORS,
    EXPORT_TASK,
    HEARTBEAT_GRACE,
    HEARTBEAT_TTL,
    MAX_ATTEMPTS,
    QUEUE,
    TASK_NAME,
    Board,
    make_celery,
)

log = logging.getLogger(__name__)

QUEUE_DOWN = "The conversion queue cannot be reached right now."
# A job Redis forgot is queued again this long after Redis is back at the latest: the grace for heartbeats to return
# (1.5 TTL), then one watch period (TTL), plus a period's slack for the instance whose turn it is.
WATCH_WITHIN_SECONDS = HEARTBEAT_TTL * 3.5


class QueueUnavailableError(QueueFullError):
    """Redis cannot be reached: like a full queue, the client should retry later."""


class CeleryJobRunner:
    """JobRunner's interface for the web tier: stores the upload in the job folder and enqueues the task.

    Admission is one atomic step in Redis on the set of pending jobs (``max_queued`` places shared by every web
    instance, so a burst cannot overshoot). A watch thread re-reads pending and active jobs every ``HEARTBEAT_TTL``
    and settles those nobody is on: queued again while an attempt is left, else failed.
    """

    runs_here = False

    @classmethod
    def from_config(cls, config, store: JobStore, converter, convert=None, export=None,
                    memory=None) -> CeleryJobRunner:
        """Celery workers convert and export (web/jobs/celery/worker.py); this process loads no model."""
        runner = cls(store, config["REDIS_URL"], max_queued=config["MAX_QUEUED_JOBS"],
                     watch=config.get("JOB_WATCH", True), memory=memory)
        runner.model_status = WorkersModelStatus(runner.board, converter)
        return runner

    def __init__(self, store: JobStore, redis_url: str, max_queued: int = 8, watch: bool = True, memory=None):
        self.store = store
        # Each job's estimate is recorded here (the job view shows it); the worker that takes it admits it by its
        # own budget (web.jobs.celery.worker).
        self.memory = memory
        self.max_queued = max_queued
        self.board = Board(redis_url)
        self.celery = make_celery(redis_url)
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_loop, name="celery-watch", daemon=True)
        if watch:
            self._watch.start()

    def submit_batch(self, request: dict | list[dict], uploads: list[Upload | None], client: str = "",
                     delete_token_sha256: str = "") -> list[Job]:
        """Queue jobs (one job: a batch of one) as one unit of admission (as the embedded JobRunner's): admitted whole, in one Redis step, when
        fewer than ``max_queued`` jobs wait, or QueueFullError; QueueUnavailableError without Redis;
        JobTooLargeError (web.memory_budget) for a job that could never fit the web tier's JOB_MEMORY_MB. Each
        job's task carries its ``client``'s turn as its priority (web.jobs.celery.board). ``request``: one for
        all, or one per upload (an image's or a video's: web.jobs.backend.job_requests)."""
        requests = job_requests(request, uploads)
        estimates = self.memory.estimates(requests, uploads) if self.memory is not None else [0.0] * len(uploads)
        jobs = [self.store.create(one, memory_mb=memory_mb, client=client,
                                  upload_sha256=getattr(upload, "sha256", "") or "",
                                  delete_token_sha256=delete_token_sha256)
                for one, memory_mb, upload in zip(requests, estimates, uploads)]
        try:
            priorities = self.board.admit([job.id for job in jobs], time.time(), self.max_queued, client)
            refused = QueueFullError() if priorities is None else None
        except redis.RedisError:
            refused = QueueUnavailableError(QUEUE_DOWN)
        if refused is not None:
            for job in jobs:
                self.store.delete(job.id)
            raise refused
        for index, (job, upload, priority) in enumerate(zip(jobs, uploads, priorities)):
            try:
                self._send(job, upload, priority)
            except Exception:
                for later in jobs[index + 1:]:
                    self._forget(later)
                raise
        return jobs

    def _send(self, job: Job, upload: Upload | None, priority: int) -> None:
        """Store the upload beside the admitted job and publish its task (undone on failure)."""
        folder = self.store.folder(job.id)
        try:
            if upload is not None and upload.video is not None:
                keep_video(folder, upload)
            elif upload is not None:
                _write_bytes(folder / UPLOAD_IMAGE, upload.image)
                if upload.depth:
                    _write_bytes(folder / UPLOAD_DEPTH, upload.depth)
            self.celery.send_task(TASK_NAME, args=[job.id, job.attempt], queue=QUEUE, retry=True, priority=priority)
        except OutputError:
            self._forget(job)
            raise
        except BROKER_ERRORS as error:
            self._forget(job)
            log.warning("could not queue job %s: %s", job.id, error)
            raise QueueUnavailableError(QUEUE_DOWN) from None

    def _forget(self, job: Job) -> None:
        self.store.delete(job.id)
        try:
            self.board.release(job.id)
        except redis.RedisError:
            pass

    def forget(self, job_id: str) -> None:
        """Every Redis key naming the job goes (its place in line, heartbeat, claims, once-only guards); its task
        message, if still in the broker's list, is taken by a worker that finds no record and does nothing."""
        try:
            self.board.forget_job(job_id)
        except redis.RedisError:
            log.warning("job %s deleted while Redis was away: its keys expire or are released by the watch", job_id)

    def room(self) -> int:
        """How many more jobs the queue takes now (0 when Redis cannot be reached): a batch goes whole or not."""
        try:
            return max(0, self.max_queued - self.board.pending_count())
        except redis.RedisError:
            return 0

    def submit_export(self, target) -> None:
        """Queue a later download (web.jobs.exports) for a worker; QueueUnavailableError without Redis. At the
        broker's first priority: someone is waiting on the link, and an export is short beside a conversion."""
        try:
            self.celery.send_task(EXPORT_TASK, args=target.to_args(), queue=QUEUE, retry=True)
        except BROKER_ERRORS:
            raise QueueUnavailableError(QUEUE_DOWN) from None

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job a worker takes: the pending set is in the broker's order (priority, then arrival)."""
        try:
            return self.board.position(job_id)
        except redis.RedisError:
            return None

    def shutdown(self, wait: bool = False) -> None:
        """Stop watching; nothing runs in this process to wait for (the workers run the jobs)."""
        self._stop.set()
        self.board.redis.close()
        self.celery.close()

    def workers_ready(self) -> int:
        return self.model_status.ready_count()

    def _settle(self, job: Job) -> None:
        """Settle one unfinished job if nobody is on it: a job Redis lost before any worker started it is sent
        again as the same attempt (nothing counted); a job whose worker died is queued again while an attempt is
        left, else failed. Nothing changes while the job waits in the queue or a worker's heartbeat is present,
        nor while Redis cannot be reached."""
        pending, beating = self.board.presence(job.id)
        if pending or beating:
            return
        # Just created (not yet in the pending set), or Redis just restarted (heartbeats not yet back).
        if time.time() - job.updated < HEARTBEAT_TTL or self.board.uptime() < HEARTBEAT_GRACE:
            return
        if not self.board.once(f"recover:{job.id}:{job.attempt}:{job.updated}"):
            return  # another instance's watch is handling it
        folder = self.store.folder(job.id)
        if job.status == QUEUED and not self.board.started(job.id, job.attempt):
            log.warning("job %s: the queue lost it before any worker started it (Redis restarted or was "
                        "flushed), not a worker death; queueing attempt %d again", job.id, job.attempt)
            job.resend()
            self._requeue(job)
            return
        self.board.release(job.id)
        kept = any((folder / name).is_file() for name in (UPLOAD_IMAGE, UPLOAD_VIDEO))
        retryable = job.attempt < MAX_ATTEMPTS and (kept or job.request.get("rebuild_of"))
        if not retryable:
            log.warning("job %s: its worker died on attempt %d; failing it", job.id, job.attempt)
            drop_uploads(folder)
            job.fail(WORKER_DIED, "worker_died")
            self.store.save(job)
            return
        log.warning("job %s: its worker died on attempt %d; queueing it again", job.id, job.attempt)
        job.retry()
        self._requeue(job)

    def _requeue(self, job: Job) -> None:
        """Save the job queued again (its transition made) and send its task; a broker that went away meanwhile
        leaves it for the next watch."""
        remove_outputs(self.store.folder(job.id), keep_uploads=True)
        self.store.save(job)
        try:
            self._enqueue(job)
        except BROKER_ERRORS as error:
            log.warning("job %s: could not queue it again: %s", job.id, error)

    def _enqueue(self, job: Job) -> None:
        # First come, first in line: a retried job keeps its place among the jobs of its priority.
        priority = self.board.add_pending(job.id, job.created, job.client)
        try:
            self.celery.send_task(TASK_NAME, args=[job.id, job.attempt], queue=QUEUE, retry=True, priority=priority)
        except Exception:
            try:
                self.board.release(job.id)
            except redis.RedisError:
                pass
            raise

    def _watch_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_TTL):
            self.watch()

    def watch(self) -> None:
        """Re-read the jobs Redis tracks and, once per period across all instances, every unfinished record on the
        shared folder: a job Redis forgot (restarted with it queued) is queued again without anyone polling it,
        within ``WATCH_WITHIN_SECONDS`` of Redis coming back."""
        try:
            job_ids = self.board.tracked()
            if self.board.once("scan-unfinished", ttl=HEARTBEAT_TTL):
                job_ids = list(dict.fromkeys(job_ids + self.store.unfinished()))
            for job_id in job_ids:
                job = self.store.get(job_id)
                if job is None or job.finished:
                    self.board.release(job_id)
                else:
                    self._settle(job)
        except redis.RedisError:
            pass  # Redis is away; look again later
        except Exception:  # the watch must never stop
            log.exception("watching celery jobs failed")


class WorkersModelStatus:
    """ModelStatus's interface for a web tier that loads no model: ready when a worker says its model is ready."""

    CACHE_SECONDS = 1.0

    def __init__(self, board: Board, converter: Converter):
        self.board, self.converter = board, converter
        self._read_at, self._value = 0.0, (LOADING, "")

    def start(self) -> WorkersModelStatus:
        return self

    def wait(self, timeout: float | None = None) -> bool:
        return True

    @property
    def state(self) -> str:
        return self._current()[0]

    @property
    def message(self) -> str:
        return self._current()[1]

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def runs(self) -> dict:
        """The engine and precision a ready worker reports, else the ones asked for."""
        try:
            workers = [w for w in self.board.workers() if w.get("model") == self.converter.model]
        except redis.RedisError:
            workers = []
        for worker in workers:
            if worker.get("state") == READY and worker.get("engine"):
                return {"engine": worker["engine"], "precision": worker.get("precision", self.converter.precision)}
        return {"engine": self.converter.engine, "precision": self.converter.precision}

    def ready_count(self) -> int:
        try:
            return sum(w.get("model") == self.converter.model and w.get("state") == READY
                       for w in self.board.workers())
        except redis.RedisError:
            return 0

    def _current(self) -> tuple[str, str]:
        if time.monotonic() - self._read_at > self.CACHE_SECONDS:
            self._value, self._read_at = self._read(), time.monotonic()
        return self._value

    def _read(self) -> tuple[str, str]:
        try:
            workers = [w for w in self.board.workers() if w.get("model") == self.converter.model]
        except redis.RedisError:
            return LOADING, f"{QUEUE_DOWN} Conversions will start once it is back."
        ready = sum(worker.get("state") == READY for worker in workers)
        if ready:
            return READY, f"The depth model '{self.converter.model}' is ready on {ready} worker(s)."
        if workers and all(worker.get("state") == UNAVAILABLE for worker in workers):
            return UNAVAILABLE, workers[0].get("message") or f"The depth model '{self.converter.model}' is unavailable."
        if workers:
            return LOADING, f"The depth model '{self.converter.model}' is loading on the conversion workers."
        return LOADING, ("No conversion worker is running: conversions wait in the queue until one starts "
                         "(make worker).")


def _write_bytes(path, data: bytes) -> None:
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)
