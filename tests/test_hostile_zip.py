"""A hostile corpus, built at test time, against the real app's batch intake (web.routes.batches, web.intake.unzip).

Zips are written by hand here (``zip_of``) so their headers can lie: every compression method the zip module
offers × honest / declared smaller than the stream / corrupt stream / wrong checksum / cut short / encrypted /
unknown method, plus path tricks, symbolic links, empty zips and the limits ± 1. Each refusal is checked for its
status, a message that names the reason and the entry, and (in the slow tier, where the streams inflate to far
more than the bound) the wall time and the peak memory growth of the serving process.
"""

from __future__ import annotations

import bz2
import functools
import io
import lzma
import struct
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np
import psutil
import pytest
from conftest import png_bytes
from PIL import Image

from web.intake import unzip
from web.routes.errors import UserError

METHODS = {"stored": zipfile.ZIP_STORED, "deflate": zipfile.ZIP_DEFLATED, "bzip2": zipfile.ZIP_BZIP2,
           "lzma": zipfile.ZIP_LZMA}
LZMA_PROPERTIES = {"lc": 3, "lp": 0, "pb": 2, "dict_size": 1 << 20}
MB = 1024 * 1024
MAX_GROWTH_BYTES = 300 * MB


@dataclass
class Member:
    """One entry as it will be written: its real compressed stream and whatever its headers should claim."""

    name: str
    method: int
    stream: bytes
    crc: int
    size: int  # the uncompressed size the headers declare
    flags: int = 0
    unix_mode: int = 0o100644


def compress(data_chunks, method: int) -> bytes:
    """A zip entry's compressed stream for the chunks of data (fed piece by piece: no giant buffer here)."""
    if method == zipfile.ZIP_STORED:
        return b"".join(data_chunks)
    if method == zipfile.ZIP_DEFLATED:
        codec = zlib.compressobj(6, zlib.DEFLATED, -15)
    elif method == zipfile.ZIP_BZIP2:
        codec = bz2.BZ2Compressor(9)
    else:
        codec = lzma.LZMACompressor(lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA1, "preset": 0,
                                                                **LZMA_PROPERTIES}])
    body = b"".join(codec.compress(chunk) for chunk in data_chunks) + codec.flush()
    if method == zipfile.ZIP_LZMA:
        packed = (LZMA_PROPERTIES["pb"] * 5 + LZMA_PROPERTIES["lp"]) * 9 + LZMA_PROPERTIES["lc"]
        body = struct.pack("<BBHB I", 9, 20, 5, packed, LZMA_PROPERTIES["dict_size"]) + body
    return body


def member(name: str, data: bytes, method: int, **lies) -> Member:
    return Member(name, method, compress([data], method), zlib.crc32(data), len(data), **lies)


def zip_of(*members: Member) -> bytes:
    """A zip of exactly these members: local headers, streams, central directory, end record."""
    out, directory = io.BytesIO(), io.BytesIO()
    for entry in members:
        name = entry.name.encode()
        offset = out.tell()
        out.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, entry.flags, entry.method, 0, 0x21, entry.crc,
                              len(entry.stream), entry.size, len(name), 0) + name + entry.stream)
        directory.write(struct.pack("<4s6H3L5HLL", b"PK\x01\x02", (3 << 8) | 20, 20, entry.flags, entry.method, 0,
                                    0x21, entry.crc, len(entry.stream), entry.size, len(name), 0, 0, 0, 0,
                                    entry.unix_mode << 16, offset) + name)
    start, listing = out.tell(), directory.getvalue()
    out.write(listing + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), len(listing),
                                    start, 0))
    return out.getvalue()


@functools.lru_cache(maxsize=None)
def picture(seed: int = 0) -> bytes:
    rows, columns = np.mgrid[0:24, 0:32]
    return png_bytes(np.dstack([columns * 7, rows * 9, np.full((24, 32), 30 * seed)]).astype(np.uint8))


