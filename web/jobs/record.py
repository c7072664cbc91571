"""A job's record and its states: the one place a job's status changes.

    queued --start--> running --succeed--> done
      |                  |----fail-------> failed
      |                  |----cancel-----> cancelled
      |                  +----retry------> queued (the next attempt)
      +--fail / cancel / retry / resend (the same attempt, its message was lost)

A job is run by attempts: ``retry`` starts a new one (the worker running it died), ``resend`` sends the same one
again (the queue lost it before any worker started it). done, failed and cancelled are final. Every other change
raises IllegalTransition: a bug in the caller, never a user's mistake. Each transition changes the record in memory;
its caller saves it (JobStore.save), so a read never changes anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from converter.service_api import DONE, FAILED, QUEUED, RUNNING, progress_of

CANCELLED = "cancelled"
FINAL = (DONE, FAILED, CANCELLED)
STATUSES = (QUEUED, RUNNING) + FINAL
# (transition, from) -> to. Nothing else is allowed.
TRANSITIONS = {
    ("start", QUEUED): RUNNING,
    ("advance", RUNNING): RUNNING,
    ("succeed", RUNNING): DONE,
    ("fail", QUEUED): FAILED,
    ("fail", RUNNING): FAILED,
    ("cancel", QUEUED): CANCELLED,
    ("cancel", RUNNING): CANCELLED,
    ("retry", QUEUED): QUEUED,
    ("retry", RUNNING): QUEUED,
    ("resend", QUEUED): QUEUED,
}


class IllegalTransition(Exception):
    """A status change the lifecycle does not allow (for example, a finished job started again)."""

    def __init__(self, job_id: str, transition: str, status: str):
        super().__init__(f"job {job_id}: cannot {transition} a {status} job")
        self.transition, self.status = transition, status


@dataclass
class Job:
    id: str
    status: str = QUEUED
    stage: str = QUEUED
    progress: float = 0.0
    error: str | None = None
    error_code: str | None = None
    files: list[str] = field(default_factory=list)
    request: dict = field(default_factory=dict)  # a web.intake.job_request.JobRequest, as to_dict() gives it
    info: dict = field(default_factory=dict)
    image: dict = field(default_factory=dict)  # how the kept image.npz was decoded (scale, EXIF focal length)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    expires: float = 0.0
    owner: str = ""
    attempt: int = 1  # which run of the job this is: a job whose worker died is run once more
    memory_mb: float = 0.0  # its estimated peak over the loaded model (web.memory_budget); 0: not estimated
    upload_sha256: str = ""  # of the uploaded image: names its depth cache entries, erased with the job
    delete_token_sha256: str = ""  # whoever holds the token that hashes to this may delete the job (web.deletion)
    client: str = ""  # who asked for it (web.intake.client): its turn in the queue is that client's (fair share)

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    def _move(self, transition: str) -> None:
        target = TRANSITIONS.get((transition, self.status))
        if target is None:
            raise IllegalTransition(self.id, transition, self.status)
        self.status = target

    def start(self) -> None:
        """An attempt begins."""
        self._move("start")
        self.stage, self.progress = RUNNING, progress_of(RUNNING)

    def advance(self, stage: str) -> None:
        """The running attempt reached ``stage``."""
        self._move("advance")
        self.stage, self.progress = stage, progress_of(stage)

    def succeed(self, info: dict) -> None:
        self._move("succeed")
        self.info, self.stage, self.progress = info, DONE, 1.0

    def fail(self, message: str, code: str) -> None:
        """Failed for good, with a sentence for people; its files are no longer offered."""
        self._move("fail")
        self.error, self.error_code, self.files = message, code, []
        self.stage, self.progress = FAILED, 1.0

    def cancel(self, message: str) -> None:
        """Ended from outside before it finished (the service stopped): never run, nothing offered."""
        self._move("cancel")
        self.error, self.error_code, self.files = message, CANCELLED, []
        self.stage, self.progress = CANCELLED, 1.0

    def retry(self) -> None:
        """Queued again as a new attempt (the worker running it died)."""
        self._move("retry")
        self.attempt += 1
        self._queued()

    def resend(self) -> None:
        """Queued again as the same attempt (the queue lost it before any worker started it)."""
        self._move("resend")
        self._queued()

    def _queued(self) -> None:
        self.stage, self.progress, self.files = QUEUED, 0.0, []
