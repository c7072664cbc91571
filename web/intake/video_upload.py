"""A video upload: told from an image by its first bytes (never its name), received into ``UPLOAD_FOLDER`` under
``MAX_VIDEO_MB`` and checked against the video limits (container, picture track, size, pixels, declared length and
frames) before any job exists, so a hostile file is a 4xx sentence at once and never a queued job."""

from __future__ import annotations

import uuid
from pathlib import Path

from converter.service_api import VIDEO_SNIFF_BYTES as SNIFF_BYTES
from converter import VideoOptions
from converter.service_api import probe_video, sniff_video

from ..jobs.store import Upload
from ..user_error import UserError

COPY_BYTES = 1 << 20


def is_video_part(part) -> bool:
    """Whether an uploaded part starts like a video container (the stream is left at its start)."""
    stream = part.stream
    position = stream.tell()
    head = stream.read(SNIFF_BYTES)
    stream.seek(position)
    return sniff_video(head) is not None


def receive_video(part, folder, limits, options: dict) -> Upload:
    """The part's bytes in a file of ``folder`` (at most ``limits.max_bytes``: a 413 past it), probed against
    ``limits``; an Upload naming the file. Raises UserError 413 or the video's InputError (415/422, web.routes.errors);
    nothing is left behind on a refusal."""
    path = Path(folder) / f"video-{uuid.uuid4().hex}.part"
    try:
        with open(path, "wb") as handle:
            written = 0
            while True:
                chunk = part.stream.read(COPY_BYTES)
                if not chunk:
                    break
                written += len(chunk)
                if written > limits.max_bytes:
                    raise UserError(413, "too_large", f"The video is too large: the limit is "
                                                      f"{limits.max_bytes / (1 << 20):g} MB for a video.")
                handle.write(chunk)
        info = probe_video(path, limits, VideoOptions(**options))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Upload(image=None, video=path, video_size=(info.width, info.height))


def check_upload_size(files, limit_mb: float) -> None:
    """The images of an upload keep their own limit: a 413 when its parts that are not videos hold more than
    MAX_UPLOAD_MB together, counted before any is read. Videos are not counted here (the request's own cap,
    MAX_CONTENT_LENGTH, is the larger video limit, and each video is received under MAX_VIDEO_MB): so a batch with a
    video cannot carry images past MAX_UPLOAD_MB either."""
    total = 0
    for name in files:
        for part in files.getlist(name):
            if is_video_part(part):
                continue
            stream = part.stream
            position = stream.tell()
            total += stream.seek(0, 2)
            stream.seek(position)
    if total > limit_mb * 1024 * 1024:
        raise UserError(413, "too_large", f"The upload is too large: the limit is {limit_mb:g} MB.")
