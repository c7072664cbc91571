"""Parallax clips: a virtual camera swinging on a small arc in front of the picture, encoded as an MP4 browsers play.

The camera path is one seamless loop: horizontally ``sin φ``, vertically a little rise at both ends of the swing
(``RISE · sin² φ``, a pendulum-like arc), φ going once round the circle, so the first frame is the input itself and
the clip loops without a jump. Each frame is the stereo module's warp (forward warp + z-buffer, disocclusions filled
from the background side, see :mod:`converter.exports.stereo`): the camera orbits the ``convergence`` plane, so nearer pixels
move against the camera and farther ones with it, at most ``amplitude`` × width pixels apart (far vs near plane).

Frames are at most ``max_side`` pixels on their longest side (downscaled first) and have even sizes (the last row or
column is cropped), as H.264 in yuv420p needs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from ..errors import InputError, OptionError, OutputError
from .files import atomic_output
from .stereo import DEFAULT_CONVERGENCE, prepare_scene, render_view

DEFAULT_SECONDS = 3.0
DEFAULT_FPS = 24
DEFAULT_AMPLITUDE = 0.03
DEFAULT_MAX_SIDE = 1280
RISE = 0.25  # vertical rise at the ends of the swing, as a fraction of the horizontal amplitude
VIDEO_CODECS = ("libx264", "libopenh264", "h264", "mpeg4")  # first one this FFmpeg can encode with wins
_H264_OPTIONS = {"crf": "20", "preset": "veryfast", "profile": "high"}


def camera_path(count: int) -> np.ndarray:
    """[count, 2] camera offsets (x right, y up) in units of the amplitude: one closed loop starting at (0, 0)."""
    phase = 2.0 * np.pi * np.arange(count) / max(count, 1)
    return np.stack([np.sin(phase), RISE * np.sin(phase) ** 2], axis=1)


def frame_size(height: int, width: int, max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """(height, width) of the clip's frames: scaled to fit ``max_side``, then rounded down to even numbers."""
    scaled_h, scaled_w = _scaled_size(height, width, max_side)
    return scaled_h - scaled_h % 2, scaled_w - scaled_w % 2


def parallax_frames(
    rgb: np.ndarray,
    depth: np.ndarray,
    alpha: np.ndarray | None = None,
    *,
    seconds: float = DEFAULT_SECONDS,
    fps: int = DEFAULT_FPS,
    amplitude: float = DEFAULT_AMPLITUDE,
    convergence: float = DEFAULT_CONVERGENCE,
    max_side: int = DEFAULT_MAX_SIDE,
    background: tuple[int, int, int] = (0, 0, 0),
) -> Iterator[np.ndarray]:
    """Yield round(seconds × fps) frames [h, w, 3] uint8 (h, w even, see :func:`frame_size`) of the camera's loop.

    ``amplitude``: the largest horizontal shift between the far and the near plane, as a fraction of the width.
    Inputs as in :func:`converter.exports.stereo.stereo_pair`; the work shared by all frames is done once, up front.
    """
    count = _frame_count(seconds, fps)
    if not 0.0 <= amplitude <= 0.2:
        raise OptionError("The parallax amplitude must be between 0 and 0.2 (a fraction of the image width).")
    if max_side < 16:
        raise OptionError("The largest video side must be at least 16 pixels.")
    rgb, depth, alpha = _fit(rgb, depth, alpha, max_side)
    scene = prepare_scene(rgb, depth, alpha, convergence=convergence, background=background)
    reach = amplitude * scene.shape[1]
    for camera_x, camera_y in camera_path(count):
        # Camera right → the picture moves left (u decreases); camera up → it moves down (v increases).
        yield render_view(scene, -camera_x * reach, camera_y * reach)


