"""Unpack an uploaded zip under a budget this server enforces, never one the zip declares.

A zip's headers are the sender's word: sizes, methods and names can all lie. So the central directory is bounded
before ``zipfile`` parses it (a megabyte of tiny records would otherwise become hundreds of thousands of objects),
and every entry is inflated here, through the codec's own output limit (``max_length``), so no entry ever produces
more than min(its declared size, what is left of the budget) + 1 bytes, whatever its method (stored, deflate,
bzip2, lzma) or its headers say. The CRC is checked. Encrypted entries, unknown methods, corrupt streams, entries
that are symbolic links or whose path leaves the zip (``../``, ``/etc/...``) are refused, naming the entry: the zip
module and the codecs raise nothing past this module.
"""

from __future__ import annotations

import bz2
import io
import lzma
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass

from ..user_error import UserError

CHUNK_BYTES = 64 * 1024  # compressed bytes handed to a codec at a time; it never returns more than asked for
MAX_DIRECTORY_BYTES = 1024 * 1024  # the zip's central directory: about 10,000 entries with ordinary names
MAX_ENTRIES = 1000  # folders and metadata files included
_END = b"PK\x05\x06"
_END_SIZE = 22
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_END = b"PK\x06\x06"
_LOCAL = b"PK\x03\x04"
_LOCAL_SIZE = 30
_READ_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2",
                 zipfile.ZIP_LZMA: "lzma"}
_CODEC_ERRORS = (zlib.error, lzma.LZMAError, OSError, EOFError, ValueError)


@dataclass(frozen=True)
class Entry:
    """One file of the zip: its number among all the zip's entries (1-based, as zip tools list them), a label for
    messages ("entry 3 ('a.png')") and its bytes."""

    number: int
    label: str
    data: bytes


def unpack(data: bytes, max_files: int, max_total_bytes: int, max_entry_bytes: int, already_unpacked: int = 0):
    """Yield the zip's files in the zip's order (folders, hidden files and macOS metadata skipped), each read in
    full and checked before the next is touched, so a caller can refuse a bad one before reading on.

    Refusals (UserError): 413 when the zip lists more than ``max_files`` files, declares more than
    ``max_total_bytes`` in all (counting ``already_unpacked`` bytes of earlier zips of the same request) or more
    than ``max_entry_bytes`` for one file; 422 for a damaged or unsafe zip or entry; the message names the entry and
    the limit.
    """
    _check_directory(data)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            infos = bundle.infolist()
    except Exception:  # noqa: BLE001 — hostile bytes in a third-party parser: any failure means "damaged"
        raise _damaged("The zip file is damaged: its list of files cannot be read.") from None
    if len(infos) > MAX_ENTRIES:  # the end record's count is the sender's word; the directory is what it holds
        raise UserError(413, "too_many_entries", f"The zip lists {len(infos)} entries; the limit is {MAX_ENTRIES}, "
                                                 "folders included.")
    if not infos:
        raise UserError(422, "empty_zip", "The zip is empty: it holds no files.")
    files = []
    for number, info in enumerate(infos, start=1):
        label = _label(number, info.filename)
        if _leaves_zip(info.filename):
            raise UserError(422, "unsafe_zip_entry", f"The zip's {label} has a path that leads out of the zip "
                                                     "('..' or an absolute path); such a zip is refused.")
        if info.is_dir() or _hidden(info.filename):
            continue
        if info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16):
            raise UserError(422, "unsafe_zip_entry", f"The zip's {label} is a symbolic link, not an image file.")
        if info.flag_bits & 0x1:
            raise UserError(422, "encrypted_zip_entry", f"The zip's {label} is encrypted. Send the images in a zip "
                                                        "without a password.")
        if info.compress_type not in _READ_METHODS:
            raise UserError(422, "unsupported_zip_entry",
                            f"The zip's {label} uses a compression method this server does not read (method "
                            f"{info.compress_type}); use stored, deflate, bzip2 or lzma.")
        if info.file_size > max_entry_bytes:
            raise UserError(413, "too_large", f"The zip's {label} unpacks to more than {_mb(max_entry_bytes)}, "
                                              "the limit for one image.")
        files.append((number, label, info))
    if not files:
        raise UserError(422, "empty_zip", f"The zip holds no images: its {len(infos)} entries are all folders or "
                                          "hidden files (names starting with '.', __MACOSX).")
    if len(files) > max_files:
        raise UserError(413, "too_many_images", f"Too many images: the zip holds {len(files)} files and a batch "
                                                f"holds at most {max_files}.")
    if already_unpacked + sum(info.file_size for _, _, info in files) > max_total_bytes:
        together = " (with the zips before it in this upload)" if already_unpacked else ""
        raise UserError(413, "too_large", f"The zip unpacks to more than {_mb(max_total_bytes)}{together}, the limit "
                                          "for a batch.")
    remaining = max_total_bytes - already_unpacked
    for number, label, info in files:
        content = _read_entry(data, info, label, min(info.file_size, max_entry_bytes, remaining))
        remaining -= len(content)
        yield Entry(number, label, content)


