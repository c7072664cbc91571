"""Conversion jobs: a bounded in-process worker pool, with each job's state kept on disk beside its files.

The state lives in ``outputs/<job id>/job.json`` (written atomically), so any gunicorn worker process can answer a
status request, and nothing but the job folder is needed to serve the result. Uploads wait in ``uploads/`` only
until the conversion has read them.
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

from converter.errors import ConversionError, OutputError

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STAGES = {  # stage → progress fraction reached when it starts
    "queued": 0.0, "loading model": 0.05, "decoding": 0.1, "estimating depth": 0.2, "building geometry": 0.7,
    "writing files": 0.85, "done": 1.0, "failed": 1.0,
}
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")

# Download kinds → (file name in the job folder, media type, label). One table for routes, pages and the API.
DOWNLOADS = {
    "ply": ("cloud.ply", "application/octet-stream", "Point cloud (.ply)"),
    "glb": ("mesh.glb", "model/gltf-binary", "Mesh, glTF binary (.glb)"),
    "obj": ("mesh-obj.zip", "application/zip", "Mesh, Wavefront (.obj + .mtl + texture, zipped)"),
    "mesh_ply": ("mesh.ply", "application/octet-stream", "Mesh (.ply)"),
    "depth_png": ("depth.png", "image/png", "Depth map, 16-bit PNG"),
    "depth_npy": ("depth.npy", "application/octet-stream", "Depth map (.npy)"),
}
PREVIEWS = {"input": ("input.png", "image/png"), "depth_preview": ("depth_preview.png", "image/png")}


class QueueFullError(Exception):
    """More jobs are waiting than the service accepts; the client should retry later."""


@dataclass
class Job:
    id: str
    status: str = QUEUED
    stage: str = "queued"
    progress: float = 0.0
    error: str | None = None
    error_code: str | None = None
    files: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)

    @property
    def finished(self) -> bool:
        return self.status in (DONE, FAILED)


def valid_job_id(job_id: str) -> bool:
    return bool(_JOB_ID.match(job_id or ""))


class JobStore:
    """Job folders under ``root``: create, read, update, and look up files by (job id, download kind)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def folder(self, job_id: str) -> Path:
        if not valid_job_id(job_id):
            raise KeyError(job_id)
        return self.root / job_id

    def create(self, options: dict) -> Job:
        job = Job(id=uuid.uuid4().hex, options=options)
        self.folder(job.id).mkdir(parents=True)
        self.save(job)
        return job

    def save(self, job: Job) -> None:
        job.updated = time.time()
        folder = self.folder(job.id)
        temporary = folder / f".job.{threading.get_ident()}.tmp"
        temporary.write_text(json.dumps(asdict(job)))
        os.replace(temporary, folder / "job.json")

    def get(self, job_id: str) -> Job | None:
        try:
            data = json.loads((self.folder(job_id) / "job.json").read_text())
        except (KeyError, OSError, ValueError):
            return None
        return Job(**data)

    def file(self, job: Job, kind: str) -> tuple[Path, str] | None:
        """(path, media type) of a finished job's file, or None if there is no such file."""
        entry = DOWNLOADS.get(kind) or PREVIEWS.get(kind)
        if entry is None or entry[0] not in job.files:
            return None
        path = self.folder(job.id) / entry[0]
        return (path, entry[1]) if path.is_file() else None

    def delete(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)


class JobRunner:
    """Runs conversions on a fixed number of threads, with at most ``max_queued`` jobs waiting."""

    def __init__(self, store: JobStore, uploads: str | os.PathLike, convert, workers: int = 1, max_queued: int = 8):
        self.store = store
        self.uploads = Path(uploads)
        self.convert = convert  # (job, image_path, depth_path, report) → dict of info; writes the job's files
        self.capacity = workers + max_queued
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert")
        self._lock = threading.Lock()
        self._waiting: list[str] = []
        self._active = 0

    def submit(self, image: bytes, depth: bytes | None, options: dict) -> Job:
        """Store the upload and queue the job; raises QueueFullError when the service is at capacity."""
        with self._lock:
            if self._active + len(self._waiting) >= self.capacity:
                raise QueueFullError()
            job = self.store.create(options)
            self._waiting.append(job.id)
        try:
            image_path = self._keep_upload(job.id, "image", image)
            depth_path = self._keep_upload(job.id, "depth", depth) if depth else None
        except OSError:
            self._forget(job.id)
            self._discard_uploads(job.id)
            self.store.delete(job.id)
            raise OutputError("The upload could not be stored: the server is out of disk space or misconfigured.")
        self._executor.submit(self._run, job.id, image_path, depth_path)
        return job

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start, None when the job is not waiting (here)."""
        with self._lock:
            return self._waiting.index(job_id) + 1 if job_id in self._waiting else None

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _keep_upload(self, job_id: str, role: str, data: bytes) -> Path:
        path = self.uploads / f"{job_id}.{role}"
        path.write_bytes(data)
        return path

    def _discard_uploads(self, job_id: str) -> None:
        for role in ("image", "depth"):
            (self.uploads / f"{job_id}.{role}").unlink(missing_ok=True)

    def _forget(self, job_id: str) -> None:
        with self._lock:
            if job_id in self._waiting:
                self._waiting.remove(job_id)

    def _run(self, job_id: str, image_path: Path, depth_path: Path | None) -> None:
        with self._lock:
            self._waiting.remove(job_id)
            self._active += 1
        job = self.store.get(job_id)
        try:
            if job is None:
                return
            job.status, job.pid = RUNNING, os.getpid()

            def report(stage: str) -> None:
                job.stage, job.progress = stage, STAGES.get(stage, job.progress)
                self.store.save(job)

            try:
                job.info = self.convert(job, image_path, depth_path, report)
                job.status, job.stage, job.progress = DONE, "done", 1.0
            except ConversionError as error:
                self._fail(job, error.message, error.code)
            except Exception:  # never show internals; the log has the details
                log.exception("job %s failed", job_id)
                self._fail(job, "The conversion failed because of an internal error.", "internal_error")
            self.store.save(job)
        finally:
            self._discard_uploads(job_id)  # privacy: the upload is not kept once converted
            with self._lock:
                self._active -= 1

    def _fail(self, job: Job, message: str, code: str) -> None:
        job.status, job.stage, job.progress, job.error, job.error_code = FAILED, "failed", 1.0, message, code
        folder = self.store.folder(job.id)
        for name in job.files:  # no link to a half-written result
            (folder / name).unlink(missing_ok=True)
        job.files = []