def write_mp4(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: int = DEFAULT_FPS) -> int:
    """Encode RGB frames [h, w, 3] uint8 as an MP4 (H.264 yuv420p, BT.709, moov first for streaming); return the count.

    Odd sizes lose their last row or column. Atomic: the file appears complete or not at all.
    """
    rate = _rate(fps)
    codec = video_codec()
    count = 0
    with atomic_output(path) as temporary:
        try:
            # The temporary name ends in .part, so the muxer is named; faststart moves the index before the data.
            with av.open(str(temporary), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
                stream = None
                for frame in frames:
                    frame = _even(np.asarray(frame))
                    if stream is None:
                        stream = _add_stream(container, codec, rate, frame.shape[1], frame.shape[0])
                    elif frame.shape[:2] != (stream.height, stream.width):
                        raise InputError("All frames of a video must have the same size.")
                    video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                        format="yuv420p", src_colorspace="itu709", dst_colorspace="itu709",
                        src_color_range="JPEG", dst_color_range="MPEG",
                    )
                    video_frame.pts = count
                    container.mux(stream.encode(video_frame))
                    count += 1
                if stream is None:
                    raise InputError("A video needs at least one frame.")
                container.mux(stream.encode(None))
        except av.FFmpegError as error:
            if isinstance(error, OSError):
                raise  # disk full, permissions: atomic_output turns it into an OutputError naming the file
            raise OutputError(f"The video '{os.path.basename(path)}' could not be encoded.") from None
    return count


def video_codec() -> str:
    """The first encoder of :data:`VIDEO_CODECS` that this FFmpeg build has."""
    for name in VIDEO_CODECS:
        try:
            av.codec.Codec(name, "w")
        except (ValueError, av.FFmpegError):
            continue
        return name
    raise OutputError("This installation cannot encode video (no H.264 or MPEG-4 encoder in its FFmpeg).")


def _add_stream(container, codec: str, rate: Fraction, width: int, height: int):
    stream = container.add_stream(codec, rate=rate)
    stream.width = width
    stream.height = height
    stream.pix_fmt = "yuv420p"
    context = stream.codec_context
    context.time_base = 1 / rate
    context.color_range = 1  # MPEG (limited), what players assume
    context.colorspace = context.color_primaries = context.color_trc = 1  # BT.709
    if codec == "libx264":
        stream.options = dict(_H264_OPTIONS)
    elif codec == "mpeg4":
        context.bit_rate = max(2_000_000, width * height * 8)
    return stream


def _fit(rgb, depth, alpha, max_side: int):
    """Downscale (rgb, depth, alpha) to fit ``max_side`` and crop to even sizes; depth and alpha by nearest neighbour,
    so no new depth values appear between foreground and background."""
    rgb = np.asarray(rgb)
    depth = np.asarray(depth, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or depth.shape != rgb.shape[:2]:
        raise InputError("The image must be RGB (8 bits per channel) and the depth map the same size.")
    if alpha is not None and np.asarray(alpha).shape != depth.shape:
        raise InputError("The transparency mask must have the same size as the image.")
    if min(depth.shape) < 2:
        raise InputError("The image is too small for a video: it needs at least 2 × 2 pixels.")
    scaled_h, scaled_w = _scaled_size(*depth.shape, max_side)
    if (scaled_h, scaled_w) != depth.shape:
        size = (scaled_w, scaled_h)
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))
        depth = np.asarray(Image.fromarray(depth).resize(size, Image.Resampling.NEAREST))
        if alpha is not None:
            alpha = Image.fromarray(np.asarray(alpha, dtype=np.uint8))
            alpha = np.asarray(alpha.resize(size, Image.Resampling.NEAREST))
    crop = (slice(0, depth.shape[0] - depth.shape[0] % 2), slice(0, depth.shape[1] - depth.shape[1] % 2))
    return rgb[crop], depth[crop], None if alpha is None else np.asarray(alpha)[crop]


def _scaled_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    scale = min(1.0, max_side / max(height, width))
    return max(2, round(height * scale)), max(2, round(width * scale))


def _even(frame: np.ndarray) -> np.ndarray:
    if frame.ndim != 3 or frame.shape[2] != 3 or min(frame.shape[:2]) < 2:
        raise InputError("Video frames must be RGB pictures of at least 2 × 2 pixels.")
    height, width = frame.shape[0] - frame.shape[0] % 2, frame.shape[1] - frame.shape[1] % 2
    return np.ascontiguousarray(frame[:height, :width], dtype=np.uint8)


def _frame_count(seconds: float, fps) -> int:
    _rate(fps)
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0 < seconds <= 60):
        raise OptionError("The clip length must be between 0 and 60 seconds.")
    return max(1, round(seconds * float(fps)))


def _rate(fps) -> Fraction:
    try:
        rate = Fraction(fps).limit_denominator(1001)
    except (TypeError, ValueError):
        rate = Fraction(0)
    if not 1 <= rate <= 120:
        raise OptionError("The frame rate must be between 1 and 120 frames per second.")
    return rate
