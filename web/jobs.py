"""Conversion jobs: a bounded in-process worker pool, with each job's state kept on disk beside its files.

The state lives in ``outputs/<job id>/job.json`` (written atomically), so any gunicorn worker process can answer a
status request, and nothing but the job folder is needed to serve the result. Uploads wait in ``uploads/`` only
until the conversion has read them. A job records the process running it, so a job whose process died is reported
failed instead of "running" forever; results expire after a time to live and a sweep deletes them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from werkzeug.routing import BaseConverter

from converter import DONE, FAILED, OUTPUTS, QUEUED, RUNNING, OutputError, write_json

from .execution import WORKER_DIED, run_attempt

log = logging.getLogger(__name__)

_JOB_ID = re.compile(r"^[0-9a-f]{32}$")

# One table for routes, pages and the API: the converter's output kinds (downloads, then the page's previews).
DOWNLOADS = {name: kind for name, kind in OUTPUTS.items() if kind.download}
PREVIEWS = {name: kind for name, kind in OUTPUTS.items() if not kind.download}
# The result page groups the downloads by use; a kind the table gains later shows under "Other".
DOWNLOAD_GROUPS = (
    ("Point clouds", ("ply", "pcd", "las")),
    ("Meshes", ("glb", "simplified_glb", "obj", "mesh_ply", "usdz")),
    ("Depth", ("depth_png", "depth_npy", "json")),
    ("Stereo and video", ("sbs", "anaglyph", "mp4")),
    ("Printing", ("stl",)),
    ("Splats", ("splat_ply",)),
    ("Model disagreement", ("disagreement",)),
)
DOWNLOAD_GROUPS += (("Other", tuple(name for name in DOWNLOADS
                                    if all(name not in kinds for _, kinds in DOWNLOAD_GROUPS))),)
COMPARISON_PREFIX = "compare-"  # OUTPUT_FOLDER/compare-<uuid4 hex>.json: a pair of jobs shown side by side
BATCH_PREFIX = "batch-"  # OUTPUT_FOLDER/batch-<uuid4 hex>.json (+ its zips): the jobs of one multi-image upload


class QueueFullError(Exception):
    """More jobs are waiting than the service accepts; the client should retry later."""


@dataclass
class Job:
    id: str
    status: str = QUEUED
    stage: str = QUEUED
    progress: float = 0.0
    error: str | None = None
    error_code: str | None = None
    files: list[str] = field(default_factory=list)
    request: dict = field(default_factory=dict)  # a web.job_request.JobRequest, as JobRequest.to_dict() gives it
    info: dict = field(default_factory=dict)
    image: dict = field(default_factory=dict)  # how the kept image.npz was decoded (scale, EXIF focal length)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    expires: float = 0.0
    owner: str = ""
    attempt: int = 1  # which run of the job this is: a job whose worker died is run once more (web.celery_submit)
    memory_mb: float = 0.0  # its estimated peak over the loaded model (web.memory_budget); 0: not estimated

    @property
    def finished(self) -> bool:
        return self.status in (DONE, FAILED)


class IdConverter(BaseConverter):
    """``<id:job_id>`` in a route: a job, comparison or batch id (32 lowercase hex digits) or no route at all, so
    anything else (``..%2F`` included) is a 404 before any view or redirect sees it."""

    regex = _JOB_ID.pattern.strip("^$")


def valid_job_id(job_id: str) -> bool:
    return bool(_JOB_ID.match(job_id or ""))


def process_token(pid: int | None = None) -> str:
    """"pid:start time" names a process uniquely on this machine, even after its pid is reused."""
    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            started = stat.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        started = "?"
    return f"{pid}:{started}"


def process_alive(token: str) -> bool:
    pid_text, _, started = token.partition(":")
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return started == "?" or process_token(pid) == token


class JobStore:
    """Job folders under ``root``: create, read, update, expire, and look up files by (job id, download kind)."""

    def __init__(self, root: str | os.PathLike, ttl_seconds: float = 24 * 3600, alive=None):
        self.root = Path(root)
        self.ttl_seconds = ttl_seconds
        # Whether an unfinished job still has someone working on it (True), not (False) or nobody can tell (None).
        self.alive = alive or (lambda job: process_alive(job.owner))

    def folder(self, job_id: str) -> Path:
        if not valid_job_id(job_id):
            raise KeyError(job_id)
        return self.root / job_id

    def create(self, request: dict) -> Job:
        now = time.time()
        job = Job(id=uuid.uuid4().hex, request=request, created=now, expires=now + self.ttl_seconds,
                  owner=process_token())
        try:
            self.folder(job.id).mkdir(parents=True)
            self.save(job)
        except (OSError, OutputError):
            self.delete(job.id)
            raise OutputError("The server cannot store results right now (its output folder is full or not "
                              "writable). Please try again later.") from None
        return job

    def save(self, job: Job) -> None:
        """Write the job's record atomically (OutputError when the disk refuses)."""
        job.updated = time.time()
        write_json(self.folder(job.id) / "job.json", asdict(job))

    def get(self, job_id: str) -> Job | None:
        """The job, with a dead owner's unfinished job settled as failed; None if unknown or unreadable."""
        try:
            data = json.loads((self.folder(job_id) / "job.json").read_text())
            job = Job(**data)
        except (KeyError, OSError, ValueError, TypeError):
            return None
        if not job.finished and self.alive(job) is False:
            job.status, job.stage, job.progress = FAILED, "failed", 1.0
            job.error, job.error_code, job.files = WORKER_DIED, "worker_died", []
            try:
                self.save(job)
            except OSError:
                pass
        return job

    def statuses(self) -> dict[str, str]:
        """Job id → status of every readable record, as stored (no liveness is judged here)."""
        found = {}
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            if not valid_job_id(folder.name):
                continue
            try:
                found[folder.name] = json.loads((folder / "job.json").read_text()).get("status")
            except (OSError, ValueError, AttributeError):
                continue
        return found

    def unfinished(self) -> list[str]:
        """Ids of the jobs whose record says queued or running."""
        return [job_id for job_id, status in self.statuses().items() if status not in (DONE, FAILED)]

    def count_by_status(self) -> dict[str, int]:
        counts = {QUEUED: 0, RUNNING: 0, DONE: 0, FAILED: 0}
        for status in self.statuses().values():
            counts[status] = counts.get(status, 0) + 1
        return counts

    def expired(self, job: Job) -> bool:
        return time.time() >= job.expires

    def file(self, job: Job, kind: str) -> tuple[Path, str] | None:
        """(path, media type) of a finished job's file, or None if there is no such file."""
        entry = OUTPUTS.get(kind)
        if entry is None or entry.file_name not in job.files or job.status != DONE:
            return None
        path = self.folder(job.id) / entry.file_name
        return (path, entry.media_type) if path.is_file() else None

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def sweep(self) -> int:
        """Delete every expired job folder (and stray folders without a readable job). Returns how many."""
        removed = 0
        now = time.time()
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            if not valid_job_id(folder.name):
                continue
            job = self.get(folder.name)
            stale = job is None and now - _mtime(folder) > self.ttl_seconds
            if stale or (job is not None and job.finished and now >= job.expires):
                self.delete(folder.name)
                removed += 1
        return removed


