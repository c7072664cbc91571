"""Video out: H.264 MP4s with the source's sound, and zips of per-frame files, each written atomically.

Every writer writes into a temporary file beside its target (:func:`converter.exports.files.atomic_output`) that
becomes the target only when it is complete; a failure or an abort removes it. Frames carry their own times (from the
source's pts, so variable frame rates stay as they were) in a 1/90,000 s time base. Sound: the first audio track of
the source is stream-copied packet by packet when MP4 takes its codec (AAC, MP3, AC-3, E-AC-3, ALAC, Opus, FLAC),
otherwise decoded and re-encoded as AAC; it is muxed in step with the pictures (never buffered whole) and cut to the
part of the source converted. Subtitles and other tracks are dropped.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from ..errors import OutputError
from ..exports.files import atomic_output, ply_header, vertex_records
from ..exports.parallax import video_codec

TIME_BASE = Fraction(1, 90_000)
COPYABLE_AUDIO = ("aac", "mp3", "ac3", "eac3", "alac", "opus", "flac")
_H264 = {"crf": "18", "preset": "veryfast"}


class _Atomic:
    """An atomic_output held open across calls: ``path`` to write, ``commit()`` or ``abort()`` once."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self._stack = contextlib.ExitStack()
        self.path = self._stack.enter_context(atomic_output(self.target))

    def commit(self) -> None:
        self._stack.close()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)


class AudioTrack:
    """The source's first audio track that can be opened (as decode.probe picks it), muxed into ``container`` up to a given time (see the module docstring).
    ``start``: the source time (seconds) that becomes 0 in the output."""

    def __init__(self, source: str | os.PathLike, container, start: float):
        self.input = av.open(str(source), metadata_errors="ignore")
        self.source = next(track for track in self.input.streams.audio if track.codec_context is not None)
        self.copy = self.source.codec_context.name in COPYABLE_AUDIO
        if self.copy:
            self.stream = container.add_stream_from_template(self.source)
        else:
            rate = self.source.codec_context.sample_rate or 48_000
            self.stream = container.add_stream("aac", rate=rate)
            channels = self.source.codec_context.channels or 2
            self.stream.layout = {1: "mono", 2: "stereo", 6: "5.1"}.get(channels, "stereo")
            self.resampler = av.AudioResampler(format="fltp", layout=self.stream.layout, rate=rate)
        self.container, self.start = container, start
        self._packets = self.input.demux(self.source)
        self._pending = None
        self._done = False

    @property
    def codec(self) -> str:
        return self.source.codec_context.name

    def mux_until(self, seconds: float) -> None:
        """Mux the source's audio up to output time ``seconds``."""
        while not self._done:
            packet = self._pending or self._next()
            if packet is None:
                return
            moment = float(packet.pts * packet.time_base) - self.start
            if moment >= seconds:
                self._pending = packet
                return
            self._pending = None
            if moment < -float(packet.duration * packet.time_base if packet.duration else 0) - 1e-6:
                continue  # wholly before the part converted
            self._mux(packet)

    def finish(self, seconds: float) -> None:
        """Mux what is left before output time ``seconds``, flush a re-encoder, close the source."""
        self.mux_until(seconds)
        self._done = True
        if not self.copy:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        self.input.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.input.close()

    def _next(self):
        for packet in self._packets:
            if packet.pts is None or packet.size == 0:
                continue
            return packet
        self._done = True
        return None

    def _mux(self, packet) -> None:
        offset = round(self.start / packet.time_base)
        if self.copy:
            packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
            packet.stream = self.stream
            self.container.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None
            for resampled in self.resampler.resample(frame):
                for out in self.stream.encode(resampled):
                    self.container.mux(out)


