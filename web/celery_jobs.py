"""Conversions run by Celery workers, with Redis as the broker (``JOB_BACKEND=celery``): the web tier only accepts,
validates and answers.

The web tier writes the upload's bytes into the job folder (``OUTPUT_FOLDER``, a volume every machine shares),
notes the job in Redis's pending set and publishes a task naming (job id, attempt). A worker claims that attempt,
decodes the bytes once and runs ``web.conversion.run_job``, reporting stages into ``job.json`` as JobRunner does.
No result backend: the job record on the shared folder is the state.

Liveness: a worker running a job refreshes a heartbeat key (``HEARTBEAT_TTL``) from a thread. A job whose heartbeat
is gone is run once more (attempt 2; a SET NX guard lets one reader re-enqueue it) and is failed with
``WORKER_DIED`` when that run dies too. A second delivery of an attempt, or a late one of an old attempt, is
ignored. Heartbeats vanish when Redis restarts, so nothing is judged dead until Redis has been up for a TTL.

Run a worker with ``celery -A web.celery_jobs worker --concurrency 1 --prefetch-multiplier 1`` (``make worker``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import redis
from celery import Celery, signals
from kombu.exceptions import OperationalError
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from converter import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MODEL,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    ConversionError,
    Converter,
    OutputError,
    atomic_output,
    progress_of,
)

from .conversion import run_job
from .depth_cache import DEFAULT_ENTRIES, DepthCache
from .jobs import (
    TIMED_OUT,
    Job,
    JobCancelled,
    JobStore,
    QueueFullError,
    Upload,
    process_token,
)
from .model_status import LOADING, READY, UNAVAILABLE, ModelStatus

log = logging.getLogger(__name__)

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUE = "image-to-3d"  # the Celery queue: a Redis list of that name, its length the real backlog
TASK_NAME = "image_to_3d.convert"
UPLOAD_IMAGE, UPLOAD_DEPTH = "upload.image", "upload.depth"  # in the job folder until the job ends
MAX_ATTEMPTS = 2  # a job whose worker died runs once more, then fails
HEARTBEAT_TTL, HEARTBEAT_EVERY = 10, 2.0  # seconds
PRESENCE_TTL, PRESENCE_EVERY = 15, 3.0  # a worker's published model state, seconds
CLAIM_TTL = 2 * 24 * 3600  # remembers that an attempt started, well past the broker's redelivery of it
INTERNAL = "The conversion failed because of an internal error."
QUEUE_DOWN = "The conversion queue cannot be reached right now."

BROKER_ERRORS = (redis.RedisError, OperationalError)  # Redis away, as our client and as kombu's publisher say it
_PREFIX = "image-to-3d:"
PENDING, ACTIVE = _PREFIX + "pending", _PREFIX + "active"  # sorted sets: job id → enqueue / claim time


class QueueUnavailableError(QueueFullError):
    """Redis cannot be reached: like a full queue, the client should retry later."""


def make_celery(redis_url: str) -> Celery:
    """A Celery app on ``redis_url``: JSON only, one unacknowledged job per worker process, reconnecting forever."""
    app = Celery("image_to_3d", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json", accept_content=["json"], task_ignore_result=True, result_backend=None,
        task_default_queue=QUEUE, task_acks_late=True, task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1, worker_hijack_root_logger=False, worker_send_task_events=False,
        # A worker waits for Redis as long as it takes; a web request gives up after a few seconds (503).
        broker_connection_retry=True, broker_connection_retry_on_startup=True, broker_connection_max_retries=None,
        broker_transport_options={"visibility_timeout": 3600, "socket_timeout": 5, "socket_connect_timeout": 3,
                                  "health_check_interval": 10},
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 4, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1},
    )
    return app


def redis_client(redis_url: str) -> redis.Redis:
    """A client that gives up in seconds (callers treat Redis being away as "cannot tell") and reconnects once."""
    return redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=2, decode_responses=True,
                                retry=Retry(ConstantBackoff(0.2), 2), health_check_interval=10)


class Board:
    """The Redis keys web instances and workers share: the broker's queue length, pending and active jobs,
    heartbeats, once-only guards, and the workers' model states. Every method may raise redis.RedisError."""

    def __init__(self, redis_url: str):
        self.redis = redis_client(redis_url)

    def waiting(self) -> int:
        """Messages in the broker's queue that no worker has taken (prefetch 1: nothing is held back by workers)."""
        return int(self.redis.llen(QUEUE))

    def add_pending(self, job_id: str, since: float) -> None:
        self.redis.zadd(PENDING, {job_id: since})

    def position(self, job_id: str) -> int | None:
        rank = self.redis.zrank(PENDING, job_id)
        return None if rank is None else rank + 1

    def claim(self, job_id: str, attempt: int, owner: str) -> bool:
        """Start ``attempt`` once: False when it was started before (a duplicate or late delivery)."""
        if not self.redis.set(f"{_PREFIX}claim:{job_id}:{attempt}", owner, nx=True, ex=CLAIM_TTL):
            return False
        with self.redis.pipeline() as pipe:  # one transaction: a reader sees it pending or beating, never neither
            pipe.set(_heartbeat(job_id), f"{attempt} {owner}", ex=HEARTBEAT_TTL)
            pipe.zrem(PENDING, job_id)
            pipe.zadd(ACTIVE, {job_id: time.time()})
            pipe.execute()
        return True

    def beat(self, job_id: str, attempt: int, owner: str) -> None:
        with self.redis.pipeline() as pipe:  # SET, not EXPIRE: the key comes back after a Redis restart
            pipe.set(_heartbeat(job_id), f"{attempt} {owner}", ex=HEARTBEAT_TTL)
            pipe.zadd(ACTIVE, {job_id: time.time()}, nx=True)
            pipe.execute()

    def release(self, job_id: str) -> None:
        with self.redis.pipeline() as pipe:
            pipe.delete(_heartbeat(job_id))
            pipe.zrem(ACTIVE, job_id)
            pipe.zrem(PENDING, job_id)
            pipe.execute()

    def presence(self, job_id: str) -> tuple[bool, bool]:
        """(waiting in the pending set, a worker's heartbeat present)."""
        with self.redis.pipeline() as pipe:
            pipe.zscore(PENDING, job_id)
            pipe.exists(_heartbeat(job_id))
            pending, beating = pipe.execute()
        return pending is not None, bool(beating)

    def uptime(self) -> float:
        return float(self.redis.info("server").get("uptime_in_seconds", 0))

    def once(self, name: str, ttl: int = 3600) -> bool:
        """True for the first caller only (SET NX), across every web instance."""
        return bool(self.redis.set(f"{_PREFIX}once:{name}", "1", nx=True, ex=ttl))

    def tracked(self) -> list[str]:
        """Job ids pending or active: what the web tier's watch re-reads."""
        return list(dict.fromkeys(self.redis.zrange(ACTIVE, 0, -1) + self.redis.zrange(PENDING, 0, -1)))

    def publish_worker(self, name: str, state: dict) -> None:
        self.redis.set(f"{_PREFIX}worker:{name}", json.dumps(state), ex=PRESENCE_TTL)

    def workers(self) -> list[dict]:
        keys = list(self.redis.scan_iter(f"{_PREFIX}worker:*", count=200))
        return [json.loads(value) for value in self.redis.mget(keys) if value] if keys else []


