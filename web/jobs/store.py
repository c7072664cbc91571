"""Job records on disk, beside their files: create, read, save, expire, sweep.

The state lives in ``outputs/<job id>/job.json`` (written atomically), so any gunicorn worker process can answer a
status request, and nothing but the job folder is needed to serve the result. Reading a record never changes it:
a job whose process died is settled by its back-end's watch (web.jobs.embedded, web.jobs.celery.submit), not by
whoever looks. Results expire after a time to live and the Sweeper deletes them.
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
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from werkzeug.routing import BaseConverter

from converter import OUTPUTS, OutputError
from converter.service_api import write_json

from .record import DONE, QUEUED, RUNNING, STATUSES, Job

log = logging.getLogger(__name__)
JOB_FIELDS = frozenset(field.name for field in fields(Job))

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
TRASH = ".trash"  # OUTPUT_FOLDER/.trash/<job id>.<hex>: a job folder being deleted (JobStore.remove)
COMPARISON_PREFIX = "compare-"  # OUTPUT_FOLDER/compare-<uuid4 hex>.json: a pair of jobs shown side by side
BATCH_PREFIX = "batch-"  # OUTPUT_FOLDER/batch-<uuid4 hex>.json (+ its zips): the jobs of one multi-image upload


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

    def __init__(self, root: str | os.PathLike, ttl_seconds: float = 24 * 3600):
        self.root = Path(root)
        self.ttl_seconds = ttl_seconds

    def folder(self, job_id: str) -> Path:
        if not valid_job_id(job_id):
            raise KeyError(job_id)
        return self.root / job_id

    def create(self, request: dict, memory_mb: float = 0.0, client: str = "", upload_sha256: str = "",
               delete_token_sha256: str = "") -> Job:
        """A new queued job's record (``memory_mb``: its estimated peak, web.memory_budget; ``client``: who asked,
        web.intake.client; the upload's hash names its depth cache entries; the delete token's hash says who may
        delete it, web.deletion)."""
        now = time.time()
        job = Job(id=uuid.uuid4().hex, request=request, created=now, expires=now + self.ttl_seconds,
                  owner=process_token(), memory_mb=memory_mb, client=client, upload_sha256=upload_sha256,
                  delete_token_sha256=delete_token_sha256)
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
        """The job as recorded (nothing is judged or written); None if unknown or unreadable. Fields this code does
        not know are left out and missing ones take their defaults: during a rolling upgrade, web instances and
        workers of two versions read each other's records (a soak that restarted one worker on newer code saw every
        job it ran answer 404 on the older web instances)."""
        try:
            data = json.loads((self.folder(job_id) / "job.json").read_text())
            return Job(**{name: value for name, value in data.items() if name in JOB_FIELDS})
        except (KeyError, OSError, ValueError, TypeError, AttributeError):
            return None

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
        return [job_id for job_id, status in self.statuses().items() if status in (QUEUED, RUNNING)]

    def count_by_status(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
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

    def remove(self, job_id: str) -> bool:
        """Take the job's folder away at once, then delete it; False when there was none. The folder is renamed
        first (one atomic step): every reader then finds no job, and a conversion still running cannot write into it
        (its writes fail for want of the folder: nothing recreates it) while the files are being deleted."""
        trash = self.root / TRASH
        trash.mkdir(exist_ok=True)
        moved = trash / f"{job_id}.{uuid.uuid4().hex}"
        try:
            os.rename(self.folder(job_id), moved)
        except (KeyError, FileNotFoundError):
            return False
        shutil.rmtree(moved, ignore_errors=True)
        return True

    def shares_upload(self, job_id: str, upload_sha256: str) -> bool:
        """Whether a job other than ``job_id`` was made from the same upload (and so may use its cached depth)."""
        for other in self.statuses():
            job = self.get(other) if other != job_id else None
            if job is not None and job.upload_sha256 == upload_sha256:
                return True
        return False

    def sweep(self) -> int:
        """Delete every expired job folder (and stray folders without a readable job). Returns how many."""
        removed = 0
        now = time.time()
        for leftover in (self.root / TRASH).iterdir() if (self.root / TRASH).is_dir() else ():
            shutil.rmtree(leftover, ignore_errors=True)  # a removal that stopped half-way (its process died)
            removed += 1
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            if not valid_job_id(folder.name):
                continue
            job = self.get(folder.name)
            stale = job is None and now - mtime(folder) > self.ttl_seconds
            if stale or (job is not None and job.finished and now >= job.expires):
                self.delete(folder.name)
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

    def remove(self, record_id: str) -> bool:
        """Delete the record and every file derived from it (zips, their export states); False when there was no
        record."""
        existed = self.path(record_id).is_file()
        for path in self.derived(record_id):
            path.unlink(missing_ok=True)
        self.path(record_id).unlink(missing_ok=True)
        return existed

    def derived(self, record_id: str) -> list[Path]:
        """The files made from the record: ``<prefix><id>-*``."""
        self.path(record_id)  # a KeyError for anything but an id: never a pattern
        return sorted(self.root.glob(f"{self.prefix}{record_id}-*"))

    def expired(self, record: dict) -> bool:
        return time.time() - record.get("created", 0) > self.ttl_seconds

    def sweep(self) -> int:
        """Delete records (and their derived files) older than the time to live. Returns how many files."""
        removed, now = 0, time.time()
        for path in self.root.glob(self.prefix + "*") if self.root.is_dir() else ():
            if path.is_file() and now - mtime(path) > self.ttl_seconds:
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
    """Deletes expired results every ``interval_seconds``, whether or not anyone asks."""

    def __init__(self, store: JobStore, interval_seconds: float, cache=None, records=()):
        self.store, self.interval_seconds = store, interval_seconds
        self.cache = cache  # a web.jobs.depth_cache.DepthCache, swept by age and count
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


def mtime(path: Path) -> float:
    """When the file last changed (0 when it is gone: a file another process just deleted is simply old)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@dataclass(frozen=True)
class Upload:
    """What a request hands to its job. ``image``: the picture as :class:`converter.Sources` takes it, handed on
    unopened (the converter decides how to read it): decoded once by the request when that is cheap and the job
    runs in this process, else the file's bytes. ``sha256``: of those bytes (the depth cache's key, hashed once).
    ``depth``: the user's depth map file. ``video``: a video's file, waiting in UPLOAD_FOLDER until its job is made,
    then moved into the job's folder (web.jobs.execution.keep_video); ``image`` is None then."""

    image: object
    sha256: str | None = None
    depth: bytes | None = None
    video: Path | None = None
    video_size: tuple[int, int] | None = None  # a video's frame, as displayed (its memory estimate)
