"""What a web job does with a video: the library's video pipeline (converter.video), its outputs in the job folder,
its progress where any web instance can read it, and a long clip's depth predicted in chunks across workers.

    run_video_job ─ one chunk, or one worker: convert_video streams the clip (decode, depth, stabilise, encode)
                  └ several chunks and workers: ChunkPool.predict (chunks at once, anywhere: threads here, or Celery
                    tasks, web.jobs.celery.chunks) → convert_video on the joined predictions (converter.video.chunks)

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
from .progress import ProgressPart

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
    predictions = None
    if parallel:
        report(PREDICTING)
        paths = chunks.predict(folder, plan, expected, lambda chunk, target, progress: predict_chunk(
            source, chunk, converter.depth_model, options, limits, target, progress, deadline))
        predictions = ChunkedPredictions(paths, model_name=request.model, engine=converter.depth_model.describe(),
                                         predicted_by=[predicted_by(path) for path in paths])
    report(WRITING_VIDEO)
    writing = ProgressPart(folder, "video", expected, lambda: report(WRITING_VIDEO))
    depth_model = None if parallel else (lambda: converter.depth_model)
    result = convert_video(source, targets, depth_model=depth_model, model_name=request.model, options=options,
                           limits=limits, progress=lambda p: writing.update(p.frames), predictions=predictions)
    shutil.rmtree(folder / CHUNKS, ignore_errors=True)
    job.files += [path.name for path in result.outputs.values()]
    return {**result.info, "job": {"id": job.id, "options": request.public()}}


class ChunkPool:
    """Chunks predicted at once by ``workers`` threads of this process (the embedded back-end). ``predict(folder,
    plan, expected, predict_one)`` returns the chunks' files in order, once all are written; ``predict_one(chunk,
    target, progress)`` predicts one. A failure in any chunk stops the others at their next frame and is raised."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))

    def predict(self, folder: Path, plan: list[Chunk], expected: int | None, predict_one) -> list[Path]:
        (folder / CHUNKS).mkdir(exist_ok=True)
        ProgressPart(folder, "plan", expected)  # the frames to predict, all chunks together
        failed = threading.Event()

        def one(chunk: Chunk) -> Path:
            target = chunk_path(folder, chunk.index)
            if target.is_file():  # predicted by an earlier attempt
                return target
            part = ProgressPart(folder, f"chunk{chunk.index:04d}", None)

            def progress(frames):
                if failed.is_set():
                    raise JobCancelled()
                part.update(frames)

            predict_one(chunk, target, progress)
            return target

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="video-chunk") as pool:
            futures = [pool.submit(one, chunk) for chunk in plan]
            try:
                return [future.result() for future in futures]
            except BaseException:
                failed.set()
                raise


def chunk_path(folder: Path, index: int) -> Path:
    return folder / CHUNKS / f"{index:04d}.npz"


def predicted_by(path: Path) -> str | None:
    """The worker named by a chunk file's record (``<index>.json`` beside it, written by web.jobs.celery.chunks), or
    None where none was kept."""
    try:
        return json.loads(Path(path).with_suffix(".json").read_text()).get("worker")
    except (OSError, ValueError, AttributeError):
        return None
