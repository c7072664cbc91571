"""One attempt of one job, the same in every back-end: status, stages and progress into ``job.json``, a deadline,
a failure sentence for people, and no partial file left behind.

The embedded runner (web/jobs/embedded.py) and the Celery worker (web/jobs/celery/worker.py) only deliver work here:
they decide *when* an attempt runs and with which upload; an ``Attempt`` decides, through the job's transitions
(web/jobs/record.py), what its record says about it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from converter import ConversionError, OutputError
from converter.service_api import DONE, FAILED

from .. import metrics
from .record import CANCELLED

log = logging.getLogger(__name__)

TIMED_OUT = "Processing timed out: the image took too long to convert. Try a smaller image or lower detail."
WORKER_DIED = "The server stopped while converting this image. Please try again."
INTERNAL = "The conversion failed because of an internal error."
RECORD = "job.json"
# The upload's bytes, kept in the job folder while a job that runs away from its request needs them (Celery).
UPLOAD_IMAGE, UPLOAD_DEPTH = "upload.image", "upload.depth"
UPLOAD_VIDEO = "upload.video"  # a video's file: in the job folder from the moment the job exists, in every back-end
UPLOADS = (UPLOAD_IMAGE, UPLOAD_DEPTH, UPLOAD_VIDEO)
CANCEL_REQUESTED = "cancel.requested"  # made in a job's folder to stop it (web.service.Service.cancel)
CANCELLED_BY_USER = "Cancelled: the conversion was stopped on request."


SUPERSEDED = "superseded"  # an attempt's outcome, never a job's status: the record moved on to a newer attempt


class JobCancelled(Exception):
    """The attempt was ended from outside (timed out, superseded by a newer attempt, or the job deleted) while it
    was running."""


class Attempt:
    """One attempt of ``job`` (a web.jobs.record.Job of ``store``): ``Attempt(...).run(work)`` runs
    ``work(job, report) -> info`` and returns how it ended: done, failed, or SUPERSEDED (the record names a newer
    attempt; this one wrote nothing more).

    ``report(stage)`` records a stage and its progress, and raises JobCancelled once the attempt is over for
    someone else (the deadline passed, or ``ours()`` says the record no longer names this attempt). Past
    ``timeout_seconds`` the job is failed at once ("processing timed out"): a model forward cannot be interrupted,
    so the thread stays busy until it ends, but the user hears at the deadline and what it writes later is removed.
    A failure removes every output file; success removes the kept upload. ``on_end()`` runs once the work's own
    outcome is decided and before it is saved: a runner frees the job's place there, so whoever sees "done" finds
    room. Not at the deadline: the thread is still busy until its forward ends, and keeps the place till then.
    The worker's thread and the deadline's timer may both try to end the attempt; ``_lock`` lets exactly one.
    """

    def __init__(self, store, job, timeout_seconds: float, ours=None, on_end=None):
        self.store, self.job = store, job
        self.ours, self.on_end = ours or (lambda: True), on_end or (lambda: None)
        self.folder = store.folder(job.id)
        self.outcome = SUPERSEDED
        self._lock = threading.Lock()
        self._over = False  # the outcome is recorded, or the attempt is no longer ours
        self._stage, self._since = None, time.monotonic()  # the stage being timed (web.metrics)
        self._deadline = threading.Timer(timeout_seconds, self._time_out)
        self._deadline.daemon = True

    def run(self, work) -> str:
        self._deadline.start()
        try:
            with self._lock:
                self._check_ours()
                self.job.start()
                self._record()
            info = work(self.job, self.report)
            with self._lock:
                self._check_ours()
                self._end(DONE, info=info)
        except JobCancelled:
            with self._lock:
                if not self._over and self._still_ours() and cancel_requested(self.folder):  # seen by the work
                    self._end(CANCELLED, CANCELLED_BY_USER, CANCELLED)
                if self.outcome in (FAILED, CANCELLED):  # timed out or cancelled: what it wrote since goes too
                    remove_outputs(self.folder)
                    if self.outcome == CANCELLED:
                        drop_uploads(self.folder)
        except ConversionError as error:
            self._end_unless_over(FAILED, error.message, error.code)
        except Exception:  # never show internals; the log has the details
            log.exception("job %s failed", self.job.id)
            self._end_unless_over(FAILED, INTERNAL, "internal_error")
        finally:
            self._deadline.cancel()
        return self.outcome

    def report(self, stage: str) -> None:
        """The work reached ``stage``; raises JobCancelled once the attempt is over."""
        with self._lock:
            self._check_ours()
            self.job.advance(stage)
            self._record()

    def _check_ours(self) -> None:
        if self._over or not self._still_ours():
            self._over = True
            raise JobCancelled()
        if cancel_requested(self.folder):  # stopped on request: recorded as cancelled, nothing kept
            self._end(CANCELLED, CANCELLED_BY_USER, CANCELLED)
            raise JobCancelled()

    def _still_ours(self) -> bool:
        """The job still exists (deleting it takes its folder away: web.deletion) and names this attempt."""
        return self.folder.is_dir() and self.ours()

    def _record(self) -> None:
        self.store.save(self.job)
        self._time(self.job.stage)

    def _time(self, stage: str | None) -> None:
        now = time.monotonic()
        if self._stage is not None:
            metrics.STAGE_SECONDS.labels(stage=self._stage).observe(now - self._since)
        self._stage, self._since = stage, now

    def _time_out(self) -> None:
        self._end_unless_over(FAILED, TIMED_OUT, "timed_out", by_deadline=True)

    def _end_unless_over(self, status: str, message: str, code: str, by_deadline: bool = False) -> None:
        with self._lock:
            if not self._over:
                self._end(status, message, code, by_deadline=by_deadline)

    def _end(self, status: str, message: str | None = None, code: str | None = None, info=None,
             by_deadline: bool = False) -> None:
        """Record the outcome (the caller holds the lock)."""
        self._over = True
        if not self._still_ours():
            return
        if status == FAILED:
            remove_outputs(self.folder)
            self.job.fail(message, code)
        elif status == CANCELLED:
            remove_outputs(self.folder)
            drop_uploads(self.folder)
            self.job.cancel(message)
        else:
            drop_uploads(self.folder)
            self.job.succeed(info)
        self.outcome = status
        self._time(None)
        metrics.JOBS_ENDED.labels(status=status, code=code or "").inc()
        if not by_deadline:
            self.on_end()
        _save_quietly(self.store, self.job)


def remove_outputs(folder: Path, keep_uploads: bool = False) -> None:
    """No link to a half-written result: every file but the record (and, for a retry, the upload) goes."""
    keep = {RECORD} | (set(UPLOADS) if keep_uploads else set())
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name not in keep:
            path.unlink(missing_ok=True)


def drop_uploads(folder: Path) -> None:
    for name in UPLOADS:
        (folder / name).unlink(missing_ok=True)


def keep_video(folder: Path, upload):
    """A video's upload moved into its job's folder (one rename: both are on the service's disks), where whoever runs
    the job finds it; the Upload now names it there. Images are left as they are."""
    if upload is None or getattr(upload, "video", None) is None:
        return upload
    target = folder / UPLOAD_VIDEO
    try:
        os.replace(upload.video, target)
    except OSError:
        shutil.move(str(upload.video), target)  # UPLOAD_FOLDER on another file system
    return dataclasses.replace(upload, video=target)


def job_timeout(job, image_seconds: float, video_seconds: float) -> float:
    """How long an attempt of ``job`` may run: JOB_TIMEOUT_SECONDS, or VIDEO_TIMEOUT_SECONDS for a video."""
    return video_seconds if (job.request or {}).get("video") else image_seconds


def cancel_requested(folder: Path) -> bool:
    return (folder / CANCEL_REQUESTED).exists()


def _save_quietly(store, job) -> None:
    try:
        store.save(job)
    except (OSError, OutputError):
        log.warning("could not record the end of job %s", job.id)