def _read_entry(data: bytes, info: zipfile.ZipInfo, label: str, allowed: int) -> bytes:
    """The entry's bytes, never more than ``allowed`` + 1 of them produced, whatever its headers say."""
    raw = _raw_stream(data, info, label)
    try:
        content = _inflate(_decompressor(info, raw, allowed), raw, allowed + 1)
    except _CODEC_ERRORS:
        raise _damaged(f"The zip's {label} is damaged: its compressed data cannot be read.") from None
    if len(content) > info.file_size:
        raise _damaged(f"The zip's {label} is damaged or hostile: it unpacks to more than the {info.file_size} "
                       "bytes its header declares.")
    if len(content) < info.file_size:
        raise _damaged(f"The zip's {label} is damaged: it unpacks to fewer bytes than its header declares.")
    if zlib.crc32(content) != info.CRC:
        raise _damaged(f"The zip's {label} is damaged: its checksum does not match.")
    return content


def _raw_stream(data: bytes, info: zipfile.ZipInfo, label: str):
    """The entry's compressed bytes (a view into ``data``), located through its local header."""
    start = info.header_offset
    header = data[start:start + _LOCAL_SIZE]
    if len(header) < _LOCAL_SIZE or header[:4] != _LOCAL:
        raise _damaged(f"The zip's {label} is damaged: its local header is missing.")
    flags, name_length, extra_length = struct.unpack("<H", header[6:8])[0], *struct.unpack("<2H", header[26:30])
    if flags & 0x1:
        raise UserError(422, "encrypted_zip_entry", f"The zip's {label} is encrypted. Send the images in a zip "
                                                    "without a password.")
    begin = start + _LOCAL_SIZE + name_length + extra_length
    end = begin + info.compress_size
    if end > len(data):
        raise _damaged(f"The zip's {label} is damaged: the file is cut short.")
    return memoryview(data)[begin:end]


