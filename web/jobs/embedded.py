"""``JOB_BACKEND=embedded``: conversions on a bounded pool of threads in the web process itself.

Jobs start in turns across clients (``FairQueue``): one client's many queued jobs do not keep another's waiting.
Uploads wait in memory (decoded, or a large picture's bytes): nothing of them is written to disk. Each gunicorn worker process runs its
own pool; a job's record names the process running it, so this back-end's watch fails a job whose process died
(any instance's watch may: the record is on the shared folder).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from ..model_status import ModelStatus
from ..settings import conversion_workers, uses_cuda
from .backend import QueueFullError, job_requests
from .execution import WORKER_DIED, Attempt, job_timeout, keep_video
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
                     export=export, watch=config.get("JOB_WATCH", True), memory=memory,
                     video_timeout_seconds=config.get("VIDEO_TIMEOUT_SECONDS", 3600.0))
        runner.model_status = ModelStatus(converter, threads=config["TORCH_THREADS"] or _threads_per_process())
        return runner

    def __init__(self, store: JobStore, convert, workers: int = 1, max_queued: int = 8,
                 timeout_seconds: float = 300.0, export=None, export_workers: int = 1, watch: bool = True,
                 memory=None, video_timeout_seconds: float = 3600.0):
        self.store = store
        self.video_timeout_seconds = video_timeout_seconds
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
        self._waiting = FairQueue()  # job ids with their uploads, in the order their clients' turns come
        # One job at a time is handed its turn and waits for memory, first in line: no job overtakes it (as
        # MemoryBudget's own order), and the turn is taken as late as it can be, so a client arriving meanwhile
        # still gets the next one.
        self._turn = threading.Lock()
        # A job leaves this set once its work's outcome is decided, before that is saved (so a client that sees
        # "done" finds room), or, past its deadline, once its thread is free.
        self._running: set[str] = set()
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_loop, name="embedded-watch", daemon=True)
        if watch:
            self._watch.start()

    def submit_batch(self, request: dict | list[dict], uploads: list[Upload | None], client: str = "",
                     delete_token_sha256: str = "") -> list[Job]:
        """Queue a batch's jobs (one job: a batch of one) as one unit of admission: accepted whole when there is
        room for one more job (the batch may take the queue past ``capacity``; nothing else is accepted until it
        is back under), or QueueFullError. So a batch of any size up to the batch limit fits an idle server.
        Each job waits for its ``client``'s turn (FairQueue). JobTooLargeError (web.memory_budget) for a batch
        with a job whose memory could never fit. ``request``: one for all, or one per upload (an image's or a
        video's: web.jobs.backend.job_requests)."""
        requests = job_requests(request, uploads)
        estimates = self.memory.estimates(requests, uploads) if self.memory is not None else [0.0] * len(uploads)
        with self._lock:
            if len(self._running) + len(self._waiting) >= self.capacity:
                raise QueueFullError()
            jobs = [self.store.create(one, memory_mb=memory_mb, client=client,
                                      upload_sha256=getattr(upload, "sha256", "") or "",
                                      delete_token_sha256=delete_token_sha256)
                    for one, memory_mb, upload in zip(requests, estimates, uploads)]
            for job, upload in zip(jobs, uploads):
                self._waiting.add(job.id, client, keep_video(self.store.folder(job.id), upload))
        for _ in jobs:  # a thread for each job; which job it runs is decided when the thread is free
            self._executor.submit(self._run_next)
        return jobs

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start, None when the job is not waiting (here). Turns, not arrival, decide it,
        so it can grow as well as shrink while other clients' jobs arrive (FairQueue)."""
        with self._lock:
            return self._waiting.position(job_id)

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
        with self._lock:  # a job still waiting is never started now: _run_next finds it gone from the line
            waiting = list(self._waiting)
            for job_id in waiting:
                self._waiting.remove(job_id)
                job = self.store.get(job_id)
                if job is not None and not job.finished:
                    job.cancel(STOPPED)
                    try:
                        self.store.save(job)
                    except OSError:
                        pass
        self._executor.shutdown(wait=wait, cancel_futures=True)
        self._exports.shutdown(wait=wait, cancel_futures=True)

    def _run_next(self) -> None:
        """Run the job whose turn it is (none left: they were cancelled)."""
        with self._turn:
            with self._lock:
                taken = self._waiting.take()
            if taken is None:
                return
            job_id, upload = taken
            job = self.store.get(job_id)
            memory_mb = job.memory_mb if job is not None and self.memory is not None else 0.0
            if memory_mb:
                self.memory.budget.reserve(memory_mb)  # queued (and shown so) until the running jobs leave it room
            with self._lock:
                started = self._waiting.start(job_id)  # False: cancelled by shutdown while it waited
                if started:
                    self._running.add(job_id)
        try:
            if started and job is not None and not job.finished:
                timeout = job_timeout(job, self.timeout_seconds, self.video_timeout_seconds)
                Attempt(self.store, job, timeout, on_end=lambda: self._free(job_id)).run(
                    lambda job, report: self.convert(job, upload, report))
        finally:
            if started:
                self._free(job_id)
            if memory_mb:
                self.memory.budget.release(memory_mb)

    def _free(self, job_id: str) -> None:
        with self._lock:
            self._running.discard(job_id)
            self._waiting.finish(job_id)  # its client's turns are forgotten once nothing of it waits or runs

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


class FairQueue:
    """The queue's order: clients take turns (fair share), each client's own jobs first come, first served.

    The next job to start is the oldest waiting job of the client whose last turn is the oldest. A client with
    nothing waiting or running is forgotten, so when it comes back it counts as never served and goes first (clients
    tied so go in the order their oldest jobs arrived). A batch's jobs are its client's like any other, one turn
    each. So client A's 20 queued jobs do not keep client B's one waiting: A has had a turn (the job it runs), B has
    not, and B's job is next. A job's place in line can improve or worsen as other clients come and go; ``order``
    says where every job stands now.

    It holds the waiting jobs (id, client, what they carry) and the turns clients had; not thread-safe: its owner
    locks. ``take`` hands a job its turn: it stays first in line (still waiting, still ``in`` the queue) until
    ``start`` (it runs; ``finish`` once it ends) or ``remove`` (it left without running).
    """

    def __init__(self):
        self._arrival = itertools.count()
        self._waiting: dict[str, tuple[int, str, object]] = {}  # job id -> (arrival, client, item), arrival order
        self._taken: list[str] = []  # waiting jobs whose turn came, in the order it did
        self._running: dict[str, str] = {}  # job id -> client, from start to finish
        self._turn = 0  # turns handed out so far
        self._last_turn: dict[str, int] = {}  # client -> its last turn, while it has jobs waiting or running
        self._jobs_of = Counter()  # client -> its jobs waiting or running

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, job_id: str) -> bool:
        return job_id in self._waiting

    def __iter__(self):
        """The waiting job ids, in arrival order."""
        return iter(list(self._waiting))

    def add(self, job_id: str, client: str, item=None) -> None:
        self._waiting[job_id] = (next(self._arrival), client, item)
        self._jobs_of[client] += 1

    def take(self) -> tuple[str, object] | None:
        """(job id, item) of the job whose turn it is now (it keeps position 1 until started or removed); None when
        no job waits untaken."""
        order = self._untaken_order(limit=1)
        if not order:
            return None
        job_id = order[0]
        self._taken.append(job_id)
        self._turn += 1
        self._last_turn[self._waiting[job_id][1]] = self._turn
        return job_id, self._waiting[job_id][2]

    def start(self, job_id: str) -> bool:
        """The job leaves the line to run; False when it is no longer waiting (removed meanwhile)."""
        client = self._out_of_line(job_id)
        if client is None:
            return False
        self._running[job_id] = client
        return True

    def remove(self, job_id: str) -> bool:
        """The job leaves the line without running (cancelled, or deleted); False when it was not waiting."""
        client = self._out_of_line(job_id)
        if client is None:
            return False
        self._leave(client)
        return True

    def _out_of_line(self, job_id: str) -> str | None:
        """Take a waiting job out of the line: its client, or None when it was not waiting."""
        if job_id not in self._waiting:
            return None
        _, client, _ = self._waiting.pop(job_id)
        if job_id in self._taken:
            self._taken.remove(job_id)
        return client

    def finish(self, job_id: str) -> None:
        """A started job ended (once or more: only the first call counts)."""
        client = self._running.pop(job_id, None)
        if client is not None:
            self._leave(client)

    def position(self, job_id: str) -> int | None:
        """1 for the next job to start, None when the job is not waiting."""
        if job_id not in self._waiting:
            return None
        return self.order().index(job_id) + 1

    def order(self) -> list[str]:
        """Every waiting job in the order they will start if no other job arrives: those whose turn came, then the
        turns to come, played out."""
        return self._taken + self._untaken_order()

    def _untaken_order(self, limit: int | None = None) -> list[str]:
        lines: dict[str, list[str]] = {}  # client -> its untaken jobs, oldest first
        for job_id, (_, client, _) in self._waiting.items():
            if job_id not in self._taken:
                lines.setdefault(client, []).append(job_id)
        last_turn, turn = dict(self._last_turn), self._turn
        order: list[str] = []
        while lines and (limit is None or len(order) < limit):
            client = min(lines, key=lambda name: (last_turn.get(name, 0), self._waiting[lines[name][0]][0]))
            order.append(lines[client].pop(0))
            turn += 1
            last_turn[client] = turn
            if not lines[client]:
                del lines[client]
        return order

    def _leave(self, client: str) -> None:
        self._jobs_of[client] -= 1
        if self._jobs_of[client] <= 0:
            del self._jobs_of[client]
            self._last_turn.pop(client, None)

def _threads_per_process() -> int:
    """Share the cores between gunicorn's worker processes (WEB_CONCURRENCY) so they do not oversubscribe them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, int(os.environ.get("WEB_CONCURRENCY", 1))))