def sweep_uploads(folder: str | os.PathLike, max_age_seconds: float) -> int:
    """Delete uploads older than ``max_age_seconds``: left behind only by a process that died mid-job."""
    removed, now = 0, time.time()
    for path in Path(folder).iterdir() if Path(folder).is_dir() else ():
        if path.is_file() and path.name != ".gitkeep" and now - _mtime(path) > max_age_seconds:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class RecordStore:
    """Small JSON records beside the job folders (``<prefix><uuid4 hex>.json``) that expire with their jobs; files
    derived from a record (``<prefix><id>-*.zip``) go with it."""

    prefix = ""

    def __init__(self, root: str | os.PathLike, ttl_seconds: float = 24 * 3600):
        self.root = Path(root)
        self.ttl_seconds = ttl_seconds

    def path(self, record_id: str, suffix: str = ".json") -> Path:
        if not valid_job_id(record_id):
            raise KeyError(record_id)
        return self.root / f"{self.prefix}{record_id}{suffix}"

    def create(self, **fields) -> dict:
        record = {"id": uuid.uuid4().hex, **fields, "created": time.time()}
        write_json(self.path(record["id"]), record)
        return record

    def get(self, record_id: str) -> dict | None:
        try:
            return json.loads(self.path(record_id).read_text())
        except (KeyError, OSError, ValueError):
            return None

    def expired(self, record: dict) -> bool:
        return time.time() - record.get("created", 0) > self.ttl_seconds

    def sweep(self) -> int:
        """Delete records (and their derived files) older than the time to live. Returns how many files."""
        removed, now = 0, time.time()
        for path in self.root.glob(self.prefix + "*") if self.root.is_dir() else ():
            if path.is_file() and now - _mtime(path) > self.ttl_seconds:
                path.unlink(missing_ok=True)
                removed += 1
        return removed


