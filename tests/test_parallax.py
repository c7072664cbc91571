"""Parallax clips: frames of a camera on a small arc, and the MP4 they are encoded into, read back independently."""

from __future__ import annotations

import struct

import av
import numpy as np
import pytest

from converter.errors import InputError, OptionError, OutputError
from converter.exports.parallax import camera_path, frame_size, parallax_frames, video_codec, write_mp4

HEIGHT, WIDTH = 60, 100
TOP, BOTTOM, LEFT, RIGHT = 20, 40, 40, 60
SQUARE = (250, 200, 10)


def scene(height: int = HEIGHT, width: int = WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """A smooth far wall (10 m) with a near square (2 m): smooth so that H.264 keeps it close to the original."""
    rows, columns = np.mgrid[0:height, 0:width]
    rgb = np.dstack([40 + columns * 150 // width, 40 + rows * 150 // height, np.full_like(rows, 120)]).astype(np.uint8)
    depth = np.full((height, width), 10.0, dtype=np.float32)
    rgb[TOP:BOTTOM, LEFT:RIGHT] = SQUARE
    depth[TOP:BOTTOM, LEFT:RIGHT] = 2.0
    return rgb, depth


def square_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    rows, columns = np.nonzero((frame == SQUARE).all(axis=2))
    return rows.min(), rows.max() + 1, columns.min(), columns.max() + 1


def test_frames_follow_the_arc_and_have_no_holes():
    rgb, depth = scene()
    # amplitude 0.16 × 100 px = 16 px between far and near plane; the square (parallax +0.5) moves 8 px at full swing.
    frames = list(parallax_frames(rgb, depth, seconds=1.0, fps=24, amplitude=0.16))
    assert len(frames) == 24
    np.testing.assert_array_equal(frames[0], rgb)  # the loop starts at the original viewpoint
    # A quarter of the loop: camera at the right end of the swing, risen by a quarter of the amplitude.
    assert square_box(frames[6]) == (TOP + 2, BOTTOM + 2, LEFT - 8, RIGHT - 8)
    assert square_box(frames[18]) == (TOP + 2, BOTTOM + 2, LEFT + 8, RIGHT + 8)
    for frame in frames:
        assert frame.shape == rgb.shape and frame.dtype == np.uint8
        assert (frame.max(axis=2) >= 40).all()  # no black holes anywhere
        assert (frame == SQUARE).all(axis=2).sum() == (BOTTOM - TOP) * (RIGHT - LEFT)  # the square stays rigid


def test_camera_path_is_a_closed_loop_starting_at_the_original_view():
    path = camera_path(48)
    assert path.shape == (48, 2)
    np.testing.assert_allclose(path[0], [0.0, 0.0])
    assert path[:, 0].max() == pytest.approx(1.0) and path[:, 0].min() == pytest.approx(-1.0)
    assert 0.0 <= path[:, 1].min() and path[:, 1].max() == pytest.approx(0.25)
    step = np.linalg.norm(np.diff(np.vstack([path, path[:1]]), axis=0), axis=1)
    assert step.max() < 0.2  # smooth, including the wrap-around from the last frame to the first


def test_frames_are_even_sized_and_capped():
    rgb, depth = scene(61, 301)
    frames = list(parallax_frames(rgb, depth, seconds=0.25, fps=8, max_side=128))
    assert len(frames) == 2
    assert frames[0].shape == (26, 128, 3) == frame_size(61, 301, 128) + (3,)
    small = list(parallax_frames(rgb[:41, :51], depth[:41, :51], seconds=0.125, fps=8))
    assert small[0].shape == (40, 50, 3)


def mp4_boxes(data: bytes, start: int = 0, end: int | None = None):
    """Yield (type, payload_start, box_end) of the ISO-BMFF boxes in data[start:end]: a reader independent of FFmpeg."""
    end = len(data) if end is None else end
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[start + 8:start + 16])[0]
            header = 16
        elif size == 0:
            size = end - start
        yield kind.decode("latin-1"), start + header, start + size
        start += size


def find_box(data: bytes, path: list[str], start: int = 0, end: int | None = None) -> tuple[int, int]:
    for kind, payload, box_end in mp4_boxes(data, start, end):
        if kind == path[0]:
            return (payload, box_end) if len(path) == 1 else find_box(data, path[1:], payload, box_end)
    raise AssertionError(f"no {path[0]} box")


def test_mp4_is_h264_with_the_index_first_and_reads_back(tmp_path):
    rgb, depth = scene()
    target = tmp_path / "photo.mp4"
    count = write_mp4(target, parallax_frames(rgb, depth, seconds=2.0, fps=12, amplitude=0.16), fps=12)
    assert count == 24
    assert [p.name for p in tmp_path.iterdir()] == ["photo.mp4"]  # no temporary left behind

    data = target.read_bytes()
    top_level = [kind for kind, _, _ in mp4_boxes(data)]
    assert top_level[0] == "ftyp"
    assert top_level.index("moov") < top_level.index("mdat")  # faststart: browsers can play while downloading
    stbl = ["moov", "trak", "mdia", "minf", "stbl"]
    stsd, _ = find_box(data, stbl + ["stsd"])
    entry = next(mp4_boxes(data, stsd + 8))  # skip version, flags and entry count
    assert entry[0] == "avc1"
    assert struct.unpack(">HH", data[entry[1] + 24:entry[1] + 28]) == (WIDTH, HEIGHT)
    stsz, _ = find_box(data, stbl + ["stsz"])
    assert struct.unpack(">I", data[stsz + 8:stsz + 12])[0] == 24  # samples = frames
    mvhd, _ = find_box(data, ["moov", "mvhd"])
    assert data[mvhd] == 0
    timescale, duration = struct.unpack(">II", data[mvhd + 12:mvhd + 20])
    assert duration / timescale == pytest.approx(2.0, abs=0.1)

    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == (WIDTH, HEIGHT)
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == 12
        assert stream.codec_context.colorspace == 1 and stream.codec_context.color_range == 1  # BT.709, limited
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(decoded) == 24
    assert np.abs(decoded[0].astype(np.int16) - rgb).mean() < 4.0  # the first frame is the picture itself
    # A quarter of the loop later the square has moved 8 px left and 2 px down, as in the frames that went in.
    near_square = (np.abs(decoded[6].astype(np.int16) - SQUARE) < 40).all(axis=2)
    rows, columns = np.nonzero(near_square)
    assert abs(columns.min() - (LEFT - 8)) <= 1 and abs(rows.min() - (TOP + 2)) <= 1


def test_h264_is_available_in_this_pyav():
    assert video_codec() == "libx264"


def test_mp4_crops_odd_frames_to_even(tmp_path):
    frames = [np.full((33, 45, 3), value, dtype=np.uint8) for value in (30, 130, 230)]
    assert write_mp4(tmp_path / "odd.mp4", frames, fps=24) == 3
    with av.open(str(tmp_path / "odd.mp4")) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert [frame.shape for frame in decoded] == [(32, 44, 3)] * 3
    assert [round(float(frame.mean())) for frame in decoded] == pytest.approx([30, 130, 230], abs=3)


def test_mp4_failures_leave_no_file(tmp_path):
    with pytest.raises(InputError):
        write_mp4(tmp_path / "empty.mp4", [], fps=24)
    frames = [np.zeros((16, 16, 3), np.uint8), np.zeros((16, 18, 3), np.uint8)]
    with pytest.raises(InputError):
        write_mp4(tmp_path / "mixed.mp4", frames, fps=24)
    with pytest.raises(OptionError):
        write_mp4(tmp_path / "rate.mp4", frames[:1], fps=0)
    with pytest.raises(OutputError):
        write_mp4(tmp_path / "missing" / "clip.mp4", frames[:1], fps=24)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "options", [{"seconds": 0}, {"seconds": float("nan")}, {"fps": 500}, {"amplitude": -0.1}, {"max_side": 4}]
)
def test_bad_clip_options_get_a_sentence(options):
    rgb, depth = scene()
    with pytest.raises(OptionError) as raised:
        next(parallax_frames(rgb, depth, **options))
    assert str(raised.value).endswith(".")


def test_a_receding_floor_stretched_by_the_camera_has_no_streaks():
    # A floor whose green grows with the row (nearer at the bottom) and a near disc: the camera's rise stretches
    # the floor vertically (one-row cracks) while its sideways move empties a strip at the border. Cracks must take
    # the rows above or below, not a copy of something across the picture.
    height, width = 120, 160
    rows, columns = np.mgrid[0:height, 0:width]
    rgb = np.dstack([columns, 20 + rows, np.full_like(rows, 100)]).astype(np.uint8)
    depth = (2.0 + 8.0 * (1.0 - rows / height)).astype(np.float32)
    disc = (rows - 50) ** 2 + (columns - 100) ** 2 < 25**2
    rgb[disc] = (250, 250, 250)
    depth[disc] = 1.5
    for frame in list(parallax_frames(rgb, depth, seconds=1.0, fps=24, amplitude=0.2))[4:9]:
        green = frame[:, :60, 1].astype(np.int16)  # clear of the disc and of its disocclusion
        assert (np.diff(green, axis=0) >= -2).all()
        assert (frame[:, :60, 2] == 100).all()