def post_zip(client, body: bytes | list[bytes], **fields):
    """POST the zip as multipart bytes encoded here (the test client would spool a big body to a file it never
    closes)."""
    boundary = "hostile-corpus-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    for zipped in body if isinstance(body, list) else [body]:  # several zips: several parts named "zip"
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="zip"; filename="batch.zip"\r\n'
                     "Content-Type: application/zip\r\n\r\n".encode() + zipped + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return client.post("/api/v1/batches", data=b"".join(parts),
                       content_type=f"multipart/form-data; boundary={boundary}")


def refusal(response) -> tuple[int, str, str]:
    body = response.get_json()
    return response.status_code, body["code"], body["error"]


class Inflated:
    """Every entry unzip inflates, as (bytes its headers declare, bytes the codec produced): the work an upload
    costs, counted instead of timed (a slow machine takes longer, never more bytes)."""

    def __init__(self, monkeypatch):
        self.entries: list[tuple[int, int]] = []
        real = unzip._read_entry

        def counted(data, info, label, allowed):
            produced = []
            inflate = unzip._inflate

            def measured(codec, raw, limit):
                out = inflate(codec, raw, limit)
                produced.append(len(out))
                return out

            monkeypatch.setattr(unzip, "_inflate", measured)
            try:
                return real(data, info, label, allowed)
            finally:
                monkeypatch.setattr(unzip, "_inflate", inflate)
                self.entries.append((info.file_size, sum(produced)))

        monkeypatch.setattr(unzip, "_read_entry", counted)

    @property
    def produced(self) -> int:
        return sum(produced for _, produced in self.entries)


@pytest.fixture
def inflated(monkeypatch) -> Inflated:
    return Inflated(monkeypatch)


@pytest.fixture
def small_app(make_app):
    """The real app with small batch limits, its jobs held back (this file tests the intake, not conversions)."""
    app = make_app(MAX_BATCH_IMAGES=3, MAX_BATCH_UNPACKED_MB=1, MAX_UPLOAD_MB=2)
    service = app.extensions["image_to_3d"]
    gate = threading.Event()
    original = service.runner.convert
    service.runner.convert = lambda *args: (gate.wait(30), original(*args))[1]
    yield app
    gate.set()


# ------------------------------------------------------------------------------------------ every method, honest


@pytest.mark.parametrize("method", METHODS)
def test_honest_zips_of_every_method_are_accepted(small_app, method):
    body = zip_of(*(member(f"photos/{k}.png", picture(k), METHODS[method]) for k in range(3)))
    response = post_zip(small_app.test_client(), body)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert len(response.get_json()["job_ids"]) == 3


def test_zips_written_by_the_zip_module_are_read_alike():
    """Our reader against the zip module's own writer, every method (lzma's header included)."""
    for method in METHODS.values():
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", method) as bundle:
            bundle.writestr("a.png", picture(1))
            bundle.writestr("b/c.png", picture(2))
        entries = list(unzip.unpack(buffer.getvalue(), max_files=5, max_total_bytes=MB, max_entry_bytes=MB))
        assert [entry.data for entry in entries] == [picture(1), picture(2)]
        assert entries[1].label == "entry 2 ('b/c.png')"


# --------------------------------------------------------------------------------- lies, damage, locked entries