class ComparisonStore(RecordStore):
    """Comparisons: the two job ids and models of one image converted with two models."""

    prefix = COMPARISON_PREFIX


class BatchStore(RecordStore):
    """Batches: the job ids of one multi-image upload, in upload order, and the zips made of them."""

    prefix = BATCH_PREFIX


class Sweeper:
    """Deletes expired results and orphaned uploads every ``interval_seconds``, whether or not anyone asks."""

    def __init__(self, store: JobStore, uploads: str | os.PathLike, interval_seconds: float, cache=None,
                 records=()):
        self.store, self.uploads, self.interval_seconds = store, uploads, interval_seconds
        self.cache = cache  # a web.depth_cache.DepthCache, swept by age and count
        self.records = tuple(records)  # ComparisonStore, BatchStore: records that expire with their jobs
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="retention-sweep", daemon=True)

    def start(self) -> "Sweeper":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def run_once(self) -> int:
        removed = self.store.sweep()
        removed += sweep_uploads(self.uploads, max(self.store.ttl_seconds, 3600))
        for records in self.records:
            removed += records.sweep()
        if self.cache is not None:
            removed += self.cache.sweep()
        return removed

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                removed = self.run_once()
                if removed:
                    log.info("retention sweep removed %d expired item(s)", removed)
            except Exception:  # a sweep must never take the server down; try again next time
                log.exception("retention sweep failed")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@dataclass(frozen=True)
class Upload:
    """What a request hands to its job: the image already decoded once (a converter LoadedImage) or, where the
    job runs elsewhere, its bytes; the SHA-256 of those bytes (the depth cache's key, hashed once); a depth map."""

    image: object
    sha256: str | None = None
    depth: bytes | None = None


