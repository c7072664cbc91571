"""Delete now: a conversion, a batch or a comparison, with every file of it, in either back-end.

There are no accounts. Creating a resource makes a delete token: the creator gets it once (in the JSON, and in an
HttpOnly, SameSite=Strict cookie scoped to the resource's page for the browser that created it); the records keep
only its SHA-256, compared in constant time. The token never appears in a URL or a log line.

A queued job is dropped from its queue; a running one stops at its next stage boundary (its folder is taken away in
one rename, so it can neither report nor write: web.jobs.execution); then every file goes — the job folder (upload,
kept state, outputs, exports in flight), its depth cache entries unless another job has the same upload, a batch's
zips — and the back-end forgets it (Redis keys). Afterwards every link of it answers 404.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from flask import request

from .jobs.store import BatchStore, ComparisonStore, JobStore, valid_job_id
from .user_error import UserError

TOKEN_HEADER = "X-Delete-Token"
COOKIE = "delete_token"  # one per resource: each is scoped to its resource's page path
NOT_YOURS = ("Only whoever created this can delete it: send its delete token (the X-Delete-Token header, as given "
             "when it was created), or delete it from the browser that uploaded it.")


def new_token() -> tuple[str, str]:
    """(token, its SHA-256): the token goes to the creator, the hash into the records."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def given_token() -> str:
    """The token this request carries: the header, else the cookie the creating browser keeps for this path."""
    return request.headers.get(TOKEN_HEADER) or request.cookies.get(COOKIE) or ""


def holds_token(stored_sha256: str) -> bool:
    """Whether the request's token hashes to ``stored_sha256`` (constant time; a record without one: nobody)."""
    given = given_token()
    return bool(stored_sha256 and given and hmac.compare_digest(token_hash(given), stored_sha256))


def check_token(stored_sha256: str) -> None:
    """403 unless the request holds the token (holds_token)."""
    if not holds_token(stored_sha256):
        raise UserError(403, "not_yours", NOT_YOURS)


def set_token_cookie(response, token: str, path: str, max_age: float):
    """The creating browser's copy of the token, sent back only to the resource's own page (its delete form)."""
    response.set_cookie(COOKIE, token, max_age=int(max_age), path=path, httponly=True, samesite="Strict",
                        secure=request.is_secure)
    return response


def forget_cookie(response, path: str):
    response.delete_cookie(COOKIE, path=path, httponly=True, samesite="Strict", secure=request.is_secure)
    return response


class Deletion:
    """Erases resources of one OUTPUT_FOLDER: ``job``, ``batch`` and ``comparison`` check the token first."""

    def __init__(self, store: JobStore, batches: BatchStore, comparisons: ComparisonStore, cache, runner):
        self.store, self.batches, self.comparisons = store, batches, comparisons
        self.cache, self.runner = cache, runner

    def job(self, job_id: str) -> None:
        job = self.store.get(job_id) if valid_job_id(job_id) else None
        if job is None:
            raise UserError(404, "not_found", "There is no such conversion (it was deleted, or it expired).")
        check_token(job.delete_token_sha256)
        self.erase_job(job_id)

    def batch(self, batch_id: str) -> None:
        self._record_and_jobs(self.batches, batch_id, "batch")

    def comparison(self, comparison_id: str) -> None:
        self._record_and_jobs(self.comparisons, comparison_id, "comparison")

    def _record_and_jobs(self, records, record_id: str, name: str) -> None:
        record = records.get(record_id) if valid_job_id(record_id) else None
        if record is None:
            raise UserError(404, "not_found", f"There is no such {name} (it was deleted, or it expired).")
        check_token(record.get("delete_token_sha256", ""))
        records.remove(record_id)  # first: its page and its zips are gone before its jobs are
        for job_id in record["job_ids"]:
            self.erase_job(job_id)

    def erase_job(self, job_id: str) -> None:
        """Drop the job from its queue, take its folder away and delete it, its cache entries and its keys. A
        running attempt stops at its next stage and cleans up after itself (web.jobs.conversion)."""
        job = self.store.get(job_id)
        self.runner.forget(job_id)
        self.store.remove(job_id)
        if job is not None and self.cache is not None:
            self.cache.forget_upload_of(self.store, job)