class VideoWriter:
    """Frames [h, w, 3] uint8 RGB → an H.264 MP4 (yuv420p, or yuv444p for ``chroma444``; BT.709, moov first), with
    ``audio_from``'s sound. ``write(rgb, seconds)`` with the frame's time in the output; ``close(end_seconds)``."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: float, *, chroma444: bool = False,
                 audio_from: str | os.PathLike | None = None, audio_start: float = 0.0):
        self.file = _Atomic(path)
        self.fps = fps
        self.frames = 0
        self.audio = None
        try:
            self.container = av.open(str(self.file.path), mode="w", format="mp4",
                                     options={"movflags": "+faststart"})
            codec = video_codec()
            stream = self.container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = width - width % 2, height - height % 2
            stream.pix_fmt = "yuv444p" if chroma444 and codec == "libx264" else "yuv420p"
            context = stream.codec_context
            context.time_base = TIME_BASE
            context.color_range = 1
            context.colorspace = context.color_primaries = context.color_trc = 1
            if codec == "libx264":
                stream.options = dict(_H264, profile="high444" if stream.pix_fmt == "yuv444p" else "high")
            elif codec == "mpeg4":
                context.bit_rate = max(2_000_000, width * height * 8)
            self.stream = stream
            if audio_from is not None:
                self.audio = AudioTrack(audio_from, self.container, audio_start)
        except av.FFmpegError as error:
            self.abort()
            raise self._error(error) from None

    def write(self, rgb: np.ndarray, seconds: float) -> None:
        height, width = self.stream.height, self.stream.width
        # The array's own memory, not a copy: from_ndarray copies it holding the interpreter's lock (5 ms for full SBS)
        frame = av.VideoFrame.from_numpy_buffer(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
        frame = frame.reformat(format=self.stream.pix_fmt, src_colorspace="itu709", dst_colorspace="itu709",
                               src_color_range="JPEG", dst_color_range="MPEG")
        frame.pts = round(seconds / TIME_BASE)
        frame.time_base = TIME_BASE
        try:
            if self.audio is not None:
                self.audio.mux_until(seconds)
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
        except av.FFmpegError as error:
            raise self._error(error) from None
        self.frames += 1

    def close(self, end_seconds: float) -> None:
        """Flush, mux the sound up to ``end_seconds`` (the end of the last frame) and put the file in place."""
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            if self.audio is not None:
                self.audio.finish(end_seconds)
            self.container.close()
        except av.FFmpegError as error:
            self.abort()
            raise self._error(error) from None
        self.file.commit()

    def abort(self) -> None:
        if self.audio is not None:
            self.audio.close()
        with contextlib.suppress(Exception):
            self.container.close()
        self.file.abort()

    def _error(self, error):
        if isinstance(error, OSError) and getattr(error, "errno", None):
            return OutputError(f"'{self.file.target.name}' could not be written (disk full or not writable).")
        return OutputError(f"The video '{self.file.target.name}' could not be encoded.")


class FrameZip:
    """One file per frame in a zip (``frame_000000.png``, …), streamed entry by entry; ``close(extra)`` adds the
    JSON entries of ``extra`` ({name: data}) and puts the zip in place."""

    def __init__(self, path: str | os.PathLike, compression: int = zipfile.ZIP_STORED):
        self.file = _Atomic(path)
        self.zip = zipfile.ZipFile(self.file.path, "w", compression, allowZip64=True)
        self.frames = 0

    def add(self, name: str, data: bytes) -> None:
        self.zip.writestr(name, data)
        self.frames += 1

    def close(self, extra: dict | None = None) -> None:
        try:
            for name, data in (extra or {}).items():
                self.zip.writestr(name, json.dumps(data, indent=2, allow_nan=False) + "\n")
            self.zip.close()
        except OSError:
            self.abort()
            raise OutputError(f"'{self.file.target.name}' could not be written (disk full or not writable).") from None
        self.file.commit()

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.zip.close()
        self.file.abort()


def png16_bytes(values: np.ndarray) -> bytes:
    """[H, W] uint16 → PNG bytes (16-bit grey)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(values, dtype=np.uint16)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def ply_bytes(points: np.ndarray, colours: np.ndarray, comments: list[str]) -> bytes:
    """A binary little-endian PLY of a coloured point cloud (the same layout as the images' clouds)."""
    vertices, properties = vertex_records(points, colours)
    return ply_header(comments, [("vertex", len(vertices), properties)]) + vertices.tobytes()