class JobRunner:
    """Runs conversions on a fixed number of threads, with at most ``max_queued`` jobs waiting.

    ``timeout_seconds`` bounds a job from the moment it starts: past it the job is failed at once ("processing
    timed out") and whatever it still produces is thrown away. A model forward cannot be interrupted, so the
    thread is busy until that forward ends, but the user hears at the deadline and no file is left behind.
    Uploads wait in memory, already decoded: nothing of them is written to disk.
    """

    def __init__(self, store: JobStore, convert, workers: int = 1, max_queued: int = 8,
                 timeout_seconds: float = 300.0, export=None, export_workers: int = 1, budget=None, estimate=None):
        self.store = store
        # Admission by memory (web.memory_budget): ``estimate(request, upload)`` → MB before a job is queued (one
        # that can never fit is refused), and a job starts only once ``budget`` has room for it.
        self.budget, self.estimate = budget, estimate
        self.convert = convert  # (job, upload, report) → dict of info; writes the job's files
        self.export = export  # (web.exports.Target) → status: writes a later download (web.exports.Exports.run)
        # Exports have threads of their own: a video being written never holds a conversion back, nor the reverse.
        self._exports = ThreadPoolExecutor(max_workers=export_workers, thread_name_prefix="export")
        self.capacity = workers + max_queued
        self.timeout_seconds = timeout_seconds
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert")
        self._lock = threading.Lock()
        self._waiting: list[str] = []
        self._active = 0

    def submit(self, request: dict, upload: Upload | None) -> Job:
        """Queue the job (``request``: a JobRequest as a dict); raises QueueFullError at capacity, JobTooLargeError
        when its memory could never fit."""
        memory_mb = self._estimates(request, [upload])[0]
        with self._lock:
            if self._active + len(self._waiting) >= self.capacity:
                raise QueueFullError()
            job = self._create(request, memory_mb)
            self._waiting.append(job.id)
        self._executor.submit(self._run, job.id, upload)
        return job

    def submit_batch(self, request: dict, uploads: list[Upload]) -> list[Job]:
        """Queue a batch's jobs as one unit of admission: accepted whole when there is room for one more job (the
        batch may take the queue past ``capacity``; nothing else is accepted until it is back under), or
        QueueFullError. So a batch of any size up to the batch limit fits an idle server."""
        estimates = self._estimates(request, uploads)
        with self._lock:
            if self._active + len(self._waiting) >= self.capacity:
                raise QueueFullError()
            jobs = [self._create(request, memory_mb) for memory_mb in estimates]
            self._waiting.extend(job.id for job in jobs)
        for job, upload in zip(jobs, uploads):
            self._executor.submit(self._run, job.id, upload)
        return jobs

    def _create(self, request: dict, memory_mb: float) -> Job:
        """A new job's record, with its memory estimate."""
        job = self.store.create(request)
        if memory_mb:
            job.memory_mb = memory_mb
            try:
                self.store.save(job)
            except OutputError:
                self.store.delete(job.id)  # no record of a job that was never queued
                raise
        return job

    def _estimates(self, request: dict, uploads: list) -> list[float]:
        """Each job's memory estimate, MB (0 without an estimator); JobTooLargeError for one that can never fit."""
        if self.estimate is None:
            return [0.0 for _ in uploads]
        estimates = [self.estimate(request, upload) for upload in uploads]
        for memory_mb in estimates:
            self.budget.check(memory_mb)
        return estimates

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start, None when the job is not waiting (here)."""
        with self._lock:
            return self._waiting.index(job_id) + 1 if job_id in self._waiting else None

    def room(self) -> int:
        """How many more jobs would be accepted now (a batch is accepted whole or not at all)."""
        with self._lock:
            return max(0, self.capacity - self._active - len(self._waiting))

    def submit_export(self, target) -> None:
        """Queue a later download (web.exports); its state file says where it stands."""
        self._exports.submit(self._export, target)

    def _export(self, target) -> None:
        try:
            self.export(target)
        except Exception:  # Exports.run records its own failures; this is the last guard of the thread
            log.exception("export %s failed", target)

    def shutdown(self, wait: bool = False) -> None:
        """Drop what waits; with ``wait``, return once the running conversions and exports have ended."""
        self._executor.shutdown(wait=wait, cancel_futures=True)
        self._exports.shutdown(wait=wait, cancel_futures=True)

    def _run(self, job_id: str, upload: Upload | None) -> None:
        job = self.store.get(job_id)
        memory_mb = job.memory_mb if job is not None and self.budget is not None else 0.0
        if memory_mb:
            self.budget.reserve(memory_mb)  # queued (and shown so) until the running jobs leave it room
        with self._lock:
            self._waiting.remove(job_id)
            self._active += 1
        try:
            if job is not None:
                run_attempt(self.store, job, lambda job, report: self.convert(job, upload, report),
                            self.timeout_seconds)
        finally:
            with self._lock:
                self._active -= 1
            if memory_mb:
                self.budget.release(memory_mb)
