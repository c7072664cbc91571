"""Admission by memory: conversions run only while the sum of their estimated peaks fits ``JOB_MEMORY_MB``.

Each job's peak is estimated before it starts (:func:`converter.memory.estimate_job_mb`, from its pixels and
options). A job that fits waits, queued, until the running ones leave room; a job whose estimate exceeds the whole
budget could never run, so it is refused when it is asked for, with a sentence that names both numbers.
"""

from __future__ import annotations

import threading

from converter import InputError
from converter.service_api import estimate_job_mb, resident_model_mb

from .intake.job_request import JobRequest
from .jobs.conversion import RECENT_RESULTS, RECENT_RESULT_MAX_MB
from .user_error import UserError

# What a web conversion writes before it is done (web.conversion.FIRST_KINDS) and keeps for later downloads.
CONVERSION_KINDS = ("ply", "json", "input", "depth_preview")


class JobTooLargeError(UserError):
    """422, like a picture over MAX_PIXELS: the upload was fine, the work it asks for is more than this server
    has. Not 413: the bytes were within every limit (a 49 MP 1-bit PNG is a few kB); what is too large is the
    conversion, and the person can change it (a lower detail, a smaller picture)."""

    def __init__(self, estimate_mb: float, limit_mb: float):
        super().__init__(422, "too_much_memory", _too_much_memory(estimate_mb, limit_mb))
        self.estimate_mb, self.limit_mb = estimate_mb, limit_mb


class JobNeverFitsError(InputError):
    """The same refusal where the job is already accepted (a Celery worker with less memory than the web tier
    knew of): the job fails with the sentence instead of waiting for room that never comes."""

    code = "too_much_memory"

    def __init__(self, estimate_mb: float, limit_mb: float):
        super().__init__(_too_much_memory(estimate_mb, limit_mb))


def _too_much_memory(estimate_mb: float, limit_mb: float) -> str:
    return (f"This conversion would need about {estimate_mb:,.0f} MB of memory and the server has "
            f"{limit_mb:,.0f} MB for conversions (JOB_MEMORY_MB). Choose a lower detail or a smaller picture.")


class MemoryBudget:
    """``total_mb`` of memory shared by the jobs running at once. Thread-safe; first come, first served: a job
    waiting for room is not overtaken by smaller ones behind it (no large job waits for ever)."""

    def __init__(self, total_mb: float):
        self.total_mb = float(total_mb)
        self._used_mb = 0.0
        self._changed = threading.Condition()
        self._tickets = 0  # handed out in arrival order
        self._serving = 0  # the ticket whose turn it is

    @property
    def used_mb(self) -> float:
        with self._changed:
            return self._used_mb

    def check(self, estimate_mb: float) -> None:
        """JobTooLargeError when ``estimate_mb`` could never fit, even alone."""
        if estimate_mb > self.total_mb:
            raise JobTooLargeError(estimate_mb, self.total_mb)

    @property
    def waiting(self) -> int:
        """Jobs in line for room."""
        with self._changed:
            return self._tickets - self._serving

    def reserve(self, estimate_mb: float) -> None:
        """Wait, in turn, until ``estimate_mb`` fits beside the running jobs, then hold it (JobTooLargeError when it
        could never fit: it would wait for ever)."""
        self.check(estimate_mb)
        with self._changed:
            ticket = self._tickets
            self._tickets += 1
            self._changed.wait_for(lambda: ticket == self._serving and self._used_mb + estimate_mb <= self.total_mb)
            self._used_mb += estimate_mb
            self._serving += 1
            self._changed.notify_all()  # the next in line may fit too

    def try_reserve(self, estimate_mb: float) -> bool:
        """Hold ``estimate_mb`` now if it fits and nobody waits ahead of it; False (nothing held) otherwise."""
        self.check(estimate_mb)
        with self._changed:
            if self._tickets != self._serving or self._used_mb + estimate_mb > self.total_mb:
                return False
            self._used_mb += estimate_mb
            return True

    def release(self, estimate_mb: float) -> None:
        """Give back what :meth:`reserve` held."""
        with self._changed:
            self._used_mb = max(0.0, self._used_mb - estimate_mb)
            self._changed.notify_all()


