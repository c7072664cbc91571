"""What a job back-end is (``JobBackend``) and which ones there are (``BACKENDS``): the Service talks to this
interface only, so a third back-end is one class and one row, as the depth engines are (converter/depth/backend.py).
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from .record import Job
from .store import JobStore, Upload

# JOB_BACKEND -> "module:Class" of a JobBackend (imported on first use: the embedded web tier never imports celery).
BACKENDS = {
    "embedded": "web.jobs.embedded:JobRunner",
    "celery": "web.jobs.celery.submit:CeleryJobRunner",
}


class QueueFullError(Exception):
    """More jobs are waiting than the service accepts; the client should retry later (a 503 with Retry-After)."""


@runtime_checkable
class JobBackend(Protocol):
    """Runs the jobs of a JobStore somewhere: threads here, or workers elsewhere."""

    runs_here: bool  # jobs run in this process: it loads the model, and a request may decode its upload
    model_status: object  # web.model_status.ModelStatus's interface (state, message, ready, runs, start, wait)

    @classmethod
    def from_config(cls, config, store: JobStore, converter, convert, export, memory=None) -> "JobBackend":
        """Built from the app's settings; ``convert(job, upload, report)`` runs a job, ``export(target)`` a
        later download, ``memory`` (web.memory_budget.JobMemory) admits jobs by their memory (all three used where
        the back-end runs work in this process)."""

    def submit_batch(self, request: dict | list[dict], uploads: list[Upload | None], client: str = "",
                     delete_token_sha256: str = "") -> list[Job]:
        """Queue one job per upload as one unit of admission; QueueFullError when there is no room. ``request``:
        one JobRequest dict for every job, or a list of them, one per upload (a batch of images and videos: see
        :func:`job_requests`). The jobs count one by one against ``client``'s share of the queue
        (web.intake.client): clients are served in turn. Each job records its upload's hash and who may delete it
        (web.deletion)."""

    def submit_export(self, target) -> None:
        """Queue a later download (web.jobs.exports.Target); QueueFullError when it cannot be queued."""

    def queue_position(self, job_id: str) -> int | None:
        """1 for the next job to start; None when the job is not waiting. Clients take turns, so a job's position
        can grow as well as shrink as other clients' jobs arrive."""

    def room(self) -> int:
        """How many more jobs would be accepted now."""

    def forget(self, job_id: str) -> None:
        """The job is being deleted: drop it from the queue, and forget whatever names it (a running attempt stops
        by itself at its next stage: its folder is gone)."""

    def watch(self) -> None:
        """Settle the unfinished jobs nobody is working on (fail them, or queue them again): reads never do."""

    def workers_ready(self) -> int:
        """How many conversion workers have their model ready."""

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking work; with ``wait``, return once what runs in this process has ended."""


def job_requests(request: dict | list[dict], uploads: list) -> list[dict]:
    """Each job's request of a batch: ``request`` given for all of them, or already one per upload."""
    if isinstance(request, dict):
        return [request] * len(uploads)
    if len(request) != len(uploads):
        raise ValueError(f"{len(request)} requests for {len(uploads)} uploads")
    return list(request)


def backend_class(name: str) -> type[JobBackend]:
    """The class ``JOB_BACKEND`` names."""
    if name not in BACKENDS:
        raise ValueError(f"JOB_BACKEND must be one of {', '.join(map(repr, BACKENDS))}, not {name!r}")
    module, class_name = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), class_name)
