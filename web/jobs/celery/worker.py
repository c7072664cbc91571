"""The Celery worker (``JOB_BACKEND=celery``): claims one attempt of a job, decodes the stored upload once and runs
it as a web.jobs.execution.Attempt, as the embedded runner does. Its settings come from web.settings, the same
object the web app reads. A long clip's chunks are spread over the workers as tasks of their own
(web.jobs.celery.chunks) unless VIDEO_CHUNK_WORKERS=1 (the clip streams through its job's worker).

Run a worker with ``celery -A web.jobs.celery.worker worker --concurrency 1 --prefetch-multiplier 1`` (``make worker``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from pathlib import Path

import redis
from celery import signals

from converter import ConversionError
from converter.service_api import QUEUED

from ... import settings as service_settings
from .board import CHUNK_TASK, EXPORT_TASK, HEARTBEAT_EVERY, PRESENCE_EVERY, TASK_NAME, Board, make_celery
from .chunks import CeleryChunkPool
from ..conversion import run_job
from ..depth_cache import DepthCache
from ..execution import UPLOAD_DEPTH, UPLOAD_IMAGE, Attempt, job_timeout
from ..video import ChunkPool
from ..exports import Exports, Target
from ..record import Job
from ..store import BatchStore, JobStore, Upload, process_token
from ...memory_budget import JobNeverFitsError, MemoryBudget, default_job_memory_mb
from ...model_status import ModelStatus

log = logging.getLogger(__name__)


class Worker:
    """One worker process's resources (converter, stores, cache, Redis), built once after the fork, and how it
    runs one attempt of a job."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.name = f"{socket.gethostname()}:{process_token()}"
        # Several jobs of one process (``--pool threads``) share forwards on a GPU, as the embedded runner's do.
        self.converter = service_settings.make_converter(settings, gpu=service_settings.uses_cuda(settings["DEVICE"]))
        # The worker never judges liveness (the web tier's watch does: web.jobs.celery.submit).
        self.store = JobStore(settings["OUTPUT_FOLDER"], ttl_seconds=settings["RESULT_TTL_SECONDS"])
        self.cache = DepthCache(os.path.join(settings["OUTPUT_FOLDER"], ".cache"),
                                max_entries=settings["DEPTH_CACHE_ENTRIES"],
                                ttl_seconds=settings["RESULT_TTL_SECONDS"])
        self.board = Board(settings["REDIS_URL"])
        self.exports = Exports(self.store, BatchStore(settings["OUTPUT_FOLDER"], settings["RESULT_TTL_SECONDS"]),
                               settings["MAX_PIXELS"], settings["EXPORT_TIMEOUT_SECONDS"])
        self.model_status = ModelStatus(self.converter, threads=settings["TORCH_THREADS"] or None)
        self.timeout_seconds = settings["JOB_TIMEOUT_SECONDS"]
        # This process's memory for conversions (JOB_MEMORY_MB, or what this machine has free less the model):
        # the web tier estimated each job's peak (Job.memory_mb); here it runs while the estimates fit (several
        # jobs at once with ``--pool threads``), and one that never could fails with the sentence.
        self.memory = MemoryBudget(settings["JOB_MEMORY_MB"] or default_job_memory_mb(self.converter))
        self._stop = threading.Event()
        # A long clip's chunks: chunk tasks any worker takes (this one included), coordinated by the job's own task;
        # VIDEO_CHUNK_WORKERS=1: the clip streams through this process in one pass.
        self.chunk_tasks = CeleryChunkPool(self, app)
        self.chunks = ChunkPool(1) if settings["VIDEO_CHUNK_WORKERS"] == 1 else self.chunk_tasks

    def start(self) -> Worker:
        """Load the model in the background (the pool's start-up must stay quick) and publish its state."""
        self.model_status.start()
        threading.Thread(target=self._publish_loop, name="worker-presence", daemon=True).start()
        return self

    def _publish_loop(self) -> None:
        while True:
            try:
                self.board.publish_worker(self.name, {
                    "model": self.converter.model, "state": self.model_status.state,
                    "message": self.model_status.message, "host": socket.gethostname(), "pid": os.getpid(),
                    **self.model_status.runs, **self._batching()})
            except redis.RedisError:
                pass
            if self._stop.wait(PRESENCE_EVERY):
                return

    def _batching(self) -> dict:
        """How many forwards served how many predictions, when this process batches them."""
        if self.converter.batch_size <= 1 or not self.converter.is_loaded:
            return {}
        stats = self.converter.depth_model.batcher.stats
        return {"forwards": stats.forwards, "predictions": stats.requests}

    def run(self, job_id: str, attempt: int, priority: int = 0) -> None:
        """Run ``attempt`` of the job unless it is stale (the job moved on) or was started before. ``priority``: its
        task's broker priority (its fair share), which its chunk tasks get too."""
        job = self.store.get(job_id)
        if job is None or job.status != QUEUED or job.attempt != attempt:
            log.info("job %s attempt %s: nothing to do (started, finished, gone or superseded)", job_id, attempt)
            return
        if not self.board.claim(job_id, attempt, self.name):
            log.info("job %s attempt %s: already started elsewhere; ignoring this delivery", job_id, attempt)
            return
        stop = threading.Event()
        beating = threading.Thread(target=self._beat, args=(job_id, attempt, stop), daemon=True, name="heartbeat")
        beating.start()
        try:
            self.model_status.wait(self.timeout_seconds)
            self._execute(job, attempt, priority)
        finally:
            stop.set()
            beating.join()  # no beat after the release: a deleted job's heartbeat must not come back
            try:
                self.board.release(job_id)
                current = self.store.get(job_id)
                if current is None or current.finished or current.attempt != attempt:
                    for earlier in range(1, attempt + 1):  # a dead attempt's claim too: the record rules it out
                        self.board.forget_claim(job_id, earlier)
            except redis.RedisError:
                pass  # the heartbeat expires by itself, the claim after CLAIM_TTL
            log.info("job %s attempt %s: let go", job_id, attempt)

    def _beat(self, job_id: str, attempt: int, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_EVERY):
            try:
                self.board.beat(job_id, attempt, self.name)
            except redis.RedisError:
                pass  # Redis blinked: the next beat puts the key back

    def _execute(self, job: Job, attempt: int, priority: int = 0) -> None:
        """One claimed attempt, run as every attempt is (web.jobs.execution). A write is made only while the record
        still names this attempt (a recovered job belongs to its new attempt)."""
        folder = self.store.folder(job.id)

        def ours() -> bool:
            current = self.store.get(job.id)
            return current is not None and current.attempt == attempt and not current.finished

        def work(job: Job, report) -> dict:
            upload = None if job.request.get("video") else self._upload(folder, job)
            chunks = self.chunks
            if isinstance(chunks, CeleryChunkPool):
                chunks = chunks.bind(job.id, attempt, priority)
            return run_job(self.converter, self.store, job, upload, report, self.cache, self.settings, chunks)

        def never_fits(job: Job, report) -> dict:
            raise JobNeverFitsError(job.memory_mb, self.memory.total_mb)

        job.owner, job.files = self.name, []
        memory_mb = job.memory_mb
        timeout = job_timeout(job, self.timeout_seconds, self.settings["VIDEO_TIMEOUT_SECONDS"])
        if memory_mb > self.memory.total_mb:
            Attempt(self.store, job, timeout, ours=ours).run(never_fits)
            return
        self.memory.reserve(memory_mb)  # at once in a process converting one job at a time
        try:
            Attempt(self.store, job, timeout, ours=ours).run(work)
        finally:
            self.memory.release(memory_mb)

    @staticmethod
    def _upload(folder: Path, job: Job) -> Upload | None:
        """The bytes the web tier stored (decoded by run_job, once); None for a rebuild."""
        if job.request.get("rebuild_of"):
            return None
        try:
            data = (folder / UPLOAD_IMAGE).read_bytes()
        except OSError:
            raise ConversionError("The uploaded image is gone. Please upload it again.") from None
        depth_path = folder / UPLOAD_DEPTH
        depth = depth_path.read_bytes() if depth_path.is_file() else None
        return Upload(image=data, sha256=hashlib.sha256(data).hexdigest(), depth=depth)


