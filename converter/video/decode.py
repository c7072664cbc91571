"""Video in: recognise a video by its content, check it against the limits, and decode it frame by frame.

Nothing here holds more than one frame. Each kept frame comes with its time, from its own pts (variable frame rate
safe), with the display rotation of phone videos applied, and as 8-bit sRGB: 8-bit sources through swscale with
the stream's own matrix and range; 10-bit and deeper SDR sources through 16-bit RGB rounded to 8 bits; HDR (PQ or
HLG) tone-mapped as :data:`HDR_CONVERSION` states. ``max_fps`` drops frames closer than 1 / max_fps to the last
kept one; ``start`` and ``end`` cut the source (a seek to the key frame before ``start``, then frames are skipped).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ..errors import DamagedVideoError, UnsupportedVideoError, VideoTooLargeError
from .boxes import check_sample_tables
from .limits import VideoLimits
from .options import VideoOptions

SNIFF_BYTES = 512
MAX_CORRUPT_PACKETS = 16  # packets that fail to decode before the video counts as damaged
HDR_CONVERSION = ("tone-mapped to SDR: {transfer} EOTF to linear light with 203 cd/m2 as reference white, BT.2020 to "
                  "BT.709 primaries, extended Reinhard on each channel (white at 1000 cd/m2), sRGB transfer, 8 bits")
_SPACES = {1: "itu709", 4: "fcc", 5: "itu601", 6: "smpte170m", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_PQ, _HLG = 16, 18  # AVColorTransferCharacteristic
_BT2020_TO_709 = np.array([[1.6605, -0.5876, -0.0728], [-0.1246, 1.1329, -0.0083], [-0.0182, -0.1006, 1.1187]],
                          dtype=np.float32)


def sniff_video(head: bytes) -> str | None:
    """The container family of a file from its first bytes (ISO/QuickTime, Matroska/WebM, AVI, MPEG-TS/PS, FLV,
    Ogg), or None when they are not a video container's. Names are never looked at."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mp4"
    if head.startswith(b"\x1aE\xdf\xa3"):
        return "matroska"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47:
        return "mpegts"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpeg"
    if head.startswith(b"FLV"):
        return "flv"
    if head.startswith(b"OggS"):
        return "ogg"
    return None


def is_video_file(path: str | os.PathLike) -> bool:
    """Whether the file starts like a video container (see :func:`sniff_video`)."""
    try:
        with open(path, "rb") as handle:
            return sniff_video(handle.read(SNIFF_BYTES)) is not None
    except OSError:
        return False


@dataclass
class VideoInfo:
    """What the container declares, checked against the limits. width, height: of the displayed frames (after the
    rotation); rotation: degrees counter-clockwise applied to the decoded pictures; fps: the average rate;
    duration: seconds (None: not declared); frames: declared count (0: not declared); focal_px: the camera from the
    container's metadata (QuickTime's 35 mm equivalent focal length), in pixels of the displayed frame."""

    path: Path
    container: str
    codec: str
    width: int
    height: int
    rotation: int
    fps: float
    duration: float | None
    frames: int
    bit_depth: int
    pixel_format: str
    transfer: int
    has_audio: bool
    audio_codec: str | None
    focal_px: float | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"container": self.container, "codec": self.codec, "width": self.width, "height": self.height,
                "rotation_applied_deg": self.rotation, "fps": self.fps, "declared_duration_s": self.duration,
                "declared_frames": self.frames, "bit_depth": self.bit_depth, "pixel_format": self.pixel_format,
                "audio_codec": self.audio_codec}


@dataclass
class Frame:
    """One kept frame: ``index`` among the kept, ``time`` in seconds of the source (from its pts), ``rgb`` [H, W, 3]
    uint8 as displayed."""

    index: int
    time: float
    rgb: np.ndarray


UNREADABLE_TRACK = "The video's picture track cannot be decoded: the file is damaged or incomplete."
NO_TRACK = "The video holds no track that can be read: it is empty, damaged or incomplete."


