"""Later downloads as queued work: a download not written yet (a mesh, a video, a package, a batch's zip) is an
export task run by the same machinery as conversions (the embedded runner's export thread, or a Celery worker), with
its own deadline and a progress line. No request thread builds one: the link answers at once ("preparing…", 202)
and serves the file once it is whole.

An export's state is a small JSON file beside its target (``<target>.export.json``), created with O_EXCL so that
concurrent requests, in any process, queue it once. A state that outlived its deadline (its process died) is stale
and the export is queued again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from converter import OUTPUTS, ConversionError, OutputError
from converter.service_api import atomic_output, write_json

from .. import metrics
from .conversion import ensure_output, offered_kinds
from .execution import INTERNAL
from ..intake.job_request import JobRequest
from .record import DONE
from .store import BatchStore, JobStore

log = logging.getLogger(__name__)

QUEUED, RUNNING, FAILED = "queued", "running", "failed"
EXPORT_TIMEOUT_SECONDS = 120.0  # default; EXPORT_TIMEOUT_SECONDS in the settings
TOO_LONG = "Preparing this download took too long. Please try again later."


@dataclass(frozen=True)
class Target:
    """What an export makes: a job's file (``kind`` of job ``owner``) or a batch's zip (``kind`` = "zip",
    ``formats`` its comma-separated kinds)."""

    owner: str
    kind: str
    formats: str = ""

    def to_args(self) -> list[str]:
        return [self.owner, self.kind, self.formats]


@dataclass
class ExportState:
    status: str = QUEUED
    line: str = "waiting for its turn"  # what a person reads under "Preparing the MP4…"
    created: float = 0.0
    updated: float = 0.0
    error: str | None = None


class Exports:
    """Paths and states of exports under one OUTPUT_FOLDER, and how one export runs (``run``)."""

    def __init__(self, store: JobStore, batches: BatchStore, max_pixels: int,
                 timeout_seconds: float = EXPORT_TIMEOUT_SECONDS):
        self.store, self.batches, self.max_pixels = store, batches, max_pixels
        self.timeout_seconds = timeout_seconds

    # ----------------------------------------------------------------------------------------------- paths

    def path(self, target: Target) -> Path:
        if target.kind == "zip":
            return self.batches.path(target.owner, f"-{target.formats.replace(',', '-')}.zip")
        return self.store.folder(target.owner) / OUTPUTS[target.kind].file_name

    def state_path(self, target: Target) -> Path:
        path = self.path(target)
        return path.with_name(path.name + ".export.json")

    def state(self, target: Target) -> ExportState | None:
        try:
            return ExportState(**json.loads(self.state_path(target).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    # --------------------------------------------------------------------------------------------- requests

    def request(self, target: Target, submit) -> tuple[Path | None, ExportState | None]:
        """(path, None) when the file is whole and its export has ended (its state file gone, so the export is
        counted in the metrics before anyone has the file); else (None, state) with the export queued once through
        ``submit(target)``. A failed export is reported once, then queued again on the next request."""
        path = self.path(target)
        state = self.state(target)
        if path.is_file() and (state is None or state.status == FAILED):  # failed: past its deadline, whole later
            return path, None
        if state is not None and state.status == FAILED:
            self.state_path(target).unlink(missing_ok=True)
            return None, state
        if state is not None and time.time() - state.updated > self.timeout_seconds + 30:
            log.warning("export %s: its state is stale (its process died); queueing it again", target)
            self.state_path(target).unlink(missing_ok=True)
            state = None
        if state is None:
            state = ExportState(created=time.time(), updated=time.time())
            try:
                with open(self.state_path(target), "x") as handle:  # O_EXCL: one request queues it
                    json.dump(asdict(state), handle)
            except FileExistsError:
                return None, self.state(target) or state
            except OSError:
                raise OutputError("The server cannot store downloads right now. Please try again later.") from None
            try:
                submit(target)
            except Exception:
                self.state_path(target).unlink(missing_ok=True)
                raise
        return None, state

    # ------------------------------------------------------------------------------------------------ tasks

    def run(self, target: Target) -> str:
        """Run one export with a deadline; returns its end status (done or failed). The deadline fails it at once
        (the writer cannot be interrupted: a file it finishes later is still whole and is served)."""
        state = self.state(target) or ExportState(created=time.time())
        guard, over = threading.Lock(), threading.Event()

        def record(status: str, line: str, error: str | None = None) -> None:
            state.status, state.line, state.error, state.updated = status, line, error, time.time()
            try:
                write_json(self.state_path(target), asdict(state))
            except (OSError, OutputError):
                log.warning("could not record export %s", target)

        def time_out() -> None:
            with guard:
                if not over.is_set():
                    over.set()
                    record(FAILED, "failed", TOO_LONG)

        if self.path(target).is_file():
            self.state_path(target).unlink(missing_ok=True)
            return DONE
        record(RUNNING, "writing the file")
        watchdog = threading.Timer(self.timeout_seconds, time_out)
        watchdog.daemon = True
        watchdog.start()
        started = time.monotonic()
        try:
            self._produce(target)
            status, error = DONE, None
        except ConversionError as failure:
            status, error = FAILED, failure.message
        except Exception:  # never show internals; the log has the details
            log.exception("export %s failed", target)
            status, error = FAILED, INTERNAL
        finally:
            watchdog.cancel()
        took = time.monotonic() - started
        with guard:
            if over.is_set():
                return FAILED
            over.set()
            metrics.EXPORT_SECONDS.labels(kind=target.kind, status=status).observe(took)  # before it is served
            if status == DONE:
                self.state_path(target).unlink(missing_ok=True)
            else:
                record(FAILED, "failed", error)
        log.info("export %s: %s in %.2f s", target, status, took)
        if target.kind == "zip" and self.batches.get(target.owner) is None:  # the batch was deleted meanwhile
            self.path(target).unlink(missing_ok=True)
            self.state_path(target).unlink(missing_ok=True)
        return status

    def _produce(self, target: Target) -> None:
        if target.kind == "zip":
            self._zip(target)
            return
        job = self.store.get(target.owner)
        if job is None or job.status != DONE:
            raise ConversionError("This result has expired and was deleted. Convert the image again.")
        try:
            ensure_output(self.store, job, target.kind, self.max_pixels)
        except KeyError:
            raise ConversionError("This result does not offer that download.") from None

    def _zip(self, target: Target) -> None:
        """One zip of every finished job's files of a batch, numbered in upload order; a failed job contributes
        its error as ``NN/error.txt``. ``formats`` name an image job's kinds; a video job contributes every file it
        was asked for (``NN/video_LRF_Full_SBS.mp4``, ``NN/video.json``, …), stored as they are (already
        compressed)."""
        batch = self.batches.get(target.owner)
        if batch is None:
            raise ConversionError("This batch has expired and was deleted. Convert the images again.")
        formats = target.formats.split(",")
        with atomic_output(self.path(target)) as temporary, zipfile.ZipFile(
                temporary, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bundle:
            for number, job_id in enumerate(batch["job_ids"], start=1):
                self._add_job(bundle, job_id, f"{number:02d}", formats)

    def _add_job(self, bundle: zipfile.ZipFile, job_id: str, prefix: str, formats: list[str]) -> None:
        job = self.store.get(job_id)
        if job is None or job.status != DONE:
            reason = job.error if job is not None and job.error else "This result has expired and was deleted."
            bundle.writestr(f"{prefix}/error.txt", reason + "\n")
            return
        request = JobRequest.from_dict(job.request)
        offered = offered_kinds(request)
        if request.is_video:  # written by the job itself, every one: nothing to prepare
            for kind in offered:
                try:
                    path = ensure_output(self.store, job, kind, self.max_pixels)
                except KeyError:
                    bundle.writestr(f"{prefix}/error-{kind}.txt", "This file of the video's result is missing.\n")
                    continue
                stored = path.suffix in (".mp4", ".zip")  # compressed already: deflating again only costs time
                bundle.write(path, arcname=f"{prefix}/{path.name}",
                             compress_type=zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
            return
        for kind in formats:
            if kind not in offered:
                continue
            try:
                path = ensure_output(self.store, job, kind, self.max_pixels)
            except ConversionError as error:
                bundle.writestr(f"{prefix}/error-{kind}.txt", error.message + "\n")
                continue
            bundle.write(path, arcname=f"{prefix}/{path.name}")


def size_of(path: Path) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None
