"""The real Celery worker (web.jobs.celery.worker) with the tests' holds (tests/holds.py) around its jobs and exports:
`celery -A celery_gate worker` with tests/ on PYTHONPATH. With CONVERSIONS_STARTED_LOG set, each conversion appends
its job id to that file as it starts (before the hold): the order the workers took the jobs.

A long clip's chunks (web.jobs.celery.chunks): while HOLD_CHUNKS_WHILE's file exists, a chunk task waits after each
frame it predicted (claim held, mid-chunk); while HOLD_COORDINATOR_WHILE's exists, a job's coordinator waits after
sending its chunk tasks, before predicting any chunk itself."""

import os

from holds import held

from web.jobs.celery import chunks as celery_chunks
from web.jobs.celery import worker as celery_worker
from web.jobs.celery.worker import app  # noqa: F401 (celery -A finds the app here; importing registers the tasks)


def logged(function):
    """``function`` (run_job), noting its job's id in CONVERSIONS_STARTED_LOG first."""
    def run(converter, store, job, *args, **kwargs):
        log = os.environ.get("CONVERSIONS_STARTED_LOG")
        if log:
            with open(log, "a") as started:
                started.write(job.id + "\n")
        return function(converter, store, job, *args, **kwargs)
    return run


celery_worker.run_job = logged(held("HOLD_CONVERSIONS_WHILE", celery_worker.run_job))
celery_worker.Exports.run = held("HOLD_EXPORTS_WHILE", celery_worker.Exports.run)
celery_chunks.CeleryChunkPool.task_frame_done = held("HOLD_CHUNKS_WHILE", celery_chunks.CeleryChunkPool.task_frame_done)
celery_chunks.JobChunks.work_through = held("HOLD_COORDINATOR_WHILE", celery_chunks.JobChunks.work_through)