def probe(path: str | os.PathLike, limits: VideoLimits, options: VideoOptions) -> VideoInfo:
    """Open ``path`` and check what it declares before any work: a video container (by content), a picture track,
    size, pixels, length and frames within ``limits``. Raises UnsupportedVideoError, DamagedVideoError or
    VideoTooLargeError with a sentence."""
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise VideoTooLargeError(f"The video is {size / 2**20:.0f} MB; the limit is {limits.max_bytes / 2**20:.0f} MB.")
    with open(path, "rb") as handle:
        family = sniff_video(handle.read(SNIFF_BYTES))
    if family is None:
        raise UnsupportedVideoError("The file is not a video this converter reads (MP4/MOV, MKV/WebM, AVI, MPEG, "
                                    "FLV or Ogg, recognised by content).")
    if family == "mp4":  # the counts FFmpeg would allocate an index for, before it opens the file
        check_sample_tables(path)
    with _open(path) as container:
        if not container.streams.video:
            if not container.streams.audio:  # nothing at all: an empty container, or one whose tracks are damaged
                raise DamagedVideoError(NO_TRACK)
            raise UnsupportedVideoError("The file holds no pictures (a sound-only file?): there is no video track.")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None:  # a track whose codec PyAV cannot open: e.g. its header was cut off
            raise DamagedVideoError(UNREADABLE_TRACK)
        context.options = _decoder_options(limits)
        width, height = int(context.width or 0), int(context.height or 0)
        if width * height > limits.max_pixels:
            raise VideoTooLargeError(f"The video's frames are {width} x {height} pixels; the limit is "
                                     f"{limits.max_pixels:,} pixels a frame.")
        if width < 2 or height < 2:
            raise DamagedVideoError("The video declares no usable picture size: it is damaged or incomplete.")
        duration = _declared_duration(container, stream)
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
        frames = int(stream.frames or 0)
        _check_declared(duration, frames, fps, limits, options)
        rotation = _stream_rotation(container, stream)
        audio = next((track for track in container.streams.audio if track.codec_context is not None), None)
        fmt = av.VideoFormat(context.pix_fmt) if context.pix_fmt else None
        bits = max((c.bits for c in fmt.components), default=8) if fmt else 8
        swapped = rotation % 180 == 90
        info = VideoInfo(
            path=path, container=container.format.name, codec=context.name, width=height if swapped else width,
            height=width if swapped else height, rotation=rotation, fps=fps, duration=duration, frames=frames,
            bit_depth=bits, pixel_format=context.pix_fmt or "unknown", transfer=int(context.color_trc or 2),
            has_audio=audio is not None, audio_codec=audio.codec_context.name if audio is not None else None)
        info.focal_px = _container_focal(container.metadata, info.width, info.height)
    return info


def decode(info: VideoInfo, options: VideoOptions, limits: VideoLimits, deadline: float | None = None,
           conversions: dict | None = None) -> Iterator[Frame]:
    """Yield the kept frames of ``info``'s video, one at a time (see the module docstring). ``deadline``: a
    time.monotonic() after which a VideoTooLargeError stops the job. ``conversions``: filled with what was done to
    the pictures ("colour": the conversion used; "resized": frames whose size changed mid-stream; "corrupt_packets")."""
    conversions = conversions if conversions is not None else {}
    conversions.setdefault("corrupt_packets", 0)
    conversions.setdefault("resized_frames", 0)
    max_frames = min(options.max_frames or limits.max_frames, limits.max_frames)
    interval = 1.0 / options.max_fps if options.max_fps else 0.0
    kept, last_kept, first_time, previous_time = 0, -math.inf, None, None
    size = None
    with _open(info.path) as container:
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise DamagedVideoError(UNREADABLE_TRACK)
        stream.thread_type = "AUTO"
        stream.codec_context.options = _decoder_options(limits)
        if options.start > 0:
            _seek(container, stream, options.start)
        for frame in _frames(container, stream, conversions, limits):
            if deadline is not None and time.monotonic() > deadline:
                raise VideoTooLargeError(f"The video took longer than the {limits.deadline_seconds:g} s a video job "
                                         "may take.")
            if frame.width * frame.height > limits.max_pixels:
                raise VideoTooLargeError(f"A frame of the video is {frame.width} x {frame.height} pixels; the limit is "
                                         f"{limits.max_pixels:,} pixels a frame.")
            if frame.pts is not None and frame.time is not None:
                moment = float(frame.time)
            else:
                moment = (previous_time + 1.0 / info.fps) if previous_time is not None else 0.0
            if previous_time is not None and moment <= previous_time:
                moment = previous_time + 1e-6  # a repeated or backwards pts: keep the order
            previous_time = moment
            if moment < options.start - 1e-6:
                continue
            if options.end is not None and moment >= options.end - 1e-6:
                break
            first_time = moment if first_time is None else first_time
            if moment - first_time > limits.max_seconds:
                raise VideoTooLargeError(f"The video runs longer than {limits.max_seconds:g} s, the limit.")
            if interval and moment < last_kept + interval * 0.999:
                continue
            if kept >= max_frames:
                if options.max_frames is not None and options.max_frames <= limits.max_frames:
                    break
                raise VideoTooLargeError(f"The video has more than {limits.max_frames:,} frames, the limit.")
            rgb = to_rgb(frame, conversions)
            if frame.rotation:
                rgb = np.ascontiguousarray(np.rot90(rgb, k=round(frame.rotation / 90) % 4))
            if size is None:
                size = rgb.shape[:2]
            elif rgb.shape[:2] != size:  # the stream changed resolution: keep the first size
                rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR))
                conversions["resized_frames"] += 1
            last_kept = moment
            yield Frame(index=kept, time=moment, rgb=rgb)
            kept += 1
    if kept == 0:
        raise DamagedVideoError("The video has no frames that can be decoded" +
                                (" in the part asked for." if options.start or options.end else "."))


