"""Video in (converter/video/decode.py): recognised by content, checked against the limits before work and while
decoding, frame times from pts, the display rotation applied, deep and HDR sources made 8-bit SDR, and hostile or
broken files refused with a sentence (a typed InputError), never a crash or a hang."""

from __future__ import annotations

import av
import numpy as np
import pytest
import video_scenes as scenes

from converter.errors import DamagedVideoError, InputError, UnsupportedVideoError, VideoTooLargeError
from converter.video import VideoLimits, VideoOptions, is_video_file
from converter.video.decode import decode, probe

LIMITS = VideoLimits()


def _frames(width=64, height=48, count=12):
    return scenes.clip(width, height, count)[0]


def _close(decoded: np.ndarray, original: np.ndarray) -> bool:
    """The same picture through a lossy codec: 8 × 8 block means within 8 levels on average (4:2:0 chroma and the
    codec blur the random texture's cell edges)."""
    def blocks(picture):
        h, w = picture.shape[0] // 8 * 8, picture.shape[1] // 8 * 8
        return picture[:h, :w].reshape(h // 8, 8, w // 8, 8, 3).astype(float).mean(axis=(1, 3))

    return float(np.abs(blocks(decoded) - blocks(original)).mean()) < 8


def _decoded(path, options=VideoOptions(), limits=LIMITS, conversions=None):
    info = probe(path, limits, options)
    return info, list(decode(info, options, limits, conversions=conversions))


@pytest.fixture(scope="module")
def plain_clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "plain.mp4"
    scenes.write_clip(path, _frames(), fps=24)
    return path


def test_frames_and_their_times(plain_clip):
    info, frames = _decoded(plain_clip)
    assert (info.width, info.height, info.rotation, info.fps) == (64, 48, 0, 24.0)
    assert len(frames) == 12 and [frame.index for frame in frames] == list(range(12))
    assert [frame.time for frame in frames] == pytest.approx([i / 24 for i in range(12)], abs=1e-4)
    assert frames[0].rgb.shape == (48, 64, 3) and frames[0].rgb.dtype == np.uint8
    assert _close(frames[0].rgb, _frames()[0])


def test_variable_frame_rate_keeps_each_frame_time(tmp_path):
    times = [0.0, 0.04, 0.05, 0.2, 0.21, 0.5, 0.52, 0.9]
    path = tmp_path / "vfr.mp4"
    scenes.write_clip(path, _frames(count=len(times)), times=times)
    _, frames = _decoded(path, VideoOptions(max_fps=0))
    assert [frame.time for frame in frames] == pytest.approx(times, abs=1e-3)
    _, capped = _decoded(path, VideoOptions(max_fps=20))  # at least 50 ms apart
    assert [frame.time for frame in capped] == pytest.approx([0.0, 0.05, 0.2, 0.5, 0.9], abs=1e-3)


@pytest.mark.slow  # 0.4 s or more of the fast tier's budget (issue 20)
def test_max_fps_start_end_and_max_frames(tmp_path):
    path = tmp_path / "sixty.mp4"
    scenes.write_clip(path, _frames(count=24), fps=60)
    assert len(_decoded(path)[1]) == 12  # 60 fps → 30
    assert len(_decoded(path, VideoOptions(max_fps=0))[1]) == 24
    _, part = _decoded(path, VideoOptions(max_fps=0, start=0.1, end=0.3))
    assert [round(frame.time * 60) for frame in part] == list(range(6, 18))
    assert len(_decoded(path, VideoOptions(max_fps=0, max_frames=5))[1]) == 5


def test_a_phone_video_is_turned_upright(tmp_path):
    frames = _frames()
    path = tmp_path / "phone.mp4"
    scenes.write_clip(path, frames, rotation=90)
    info, decoded = _decoded(path)
    assert info.rotation == 90 and (info.width, info.height) == (48, 64)
    assert decoded[0].rgb.shape == (64, 48, 3)
    upright = np.rot90(frames[0])  # the display matrix turns it 90° counter-clockwise
    assert _close(decoded[0].rgb, upright) and not _close(decoded[0].rgb, np.rot90(frames[0], -1))


def test_ten_bit_sdr_and_hdr_become_eight_bit_with_the_conversion_stated(tmp_path):
    frames = _frames(count=4)
    deep = tmp_path / "deep.mp4"
    scenes.write_clip(deep, frames, pix_fmt="yuv420p10le")
    conversions: dict = {}
    info, decoded = _decoded(deep, conversions=conversions)
    assert info.bit_depth == 10 and decoded[0].rgb.dtype == np.uint8
    assert "10-bit SDR" in conversions["colour"] and "rounded to 8 bits" in conversions["colour"]
    assert _close(decoded[0].rgb, frames[0])
    hdr = tmp_path / "hdr.mp4"
    scenes.write_clip(hdr, frames, pix_fmt="yuv420p10le",
                      colour={"color_trc": 16, "color_primaries": 9, "colorspace": 9})
    conversions = {}
    _, decoded = _decoded(hdr, conversions=conversions)
    assert "tone-mapped to SDR" in conversions["colour"] and "PQ" in conversions["colour"]
    assert decoded[0].rgb.dtype == np.uint8 and decoded[0].rgb.std() > 5


def test_recognised_by_content_not_name(tmp_path, plain_clip):
    renamed = tmp_path / "holiday.jpg"
    renamed.write_bytes(plain_clip.read_bytes())
    assert is_video_file(renamed)
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(scenes_png())
    assert not is_video_file(fake)
    with pytest.raises(UnsupportedVideoError, match="not a video"):
        probe(fake, LIMITS, VideoOptions())


def scenes_png() -> bytes:
    from conftest import png_bytes

    return png_bytes(_frames(count=1)[0])


def _sound_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=48000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def test_sound_only_and_empty_files_are_refused(tmp_path):
    sound = _sound_only(tmp_path / "sound.mp4")
    with pytest.raises(UnsupportedVideoError, match="no video track"):
        probe(sound, LIMITS, VideoOptions())
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()  # the header, with no frame after it
    with pytest.raises(InputError):
        _decoded(empty)


def test_truncated_and_corrupt_files_give_a_sentence(tmp_path, plain_clip):
    data = plain_clip.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedVideoError):
        _decoded(truncated)
    # Cut anywhere (the encoder's bytes differ from run to run, so one cut point is not enough): a sentence, or
    # whole frames. A cut inside the track's header once gave a track without a codec, and an AttributeError.
    for cut in range(16, len(data), max(1, len(data) // 96)):
        truncated.write_bytes(data[:cut])
        try:
            _, frames = _decoded(truncated)
        except InputError as error:
            assert str(error).endswith("."), (cut, error)
        else:
            assert all(frame.rgb.shape == (48, 64, 3) for frame in frames), cut
    corrupt = bytearray(data)
    rng = np.random.default_rng(0)
    for offset in rng.integers(len(data) // 3, len(data), 200):
        corrupt[offset] ^= 0xFF
    damaged = tmp_path / "corrupt.mp4"
    damaged.write_bytes(bytes(corrupt))
    try:
        _, frames = _decoded(damaged)
    except InputError as error:  # refused with a sentence ...
        assert str(error).endswith(".") and "Traceback" not in str(error)
    else:  # ... or decoded around the damage, every frame whole
        assert frames and all(frame.rgb.shape == (48, 64, 3) for frame in frames)


def test_limits_before_work(tmp_path, plain_clip):
    with pytest.raises(VideoTooLargeError, match="pixels a frame"):
        probe(plain_clip, VideoLimits(max_pixels=1000), VideoOptions())
    with pytest.raises(VideoTooLargeError, match="MB"):
        probe(plain_clip, VideoLimits(max_bytes=1000), VideoOptions())
    with pytest.raises(VideoTooLargeError, match="frames"):
        probe(plain_clip, VideoLimits(max_frames=5), VideoOptions())
    probe(plain_clip, VideoLimits(max_frames=5), VideoOptions(max_frames=5))  # asking for fewer is fine
    hours = tmp_path / "hours.mp4"  # a tiny file that declares an hour
    scenes.write_clip(hours, _frames(count=2), times=[0.0, 3600.0])
    assert hours.stat().st_size < 20_000
    with pytest.raises(VideoTooLargeError, match="limit is 600 s"):
        probe(hours, LIMITS, VideoOptions())


def test_limits_while_decoding(tmp_path, plain_clip):
    info = probe(plain_clip, LIMITS, VideoOptions())
    with pytest.raises(VideoTooLargeError, match="took longer"):
        list(decode(info, VideoOptions(), VideoLimits(deadline_seconds=1), deadline=0.0))
    with pytest.raises(VideoTooLargeError, match="frames"):  # a container that under-declares its frames
        list(decode(info, VideoOptions(), VideoLimits(max_frames=5)))


def test_a_resolution_jump_mid_stream(tmp_path):
    """Two MPEG-TS segments of different sizes, joined byte by byte: the stream changes resolution."""
    first, second = tmp_path / "a.ts", tmp_path / "b.ts"
    scenes.write_clip(first, _frames(64, 48, 6), codec="mpeg2video")
    scenes.write_clip(second, _frames(96, 72, 6), codec="mpeg2video")
    joined = tmp_path / "jump.ts"
    joined.write_bytes(first.read_bytes() + second.read_bytes())
    conversions: dict = {}
    _, frames = _decoded(joined, VideoOptions(max_fps=0), conversions=conversions)
    assert all(frame.rgb.shape == (48, 64, 3) for frame in frames)  # kept at the first size
    assert conversions["resized_frames"] >= 1
    info = probe(joined, VideoLimits(max_pixels=64 * 48), VideoOptions())
    with pytest.raises(VideoTooLargeError, match="96 x 72"):
        list(decode(info, VideoOptions(max_fps=0), VideoLimits(max_pixels=64 * 48)))


@pytest.mark.slow
def test_the_command_line_refuses_hostile_videos_with_one_line(tmp_path, capsys):
    from converter.__main__ import main

    hours = tmp_path / "hours.mp4"
    scenes.write_clip(hours, _frames(count=2), times=[0.0, 3600.0])
    for path, words in ((_sound_only(tmp_path / "sound.m4v"), "no video track"), (hours, "limit is 600 s")):
        target = tmp_path / f"{path.stem}_TB.mp4"
        assert main([str(path), "-o", str(target), "--depth", str(tmp_path / "unused.npz")]) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"error: {path}: ") and words in error and len(error.splitlines()) == 1
        assert not target.exists() and not list(tmp_path.glob(".*.part"))


def test_sample_tables_are_counted_before_ffmpeg_indexes_them(tmp_path, plain_clip, monkeypatch):
    """An MP4 whose stsz gives one size for all its samples declares any count in 20 bytes, and FFmpeg builds an
    index entry per sample as it opens the file (30 million: 360 MB): counted first (converter.video.boxes)."""
    import struct

    from converter.video import boxes

    data = bytearray(plain_clip.read_bytes())
    boxes.check_sample_tables(plain_clip)  # an honest clip: 8 samples
    at = data.find(b"stsz")
    data[at + 8:at + 16] = struct.pack(">II", 200, boxes.MAX_DECLARED_SAMPLES + 1)
    bomb = tmp_path / "bomb.mp4"
    bomb.write_bytes(bytes(data))
    with pytest.raises(VideoTooLargeError, match="declares 2,000,001 samples in one track"):
        probe(bomb, LIMITS, VideoOptions())
    monkeypatch.setattr(boxes, "MAX_BOXES", 5)  # a walk is bounded however many boxes a file holds
    with pytest.raises(VideoTooLargeError, match="more than 5 boxes"):
        boxes.check_sample_tables(plain_clip)
