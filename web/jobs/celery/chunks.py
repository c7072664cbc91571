"""A long clip's depth predicted in chunks across Celery workers (issue 22): the Celery side of web.jobs.video's chunk
pool. There is no result backend (so no chord): the job's own task coordinates.

    convert task (the coordinator: holds the job's Attempt and heartbeat)
      ├ writes the plan (chunks/attempt<N>/plan.json), publishes one CHUNK_TASK per chunk but the first as a Celery
      │ group, at the job's own broker priority (its fair share)
      └ joins them and writes every output (web.jobs.video.run_video_job), in order, as they come: "the last task".
        Whenever the writing pass needs a chunk that is not in, the coordinator claims and predicts the first chunk
        nobody holds (at first the first chunk), or waits for the others' files, taking over any chunk whose claim
        lapsed (its worker died); so it writes the first chunk's frames while the others are still predicted
    chunk task (any worker): claims its chunk once (Redis SET NX, refreshed like a heartbeat while it predicts),
      predicts it into chunks/attempt<N>/<index>.npz (atomically) and lets go; it returns at once when the chunk is
      claimed or done, or the job is gone, finished, cancelled, past its prediction or on another attempt

A chunk stops at its next frame once the job's folder holds ``cancel.requested`` or is gone (deleted), or its record
is finished (cancelled, timed out) or names another attempt. Chunk files are written atomically and per attempt: a
dead worker leaves no partial chunk, and a late worker of an old attempt writes nothing the new one reads. A retried
job (a new attempt after its coordinator died) starts its chunks afresh: the watch that queues it again removes the
old attempt's files (web.jobs.execution.remove_outputs), so nothing a dead attempt left is trusted.

Each chunk's file has a record beside it (<index>.json: the worker that predicted it, its frames and seconds), written
after the file: a chunk is done once its record exists. The job's sidecar lists who predicted each chunk
(``chunks.predicted_by``). Every Redis key of a job's chunks names the job: the coordinator
deletes its attempt's claims at the end, and Board.forget_job (a deleted job) takes them with the rest.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis
from celery import group

from converter import VideoOptions
from converter.service_api import PREDICTING_VIDEO_DEPTH as PREDICTING
from converter.service_api import RUNNING
from converter.service_api import Chunk, atomic_output, predict_chunk

from ...intake.job_request import JobRequest
from ...settings import converter_like, video_limits
from ..execution import UPLOAD_VIDEO, JobCancelled, cancel_requested
from ..video.progress import PROGRESS, ProgressPart
from ..video.run import CHUNKS
from .board import BROKER_ERRORS, CHUNK_TASK, HEARTBEAT_EVERY, QUEUE

log = logging.getLogger(__name__)

PLAN = "plan.json"
WAIT_EVERY = 0.2  # seconds between two looks of the coordinator at the others' chunks
CHECK_EVERY = 0.5  # seconds between two reads of the job's record while a chunk is predicted


def attempt_folder(folder: Path, attempt: int) -> Path:
    return folder / CHUNKS / f"attempt{attempt}"


def chunk_file(folder: Path, attempt: int, index: int) -> Path:
    return attempt_folder(folder, attempt) / f"{index:04d}.npz"


def chunk_done(folder: Path, attempt: int, index: int) -> bool:
    """A chunk is done once its record is written: after its file, so a worker that died between the two leaves a
    chunk that is predicted again, never one that is joined without saying who predicted it."""
    return chunk_file(folder, attempt, index).with_suffix(".json").is_file()


def _part(index: int) -> str:
    return f"chunk{index:04d}"  # progress/<part>.json: web.jobs.video.progress sums these against "plan"


class CeleryChunkPool:
    """The worker's chunk pool (its ``chunks`` in Celery mode unless VIDEO_CHUNK_WORKERS=1): ``bind(job id,
    attempt, priority)`` gives the coordinator's pool for one attempt (what run_video_job calls); ``run_chunk`` is the
    chunk task's body. ``worker``: the process's web.jobs.celery.worker.Worker (converter, stores, board, memory)."""

    workers = 2  # how many workers there are is unknown to one of them: any value > 1 means "distribute"

    def __init__(self, worker, app):
        self.worker, self.app = worker, app

    def bind(self, job_id: str, attempt: int, priority: int = 0) -> "JobChunks":
        return JobChunks(self, job_id, attempt, priority)

    # ---------------------------------------------------------------------------------------------- chunk task

    def run_chunk(self, job_id: str, attempt: int, index: int) -> None:
        """Predict chunk ``index`` of ``attempt`` of the job unless it is claimed or done, or the job moved on."""
        worker, folder = self.worker, self.worker.store.folder(job_id)
        job = _running(worker.store, job_id, attempt)
        if job is None or job.stage != PREDICTING or cancel_requested(folder):
            log.info("job %s attempt %s chunk %s: nothing to do (job gone, finished, superseded or past its chunks)",
                     job_id, attempt, index)
            return
        memory_mb = job.memory_mb
        if memory_mb > worker.memory.total_mb or not worker.memory.try_reserve(memory_mb):
            log.info("job %s chunk %s: no room in this worker's memory; left to its coordinator", job_id, index)
            return
        try:
            outcome = self._claim_and_predict(job, attempt, index, for_task=True)
        finally:
            worker.memory.release(memory_mb)
        log.info("job %s attempt %s chunk %s: %s", job_id, attempt, index, outcome)

    def _claim_and_predict(self, job, attempt: int, index: int, for_task: bool) -> str:
        """Claim chunk ``index`` and predict it: "predicted", "claimed elsewhere", "already done", "nothing to do",
        "stopped" (the job moved on: what this wrote is removed), or "failed" (logged; left to the coordinator);
        when ``for_task`` is false (the coordinator's own chunks) a stop or failure is raised instead."""
        worker, folder = self.worker, self.worker.store.folder(job.id)
        target = chunk_file(folder, attempt, index)
        try:
            claimed = worker.board.claim_chunk(job.id, attempt, index, worker.name)
        except redis.RedisError:
            if for_task:
                return "failed (Redis away)"
            raise
        if not claimed:
            return "claimed elsewhere"
        stop = threading.Event()
        keeping = threading.Thread(target=self._keep, args=(job.id, attempt, index, stop), daemon=True,
                                   name="chunk-claim")
        keeping.start()
        try:
            if chunk_done(folder, attempt, index):
                return "already done"
            plan = _read_plan(folder, attempt)
            if plan is None:
                return "nothing to do (its attempt's chunks are gone)"
            chunk = Chunk.from_dict(plan["chunks"][index])
            predict = self.predict_for_task if for_task else self.predict
            predict(job, attempt, chunk, plan, target)
            return "predicted"
        except JobCancelled:
            if not for_task:
                raise
            self._clean_after(job, attempt, index)
            return "stopped"
        except Exception:
            if not for_task:
                raise
            if _running(worker.store, job.id, attempt) is None:  # e.g. its folder went while it wrote
                self._clean_after(job, attempt, index)
                return "stopped"
            log.exception("job %s chunk %s failed here; its coordinator predicts it", job.id, index)
            return "failed"
        finally:
            stop.set()
            keeping.join()
            try:
                worker.board.let_go_chunk(job.id, attempt, index, worker.name)
            except redis.RedisError:
                pass  # the claim lapses by itself

    def _keep(self, job_id: str, attempt: int, index: int, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_EVERY):
            try:
                self.worker.board.keep_chunk(job_id, attempt, index, self.worker.name)
            except redis.RedisError:
                pass  # Redis blinked; a lapsed claim only means the chunk may be predicted twice

    def predict_for_task(self, job, attempt: int, chunk: Chunk, plan: dict, target: Path) -> None:
        """A chunk task's prediction."""
        self.predict(job, attempt, chunk, plan, target, on_frame=self.task_frame_done)

    def predict(self, job, attempt: int, chunk: Chunk, plan: dict, target: Path, on_frame=None) -> None:
        """Predict ``chunk`` (claimed) into ``target`` with this process's model, its progress in the job's
        ``progress/chunk<index>.json``; stops at its next frame once the job moved on (JobCancelled).
        ``on_frame(job id, index, frames)`` after each frame's progress."""
        worker, folder = self.worker, self.worker.store.folder(job.id)
        request = JobRequest.from_dict(job.request)
        source = folder / UPLOAD_VIDEO
        options, limits = VideoOptions(**request.video["options"]), video_limits(worker.settings)
        deadline = time.monotonic() + (float(plan["deadline"]) - time.time())
        checks = _Checks(worker.store, job.id, attempt)
        checks.check(force=True)
        part = ProgressPart(folder, _part(chunk.index), None)
        worker.model_status.wait(max(1.0, float(plan["deadline"]) - time.time()))
        converter = converter_like(worker.converter, request.model)
        started = time.monotonic()

        def progress(frames: int) -> None:
            checks.check()
            part.update(frames)
            if on_frame is not None:
                on_frame(job.id, chunk.index, frames)

        frames = predict_chunk(source, chunk, converter.depth_model, options, limits, target, progress, deadline)
        record = {"worker": worker.name, "frames": frames, "seconds": round(time.monotonic() - started, 3)}
        with atomic_output(target.with_suffix(".json")) as temporary:
            temporary.write_text(json.dumps(record))
        checks.check()  # the job may have moved on while the last frames were predicted

    def task_frame_done(self, job_id: str, index: int, frames: int) -> None:
        """A chunk task predicted a frame (tests hold a chunk task here, mid-chunk: tests/celery_gate.py)."""

    def _clean_after(self, job, attempt: int, index: int) -> None:
        """A chunk task stopped: once the job is over (or gone), what it wrote goes (the coordinator's clean-up may
        have run before its last write). Left alone while the job runs (another worker redoes the chunk)."""
        folder = self.worker.store.folder(job.id)
        current = self.worker.store.get(job.id)
        if current is not None and not current.finished:
            return
        for path in (chunk_file(folder, attempt, index), chunk_file(folder, attempt, index).with_suffix(".json"),
                     folder / PROGRESS / f"{_part(index)}.json"):
            path.unlink(missing_ok=True)
        for name in (PROGRESS, CHUNKS):  # emptied by the attempt's end: no empty folder left either
            try:
                for inner in sorted((folder / name).rglob("*"), reverse=True):
                    inner.rmdir() if inner.is_dir() else None
                (folder / name).rmdir()
            except OSError:
                pass


@dataclass
class JobChunks:
    """The coordinator's chunk pool for one attempt: web.jobs.video.ChunkPool's interface (``workers``, ``start``)
    and the chunks' (``paths``, ``ready``, ``all_ready``, ``close``)."""

    pool: CeleryChunkPool
    job_id: str
    attempt: int
    priority: int = 0
    workers: int = CeleryChunkPool.workers
    folder: Path | None = None
    plan: list[Chunk] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [chunk_file(self.folder, self.attempt, chunk.index) for chunk in self.plan]

    def start(self, folder: Path, plan: list[Chunk], expected: int | None, predict_one=None) -> "JobChunks":
        """Write the plan and send the chunks to the workers; each is predicted by whichever process claims it (by
        CeleryChunkPool.predict: ``predict_one`` is unused), this one included, as ``ready`` waits for it."""
        self.folder, self.plan = folder, list(plan)
        attempt_folder(folder, self.attempt).mkdir(parents=True, exist_ok=True)
        ProgressPart(folder, "plan", expected)
        deadline = time.time() + self.pool.worker.settings["VIDEO_TIMEOUT_SECONDS"]
        with atomic_output(attempt_folder(folder, self.attempt) / PLAN) as temporary:
            temporary.write_text(json.dumps({"chunks": [chunk.to_dict() for chunk in plan], "expected": expected,
                                             "deadline": deadline}))
        self._publish(plan)
        return self

    def ready(self, index: int) -> Path:
        """Chunk ``index``'s file, once it is predicted here or by another worker."""
        self.work_through(self.folder, self.plan, index)
        return chunk_file(self.folder, self.attempt, index)

    def all_ready(self) -> bool:
        return all(chunk_done(self.folder, self.attempt, chunk.index) for chunk in self.plan)

    def close(self) -> None:
        try:
            self.pool.worker.board.forget_chunks(self.job_id, self.attempt)
        except redis.RedisError:
            pass  # the claims lapse by themselves

    def _publish(self, plan: list[Chunk]) -> None:
        """One chunk task per chunk but the first (the coordinator starts there), as a Celery group at the job's
        broker priority. A broker that cannot be reached leaves every chunk to the coordinator."""
        tasks = [self.pool.app.signature(CHUNK_TASK, args=(self.job_id, self.attempt, chunk.index), queue=QUEUE,
                                         priority=self.priority, immutable=True) for chunk in plan[1:]]
        try:
            group(tasks).apply_async()
        except BROKER_ERRORS as error:
            log.warning("job %s: could not send its chunks to other workers (%s); predicting them here", self.job_id,
                        error)

    def work_through(self, folder: Path, plan: list[Chunk], until: int) -> None:
        """Until chunk ``until`` is done: predict the first chunk nobody holds, else wait, taking over any chunk
        whose claim lapsed (tests hold the coordinator here: tests/celery_gate.py)."""
        store, checks = self.pool.worker.store, _Checks(self.pool.worker.store, self.job_id, self.attempt)
        while True:
            checks.check(force=True)
            if chunk_done(folder, self.attempt, until):
                return
            missing = [chunk for chunk in plan if not chunk_done(folder, self.attempt, chunk.index)]
            job = store.get(self.job_id)
            if job is None:
                raise JobCancelled()
            took = False
            for chunk in missing:
                outcome = self.pool._claim_and_predict(job, self.attempt, chunk.index, for_task=False)
                if outcome == "predicted":
                    took = True
                    break  # look again: the chunk waited for may be done, or one may have lapsed meanwhile
            if not took:
                time.sleep(WAIT_EVERY)


class _Checks:
    """Whether a chunk's attempt still runs (raises JobCancelled otherwise): the folder, ``cancel.requested`` and the
    attempt's chunk folder (removed once the attempt ended, or its chunks are joined) at every call, the record at
    most every CHECK_EVERY seconds."""

    def __init__(self, store, job_id: str, attempt: int):
        self.store, self.job_id, self.attempt = store, job_id, attempt
        self._read = -CHECK_EVERY

    def check(self, force: bool = False) -> None:
        folder = self.store.folder(self.job_id)
        if not folder.is_dir() or cancel_requested(folder) or not attempt_folder(folder, self.attempt).is_dir():
            raise JobCancelled()
        now = time.monotonic()
        if force or now - self._read >= CHECK_EVERY:
            self._read = now
            if _running(self.store, self.job_id, self.attempt) is None:
                raise JobCancelled()


def _running(store, job_id: str, attempt: int):
    """The job's record while it runs ``attempt``, else None."""
    job = store.get(job_id)
    if job is None or job.finished or job.attempt != attempt or job.status != RUNNING:
        return None
    return job


def _read_plan(folder: Path, attempt: int) -> dict | None:
    try:
        return json.loads((attempt_folder(folder, attempt) / PLAN).read_text())
    except (OSError, ValueError):
        return None