app = make_celery(service_settings.from_env()["REDIS_URL"])
_worker: Worker | None = None
_worker_lock = threading.Lock()


def worker() -> Worker:
    """This process's Worker, built on first use (``--pool solo`` or ``threads``) or right after the pool forks
    (prefork)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            logging.basicConfig(level=logging.INFO)
            _worker = Worker(service_settings.from_env()).start()
        return _worker


@signals.worker_process_init.connect
def _load_after_fork(**_) -> None:
    worker()


@signals.worker_ready.connect
def _load_in_a_pool_without_children(sender=None, **_) -> None:
    """Threads and solo pools run jobs in this process: load the model now so the worker reports ready at once
    (prefork loads in each child, after the fork: CUDA must not be touched before it)."""
    port = service_settings.from_env()["WORKER_METRICS_PORT"]
    if port:  # this machine's worker processes' events, for Prometheus (web.metrics)
        from ...metrics import serve_worker_metrics

        serve_worker_metrics(port)
    pool = getattr(getattr(sender, "controller", None), "pool_cls", None)
    module = getattr(pool, "__module__", str(pool))
    if "prefork" not in module:
        worker()


@app.task(name=TASK_NAME, ignore_result=True, bind=True)
def convert(self, job_id: str, attempt: int) -> None:
    """Run one attempt of one job (its state and files are in its folder on the shared volume)."""
    priority = (self.request.delivery_info or {}).get("priority") or 0
    worker().run(job_id, int(attempt), int(priority))


@app.task(name=CHUNK_TASK, ignore_result=True)
def video_chunk(job_id: str, attempt: int, index: int) -> None:
    """Predict one chunk of a long clip's depth for its job's coordinator (web.jobs.celery.chunks); a no-op once the
    chunk is claimed or done, or the job moved on."""
    worker().chunk_tasks.run_chunk(job_id, int(attempt), int(index))


@app.task(name=EXPORT_TASK, ignore_result=True)
def export(owner: str, kind: str, formats: str = "") -> None:
    """Write one later download (a job's file or a batch's zip) on the shared volume."""
    worker().exports.run(Target(owner, kind, formats))
