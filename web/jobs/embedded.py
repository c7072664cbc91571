"""``JOB_BACKEND=embedded``: conversions on a bounded pool of threads in the web process itself.

Uploads wait in memory (decoded, or a large picture's bytes): nothing of them is written to disk. Each gunicorn worker process runs its
own pool; a job's record names the process running it, so this back-end's watch fails a job whose process died
(any instance's watch may: the record is on the shared folder).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from ..model_status import ModelStatus
from ..settings import conversion_workers, uses_cuda
from .backend import QueueFullError
from .execution import WORKER_DIED, Attempt
from .record import Job
from .store import JobStore, Upload, process_alive

log = logging.getLogger(__name__)

STOPPED = "The server stopped before this conversion started. Please try again."
WATCH_SECONDS = 10.0  # how often the watch looks for jobs whose process died (as often as Celery's)


class JobRunner:
    """Runs conversions on a fixed number of threads, with at most ``max_queued`` jobs waiting.

    ``timeout_seconds`` bounds a job from the moment it starts: past it the job is failed at once ("processing
    timed out") and whatever it still produces is thrown away. A model forward cannot be interrupted, so the
    thread is busy until that forward ends, but the user hears at the deadline and no file is left behind.
    """

    runs_here = True
    model_status: ModelStatus | None = None

    @classmethod
    def from_config(cls, config, store: JobStore, converter, convert, export, memory=None) -> JobRunner:
        # On a GPU several conversions run at once and their forwards are batched; on a CPU that only adds waiting.
        runner = cls(store, convert, workers=conversion_workers(config, uses_cuda(config["DEVICE"])),
                     max_queued=config["MAX_QUEUED_JOBS"], timeout_seconds=config["JOB_TIMEOUT_SECONDS"],
                     export=export, watch=config.get("JOB_WATCH", True), memory=memory)
        runner.model_status = ModelStatus(converter, threads=config["TORCH_THREADS"] or _threads_per_process())
        return runner

    def __init__(self, store: JobStore, convert, workers: int = 1, max_queued: int = 8,
                 timeout_seconds: float = 300.0, export=None, export_workers: int = 1, watch: bool = True,
                 memory=None):
        self.store = store
        # Admission by memory (web.memory_budget.JobMemory): each job's estimate is taken before it is queued (one
        # that could never fit is refused), and a job starts only once the budget has room for it.
        self.memory = memory
        self.convert = convert  # (job, upload, report) → dict of info; writes the job's files
        self.export = export  # (web.jobs.exports.Target) → status: writes a later download (Exports.run)
        # Exports have threads of their own: a video being written never holds a conversion back, nor the reverse.
        self._exports = ThreadPoolExecutor(max_workers=export_workers, thread_name_prefix="export")
        self.capacity = workers + max_queued
        self.timeout_seconds = timeout_seconds
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert")
        self._lock = threading.Lock()
        self._waiting: list[str] = []
        # A job leaves this set once its work's outcome is decided, before that is saved (so a client that sees
        # "done" finds room), or, past its deadline, once its thread is free.
        self._running: set[str] = set()
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_loop, name="embedded-watch", daemon=True)
        if watch:
            self._watch.start()

    def submit_batch(self, request: dict, uploads: list[Upload | None], delete_token_sha256: str = "") -> list[Job]:
        """Queue a batch's jobs (one job: a batch of one) as one unit of admission: accepted whole when there is
        room for one more job (the batch may take the queue past ``capacity``; nothing else is accepted until it
        is back under), or QueueFullError. So a batch of any size up to the batch limit fits an idle server.
        JobTooLargeError (web.memory_budget) for a batch with a job whose memory could never fit."""
        estimates = self.memory.estimates(request, uploads) if self.memory is not None else [0.0] * len(uploads)
        with self._lock:
            if len(self._running) + len(self._waiting) >= self.capacity:
                raise QueueFullError()
            jobs = [self.store.create(request, memory_mb=memory_mb, upload_sha256=getattr(upload, "sha256", "") or "",
                                      delete_token_sha256=delete_token_sha256)
                    for memory_mb, upload in zip(estimates, uploads)]
            self._waiting.extend(job.id for job in jobs)
        for job, upload in zip(jobs, uploads):
            self._executor.submit(self._run, job.id, upload)
        return jobs

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start, None when the job is not waiting (here)."""
        with self._lock:
            return self._waiting.index(job_id) + 1 if job_id in self._waiting else None

    def room(self) -> int:
        """How many more jobs would be accepted now (a batch is accepted whole or not at all)."""
        with self._lock:
            return max(0, self.capacity - len(self._running) - len(self._waiting))

    def forget(self, job_id: str) -> None:
        """A deleted job never starts: its thread finds it gone from the list (and frees its memory reservation)."""
        with self._lock:
            if job_id in self._waiting:
                self._waiting.remove(job_id)

    def submit_export(self, target) -> None:
        """Queue a later download (web.jobs.exports); its state file says where it stands."""
        self._exports.submit(self._export, target)

    def workers_ready(self) -> int:
        return int(self.model_status is not None and self.model_status.ready)

    def watch(self) -> None:
        """Fail the unfinished jobs whose process died (another gunicorn worker, or an earlier run of this one)."""
        for job_id in self.store.unfinished():
            job = self.store.get(job_id)
            if job is None or job.finished or process_alive(job.owner):
                continue
            log.warning("job %s: the process running it died; failing it", job.id)
            job.fail(WORKER_DIED, "worker_died")
            try:
                self.store.save(job)
            except OSError:
                log.warning("could not record the end of job %s", job.id)

    def shutdown(self, wait: bool = False) -> None:
        """Cancel what waits; with ``wait``, return once the running conversions and exports have ended."""
        self._stop.set()
        with self._lock:  # a job still waiting is never started now: _run finds it gone from the list
            waiting, self._waiting = self._waiting, []
            for job_id in waiting:
                job = self.store.get(job_id)
                if job is not None and not job.finished:
                    job.cancel(STOPPED)
                    try:
                        self.store.save(job)
                    except OSError:
                        pass
        self._executor.shutdown(wait=wait, cancel_futures=True)
        self._exports.shutdown(wait=wait, cancel_futures=True)

    def _run(self, job_id: str, upload: Upload | None) -> None:
        job = self.store.get(job_id)
        memory_mb = job.memory_mb if job is not None and self.memory is not None else 0.0
        if memory_mb:
            self.memory.budget.reserve(memory_mb)  # queued (and shown so) until the running jobs leave it room
        try:
            with self._lock:
                if job_id not in self._waiting:  # cancelled by shutdown
                    return
                self._waiting.remove(job_id)
                self._running.add(job_id)
            try:
                if job is not None and not job.finished:
                    Attempt(self.store, job, self.timeout_seconds, on_end=lambda: self._free(job_id)).run(
                        lambda job, report: self.convert(job, upload, report))
            finally:
                self._free(job_id)
        finally:
            if memory_mb:
                self.memory.budget.release(memory_mb)

    def _free(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)

    def _export(self, target) -> None:
        try:
            self.export(target)
        except Exception:  # Exports.run records its own failures; this is the last guard of the thread
            log.exception("export %s failed", target)

    def _watch_loop(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            try:
                self.watch()
            except Exception:  # the watch must never stop
                log.exception("watching embedded jobs failed")


def _threads_per_process() -> int:
    """Share the cores between gunicorn's worker processes (WEB_CONCURRENCY) so they do not oversubscribe them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("WEB_CONCURRENCY", 1))))