def _heartbeat(job_id: str) -> str:
    return f"{_PREFIX}heartbeat:{job_id}"


# ------------------------------------------------------------------------------------------------- web tier


class CeleryJobRunner:
    """JobRunner's interface for the web tier: stores the upload in the job folder and enqueues the task.

    Back-pressure comes from the broker's real queue length (``max_queued`` waiting messages; web instances check
    independently, so a simultaneous burst may overshoot by one per submitting thread). ``alive`` is the JobStore
    hook that notices dead workers and re-enqueues their jobs once; a watch thread re-reads pending and active jobs
    every ``HEARTBEAT_TTL`` so that happens even when nobody is looking at the job.
    """

    def __init__(self, store: JobStore, redis_url: str, max_queued: int = 8, watch: bool = True):
        self.store = store
        self.max_queued = max_queued
        self.board = Board(redis_url)
        self.celery = make_celery(redis_url)
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_loop, name="celery-watch", daemon=True)
        if watch:
            self._watch.start()

    def submit(self, request: dict, upload: Upload | None) -> Job:
        """Queue the job; QueueFullError when the broker's queue is full, QueueUnavailableError without Redis."""
        try:
            if self.board.waiting() >= self.max_queued:
                raise QueueFullError()
        except redis.RedisError:
            raise QueueUnavailableError(QUEUE_DOWN) from None
        return self._submit(request, upload)

    def _submit(self, request: dict, upload: Upload | None) -> Job:
        job = self.store.create(request)
        folder = self.store.folder(job.id)
        try:
            if upload is not None:
                _write_bytes(folder / UPLOAD_IMAGE, upload.image)
                if upload.depth:
                    _write_bytes(folder / UPLOAD_DEPTH, upload.depth)
            self._enqueue(job)
        except OutputError:
            self.store.delete(job.id)
            raise
        except BROKER_ERRORS as error:
            self.store.delete(job.id)
            log.warning("could not queue job %s: %s", job.id, error)
            raise QueueUnavailableError(QUEUE_DOWN) from None
        return job

    def submit_batch(self, request: dict, uploads: list[Upload]) -> list[Job]:
        """A batch as one unit of admission (as JobRunner.submit_batch): queued whole when the broker's queue has
        room for one more message, or QueueFullError."""
        try:
            if self.board.waiting() >= self.max_queued:
                raise QueueFullError()
        except redis.RedisError:
            raise QueueUnavailableError(QUEUE_DOWN) from None
        return [self._submit(request, upload) for upload in uploads]

    def room(self) -> int:
        """How many more jobs the queue takes now (0 when Redis cannot be reached): a batch goes whole or not."""
        try:
            return max(0, self.max_queued - self.board.waiting())
        except redis.RedisError:
            return 0

    def queue_position(self, job_id: str) -> int | None:
        try:
            return self.board.position(job_id)
        except redis.RedisError:
            return None

    def shutdown(self) -> None:
        self._stop.set()

    def alive(self, job: Job) -> bool | None:
        """The JobStore hook: is someone on this unfinished job? None when Redis cannot be reached. A job whose
        worker is gone is re-enqueued here (``job`` is updated in place and True returned) while it has an attempt
        left; False then lets the store fail it with WORKER_DIED."""
        try:
            pending, beating = self.board.presence(job.id)
            if pending or beating:
                return True
            # Just created (not yet in the pending set), or Redis just restarted (heartbeats not yet back).
            if time.time() - job.updated < HEARTBEAT_TTL or self.board.uptime() < HEARTBEAT_TTL * 1.5:
                return True
            return self._recover(job)
        except redis.RedisError:
            return None

    def _recover(self, job: Job) -> bool | None:
        folder = self.store.folder(job.id)
        retryable = job.attempt < MAX_ATTEMPTS and ((folder / UPLOAD_IMAGE).is_file()
                                                    or job.request.get("rebuild_of"))
        if not self.board.once(f"recover:{job.id}:{job.attempt}"):
            return True  # another reader is handling it; the next read shows what it did
        self.board.release(job.id)
        if not retryable:
            log.warning("job %s: its worker died on attempt %d; failing it", job.id, job.attempt)
            _drop_uploads(folder)
            return False
        log.warning("job %s: its worker died on attempt %d; queueing it again", job.id, job.attempt)
        job.attempt += 1
        job.status, job.stage, job.progress, job.files = QUEUED, QUEUED, 0.0, []
        _remove_outputs(folder, keep_uploads=True)
        self.store.save(job)
        try:
            self._enqueue(job)
        except BROKER_ERRORS as error:  # the broker went away meanwhile: the next look at the job tries again
            log.warning("job %s: could not queue it again: %s", job.id, error)
            return None
        return True

    def _enqueue(self, job: Job) -> None:
        self.board.add_pending(job.id, job.created)  # first come, first in line: a retried job keeps its place
        try:
            self.celery.send_task(TASK_NAME, args=[job.id, job.attempt], queue=QUEUE, retry=True)
        except Exception:
            try:
                self.board.release(job.id)
            except redis.RedisError:
                pass
            raise

    def _watch_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_TTL):
            try:
                for job_id in self.board.tracked():
                    job = self.store.get(job_id)  # runs ``alive``: recovers or fails a job whose worker died
                    if job is None or job.finished:
                        self.board.release(job_id)
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


