"""Hostile videos through the public HTTP interface (issue 22, point 4): whatever file arrives in the image field,
the answer is a clear 4xx sentence before any job exists, or a job that ends (done, or failed with a sentence):
never a 500, never a job left running, nothing partial left in UPLOAD_FOLDER or the job's folder.

The corpus is made at test time from tiny clips (tests/video_scenes.py) with the ways of breaking them that
tests/test_video_decode.py uses at the library level, plus header fields edited by hand: no picture track, sound only,
cut short at several points, bytes flipped in the middle, a frame size beyond MAX_VIDEO_PIXELS declared by a 4 kB
file, a container that declares 41 days, header durations that lie, a time base of one tick a second, sample tables
declaring 30 thousand or 30 million frames (in a track, or in a fragment: an index bomb), a resolution jump
mid-stream, and text named clip.mp4.
The limits are tried at their value and one past it (MAX_VIDEO_MB to the byte, MAX_VIDEO_SECONDS, MAX_VIDEO_FRAMES and
MAX_VIDEO_PIXELS), and an image over MAX_UPLOAD_MB is refused where a video of that size is taken.

Fast tier: the real app's test client (embedded jobs). Slow tier: real gunicorn, the worker's peak resident memory
within 300 MB of where it started, the server still answering /healthz after each file, nothing in its log.
"""

from __future__ import annotations

import io
import struct
import threading
import time
from pathlib import Path

import av
import numpy as np
import psutil
import pytest
import video_scenes as scenes
from conftest import png_bytes, wait_for_job

MB = 1 << 20
MAX_GROWTH_BYTES = 300 * MB
WIDTH, HEIGHT, COUNT, FPS = 48, 32, 8, 12  # the clip every case starts from: 4 kB, 8 frames, 0.67 s
JOB_FIELDS = {"video_formats": "json"}  # the sidecar only: the cases test the intake and the decode, not encoders


# ------------------------------------------------------------------------------------------------- the corpus


def _clip(folder: Path, name: str, width=WIDTH, height=HEIGHT, count=COUNT, **options) -> bytes:
    path = folder / name
    scenes.write_clip(path, scenes.clip(width, height, count)[0], **{"fps": FPS, **options})
    return path.read_bytes()


def _no_track(folder: Path, suffix: str) -> bytes:
    """A container opened for a picture track and closed before any frame: no track at all is written (MP4), or a
    header that ends before the track's data (Matroska)."""
    path = folder / f"empty.{suffix}"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path.read_bytes()


def _sound_only(folder: Path) -> bytes:
    path = folder / "sound.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path.read_bytes()


def _box(data: bytes, name: bytes) -> int:
    """Where an MP4 box's name is (its fields follow)."""
    at = data.find(name)
    assert at > 0, name
    return at


def huge_frames(ts: bytes) -> bytes:
    """An MPEG-2 stream whose every sequence header declares 4095 x 4095 pixels (16.8 MP, the most 12 bits say)."""
    data = bytearray(ts)
    at = data.find(b"\x00\x00\x01\xb3")
    assert at >= 0
    while at >= 0:
        data[at + 4:at + 7] = b"\xff\xff\xff"
        at = data.find(b"\x00\x00\x01\xb3", at + 4)
    return bytes(data)


def matroska_duration(mkv: bytes, milliseconds: float) -> bytes:
    """The Segment Info's Duration element (0x4489, an 8-byte float in ms) set to ``milliseconds``."""
    data = bytearray(mkv)
    at = data.find(b"\x44\x89\x88")
    assert at > 0
    data[at + 3:at + 11] = struct.pack(">d", milliseconds)
    return bytes(data)


def lying_mp4_durations(mp4: bytes) -> bytes:
    """Every duration field of the MP4's headers (mvhd, tkhd, mdhd, the edit list) set to 2^31 - 1 ticks: 24 days
    and more. The sample table still says 0.67 s."""
    data = bytearray(mp4)
    for name, offset in ((b"mvhd", 20), (b"tkhd", 24), (b"mdhd", 20), (b"elst", 12)):
        at = _box(data, name)
        data[at + offset:at + offset + 4] = struct.pack(">I", 0x7FFFFFFF)
    return bytes(data)