class JobMemory:
    """A service's memory for its jobs: each job's estimate, taken before it is queued, and the budget they share."""

    def __init__(self, store, total_mb: float):
        self.store, self.budget = store, MemoryBudget(total_mb)

    def estimates(self, request: dict | list[dict], uploads: list) -> list[float]:
        """Each job's estimated peak, MB (``request``: a JobRequest as a dict, or one per upload); JobTooLargeError
        for one that could never fit."""
        requests = [request] * len(uploads) if isinstance(request, dict) else request
        estimates = [self.estimate(one, upload) for one, upload in zip(requests, uploads)]
        for memory_mb in estimates:
            self.budget.check(memory_mb)
        return estimates

    def estimate(self, request: dict, upload) -> float:
        """From the upload's size, or for a rebuild from the size of the picture its source kept (0: unknown)."""
        job_request = JobRequest.from_dict(request)
        source = self.store.get(job_request.rebuild_of) if job_request.rebuild_of else None
        if source is not None:
            image = (source.info or {}).get("image") or {}
            if not image.get("width"):
                return 0.0
            return conversion_estimate_mb(job_request, None, (image["width"], image["height"]))
        if job_request.is_video:
            return video_estimate_mb(getattr(upload, "video_size", None))
        return conversion_estimate_mb(job_request, upload) if upload is not None else 0.0


VIDEO_BYTES_PER_PIXEL = 200  # frames queued between the threads, the stabiliser's maps, the encoders' look-ahead
VIDEO_BASE_MB = 64


def video_estimate_mb(size: tuple[int, int] | None) -> float:
    """A video job's peak over the model, MB: a fixed window of frames whatever the clip's length
    (converter.video.pipeline), so it follows a frame's pixels only (0 when not known)."""
    if not size:
        return 0.0
    return VIDEO_BASE_MB + size[0] * size[1] * VIDEO_BYTES_PER_PIXEL / (1 << 20)


def conversion_estimate_mb(request, upload, source_size: tuple[int, int] | None = None) -> float:
    """The peak memory of a web conversion, MB: ``request`` (a web.job_request.JobRequest), ``upload`` (a
    web.jobs.Upload: a decoded picture or its bytes, whose headers give the size) or, for a rebuild,
    ``source_size`` (width, height) of the kept picture. 0 when the size cannot be told (a damaged header: the
    job fails at its decode)."""
    mode = "RGB"  # a picture decoded already (or kept): what it holds counts, its decode is over
    if source_size is not None:
        width, height = source_size
    elif hasattr(upload.image, "width"):
        width, height = upload.image.width, upload.image.height
    else:
        try:
            width, height, mode = _header(upload.image)
        except Exception:  # noqa: BLE001 - any damage is the job's decode's to report
            return 0.0
    return estimate_job_mb(width, height, request.options, CONVERSION_KINDS, state=True,
                           depth_file=upload is not None and upload.depth is not None,
                           aligned=bool(request.align_to), file_mode=mode)


def _header(data: bytes) -> tuple[int, int, str]:
    """(width, height, Pillow mode) from a picture's header (its pixels are not decoded)."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.width, image.height, image.mode


def default_job_memory_mb(converter) -> float:
    """JOB_MEMORY_MB's default: the memory available now, less the recent results kept for their downloads
    (web.conversion) and the resident model when it is not loaded yet (the larger of the engines that may run it:
    "auto" picks at load)."""
    available = _available_mb() - RECENT_RESULTS * RECENT_RESULT_MAX_MB
    if converter.is_loaded:
        return max(1.0, available)
    engines = ("torch", "openvino") if converter.engine == "auto" else (converter.engine,)
    return max(1.0, available - max(resident_model_mb(converter.model, engine) for engine in engines))


def _available_mb() -> float:
    """The memory this process may still take, MB: MemAvailable of /proc/meminfo (psutil's elsewhere), and no more
    than its container's room (cgroup v2 ``memory.max`` less ``memory.current``) where it has a limit."""
    try:
        with open("/proc/meminfo") as meminfo:
            available = next(int(line.split()[1]) / 1024 for line in meminfo if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        import psutil

        available = psutil.virtual_memory().available / (1 << 20)
    try:
        with open("/sys/fs/cgroup/memory.max") as limit_file, open("/sys/fs/cgroup/memory.current") as current_file:
            limit, current = limit_file.read().strip(), int(current_file.read())
        if limit != "max":
            available = min(available, (int(limit) - current) / (1 << 20))
    except (OSError, ValueError):
        pass
    return available
