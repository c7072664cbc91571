"""What a web job does, and how its other downloads come to exist later.

A job converts and writes only what the result page needs (the point cloud for the viewer, the two previews and
``result.json``), plus what lets anyone rebuild the result without the model (the working image and the depth
prediction); then it is done. Every other download is written on its first request, once, under a lock on the job
folder, from those kept files: concurrent requests wait for the same file, and a download is always whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import threading
from collections import OrderedDict
from pathlib import Path

from converter import (
    OUTPUTS,
    ConversionError,
    ConversionState,
    Converter,
    OutputError,
    Sources,
    StateError,
    load_state,
    write_outputs,
)
from converter.service_api import ALIGNMENT_KINDS, MESH_KINDS, STATE_FILES, WRITING_FILES, Artifacts, atomic_output

from .depth_cache import DepthCache
from ..intake.job_request import JobRequest
from .store import Job, JobStore, Upload
from ..settings import converter_like

FIRST_KINDS = ("ply", "json", "input", "depth_preview")  # what the result page needs at once
GONE = "The result to rebuild has expired and was deleted. Convert the image again."


def offered_kinds(request: JobRequest) -> list[str]:
    """Every output a job offers: all kinds, less the meshes when the job was asked for none, less the disagreement
    map when it was not aligned to a metric model; a video job, the video kinds it was asked for."""
    if request.is_video:
        return list(request.video["outputs"])
    return [name for name in OUTPUTS if (request.mesh or name not in MESH_KINDS)
            and (request.align_to or name not in ALIGNMENT_KINDS)]


def run_job(base: Converter, store: JobStore, job: Job, upload: Upload | None, report,
            cache: DepthCache | None = None, settings: dict | None = None, chunks=None) -> dict:
    """Convert, write the first files and what later downloads need; returns the job's info (= result.json).

    The job supplies sources (:func:`_sources`) and sinks (its folder, ``report``); the converter decides the rest
    (:meth:`converter.Converter.run`): a rebuild's kept state, the depth cache, the model, the alignment. A video
    goes to web.jobs.video (``settings``: its limits and chunks; ``chunks``: a pool predicting them at once).
    """
    request = JobRequest.from_dict(job.request)
    if request.is_video:
        from .video import run_video_job

        return run_video_job(base, store, job, report, settings or {}, chunks)
    converter = converter_like(base, request.model, request.align_to)
    sources, carried = _sources(store, job, request, upload, cache, converter.max_pixels)
    try:
        result = converter.run(sources, request.options, progress=report)
        report(WRITING_FILES)
    finally:
        if cache is not None and not store.folder(job.id).is_dir():  # deleted while the model ran (web.deletion):
            cache.forget_upload_of(store, job)  # the prediction it cached meanwhile goes too
    folder = store.folder(job.id)
    info = {**result.metadata(), **carried, "job": {"id": job.id, "options": request.public()},
            "depth_cached": result.depth_cached, "rebuilt_from": request.rebuild_of}
    image = result.input_image
    job.image = {"focal_px": image.focal_px, "focal_source": image.focal_source, "scale": image.scale,
                 "format": image.format}
    # Kept first: the downloads written later are made from these two (the image before any paper was removed).
    _keep(folder, result.save_state)
    job.files += list(STATE_FILES)
    artifacts = Artifacts(result, request.output_settings, metadata=info)
    first = FIRST_KINDS + (ALIGNMENT_KINDS if result.alignment is not None else ())
    for name in first:
        write_outputs(result, {name: folder / OUTPUTS[name].file_name}, artifacts=artifacts)
        job.files.append(OUTPUTS[name].file_name)
    _remember(job.id, artifacts)
    return info


def _sources(store: JobStore, job: Job, request: JobRequest, upload: Upload | None, cache: DepthCache | None,
             max_pixels: int) -> tuple[Sources, dict]:
    """What the job's conversion may draw on, and the info it carries over: for a rebuild (``rebuild_of``) the
    source job's kept image and prediction (already aligned, for an aligned job, whose fit and disagreement map come
    along); otherwise the upload, with the depth cache bound to its bytes."""
    if not request.rebuild_of:
        bound = cache.bound(upload.sha256) if cache is not None and upload.sha256 else None
        return Sources(image=upload.image, depth=upload.depth, cache=bound), {}
    source = store.get(request.rebuild_of)
    if source is None:
        raise ConversionError(GONE)
    folder = store.folder(request.rebuild_of)
    state = _kept_state(folder, source.image, max_pixels)
    carried = {}
    if request.align_to:  # the kept prediction is the aligned one: the fit and its map come along
        alignment = (source.info or {}).get("alignment")
        carried = {"alignment": alignment} if alignment else {}
        for name in ALIGNMENT_KINDS:
            file_name = OUTPUTS[name].file_name
            if not (folder / file_name).is_file():
                raise ConversionError(GONE)
            _keep(store.folder(job.id) / file_name, _copy, folder / file_name)
            job.files.append(file_name)
    return Sources(state=state), carried


def ensure_output(store: JobStore, job: Job, kind: str, max_pixels: int) -> Path:
    """The path of a finished job's output ``kind``, written now if it is not there yet (once: other requests for
    the same job wait on its lock, then find the file). Raises KeyError for a kind the job does not offer."""
    request = JobRequest.from_dict(job.request)
    if request.is_video:  # every output of a video job is written by the job itself
        from .video import output_name

        if kind not in request.video["outputs"] or not (store.folder(job.id) / output_name(kind)).is_file():
            raise KeyError(kind)
        return store.folder(job.id) / output_name(kind)
    if kind not in offered_kinds(request):
        raise KeyError(kind)
    folder = store.folder(job.id)
    path = folder / OUTPUTS[kind].file_name
    if path.is_file():
        return path
    with _job_lock(folder):
        if path.is_file():  # written while we waited
            return path
        artifacts = _recalled(job.id)
        if artifacts is None:
            artifacts = _rebuild_artifacts(store, job, request, max_pixels)
            _remember(job.id, artifacts)
        write_outputs(artifacts.result, {kind: path}, artifacts=artifacts)
    return path


def _kept_state(folder: Path, meta: dict, max_pixels: int, gone: str = GONE) -> ConversionState:
    """A job's kept image and prediction (``meta``: how the image was decoded, for folders written before the
    library kept it in the image file)."""
    try:
        return load_state(folder, meta, max_pixels)
    except StateError:
        raise ConversionError(gone) from None


def _rebuild_artifacts(store: JobStore, job: Job, request: JobRequest, max_pixels: int) -> Artifacts:
    """The job's result made again from its kept image and prediction: the same geometry, no model."""
    state = _kept_state(store.folder(job.id), job.image, max_pixels,
                        "This result's files are gone. Convert the image again.")
    result = Converter.reconvert(state, request.options)
    result.model = job.info.get("model")
    return Artifacts(result, request.output_settings, metadata=job.info)