def lying(method: int, declared: int, payload: int) -> Member:
    """An entry whose headers declare ``declared`` bytes (and the checksum of those) over a stream of
    ``payload`` zero bytes."""
    chunks = [bytes(MB)] * (payload // MB) + [bytes(payload % MB)]
    return Member("zeros.png", method, compress(chunks, method), zlib.crc32(bytes(declared)), declared)


def corrupt(entry: Member) -> Member:
    stream = bytearray(entry.stream)
    middle = len(stream) // 2
    for k in range(middle, min(len(stream), middle + 16)):
        stream[k] ^= 0x5A
    entry.stream = bytes(stream)
    return entry


CASES = {
    # name: (entry builder(method), status, code, words)
    "declared smaller than the stream": (lambda method: lying(method, 1000, 3 * MB // 2), 422, "damaged_zip",
                                         "more than the 1000 bytes its header declares"),
    "corrupt stream": (lambda method: corrupt(member("a.png", picture() * 40, method)), 422, "damaged_zip",
                       "damaged"),
    "wrong checksum": (lambda method: Member("a.png", method, compress([picture()], method), 1234, len(picture())),
                       422, "damaged_zip", "checksum"),
    "cut short": (lambda method: Member("a.png", method, compress([picture()], method)[:-20],
                                        zlib.crc32(picture()), len(picture())), 422, "damaged_zip", "damaged"),
    "encrypted": (lambda method: member("a.png", picture(), method, flags=0x1), 422, "encrypted_zip_entry",
                  "encrypted"),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", CASES)
def test_lying_damaged_and_locked_entries_are_422_naming_the_entry(small_app, inflated, method, case):
    build, status, code, words = CASES[case]
    body = zip_of(member("first.png", picture(), METHODS[method]), build(METHODS[method]))
    response = post_zip(small_app.test_client(), body)
    # The work is bounded by the declared size, not the stream: no entry produced more than it declares + 1 byte.
    assert all(produced <= declared + 1 for declared, produced in inflated.entries), inflated.entries
    got_status, got_code, message = refusal(response)
    if case == "corrupt stream" and method == "stored":  # nothing to decompress: the checksum catches it
        words = "checksum"
    assert (got_status, got_code) == (status, code), message
    assert words in message and "entry 2 (" in message, message
    assert not list(small_app.extensions["image_to_3d"].store.root.glob("[0-9a-f]" * 32))


def test_an_unknown_compression_method_is_named(small_app):
    entry = member("a.png", picture(), zipfile.ZIP_STORED)
    entry.method = 99  # AES in WinZip's scheme
    status, code, message = refusal(post_zip(small_app.test_client(), zip_of(entry)))
    assert (status, code) == (422, "unsupported_zip_entry")
    assert "entry 1 ('a.png')" in message and "method 99" in message


# ---------------------------------------------------------------------------------- names, links, empty zips


@pytest.mark.parametrize("name, words", [
    ("../../etc/evil.png", "leads out of the zip"),
    ("photos/../../evil.png", "leads out of the zip"),
    ("/etc/evil.png", "leads out of the zip"),
    ("C:\\evil.png", "leads out of the zip"),
])
def test_paths_that_leave_the_zip_are_refused_not_skipped(small_app, name, words):
    body = zip_of(member("ok.png", picture(), zipfile.ZIP_DEFLATED), member(name, picture(), zipfile.ZIP_DEFLATED))
    status, code, message = refusal(post_zip(small_app.test_client(), body))
    assert (status, code) == (422, "unsafe_zip_entry") and words in message and "entry 2 (" in message


def test_a_symbolic_link_is_refused_not_read_as_content(small_app):
    link = member("photo.png", b"/etc/passwd", zipfile.ZIP_STORED, unix_mode=0o120777)
    status, code, message = refusal(post_zip(small_app.test_client(), zip_of(link)))
    assert (status, code) == (422, "unsafe_zip_entry") and "entry 1 ('photo.png') is a symbolic link" in message


def test_empty_zips_say_what_they_hold(small_app):
    client = small_app.test_client()
    status, code, message = refusal(post_zip(client, zip_of()))
    assert (status, code) == (422, "empty_zip") and "holds no files" in message
    only_hidden = zip_of(member(".DS_Store", b"x", 0), member("__MACOSX/._a.png", b"x", 0),
                         member("folder/", b"", 0))
    status, code, message = refusal(post_zip(client, only_hidden))
    assert (status, code) == (422, "empty_zip") and "its 3 entries are all folders or hidden files" in message


def test_an_entry_that_is_not_an_image_is_named(small_app):
    body = zip_of(member("a.png", picture(), 8), member("notes.txt", b"hello " * 100, 8))
    status, code, message = refusal(post_zip(small_app.test_client(), body))
    assert status == 415 and "Image 2 of the batch (the zip's entry 2 ('notes.txt'))" in message


def test_a_huge_directory_is_refused_before_it_is_parsed(small_app):
    folders = [member(f"d{k}/", b"", 0) for k in range(unzip.MAX_ENTRIES + 1)]
    status, code, message = refusal(post_zip(small_app.test_client(), zip_of(*folders)))
    assert (status, code) == (413, "too_many_entries") and f"the limit is {unzip.MAX_ENTRIES}" in message


# ------------------------------------------------------------------------------------------------ limits ± 1


def test_the_image_count_limit_plus_and_minus_one(small_app):
    client = small_app.test_client()
    at_limit = zip_of(*(member(f"{k}.png", picture(k), 8) for k in range(3)))
    assert post_zip(client, at_limit).status_code == 202
    over = zip_of(*(member(f"{k}.png", picture(k), 8) for k in range(4)))
    status, code, message = refusal(post_zip(client, over))
    assert (status, code) == (413, "too_many_images") and "at most 3" in message


@pytest.mark.parametrize("method", METHODS)
def test_the_unpacked_budget_plus_and_minus_one(method):
    """Budget and per-file cap hold to the byte, declared honestly or not; the message names the limit."""
    size = 3000
    exact = zip_of(member("a.png", bytes(size), METHODS[method]))
    assert len(list(unzip.unpack(exact, max_files=1, max_total_bytes=size, max_entry_bytes=size))[0].data) == size
    with pytest.raises(UserError) as refused:
        list(unzip.unpack(exact, max_files=1, max_total_bytes=size - 1, max_entry_bytes=size))
    assert refused.value.status == 413 and "the limit for a batch" in refused.value.message
    with pytest.raises(UserError) as refused:
        list(unzip.unpack(exact, max_files=1, max_total_bytes=size, max_entry_bytes=size - 1))
    assert refused.value.status == 413 and "the limit for one image" in refused.value.message
    one_more = zip_of(lying(METHODS[method], size, size + 1))
    with pytest.raises(UserError) as refused:
        list(unzip.unpack(one_more, max_files=1, max_total_bytes=size, max_entry_bytes=size))
    assert refused.value.status == 422 and f"more than the {size} bytes its header declares" in refused.value.message


def test_several_zips_in_one_upload_share_one_unpacked_budget(small_app):
    """Each zip alone fits the batch's 1 MB, three together do not: the budget is the request's, not each zip's."""
    noise = np.random.default_rng(3).integers(0, 256, (300, 400, 3), dtype=np.uint8)  # incompressible, ~0.36 MB
    zips = [zip_of(member(f"{index}.png", png_bytes(noise), zipfile.ZIP_STORED)) for index in range(3)]
    status, code, message = refusal(post_zip(small_app.test_client(), zips))
    assert (status, code) == (413, "too_large")
    assert "1 MB (with the zips before it in this upload), the limit for a batch" in message


def test_an_honest_bomb_is_413_before_any_entry_is_read(small_app):
    body = zip_of(member("big.png", bytes(3 * MB), zipfile.ZIP_DEFLATED))
    status, code, message = refusal(post_zip(small_app.test_client(), body))
    assert (status, code) == (413, "too_large") and "2 MB, the limit for one image" in message


# --------------------------------------------------------------------------- no 500, whatever the bytes (fuzzed)


def test_random_damage_anywhere_in_a_zip_is_never_a_500(small_app):
    client = small_app.test_client()
    rng = np.random.default_rng(16)
    originals = [zip_of(member("a.png", picture(), method), member("b.png", picture(1), method))
                 for method in METHODS.values()]
    statuses = set()
    for trial in range(60):
        body = bytearray(originals[trial % len(originals)])
        for position in rng.integers(0, len(body), size=int(rng.integers(1, 6))):
            body[position] = int(rng.integers(0, 256))
        response = post_zip(client, bytes(body))
        statuses.add(response.status_code)
        assert response.status_code < 500 or response.status_code == 503, response.get_data(as_text=True)
        if response.status_code >= 400:
            assert response.get_json()["error"].endswith((".", ")"))
    assert statuses & {413, 415, 422}  # damage was noticed, not only waved through


# ----------------------------------------------------------- the slow tier: real bombs, wall time and memory


class PeakMemory:
    """Peak growth of a process's resident memory (this one by default) while the block runs, sampled every 2 ms."""

    def __init__(self, process: psutil.Process | None = None):
        self.process = process or psutil.Process()

    def __enter__(self):
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.growth = self.peak - self.start


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    """Per method: a zip whose one entry declares 1000 bytes and inflates to 320 MB of zeros (more than the
    memory bound, so reading it whole, as the zip module does, would fail the test)."""
    return {name: zip_of(lying(method, 1000, 320 * MB)) for name, method in METHODS.items() if name != "stored"}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["deflate", "bzip2", "lzma"])
def test_a_small_zip_that_inflates_to_gigabytes_costs_no_memory(make_app, bombs, inflated, method):
    client = make_app().test_client()  # default limits: 25 MB upload, 200 MB unpacked
    assert len(bombs[method]) < MB
    with PeakMemory() as memory:
        response = post_zip(client, bombs[method])
    status, code, message = refusal(response)
    assert (status, code) == (422, "damaged_zip") and "entry 1 ('zeros.png')" in message
    assert inflated.entries == [(1000, 1001)]  # of its 320 MB, one byte past what the header declares: no time
    assert memory.growth < MAX_GROWTH_BYTES, memory.growth / MB


@pytest.mark.slow
def test_an_upload_at_the_size_limit_stays_within_the_memory_bound(make_app, inflated):
    """The worst honest case: a 25 MB upload of valid image headers that unpack to the whole 200 MB budget."""
    app = make_app()
    service = app.extensions["image_to_3d"]
    service.runner.convert = lambda job, upload, report: {}  # admission is what is measured, not conversions
    header = io.BytesIO()
    Image.new("L", (3200, 3000)).save(header, format="BMP")  # 9.6 MB each, nearly all zeros
    bitmap = header.getvalue()
    body = zip_of(*(member(f"{k}.bmp", bitmap, zipfile.ZIP_BZIP2) for k in range(20)))
    with PeakMemory() as memory:
        response = post_zip(app.test_client(), body)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert inflated.entries == [(len(bitmap), len(bitmap))] * 20  # each entry inflated once, to its own size
    assert memory.growth < MAX_GROWTH_BYTES, memory.growth / MB


@pytest.mark.slow
def test_real_gunicorn_survives_the_corpus_with_bounded_worker_memory(tiny_models, tmp_path, bombs):
    """The corpus over HTTP against real gunicorn (one worker): every answer a 4xx with its sentence, the worker's
    peak resident memory within the bound, nothing written outside the server's folders, nothing in its log."""
    import requests
    from conftest import serve

    corpus = {f"bomb-{name}": body for name, body in bombs.items()}
    for name, method in METHODS.items():
        for case, (build, status, _, _) in CASES.items():
            corpus[f"{case}-{name}"] = zip_of(member("first.png", picture(), method), build(method))
    corpus["symlink"] = zip_of(member("a.png", b"/etc/passwd", 0, unix_mode=0o120777))
    corpus["escape"] = zip_of(member("../../../../tmp/escaped.png", picture(), 8))
    corpus["empty"] = zip_of()
    with serve(tiny_models["dpt_hybrid"], tmp_path, workers=1, threads=2, MAX_UPLOAD_MB=25) as server:
        worker = psutil.Process(server.process.pid).children()[0]
        for name, body in corpus.items():
            with PeakMemory(worker) as memory:
                response = requests.post(server.url + "/api/v1/batches", files={"zip": ("a.zip", body)}, timeout=60)
            assert 400 <= response.status_code < 500, (name, response.status_code, response.text[:200])
            assert response.json()["error"].endswith("."), name
            assert memory.growth < MAX_GROWTH_BYTES, (name, memory.growth / MB)
        assert not (tmp_path.parent / "escaped.png").exists() and not list(tmp_path.rglob("escaped.png"))
        log = server.log.read_text()
        assert "Traceback" not in log


def test_an_entry_name_shown_in_an_error_page_is_escaped(small_app):
    """The sender's own entry name comes back in the sentence: as text, never as markup."""
    body = zip_of(member("<script>alert(1)</script>.png", b"/etc/passwd", 0, unix_mode=0o120777))
    response = small_app.test_client().post(
        "/convert", data=b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.zip\"\r\n\r\n" + body
        + b"\r\n--b--\r\n", content_type="multipart/form-data; boundary=b", headers={"Accept": "text/html"})
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and response.mimetype == "text/html"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.png" in page and "<script>alert" not in page
