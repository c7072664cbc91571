"""What a web job does with a video: the library's video pipeline (converter.video), its outputs in the job folder,
its progress where any web instance can read it, and a long clip's depth predicted in chunks across workers.

    run_video_job ─ one chunk, or one worker: convert_video streams the clip (decode, depth, stabilise, encode)
                  └ several chunks and workers: ChunkPool.start (chunks at once, anywhere: threads here, or Celery
                    tasks, web.jobs.celery.chunks) → convert_video on the joined predictions (converter.video.chunks),
                    started at once: it writes each chunk's frames as soon as that chunk (and the next one's lead) is in

Progress is kept in files of the job folder (``progress/<part>.json``): each chunk, wherever it runs, writes its own,
and :func:`progress_view` adds them up (frames done and expected, frames per second, seconds left). A job stops at its
next frame once its folder is gone (deleted) or holds ``cancel.requested`` (web.jobs.execution); nothing partial stays.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from converter import ConversionError, VideoOptions
from converter.service_api import (
    PREDICTING_VIDEO_DEPTH as PREDICTING,
    WRITING_VIDEO,
    Chunk,
    ChunkedPredictions,
    convert_video,
    plan_chunks,
    predict_chunk,
)

from ...intake.job_request import JobRequest
from ...settings import converter_like, video_limits
from ..execution import UPLOAD_VIDEO, JobCancelled
from .outputs import output_name
from .progress import ProgressPart, stop_if_cancelled

CHUNKS = "chunks"  # the folder of a video job's predicted chunks
GONE = "The uploaded video is gone. Please upload it again."


def run_video_job(base, store, job, report, settings: dict, chunks=None) -> dict:
    """Convert the job's video into its folder; returns the job's info (the sidecar's content). ``chunks``: a
    ChunkPool that predicts chunks at once (None or one worker: the clip streams through one pass)."""
    request = JobRequest.from_dict(job.request)
    converter = converter_like(base, request.model)
    folder = store.folder(job.id)
    source = folder / UPLOAD_VIDEO
    if not source.is_file():
        raise ConversionError(GONE)
    options, limits = VideoOptions(**request.video["options"]), video_limits(settings)
    targets = {kind: folder / output_name(kind) for kind in request.video["outputs"]}
    deadline = time.monotonic() + limits.deadline_seconds
    plan, expected = plan_chunks(source, options, limits, settings["VIDEO_CHUNK_FRAMES"],
                                 settings["VIDEO_CHUNK_OVERLAP"])
    parallel = chunks is not None and chunks.workers > 1 and len(plan) > 1
    if not parallel:
        report(WRITING_VIDEO)
        writing = ProgressPart(folder, "video", expected, lambda: report(WRITING_VIDEO))
        result = convert_video(source, targets, depth_model=lambda: converter.depth_model, model_name=request.model,
                               options=options, limits=limits, progress=lambda p: writing.update(p.frames))
    else:
        report(PREDICTING)
        files = chunks.start(folder, plan, expected, lambda chunk, target, progress: predict_chunk(
            source, chunk, converter.depth_model, options, limits, target, progress, deadline))
        try:
            predictions = ChunkedPredictions(
                files.paths, model_name=request.model, engine=converter.depth_model.describe(),
                predicted_by=lambda: [predicted_by(path) for path in files.paths], chunks=plan, ready=files.ready)
            writing = _WritingPass(folder, expected, report, files)
            result = convert_video(source, targets, model_name=request.model, options=options, limits=limits,
                                   progress=lambda p: writing.update(p.frames), predictions=predictions)
        finally:
            files.close()
    shutil.rmtree(folder / CHUNKS, ignore_errors=True)
    job.files += [path.name for path in result.outputs.values()]
    return {**result.info, "job": {"id": job.id, "options": request.public()}}


class _WritingPass:
    """The writing pass's progress while chunks are still predicted: it starts on the first chunk's frames, but the
    job stays in its predicting stage (its chunk tasks run only then, and the prediction is what the clip waits for)
    until every chunk is in; from then on it is the writing pass, as when it streams."""

    def __init__(self, folder: Path, expected: int | None, report, files):
        self.folder, self.expected, self.report, self.files = folder, expected, report, files
        self.part: ProgressPart | None = None

    def update(self, frames: int) -> None:
        if self.part is None:
            if not self.files.all_ready():
                stop_if_cancelled(self.folder)
                return
            self.report(WRITING_VIDEO)
            self.part = ProgressPart(self.folder, "video", self.expected, lambda: self.report(WRITING_VIDEO))
        self.part.update(frames)


class ChunkPool:
    """Chunks predicted at once by ``workers`` threads of this process (the embedded back-end). ``start(folder,
    plan, expected, predict_one)`` starts them and gives their :class:`ChunkThreads`; ``predict_one(chunk, target,
    progress)`` predicts one. A failure in any chunk stops the others at their next frame and is raised by
    ``ready``. (Celery's pool, web.jobs.celery.chunks.JobChunks, has the same interface.)"""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))

    def start(self, folder: Path, plan: list[Chunk], expected: int | None, predict_one) -> "ChunkThreads":
        (folder / CHUNKS).mkdir(exist_ok=True)
        ProgressPart(folder, "plan", expected)  # the frames to predict, all chunks together
        return ChunkThreads(folder, plan, predict_one, self.workers)


class ChunkThreads:
    """One clip's chunks on their way: ``paths`` (in order), ``ready(index)`` (waits for chunk ``index``'s file;
    raises what its thread raised), ``all_ready()``, ``close()`` (stops what still runs and waits for it)."""

    def __init__(self, folder: Path, plan: list[Chunk], predict_one, workers: int):
        self.paths = [chunk_path(folder, chunk.index) for chunk in plan]
        self.failed = threading.Event()
        self.error: BaseException | None = None  # the first chunk's failure (not a chunk it stopped)

        def one(chunk: Chunk) -> Path:
            target = chunk_path(folder, chunk.index)
            if target.is_file():  # predicted by an earlier attempt
                return target
            part = ProgressPart(folder, f"chunk{chunk.index:04d}", None)

            def progress(frames):
                if self.failed.is_set():
                    raise _Stopped()
                part.update(frames)

            try:
                predict_one(chunk, target, progress)
            except _Stopped:
                raise
            except BaseException as error:
                self.error = self.error or error
                self.failed.set()
                raise
            return target

        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="video-chunk")
        self.futures = [self.executor.submit(one, chunk) for chunk in plan]

    def ready(self, index: int) -> Path:
        try:
            return self.futures[index].result()
        except BaseException:
            self.failed.set()
            if self.error is not None:
                raise self.error from None
            raise

    def all_ready(self) -> bool:
        return all(future.done() for future in self.futures)

    def close(self) -> None:
        if not self.all_ready():
            self.failed.set()
        self.executor.shutdown(wait=True, cancel_futures=True)


class _Stopped(JobCancelled):
    """A chunk stopped because another one failed, or the writing pass did."""


def chunk_path(folder: Path, index: int) -> Path:
    return folder / CHUNKS / f"{index:04d}.npz"


def predicted_by(path: Path) -> str | None:
    """The worker named by a chunk file's record (``<index>.json`` beside it, written by web.jobs.celery.chunks), or
    None where none was kept."""
    try:
        return json.loads(Path(path).with_suffix(".json").read_text()).get("worker")
    except (OSError, ValueError, AttributeError):
        return None