def _keep(path: Path, writer, *args) -> None:
    """A file the job keeps for rebuilds and later downloads: a failure to write it is an OutputError."""
    try:
        writer(path, *args)
    except OSError:
        raise OutputError("The server could not store the result: it is out of disk space or its output "
                          "folder is not writable. Please try again later.") from None


def _copy(path: Path, source: Path) -> None:
    """A file of the source job, copied atomically (a missing one is an OSError: the rebuild cannot offer it)."""
    with atomic_output(path) as temporary:
        shutil.copyfile(source, temporary)


@contextlib.contextmanager
def _job_lock(folder: Path):
    """An exclusive lock on a job folder, across threads and processes (``flock`` on ``.outputs.lock``)."""
    with _thread_lock(folder), open(folder / ".outputs.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_STRIPES = [threading.Lock() for _ in range(64)]


def _thread_lock(folder: Path) -> threading.Lock:
    """flock is per open file description, so threads of one process also take a plain lock (one of a fixed set)."""
    return _STRIPES[hash(str(folder)) % len(_STRIPES)]


# The last few results stay in memory with their shared pieces: the downloads a person fetches right after a
# conversion (mesh, zipped OBJ, STL) then reuse the result and its mesh instead of rebuilding them from disk.
# Only those up to RECENT_RESULT_MAX_MB (a 12 MP photo at the default detail holds about 150 MB): a 49 MP result
# at detail=full holds 1.3 GB, and two of them kept beside the next job made the peak issue 21 measured (4.2 GB over
# a 0.7 GB model). JOB_MEMORY_MB's default leaves this room (web.memory_budget).
RECENT_RESULTS = 2
RECENT_RESULT_MAX_MB = 256
_recent: OrderedDict[str, Artifacts] = OrderedDict()
_recent_lock = threading.Lock()


def _held_mb(result) -> float:
    """The arrays a result holds, MB."""
    arrays = (result.points, result.colors, result.normals, result.depth, result.keep, result.image.rgb,
              result.image.alpha, result.prediction.values, result.prediction.native)
    return sum(array.nbytes for array in arrays if array is not None) / (1 << 20)


def _remember(job_id: str, artifacts: Artifacts) -> None:
    if _held_mb(artifacts.result) > RECENT_RESULT_MAX_MB:  # rebuilt from its files if asked for
        return
    with _recent_lock:
        _recent[job_id] = artifacts
        _recent.move_to_end(job_id)
        while len(_recent) > RECENT_RESULTS:
            _recent.popitem(last=False)


def _recalled(job_id: str) -> Artifacts | None:
    with _recent_lock:
        return _recent.get(job_id)
