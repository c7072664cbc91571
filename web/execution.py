"""One attempt of one job, the same in every back-end: status, stages and progress into ``job.json``, a deadline,
a failure sentence for people, and no partial file left behind.

The embedded JobRunner (web/jobs.py) and the Celery worker (web/celery_worker.py) only deliver work here: they
decide *when* an attempt runs and with which upload; ``run_attempt`` decides what the job record says about it.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from converter import ConversionError, OutputError
from converter.service_api import DONE, FAILED, RUNNING, progress_of

from . import metrics

log = logging.getLogger(__name__)

TIMED_OUT = "Processing timed out: the image took too long to convert. Try a smaller image or lower detail."
WORKER_DIED = "The server stopped while converting this image. Please try again."
INTERNAL = "The conversion failed because of an internal error."
RECORD = "job.json"
# The upload's bytes, kept in the job folder while a job that runs away from its request needs them (Celery).
UPLOAD_IMAGE, UPLOAD_DEPTH = "upload.image", "upload.depth"


class JobCancelled(Exception):
    """The attempt was ended from outside (timed out, or superseded by a newer attempt) while it was running."""


def run_attempt(store, job, work, timeout_seconds: float, ours=None) -> str:
    """Run ``work(job, report) -> info`` as one attempt of ``job`` (a web.jobs.Job of ``store``); returns the
    status it ended with (done, failed, or "superseded").

    ``report(stage)`` records a stage and its progress, and raises JobCancelled once the attempt is over for
    someone else (the deadline passed, or ``ours()`` says the record no longer names this attempt). Past
    ``timeout_seconds`` the job is failed at once ("processing timed out"): a model forward cannot be interrupted,
    so the thread stays busy until it ends, but the user hears at the deadline and what it writes later is removed.
    A failure removes every output file; success removes the kept upload.
    """
    ours = ours or (lambda: True)
    folder = store.folder(job.id)
    guard = threading.Lock()  # orders the watchdog's and the worker's last writes
    over = threading.Event()  # the attempt's outcome is recorded (or it is no longer ours)
    outcome = {"status": "superseded"}
    clock = {"stage": None, "since": time.monotonic()}  # the stage being timed (web.metrics)

    def timed(stage: str | None) -> None:
        now = time.monotonic()
        if clock["stage"] is not None:
            metrics.STAGE_SECONDS.labels(stage=clock["stage"]).observe(now - clock["since"])
        clock["stage"], clock["since"] = stage, now

    def finish(status: str, message: str | None = None, code: str | None = None) -> None:
        over.set()
        if not ours():
            return
        if status == FAILED:
            job.error, job.error_code = message, code
            remove_outputs(folder)
            job.files = []
        else:
            drop_uploads(folder)
        job.status, job.stage, job.progress = status, status, 1.0
        outcome["status"] = status
        timed(None)
        metrics.JOBS_ENDED.labels(status=status, code=code or "").inc()
        _save_quietly(store, job)

    def time_out() -> None:
        with guard:
            if not over.is_set():
                finish(FAILED, TIMED_OUT, "timed_out")

    def report(stage: str) -> None:
        with guard:
            if over.is_set() or not ours():
                over.set()
                raise JobCancelled()
            job.stage, job.progress = stage, progress_of(stage)
            store.save(job)
            timed(stage)

    watchdog = threading.Timer(timeout_seconds, time_out)
    watchdog.daemon = True
    watchdog.start()
    try:
        job.status = RUNNING
        report(RUNNING)
        info = work(job, report)
        with guard:
            if over.is_set():
                raise JobCancelled()
            job.info = info
            finish(DONE)
    except JobCancelled:
        with guard:
            if outcome["status"] == FAILED:  # timed out: what the work wrote after the deadline goes too
                remove_outputs(folder)
    except ConversionError as error:
        with guard:
            if not over.is_set():
                finish(FAILED, error.message, error.code)
    except Exception:  # never show internals; the log has the details
        log.exception("job %s failed", job.id)
        with guard:
            if not over.is_set():
                finish(FAILED, INTERNAL, "internal_error")
    finally:
        watchdog.cancel()
    return outcome["status"]


def remove_outputs(folder: Path, keep_uploads: bool = False) -> None:
    """No link to a half-written result: every file but the record (and, for a retry, the upload) goes."""
    keep = {RECORD} | ({UPLOAD_IMAGE, UPLOAD_DEPTH} if keep_uploads else set())
    for path in folder.iterdir() if folder.is_dir() else ():
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name not in keep:
            path.unlink(missing_ok=True)


def drop_uploads(folder: Path) -> None:
    for name in (UPLOAD_IMAGE, UPLOAD_DEPTH):
        (folder / name).unlink(missing_ok=True)


def _save_quietly(store, job) -> None:
    try:
        store.save(job)
    except (OSError, OutputError):
        log.warning("could not record the end of job %s", job.id)
