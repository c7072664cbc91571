"""The limits of a video job, checked before work and while decoding (see the README's Limits table).

A video is work proportional to its length and its pixels, and anyone may upload one, so each is capped: the file's
size, its length in seconds, the frames kept, the pixels of every decoded frame (a stream may change resolution
mid-way), the decoder's own ``max_pixels`` (FFmpeg refuses to allocate larger pictures) and the wall time of the job.
Beyond any of them the job stops with a :class:`converter.errors.VideoTooLargeError` naming the limit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import OptionError

MB = 1 << 20


@dataclass(frozen=True)
class VideoLimits:
    """max_bytes: largest file; max_seconds: longest clip converted (after ``start``/``end``); max_frames: most
    frames kept; max_pixels: most pixels of one decoded frame (also the decoder's ``max_pixels``); deadline_seconds:
    wall time of one video job."""

    max_bytes: int = 200 * MB
    max_seconds: float = 600.0
    max_frames: int = 18_000
    max_pixels: int = 3840 * 2160
    deadline_seconds: float = 3600.0

    def __post_init__(self):
        for name in ("max_bytes", "max_seconds", "max_frames", "max_pixels", "deadline_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise OptionError(f"The video limit {name} must be a positive number.")

    @classmethod
    def from_environment(cls, environ=None) -> "VideoLimits":
        """MAX_VIDEO_MB, MAX_VIDEO_SECONDS, MAX_VIDEO_FRAMES, MAX_VIDEO_PIXELS, VIDEO_TIMEOUT_SECONDS (unset: the
        defaults above)."""
        environ = os.environ if environ is None else environ
        defaults = cls()

        def number(name, default, kind=float):
            text = environ.get(name, "").strip()
            if not text:
                return default
            try:
                return kind(text)
            except ValueError:
                raise OptionError(f"{name} must be a number, not '{text}'.") from None

        return cls(max_bytes=int(number("MAX_VIDEO_MB", defaults.max_bytes / MB) * MB),
                   max_seconds=number("MAX_VIDEO_SECONDS", defaults.max_seconds),
                   max_frames=number("MAX_VIDEO_FRAMES", defaults.max_frames, int),
                   max_pixels=number("MAX_VIDEO_PIXELS", defaults.max_pixels, int),
                   deadline_seconds=number("VIDEO_TIMEOUT_SECONDS", defaults.deadline_seconds))