def one_tick_a_second(mp4: bytes) -> bytes:
    """The track's time base made 1 tick a second (mdhd's timescale; the sample deltas stay 1024 ticks): 17 minutes
    between frames."""
    data = bytearray(mp4)
    at = _box(data, b"mdhd")
    data[at + 16:at + 20] = struct.pack(">I", 1)
    return bytes(data)


def many_frames(mp4: bytes, count: int) -> bytes:
    """The sample tables declare ``count`` samples of 200 bytes one tick apart (stts, stsz: one size for all, so the
    table is 20 bytes whatever the count) in the clip's own 0.67 s. FFmpeg would build an index entry for each as it
    opens the file (30 million: 360 MB)."""
    data = bytearray(mp4)
    at = _box(data, b"stts")
    data[at + 12:at + 20] = struct.pack(">II", count, 1)
    at = _box(data, b"stsz")
    data[at + 8:at + 16] = struct.pack(">II", 200, count)
    return bytes(data)


def fragmented(folder: Path) -> bytes:
    """The clip as a fragmented MP4 (an empty moov, then moof + mdat): its samples are declared by trun boxes."""
    path = folder / "fragmented.mp4"
    with av.open(str(path), "w", options={"movflags": "frag_keyframe+empty_moov"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for index, rgb in enumerate(scenes.clip(WIDTH, HEIGHT, COUNT)[0]):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path.read_bytes()


def fragment_bomb(mp4: bytes, count: int = 30_000_000) -> bytes:
    """A fragment's trun box declaring ``count`` samples (16 bytes say it; FFmpeg grows its index by as many)."""
    data = bytearray(mp4)
    at = _box(data, b"trun")
    data[at + 8:at + 12] = struct.pack(">I", count)
    return bytes(data)


def flipped_middle(mp4: bytes) -> bytes:
    """64 bytes inverted in the middle of the picture data (mdat): corrupt packets, the headers intact."""
    data = bytearray(mp4)
    start = _box(data, b"mdat") + 4
    end = start + struct.unpack(">I", data[start - 8:start - 4])[0] - 8
    middle = (start + end) // 2
    for at in range(middle - 32, middle + 32):
        data[at] ^= 0xFF
    return bytes(data)


def flipped_anywhere(mp4: bytes, seed: int = 0) -> bytes:
    """200 bytes inverted anywhere in the last two thirds (the headers of a file written moov-last included)."""
    data = bytearray(mp4)
    for at in np.random.default_rng(seed).integers(len(data) // 3, len(data), 200):
        data[at] ^= 0xFF
    return bytes(data)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("hostile-videos")
    plain = _clip(folder, "plain.mp4")
    first, second = _clip(folder, "a.ts", count=6, codec="mpeg2video"), _clip(folder, "b.ts", width=96, height=64,
                                                                               count=6, codec="mpeg2video")
    fragments = fragmented(folder)
    return {
        "plain": plain,
        "no track (mp4)": _no_track(folder, "mp4"),
        "no track (mkv)": _no_track(folder, "mkv"),
        "sound only": _sound_only(folder),
        "huge frames": huge_frames(first),
        "hours by timestamps": _clip(folder, "hours.mp4", count=2, times=[0.0, 3600.0]),
        "hours declared": matroska_duration(_clip(folder, "plain.mkv"), 3.6e9),
        "lying durations": lying_mp4_durations(plain),
        "one tick a second": one_tick_a_second(plain),
        "millions of frames": many_frames(plain, 30_000_000),
        "thousands of frames": many_frames(plain, 30_000),
        "fragmented": fragments,
        "fragment bomb": fragment_bomb(fragments),
        "flipped middle": flipped_middle(plain),
        "flipped anywhere": flipped_anywhere(plain),
        "resolution jump": first + second,
    }


# ------------------------------------------------------------------------------------------------ the app, once


@pytest.fixture(scope="module")
def video_app(tmp_path_factory, dpt_model):
    """The real app (embedded jobs, default video limits), shared by the module's fast cases: each case checks what
    it left behind itself."""
    from app import create_app
    from conftest import OUT_OF_REACH_RATE_LIMIT

    root = tmp_path_factory.mktemp("hostile-video-app")
    app = create_app({"TESTING": True, "DEPTH_MODEL": dpt_model, "OUTPUT_FOLDER": str(root / "outputs"),
                      "UPLOAD_FOLDER": str(root / "uploads"), "RATE_LIMIT": OUT_OF_REACH_RATE_LIMIT,
                      "MAX_UPLOAD_MB": 2})
    service = app.extensions["image_to_3d"]
    assert service.model_status.wait(120)
    yield app
    stopper = threading.Thread(target=service.stop, kwargs={"wait": True}, daemon=True)
    stopper.start()
    stopper.join(120)


def post(client, data: bytes, name: str = "clip.mp4", path: str = "/api/v1/conversions", **fields):
    return client.post(path, content_type="multipart/form-data",
                       data={"image": (io.BytesIO(data), name), **JOB_FIELDS, **fields})


class Watched:
    """What a request left in UPLOAD_FOLDER and OUTPUT_FOLDER: nothing but the jobs it made (the depth cache's
    folder aside)."""

    def __init__(self, app):
        self.uploads = Path(app.config["UPLOAD_FOLDER"])
        self.outputs = Path(app.config["OUTPUT_FOLDER"])
        self.before = self._jobs()

    def _jobs(self) -> set[str]:
        return {path.name for path in self.outputs.iterdir() if not path.name.startswith(".")}

    def new_jobs(self) -> set[str]:
        return self._jobs() - self.before

    def uploads_left(self) -> list[str]:
        return sorted(path.name for path in self.uploads.iterdir())


def refused(app, data: bytes, status: int, code: str, words: str, name: str = "clip.mp4", **fields) -> str:
    """POST ``data``: refused with ``status``/``code`` and a sentence holding ``words``, no job made, nothing left
    in UPLOAD_FOLDER. Returns the sentence."""
    watched = Watched(app)
    response = post(app.test_client(), data, name, **fields)
    body = response.get_json()
    assert (response.status_code, body.get("code")) == (status, code), body
    assert set(body) == {"error", "code"} and words in body["error"], body["error"]
    assert body["error"].endswith((".", ")")) and "Traceback" not in body["error"] and "/" not in body["error"]
    assert not watched.new_jobs() and watched.uploads_left() == []
    return body["error"]


def converted(app, data: bytes, name: str = "clip.mp4", **fields) -> dict:
    """POST ``data``: accepted, its job ended within a minute (never left running); the job's folder holds no upload
    and nothing partial, UPLOAD_FOLDER nothing. Returns the job's final view."""
    watched = Watched(app)
    client = app.test_client()
    response = post(client, data, name, **fields)
    assert response.status_code == 202, response.get_json()
    assert watched.uploads_left() == []  # moved into the job's folder when the job was made
    view = wait_for_job(client, f"/jobs/{response.get_json()['id']}", timeout=60)
    assert view["kind"] == "video" and view["status"] in ("done", "failed"), view
    folder = watched.outputs / view["id"]
    left = sorted(path.name for path in folder.iterdir())
    if view["status"] == "failed":
        assert left == ["job.json"], left
        assert view["error"].endswith(".") and "Traceback" not in view["error"], view["error"]
    else:
        assert "upload.video" not in left and not [name for name in left if name.endswith(".part")], left
        assert not (folder / "chunks").exists()
    assert watched.new_jobs() == {view["id"]} and watched.uploads_left() == []
    return view


def outcome(app, data: bytes, **fields) -> tuple[int, str]:
    """A file whose fate depends on the encoder's exact bytes: a 4xx sentence, or a job that ends. (status, sentence
    or the job's end)."""
    watched = Watched(app)
    response = post(app.test_client(), data, **fields)
    if response.status_code == 202:
        assert watched.uploads_left() == []
        view = wait_for_job(app.test_client(), f"/jobs/{response.get_json()['id']}", timeout=60)
        assert view["status"] in ("done", "failed"), view
        if view["status"] == "failed":
            assert view["error"].endswith(".") and sorted(
                path.name for path in (watched.outputs / view["id"]).iterdir()) == ["job.json"]
        return 202, view["error"] or "done"
    body = response.get_json()
    assert response.status_code in (413, 415, 422) and body["error"].endswith("."), (response.status_code, body)
    assert not watched.new_jobs() and watched.uploads_left() == []
    return response.status_code, body["error"]


# ------------------------------------------------------------------------------------- refused at the door


class PeakMemory:
    """Peak growth of a process's resident memory while the block runs, sampled every 2 ms."""

    def __init__(self, process: psutil.Process):
        self.process = process

    def __enter__(self):
        self.start = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.growth = self.peak - self.start




@pytest.mark.parametrize("case, status, code, words", [
    ("no track (mp4)", 422, "damaged_video", "holds no track that can be read"),
    ("no track (mkv)", 422, "damaged_video", "damaged or incomplete"),
    ("sound only", 415, "unsupported_video", "no video track"),
    ("huge frames", 413, "video_too_large", "4095 x 4095 pixels; the limit is 8,294,400 pixels a frame"),
    ("hours by timestamps", 413, "video_too_large", "runs 3,600 s; the limit is 600 s"),
    ("hours declared", 413, "video_too_large", "runs 3,600,000 s; the limit is 600 s"),
    ("millions of frames", 413, "video_too_large", "index declares 30,000,000 samples in one track; the limit is "
                                                   "2,000,000"),
    ("fragment bomb", 413, "video_too_large", "index declares 30,000,000 samples in its fragments"),
    ("thousands of frames", 422, "damaged_video", "first picture cannot be decoded"),
])
def test_a_hostile_video_is_a_4xx_sentence_before_any_job(video_app, corpus, case, status, code, words):
    refused(video_app, corpus[case], status, code, words)


@pytest.mark.parametrize("case", ["millions of frames", "fragment bomb"])
def test_an_index_bomb_costs_no_memory(video_app, corpus, case):
    """30 million samples declared in 20 bytes: opened by FFmpeg, they took 360 MB (its index); counted first, the
    refusal costs this process nothing to speak of (sampled every 2 ms)."""
    with PeakMemory(psutil.Process()) as memory:
        refused(video_app, corpus[case], 413, "video_too_large", "30,000,000 samples")
    assert memory.growth < 100 * MB, memory.growth / MB


def test_thousands_of_frames_kept_at_every_frame_are_refused_by_their_count(video_app, corpus):
    """max_fps=0 asks for every frame: the 30,000 the tables declare are counted before any work (at the default
    max_fps, 30 a second of the clip's 0.67 s are asked for, and its first picture, the 200 bytes the table points
    at instead of a whole frame, cannot be decoded: 422 above)."""
    refused(video_app, corpus["thousands of frames"], 413, "video_too_large",
            "declares 30,000 frames to convert; the limit is 18,000", max_fps="0")


def test_a_fragmented_mp4_is_read_through_its_fragments(video_app, corpus):
    view = converted(video_app, corpus["fragmented"], max_frames="2")
    assert view["status"] == "done" and view["info"]["frames"] == 2, view


def test_text_named_like_a_video_is_an_image_upload_refused_as_one(video_app):
    """Names are never looked at: a text file called clip.mp4 is an upload that is not a video, so an image, and not
    an image either."""
    refused(video_app, b"just some text, not a clip\n" * 20, 415, "unsupported_format", "not a supported image format")


@pytest.mark.parametrize("fraction", [0.02, 0.1, 0.3, 0.5, 0.7, 0.9])
def test_a_video_cut_short_is_refused_or_ends(video_app, corpus, fraction):
    """Cut anywhere: the encoder's bytes differ from run to run, so the cut lands in a header or in the picture data
    (the MP4's index is written last: most cuts lose it and are refused)."""
    data = corpus["plain"]
    status, sentence = outcome(video_app, data[: int(len(data) * fraction)])
    assert status == 422 and "damaged or incomplete" in sentence or status == 202, (fraction, status, sentence)


# -------------------------------------------------------------------------------------- accepted, then ended


def test_corrupt_packets_in_the_middle_are_converted_around(video_app, corpus):
    view = converted(video_app, corpus["flipped middle"])
    assert view["status"] == "done", view["error"]
    assert view["info"]["frames"] >= 1
    assert view["info"]["corrupt_packets_skipped"] >= 0


def test_bytes_flipped_anywhere_give_a_sentence_or_a_result(video_app, corpus):
    status, sentence = outcome(video_app, corpus["flipped anywhere"])
    assert status in (202, 413, 415, 422), sentence


def test_header_durations_that_lie_are_not_believed(video_app, corpus):
    """Every duration field says 24 days and more; the sample table, which FFmpeg reads, says 0.67 s: the clip is
    taken and converts as what it holds (two of its frames asked for, to keep the test short)."""
    view = converted(video_app, corpus["lying durations"], max_frames="2")
    assert view["status"] == "done", view["error"]
    source = view["info"]["source"]
    assert view["info"]["frames"] == 2 and source["declared_frames"] == COUNT
    assert source["declared_duration_s"] == pytest.approx(COUNT / FPS, abs=0.01)


def test_a_time_base_of_one_tick_a_second_ends(video_app, corpus):
    """Frames 17 minutes apart in a clip that declares 1 s: the demuxer keeps what its edit list covers (the first
    frame), and the job converts that."""
    view = converted(video_app, corpus["one tick a second"])
    assert view["status"] == "done", view["error"]
    assert view["info"]["frames"] == 1


@pytest.mark.slow  # 0.4 s or more of the fast tier's budget (issue 20)
def test_a_resolution_jump_mid_stream_keeps_the_first_size(video_app, corpus):
    """6 frames of 48 x 32, then 6 of 96 x 64 whose timestamps start again (kept in order, a microsecond apart):
    the 11 frames the decoder gives are converted at the first size, the 6 larger ones resized."""
    view = converted(video_app, corpus["resolution jump"], max_fps="0")
    assert view["status"] == "done", view["error"]
    info = view["info"]
    assert info["frames"] == 11 and info["frames_resized_to_first_size"] == 6
    assert (info["source"]["width"], info["source"]["height"]) == (WIDTH, HEIGHT)


def test_a_resolution_jump_past_max_video_pixels_fails_the_job_with_a_sentence(video_app, corpus, monkeypatch):
    """The first frames are within MAX_VIDEO_PIXELS, so the probe takes the file; the larger frames stop the job."""
    monkeypatch.setitem(video_app.config, "MAX_VIDEO_PIXELS", WIDTH * HEIGHT)
    view = converted(video_app, corpus["resolution jump"], max_fps="0")
    assert view["status"] == "failed" and view["code"] == "video_too_large"
    assert "larger than 1,536 pixels, the limit" in view["error"]


# --------------------------------------------------------------------------------------------- limits ± 1


@pytest.mark.slow  # 0.4 s or more of the fast tier's budget (issue 20)
def test_each_video_limit_takes_its_value_and_refuses_one_past_it(make_app, corpus, monkeypatch):
    """One app whose limits are exactly the plain clip's: its bytes, seconds, frames and pixels. The clip is
    accepted and converts; one byte, a millisecond, a frame or a pixel less of a limit refuses it at once. And an
    image over MAX_UPLOAD_MB (a quarter of the clip's size) is refused where the clip is taken."""
    clip = corpus["plain"]
    app = make_app(MAX_VIDEO_MB=len(clip) / MB, MAX_VIDEO_SECONDS=COUNT / FPS, MAX_VIDEO_FRAMES=COUNT,
                   MAX_VIDEO_PIXELS=WIDTH * HEIGHT, MAX_UPLOAD_MB=len(clip) / 4 / MB)
    view = converted(app, clip)
    assert view["status"] == "done" and view["info"]["frames"] == COUNT, view
    refused(app, clip + b"\0", 413, "too_large", "The video is too large: the limit is")
    for name, less, words in (("MAX_VIDEO_SECONDS", 0.001, "runs 0.667 s; the limit is 0.665667 s"),
                              ("MAX_VIDEO_FRAMES", 1, "declares 8 frames to convert; the limit is 7"),
                              ("MAX_VIDEO_PIXELS", 1, "48 x 32 pixels; the limit is 1,535 pixels a frame")):
        with monkeypatch.context() as patch:
            patch.setitem(app.config, name, app.config[name] - less)
            refused(app, clip, 413, "video_too_large", words)
    noise = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    image = png_bytes(noise)
    assert len(clip) / 4 < len(image) < len(clip)
    refused(app, image, 413, "too_large", "The upload is too large", name="noise.png")


# ------------------------------------------------------------------------ the slow tier: real gunicorn


@pytest.mark.slow
def test_real_gunicorn_survives_the_corpus_with_bounded_memory(tiny_models, tmp_path, corpus):
    """Every hostile file over HTTP against real gunicorn (one worker, its jobs in it): a 4xx sentence, or a job
    that ends done or failed with a sentence; the worker's peak resident memory within 300 MB of where it was; the
    server answering /healthz after each; nothing left in UPLOAD_FOLDER, nothing partial in a job's folder, no
    traceback in the log."""
    import requests
    from conftest import serve

    data = corpus["plain"]
    files = {name: body for name, body in corpus.items() if name != "plain"}
    files.update({f"cut at {fraction:.0%}": data[: int(len(data) * fraction)] for fraction in (0.1, 0.5, 0.9)})
    files["text named clip.mp4"] = b"not a video\n" * 10
    with serve(tiny_models["dpt_hybrid"], tmp_path, workers=1, threads=2) as server:
        worker = psutil.Process(server.process.pid).children()[0]
        for name, body in files.items():
            with PeakMemory(worker) as memory:
                response = requests.post(server.url + "/api/v1/conversions", timeout=60,
                                         files={"image": ("clip.mp4", body)}, data={"video_formats": "json"})
                if response.status_code == 202:
                    view = _finished(server, response.json()["status_url"])
                    assert view["status"] in ("done", "failed"), (name, view)
                    if view["status"] == "failed":
                        assert view["error"].endswith("."), (name, view)
                        assert sorted(path.name for path in (server.outputs / view["id"]).iterdir()) == ["job.json"]
                    else:
                        assert not (server.outputs / view["id"] / "upload.video").exists()
                else:
                    assert response.status_code in (413, 415, 422), (name, response.status_code, response.text[:200])
                    assert response.json()["error"].endswith("."), name
            assert memory.growth < MAX_GROWTH_BYTES, (name, memory.growth / MB)
            assert requests.get(server.url + "/healthz", timeout=10).status_code == 200, name
            assert not server.leftovers(), (name, server.leftovers())
        assert "Traceback" not in server.log.read_text()


@pytest.mark.slow
def test_real_gunicorn_takes_a_video_at_max_video_mb_and_refuses_one_byte_more(tiny_models, tmp_path, corpus):
    """MAX_VIDEO_MB to the byte through gunicorn's own request limit (MAX_CONTENT_LENGTH, which must leave room for
    the form around the file); an image over MAX_UPLOAD_MB is refused, a video of its size is taken."""
    import requests
    from conftest import serve

    clip = corpus["plain"]
    with serve(tiny_models["dpt_hybrid"], tmp_path, workers=1, threads=2, MAX_VIDEO_MB=repr(len(clip) / MB),
               MAX_UPLOAD_MB="0") as server:
        def send(body: bytes, name: str = "clip.mp4"):
            return requests.post(server.url + "/api/v1/conversions", timeout=60, files={"image": (name, body)},
                                 data={"video_formats": "json"})

        taken = send(clip)
        assert taken.status_code == 202, taken.text
        assert _finished(server, taken.json()["status_url"])["status"] == "done"
        over = send(clip + b"\0")
        assert over.status_code == 413 and "The video is too large" in over.json()["error"]
        image = send(png_bytes(np.zeros((8, 8, 3), np.uint8)), "a.png")
        assert image.status_code == 413 and image.json()["code"] == "too_large"
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
        assert not server.leftovers()


def _finished(server, status_url: str, timeout: float = 120) -> dict:
    import requests
    from conftest import wait_until

    def ended():
        view = requests.get(server.url + status_url, timeout=10).json()
        return view if view["status"] in ("done", "failed", "cancelled") else None

    return wait_until(ended, timeout)