def expected_frames(info, options: VideoOptions, limits: VideoLimits) -> int | None:
    """The frames a conversion of ``info``'s video will keep, from what it declares (None: no length declared)."""
    if not info.duration:
        return None
    end = min(info.duration, options.end) if options.end is not None else info.duration
    rate = min(info.fps, options.max_fps or math.inf)
    expected = max(1, round((end - options.start) * rate))
    return min(expected, options.max_frames or limits.max_frames, limits.max_frames)


def to_rgb(frame, conversions: dict | None = None) -> np.ndarray:
    """A decoded frame → [H, W, 3] uint8 sRGB (see the module docstring); ``conversions["colour"]`` says how."""
    conversions = conversions if conversions is not None else {}
    space = _SPACES.get(int(frame.colorspace or 2), "itu709" if frame.height >= 720 else "itu601")
    bits = max((c.bits for c in frame.format.components), default=8)
    transfer = int(frame.color_trc or 2)
    if bits <= 8 and transfer not in (_PQ, _HLG):
        conversions.setdefault("colour", f"8-bit {frame.format.name}, {space} matrix, to 8-bit RGB (swscale)")
        return frame.reformat(format="rgb24", src_colorspace=space, dst_colorspace=space).to_ndarray()
    wide = frame.reformat(format="rgb48le", src_colorspace=space, dst_colorspace=space).to_ndarray()
    if transfer not in (_PQ, _HLG):
        conversions.setdefault("colour", f"{bits}-bit SDR {frame.format.name}, {space} matrix, to 16-bit RGB "
                                         "(swscale), rounded to 8 bits")
        return ((wide.astype(np.uint32) + 128) // 257).astype(np.uint8)
    name = "PQ (SMPTE ST 2084)" if transfer == _PQ else "HLG (ARIB STD-B67)"
    conversions.setdefault("colour", HDR_CONVERSION.format(transfer=name))
    return tone_map(wide.astype(np.float32) / 65535.0, transfer == _PQ)


def tone_map(signal: np.ndarray, pq: bool) -> np.ndarray:
    """HDR signal [H, W, 3] in [0, 1] (BT.2020, PQ or HLG) → [H, W, 3] uint8 sRGB (see :data:`HDR_CONVERSION`)."""
    if pq:
        m1, m2, c1, c2, c3 = 0.1593017578125, 78.84375, 0.8359375, 18.8515625, 18.6875
        power = np.power(np.clip(signal, 0, 1), 1 / m2)
        nits = 10000.0 * np.power(np.maximum(power - c1, 0) / (c2 - c3 * power), 1 / m1)
    else:  # HLG: inverse OETF to scene light, then the reference OOTF (gamma 1.2) on a 1000 cd/m2 display
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        scene = np.where(signal <= 0.5, signal ** 2 / 3, (np.exp((signal - c) / a) + b) / 12)
        nits = 1000.0 * np.power(np.clip(scene, 0, 1), 1.2)
    linear = (nits / 203.0).astype(np.float32) @ _BT2020_TO_709.T
    linear = np.clip(linear, 0, None)
    white = 1000.0 / 203.0
    mapped = np.clip(linear * (1 + linear / white ** 2) / (1 + linear), 0, 1)
    srgb = np.where(mapped <= 0.0031308, mapped * 12.92, 1.055 * np.power(mapped, 1 / 2.4) - 0.055)
    return np.clip(np.rint(srgb * 255), 0, 255).astype(np.uint8)


def _open(path: Path):
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except av.FFmpegError as error:
        # It starts like a video (sniff_video): data that makes no sense, or that ends before its header does (a
        # cut-off upload: EOFError), is a damaged video, not another format.
        if isinstance(error, (av.error.InvalidDataError, av.error.EOFError)):
            raise DamagedVideoError("The video is damaged or incomplete: its container cannot be read.") from None
        raise UnsupportedVideoError("The file cannot be read as a video.") from None


def _decoder_options(limits: VideoLimits) -> dict:
    """FFmpeg's own ceiling, a safety net above ours (frames up to it are decoded and then refused with their size):
    the decoder will not allocate a picture of more than 4 × max_pixels."""
    return {"max_pixels": str(4 * limits.max_pixels)}


def _frames(container, stream, conversions: dict, limits: VideoLimits):
    """Decoded frames of ``stream``; a packet that fails to decode is skipped and counted, more than
    MAX_CORRUPT_PACKETS of them (or a container that cannot be read on) make the video damaged. A picture beyond
    the decoder's ``max_pixels`` (it answers EINVAL) is a VideoTooLargeError."""
    packets = container.demux(stream)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except av.FFmpegError:
            raise DamagedVideoError("The video is damaged or incomplete: its data cannot be read on.") from None
        try:
            decoded = packet.decode()
        except av.ArgumentError:
            raise VideoTooLargeError(f"A frame of the video is larger than {limits.max_pixels:,} pixels, the limit.") \
                from None
        except av.FFmpegError:
            conversions["corrupt_packets"] += 1
            if conversions["corrupt_packets"] > MAX_CORRUPT_PACKETS:
                raise DamagedVideoError("The video is damaged: too many of its pictures cannot be decoded.") from None
            continue
        yield from decoded


def _seek(container, stream, seconds: float) -> None:
    try:
        container.seek(int(seconds / stream.time_base), stream=stream, backward=True)
    except av.FFmpegError:
        pass  # not seekable: frames before the start are decoded and skipped


def _declared_duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return None


def _check_declared(duration: float | None, frames: int, fps: float, limits: VideoLimits,
                    options: VideoOptions) -> None:
    """Refuse before any work what the container declares beyond the limits (a small file may declare hours)."""
    if duration is None:
        return
    end = min(duration, options.end) if options.end is not None else duration
    seconds = max(0.0, end - options.start)
    if seconds > limits.max_seconds:
        shown = f"{seconds:,.0f}" if seconds >= 10 else f"{seconds:.3g}"
        raise VideoTooLargeError(f"The video runs {shown} s; the limit is {limits.max_seconds:g} s "
                                 "(convert a part of it: start and end).")
    if frames and duration > 0:
        rate = min(frames / duration, options.max_fps or math.inf)
        expected = rate * seconds
        capped = options.max_frames is not None and options.max_frames <= limits.max_frames
        # Every declared frame kept (the whole clip, no slower max_fps): the count is the container's own, so one
        # frame over the limit is refused here. Otherwise the frames kept are estimated: a little slack.
        whole = (options.start <= 0 and (options.end is None or options.end >= duration)
                 and (not options.max_fps or frames / duration <= options.max_fps))
        expected, slack = (frames, 0) if whole else (expected, limits.max_frames * 0.01 + 1)
        if expected > limits.max_frames + slack and not capped:
            about = "" if whole else "about "
            raise VideoTooLargeError(f"The video declares {about}{expected:,.0f} frames to convert; the limit is "
                                     f"{limits.max_frames:,} (lower max_fps, or convert a part of it).")


def _stream_rotation(container, stream) -> int:
    """Degrees counter-clockwise of the display matrix, read from the first decoded frame (0 when none)."""
    try:
        for frame in container.decode(stream):
            return int(round((frame.rotation or 0) / 90.0) * 90) % 360
    except av.FFmpegError:
        raise DamagedVideoError("The video is damaged or incomplete: its first picture cannot be decoded.") from None
    return 0


def _container_focal(metadata: dict, width: int, height: int) -> float | None:
    """The focal length in pixels from QuickTime's ``com.apple.quicktime.camera.focal_length.35mm_equivalent``
    (as for EXIF: scaled by the frame's diagonal over the 43.27 mm full-frame diagonal), else None."""
    for key, value in (metadata or {}).items():
        if key.lower().endswith("focal_length.35mm_equivalent"):
            try:
                millimetres = float(value)
            except (TypeError, ValueError):
                return None
            if 1 <= millimetres <= 2000:
                return millimetres * math.hypot(width, height) / 43.27
    return None
