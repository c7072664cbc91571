"""What an ISO/QuickTime file (MP4, MOV, M4V, 3GP) declares in its sample tables, read before FFmpeg opens it.

FFmpeg's MP4 reader builds an index entry for every sample a track declares, as it opens the file: a track whose
``stsz`` box gives one size for all its samples declares any count in 20 bytes, and a fragment's ``trun`` box in 16.
A 4 kB file declaring 30 million samples made the opening alone take 360 MB, 150 million several GB. So the counts are
read here first, by walking the boxes (headers and the few fields needed, never a whole box), and a file declaring more
than :data:`MAX_DECLARED_SAMPLES` samples in one track, or in all its fragments, is refused before anything is
allocated for them. Real videos are far below it: 2 million samples is 18 hours at 30 frames a second, or 11 hours of
AAC sound, in one track.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import VideoTooLargeError

MAX_DECLARED_SAMPLES = 2_000_000
MAX_BOXES = 1_000_000  # boxes walked at most (a long fragmented file has a few per fragment)
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"moof", b"traf", b"mvex", b"edts"}
_ENTRIES_READ = 4096  # stts/ctts entries read at once


def check_sample_tables(path: str | Path, limit: int = MAX_DECLARED_SAMPLES) -> None:
    """Raise VideoTooLargeError when the file declares more than ``limit`` samples in one track's tables (``stsz``,
    ``stz2``, ``stts``, ``ctts``) or in its fragments' ``trun`` boxes together. A damaged box structure is left to
    FFmpeg, which says so."""
    with open(path, "rb") as handle:
        size = handle.seek(0, 2)
        walk = _Walk(handle, limit)
        walk.boxes(0, size, 0)


class _Walk:
    def __init__(self, handle, limit: int):
        self.handle, self.limit = handle, limit
        self.walked = 0
        self.fragments = 0  # samples of every trun

    def boxes(self, start: int, end: int, depth: int) -> None:
        offset = start
        while offset + 8 <= end:
            self.walked += 1
            if self.walked > MAX_BOXES:
                raise VideoTooLargeError(f"The video's container holds more than {MAX_BOXES:,} boxes: it is "
                                         "damaged, or not a video this converter reads.")
            header = self._read(offset, 8)
            if len(header) < 8:
                return
            size, kind = struct.unpack(">I4s", header)
            body = offset + 8
            if size == 1:
                large = self._read(body, 8)
                if len(large) < 8:
                    return
                size, body = struct.unpack(">Q", large)[0], body + 8
            elif size == 0:  # to the end of the file
                size = end - offset
            if size < body - offset:
                return  # damaged: FFmpeg says so
            box_end = min(offset + size, end)
            if kind in _CONTAINERS and depth < 8:
                self.boxes(body, box_end, depth + 1)
            elif kind == b"stsz":
                self._check(self._field(body + 8), "in one track")
            elif kind == b"stz2":
                self._check(self._field(body + 8), "in one track")
            elif kind in (b"stts", b"ctts"):
                self._check(self._runs(body, box_end), "in one track")
            elif kind == b"trun":
                self.fragments += self._field(body + 4)
                self._check(self.fragments, "in its fragments")
            offset += size

    def _check(self, count: int, where: str) -> None:
        if count > self.limit:
            raise VideoTooLargeError(f"The video's index declares {count:,} samples {where}; the limit is "
                                     f"{self.limit:,} (a file that declares more is damaged, or made to exhaust "
                                     "memory).")

    def _runs(self, body: int, end: int) -> int:
        """The samples of an stts or ctts box: the sum of its entries' counts (those the box really holds)."""
        declared = self._field(body + 4)
        entries = min(declared, max(0, (end - body - 8) // 8))
        total, at = 0, body + 8
        while entries > 0 and total <= self.limit:
            count = min(entries, _ENTRIES_READ)
            data = self._read(at, 8 * count)
            count = len(data) // 8
            if not count:
                break
            total += sum(struct.unpack(f">{2 * count}I", data[: 8 * count])[0::2])
            entries -= count
            at += 8 * count
        return total

    def _field(self, at: int) -> int:
        data = self._read(at, 4)
        return struct.unpack(">I", data)[0] if len(data) == 4 else 0

    def _read(self, at: int, size: int) -> bytes:
        self.handle.seek(at)
        return self.handle.read(size)
