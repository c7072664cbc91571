"""A depth video you bring: an ``.npz`` (one [T, H, W] array, or one [H, W] array per frame in name order) or a zip
of 16-bit PNGs (millimetres when metric, as for images) or ``.npy`` files, one per frame in name order (``.json``
and ``.txt`` entries, such as the description a ``.depth16.zip`` output carries, are skipped).

Frames are read one at a time (a zip entry at a time; a stacked ``.npz`` array is the one exception: numpy reads
it whole), each checked like a single-image depth map (:func:`converter.depth.load_depth_file`); frame ``i`` of the
depth goes with kept frame ``i`` of the video. Recognised by content (a zip), never by name.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Iterator

import numpy as np

from ..depth import DepthMap, load_depth_file
from ..depth.files import DEPTH_KINDS
from ..errors import DepthFileError
from .limits import VideoLimits


def depth_frames(source, kind: str, limits: VideoLimits) -> Iterator[DepthMap]:
    """Yield the depth maps of ``source`` (path, bytes or file) in order; DepthFileError with a sentence for a file
    that is not such a stack, holds too many frames, or a frame that is not a depth map."""
    if kind not in DEPTH_KINDS:
        raise DepthFileError(f"Unknown depth kind '{kind}'; use 'metric' or 'disparity'.")
    handle = _open(source)
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError):
        handle.close()
        raise DepthFileError("A depth video must be an .npz stack or a zip of 16-bit PNGs (or .npy) per frame.") \
            from None
    with handle, archive:
        entries = sorted((entry for entry in archive.infolist() if not entry.is_dir()
                          and not entry.filename.rsplit("/", 1)[-1].startswith((".", "__MACOSX"))
                          and not entry.filename.lower().endswith((".json", ".txt"))),
                         key=lambda entry: _natural(entry.filename))
        if not entries:
            raise DepthFileError("The depth video holds no frames.")
        if len(entries) > limits.max_frames:
            raise DepthFileError(f"The depth video holds {len(entries):,} files; the limit is {limits.max_frames:,}.")
        most = 8 * limits.max_pixels + 4096  # float64 values of the largest frame allowed, and a header
        for number, entry in enumerate(entries, 1):
            with archive.open(entry) as member:
                data = member.read(most + 1)
            if len(data) > most:
                raise DepthFileError(f"Depth frame {number} is larger than a frame may be.")
            if len(entries) == 1 and data.startswith(b"\x93NUMPY"):
                yield from _stack(data, kind, limits)
                return
            yield load_depth_file(data, kind, name=f"depth frame {number}")


def _natural(name: str) -> list:
    """Sort key: "frame_2" before "frame_10" (digits compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _stack(data: bytes, kind: str, limits: VideoLimits) -> Iterator[DepthMap]:
    """The frames of one [T, H, W] (or [H, W]) array."""
    try:
        values = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        raise DepthFileError("The depth video's array cannot be read.") from None
    if values.ndim == 2:
        values = values[None]
    if values.ndim != 3 or not np.issubdtype(values.dtype, np.number):
        raise DepthFileError(f"A depth video array must be [frames, height, width]; got shape {values.shape}.")
    if values.shape[0] > limits.max_frames:
        raise DepthFileError(f"The depth video holds {values.shape[0]:,} frames; the limit is {limits.max_frames:,}.")
    for number in range(values.shape[0]):
        buffer = io.BytesIO()
        np.save(buffer, values[number])
        yield load_depth_file(buffer.getvalue(), kind, name=f"depth frame {number + 1}")


def _open(source):
    if isinstance(source, (bytes, bytearray)):
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        try:
            return open(source, "rb")
        except OSError:
            raise DepthFileError(f"The depth video '{os.fspath(source)}' cannot be read.") from None
    if hasattr(source, "read"):
        return source
    raise TypeError(f"cannot read a depth video from {type(source).__name__}")