# ------------------------------------------------------------------------------------------------ worker side


def settings_from_env(environ=os.environ) -> dict:
    """The worker's settings: the same variables and defaults as app.create_app reads."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return {
        "OUTPUT_FOLDER": environ.get("OUTPUT_FOLDER", os.path.join(root, "outputs")),
        "DEPTH_MODEL": environ.get("DEPTH_MODEL") or DEFAULT_MODEL,
        "DEVICE": environ.get("DEVICE", "auto"), "PRECISION": environ.get("PRECISION", "fp32"),
        "ENGINE": environ.get("ENGINE", "auto"),
        "MAX_PIXELS": int(environ.get("MAX_PIXELS", DEFAULT_MAX_PIXELS)),
        "TORCH_THREADS": int(environ.get("TORCH_THREADS", 0)),
        "DEPTH_CACHE_ENTRIES": int(environ.get("DEPTH_CACHE_ENTRIES", DEFAULT_ENTRIES)),
        "RESULT_TTL_SECONDS": float(environ.get("RESULT_TTL_SECONDS", 24 * 3600)),
        "JOB_TIMEOUT_SECONDS": float(environ.get("JOB_TIMEOUT_SECONDS", 300)),
        "REDIS_URL": environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        # With `--pool threads --concurrency N` one process runs N jobs at once and shares their forwards.
        "BATCH_SIZE": int(environ.get("BATCH_SIZE", 1)),
        "BATCH_WAIT_MS": float(environ.get("BATCH_WAIT_MS", 5)),
    }


class Worker:
    """One worker process's resources (converter, stores, cache, Redis), built once after the fork, and how it
    runs one attempt of a job."""

    def __init__(self, settings: dict):
        self.settings = settings
        self.name = f"{socket.gethostname()}:{process_token()}"
        self.converter = Converter(model=settings["DEPTH_MODEL"], device=settings["DEVICE"],
                                   precision=settings["PRECISION"], max_pixels=settings["MAX_PIXELS"],
                                   engine=settings.get("ENGINE"), batch_size=settings.get("BATCH_SIZE", 1),
                                   batch_wait_ms=settings.get("BATCH_WAIT_MS", 5.0))
        # The worker never judges liveness (a job's owner token names a process on another machine).
        self.store = JobStore(settings["OUTPUT_FOLDER"], ttl_seconds=settings["RESULT_TTL_SECONDS"],
                              alive=lambda job: None)
        self.cache = DepthCache(os.path.join(settings["OUTPUT_FOLDER"], ".cache"),
                                max_entries=settings["DEPTH_CACHE_ENTRIES"],
                                ttl_seconds=settings["RESULT_TTL_SECONDS"])
        self.board = Board(settings["REDIS_URL"])
        self.model_status = ModelStatus(self.converter, threads=settings["TORCH_THREADS"] or None)
        self.timeout_seconds = settings["JOB_TIMEOUT_SECONDS"]
        self._stop = threading.Event()

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

    def run(self, job_id: str, attempt: int) -> None:
        """Run ``attempt`` of the job unless it is stale (the job moved on) or was started before."""
        job = self.store.get(job_id)
        if job is None or job.finished or job.attempt != attempt:
            log.info("job %s attempt %s: nothing to do (finished, gone or superseded)", job_id, attempt)
            return
        if not self.board.claim(job_id, attempt, self.name):
            log.info("job %s attempt %s: already started elsewhere; ignoring this delivery", job_id, attempt)
            return
        stop = threading.Event()
        beating = threading.Thread(target=self._beat, args=(job_id, attempt, stop), daemon=True, name="heartbeat")
        beating.start()
        try:
            self.model_status.wait(self.timeout_seconds)
            self._execute(job, attempt)
        finally:
            stop.set()
            try:
                self.board.release(job_id)
            except redis.RedisError:
                pass  # the heartbeat expires by itself

    def _beat(self, job_id: str, attempt: int, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_EVERY):
            try:
                self.board.beat(job_id, attempt, self.name)
            except redis.RedisError:
                pass  # Redis blinked: the next beat puts the key back

    def _execute(self, job: Job, attempt: int) -> None:
        """JobRunner._run for one claimed attempt: stages into job.json, a deadline, clean failures. A write is
        made only while the record still names this attempt (a recovered job belongs to its new attempt)."""
        folder = self.store.folder(job.id)
        guard, cancelled = threading.Lock(), threading.Event()

        def ours() -> bool:
            current = self.store.get(job.id)
            return current is not None and current.attempt == attempt and not current.finished

        def finish(status: str, message: str | None = None, code: str | None = None) -> None:
            if not ours():
                cancelled.set()
                return
            if status == FAILED:
                job.error, job.error_code = message, code
                _remove_outputs(folder, keep_uploads=False)
                job.files = []
            else:
                _drop_uploads(folder)
            job.status, job.stage, job.progress = status, status, 1.0
            try:
                self.store.save(job)
            except (OSError, OutputError):
                log.warning("could not record the end of job %s", job.id)

        def time_out() -> None:
            with guard:
                if not cancelled.is_set():
                    cancelled.set()
                    finish(FAILED, TIMED_OUT, "timed_out")

        def report(stage: str) -> None:
            with guard:
                if cancelled.is_set() or not ours():
                    cancelled.set()
                    raise JobCancelled()
                job.stage, job.progress = stage, progress_of(stage)
                self.store.save(job)

        watchdog = threading.Timer(self.timeout_seconds, time_out)
        watchdog.daemon = True
        watchdog.start()
        try:
            job.status, job.owner, job.files = RUNNING, self.name, []
            report(RUNNING)
            info = run_job(self.converter, self.store, job, self._upload(folder, job), report, self.cache)
            with guard:
                if cancelled.is_set():
                    raise JobCancelled()
                job.info = info
                finish(DONE)
        except JobCancelled:
            pass  # timed out (already recorded) or superseded by a newer attempt (its files are not ours)
        except ConversionError as error:
            with guard:
                if not cancelled.is_set():
                    finish(FAILED, error.message, error.code)
        except Exception:  # never show internals; the log has the details
            log.exception("job %s failed", job.id)
            with guard:
                if not cancelled.is_set():
                    finish(FAILED, INTERNAL, "internal_error")
        finally:
            watchdog.cancel()

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


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)


def _drop_uploads(folder: Path) -> None:
    for name in (UPLOAD_IMAGE, UPLOAD_DEPTH):
        (folder / name).unlink(missing_ok=True)


def _remove_outputs(folder: Path, keep_uploads: bool) -> None:
    """No link to a half-written result: every file but the record (and, for a retry, the upload) goes."""
    keep = {"job.json"} | ({UPLOAD_IMAGE, UPLOAD_DEPTH} if keep_uploads else set())
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name not in keep:
            path.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------- the Celery worker app

app = make_celery(os.environ.get("REDIS_URL", DEFAULT_REDIS_URL))
_worker: Worker | None = None
_worker_lock = threading.Lock()


def worker() -> Worker:
    """This process's Worker, built on first use (``--pool solo`` or ``threads``) or right after the pool forks
    (prefork)."""
    global _worker
    with _worker_lock:
        if _worker is None:
            logging.basicConfig(level=logging.INFO)
            _worker = Worker(settings_from_env()).start()
        return _worker


@signals.worker_process_init.connect
def _load_after_fork(**_) -> None:
    worker()


@signals.worker_ready.connect
def _load_in_a_pool_without_children(sender=None, **_) -> None:
    """Threads and solo pools run jobs in this process: load the model now so the worker reports ready at once
    (prefork loads in each child, after the fork: CUDA must not be touched before it)."""
    pool = getattr(getattr(sender, "controller", None), "pool_cls", None)
    module = getattr(pool, "__module__", str(pool))
    if "prefork" not in module:
        worker()


@app.task(name=TASK_NAME, ignore_result=True)
def convert(job_id: str, attempt: int) -> None:
    """Run one attempt of one job (its state and files are in its folder on the shared volume)."""
    worker().run(job_id, int(attempt))