def _decompressor(info: zipfile.ZipInfo, raw, allowed: int):
    """A codec object for the entry (None for stored); lzma's dictionary is capped at what may be produced."""
    if info.compress_type == zipfile.ZIP_DEFLATED:
        return zlib.decompressobj(-15)
    if info.compress_type == zipfile.ZIP_BZIP2:
        return bz2.BZ2Decompressor()
    if info.compress_type == zipfile.ZIP_LZMA:
        # A zip's lzma entry: version (2 bytes), properties size (2), the LZMA1 properties (5), then raw LZMA1.
        if len(raw) < 9 or struct.unpack("<H", raw[2:4])[0] != 5:
            raise ValueError("bad lzma header")
        packed, dict_size = raw[4], struct.unpack("<I", raw[5:9])[0]
        if packed >= 9 * 5 * 5:
            raise ValueError("bad lzma properties")
        lc, lp, pb = packed % 9, packed // 9 % 5, packed // 45
        # The decoder allocates its dictionary up front; more than the output it may produce is never used.
        dict_size = max(4096, min(dict_size, allowed + 1))
        return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[
            {"id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}])
    return None


def _inflate(codec, raw, limit: int) -> bytes:
    """At most ``limit`` bytes of output: the codec is fed ``CHUNK_BYTES`` at a time and asked for no more than is
    left, so memory and time follow the output allowed, not the ratio the stream was built for."""
    if codec is None:
        return bytes(raw[:limit])
    if isinstance(codec, lzma.LZMADecompressor):
        raw = raw[9:]
    out = bytearray()
    offset = 0
    pending = b""  # zlib hands back what it did not consume; bz2 and lzma keep it inside
    while len(out) < limit and not codec.eof:
        if isinstance(codec, (bz2.BZ2Decompressor, lzma.LZMADecompressor)):
            chunk = b""
            if codec.needs_input:
                if offset >= len(raw):
                    break  # the stream ends before its end mark: cut short
                chunk, offset = bytes(raw[offset:offset + CHUNK_BYTES]), offset + CHUNK_BYTES
            piece = codec.decompress(chunk, limit - len(out))
            stalled = not piece and not chunk
        else:
            if not pending and offset < len(raw):
                pending, offset = bytes(raw[offset:offset + CHUNK_BYTES]), offset + CHUNK_BYTES
            before = len(pending)
            piece = codec.decompress(pending, limit - len(out))  # b"" drains output zlib still holds
            pending = codec.unconsumed_tail
            stalled = not piece and len(pending) == before
        out += piece
        if stalled:
            break
    return bytes(out)


def _check_directory(data: bytes) -> None:
    """Refuse a zip whose central directory is too big to parse, from its end record alone (as zipfile finds it)."""
    if data[-_END_SIZE:-_END_SIZE + 4] == _END and data[-2:] == b"\0\0":
        position = len(data) - _END_SIZE
    else:
        position = data.rfind(_END, max(0, len(data) - _END_SIZE - 65535))
    if position < 0 or len(data) - position < _END_SIZE:
        raise _damaged("The zip file is damaged: its end record is missing.")
    _, _, _, _, entries, directory_bytes, _, _ = struct.unpack("<4s4H2LH", data[position:position + _END_SIZE])
    locator = position - 20
    if locator >= 0 and data[locator:locator + 4] == _ZIP64_LOCATOR:
        record = struct.unpack("<Q", data[locator + 8:locator + 16])[0]
        if data[record:record + 4] == _ZIP64_END and len(data) >= record + 56:
            entries, directory_bytes = struct.unpack("<2Q", data[record + 32:record + 48])
    if entries > MAX_ENTRIES:
        raise UserError(413, "too_many_entries", f"The zip lists {entries} entries; the limit is {MAX_ENTRIES}, "
                                                 "folders included.")
    if directory_bytes > MAX_DIRECTORY_BYTES:
        raise UserError(413, "too_many_entries", f"The zip's list of files is larger than "
                                                 f"{_mb(MAX_DIRECTORY_BYTES)}, the limit.")


def _leaves_zip(name: str) -> bool:
    """Whether an entry's path is absolute or climbs out ('..'), the way an unzip tool would place it."""
    path = name.replace("\\", "/")
    return path.startswith("/") or (len(path) > 1 and path[1] == ":") or ".." in path.split("/")


def _hidden(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def _label(number: int, name: str) -> str:
    """"entry 3 ('photos/a.png')": the name cut to 60 printable characters (it is the sender's own)."""
    shown = "".join(character if character.isprintable() else "?" for character in name)
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    return f"entry {number} ('{shown}')"


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB"


def _damaged(message: str) -> UserError:
    return UserError(422, "damaged_zip", message)
