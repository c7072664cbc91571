"""The video pipeline end to end (converter/video/): every output from a clip with sound, read back by independent
readers (ffprobe, PyAV, Pillow, plyfile); tiny real-architecture models through the torch engine; the command line;
failures that leave no partial file."""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import zipfile

import av
import numpy as np
import pytest
import video_scenes as scenes
from PIL import Image
from plyfile import PlyData

from converter import Converter
from converter.__main__ import main
from converter.errors import DamagedVideoError
from converter.video import VideoOptions, convert_video
from converter.video.kinds import VIDEO_OUTPUTS
from converter.video.pipeline import WRITER_NICENESS

ALL = {kind: f"out{spec.suffix}" for kind, spec in VIDEO_OUTPUTS.items()}


def _depth_zip(depths) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, np.stack([1.0 / depth for depth in depths]).astype(np.float32))
    return buffer.getvalue()


def _probe(path) -> dict:
    """ffprobe's own account of a file: its streams, frames counted by decoding."""
    text = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json",
                           str(path)], capture_output=True, text=True, check=True, timeout=60).stdout
    return json.loads(text)


def _audio_packets(path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(packet) for packet in container.demux(container.streams.audio[0]) if packet.size]


@pytest.fixture(scope="module")
def clip_with_sound(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sound")
    frames, depths, _ = scenes.clip(64, 48, 12)
    path = folder / "clip.mp4"
    scenes.write_clip(path, frames, fps=24, audio_seconds=0.5)
    return path, depths


def test_two_outputs_quickly(tmp_path):
    """The fast tier's one run of the whole pipeline: half SBS and the sidecar, read back by PyAV."""
    frames, depths, _ = scenes.clip(48, 32, 6)
    source = tmp_path / "small.mp4"
    scenes.write_clip(source, frames, fps=12)
    with open(source, "rb") as handle:  # a file, as the web will hand it over
        result = convert_video(handle, [tmp_path / "small_Half_SBS.mp4", tmp_path / "small.json"],
                               depth=_depth_zip(depths), options=VideoOptions(depth_kind="disparity"))
    with av.open(str(tmp_path / "small_Half_SBS.mp4")) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == 6 and decoded[0].shape == (32, 48, 3)
    sidecar = json.loads((tmp_path / "small.json").read_text())
    assert sidecar["frames"] == result.frames == 6 and sidecar["camera"]["source"] == "default:fov60"
    assert [fit["index"] for fit in sidecar["stabilisation"]["frames"]] == list(range(6))
    assert not list(tmp_path.glob(".*.part"))


def test_the_writer_runs_at_the_lowest_priority_beside_the_forward(tmp_path):
    """The writer (and the decoder) give way to the forward's threads: progress is reported from the writer."""
    frames, depths, _ = scenes.clip(48, 32, 3)
    source = tmp_path / "small.mp4"
    scenes.write_clip(source, frames, fps=12)
    priorities = []

    def report(_progress):
        priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    convert_video(source, tmp_path / "small.depth.mp4", depth=_depth_zip(depths),
                  options=VideoOptions(depth_kind="disparity"), progress=report)
    assert priorities == [WRITER_NICENESS] * 3 and WRITER_NICENESS == 19


@pytest.mark.slow
def test_every_output_opens_with_the_frames_duration_and_sound_expected(tmp_path, clip_with_sound):
    source, depths = clip_with_sound
    targets = {kind: tmp_path / name for kind, name in ALL.items()}
    result = convert_video(source, targets, depth=_depth_zip(depths), options=VideoOptions(depth_kind="disparity"))
    original = _probe(source)
    duration = float(original["format"]["duration"])
    source_audio = _audio_packets(source)
    sizes = {"sbs_full": (128, 48), "sbs_half": (64, 48), "tb": (64, 48), "anaglyph": (64, 48),
             "depth_video": (64, 48)}
    for kind, (width, height) in sizes.items():
        report = _probe(targets[kind])
        video = next(s for s in report["streams"] if s["codec_type"] == "video")
        audio = next(s for s in report["streams"] if s["codec_type"] == "audio")
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", width, height), kind
        assert int(video["nb_read_frames"]) == 12, kind
        assert abs(float(report["format"]["duration"]) - duration) <= 1 / 24, kind
        assert audio["codec_name"] == "aac" and _audio_packets(targets[kind]) == source_audio, kind  # bit-identical
        assert video["pix_fmt"] == ("yuv444p" if kind == "anaglyph" else "yuv420p"), kind
    with zipfile.ZipFile(targets["depth16"]) as archive:
        pngs = sorted(name for name in archive.namelist() if name.endswith(".png"))
        assert len(pngs) == 12
        picture = Image.open(io.BytesIO(archive.read(pngs[3])))
        assert picture.mode.startswith("I;16") and picture.size == (64, 48)
        assert np.asarray(picture).max() > 60000  # the near plane of the shot
        description = json.loads(archive.read("depth16.json"))
        assert description["frames"] == 12 and len(description["frame_times_s"]) == 12
    with zipfile.ZipFile(targets["ply_sequence"]) as archive:
        plys = sorted(name for name in archive.namelist() if name.endswith(".ply"))
        assert len(plys) == 12
        cloud = PlyData.read(io.BytesIO(archive.read(plys[0])))["vertex"]
        assert 0 < cloud.count <= VideoOptions().ply_points and np.all(np.asarray(cloud["z"]) < 0)
    sidecar = json.loads(targets["json"].read_text())
    assert sidecar == json.loads(json.dumps(result.metadata()))
    assert sidecar["audio"] == {"codec": "aac", "handling": "stream-copied"}
    assert {"scale", "shift", "inlier_share", "shot", "reset"} <= set(sidecar["stabilisation"]["frames"][5])
    assert sidecar["colour_conversion"].startswith("8-bit")


@pytest.mark.slow
def test_variable_frame_rate_and_rotation_reach_the_outputs(tmp_path):
    times = [0.0, 0.04, 0.05, 0.2, 0.21, 0.5]
    frames, depths, _ = scenes.clip(64, 48, len(times))
    source = tmp_path / "phone.mp4"
    scenes.write_clip(source, frames, times=times, rotation=90)
    upright = np.stack([np.rot90(1.0 / depth) for depth in depths]).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, upright)
    target = tmp_path / "phone_LRF_Full_SBS.mp4"
    convert_video(source, {"sbs_full": target}, depth=buffer.getvalue(),
                  options=VideoOptions(depth_kind="disparity", max_fps=0))
    text = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries",
                           "frame=pts_time,width,height", "-of", "json", str(target)],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    shown = json.loads(text)["frames"]
    assert [float(frame["pts_time"]) for frame in shown] == pytest.approx(times, abs=1e-3)
    assert {(frame["width"], frame["height"]) for frame in shown} == {(96, 64)}  # two upright 48 × 64 eyes


@pytest.mark.slow
def test_tiny_models_through_the_torch_engine(tmp_path, tiny_models):
    frames, _, _ = scenes.clip(64, 48, 12, cut_at=6)
    source = tmp_path / "cut.mp4"
    scenes.write_clip(source, frames, fps=24)
    seen = []
    relative = Converter(model=str(tiny_models["dpt_hybrid"]), device="cpu", engine="torch").convert_video(
        source, [tmp_path / "a.anaglyph.mp4", tmp_path / "a.json"], progress=seen.append)
    assert [progress.frames for progress in seen] == list(range(1, 13)) and seen[-1].expected == 12
    info = relative.metadata()
    assert info["depth_kind"] == "inverse_relative" and info["engine"]["engine"] == "torch"
    fits = info["stabilisation"]["frames"]
    assert fits[6]["reset"] == "cut" and all(fit["shot_start"] == 6 for fit in fits[6:])
    metric = Converter(model=str(tiny_models["depth_pro"]), device="cpu", engine="torch").convert_video(
        source, {"depth_video": tmp_path / "b.depth.mp4"}).metadata()
    assert metric["units"] == "metres" and metric["camera"]["source"].startswith("model:")
    assert all(fit["shift"] == 0.0 for fit in metric["stabilisation"]["frames"])  # metric: scale only
    with av.open(str(tmp_path / "b.depth.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12


@pytest.mark.slow
def test_the_command_line(tmp_path, clip_with_sound, capsys):
    source, depths = clip_with_sound
    depth = tmp_path / "depth.npz"
    depth.write_bytes(_depth_zip(depths))
    target = tmp_path / "clip_LRF_Full_SBS.mp4"
    assert main([str(source), "-o", str(target), "--depth", str(depth), "--depth-kind", "disparity",
                 "--max-frames", "5"]) == 0
    assert "5 frames" in capsys.readouterr().out
    assert int(_probe(target)["streams"][0]["nb_read_frames"]) == 5
    assert json.loads((tmp_path / "clip.json").read_text())["limits_hit"] == ["max_frames (option)"]
    assert main([str(source), "--format", "tb,depth16", "-o", str(tmp_path / "base"), "--depth", str(depth),
                 "--depth-kind", "disparity"]) == 0
    assert (tmp_path / "base_TB.mp4").is_file() and (tmp_path / "base.depth16.zip").is_file()


@pytest.mark.slow
def test_a_broken_video_leaves_a_sentence_and_no_file(tmp_path, clip_with_sound, capsys):
    source, depths = clip_with_sound
    data = source.read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[: len(data) // 2])
    outputs = tmp_path / "out"
    outputs.mkdir()
    with pytest.raises(DamagedVideoError):
        convert_video(broken, {kind: outputs / name for kind, name in ALL.items()}, depth=_depth_zip(depths),
                      options=VideoOptions(depth_kind="disparity"))
    assert list(outputs.iterdir()) == []
    assert main([str(broken), "-o", str(outputs / "x_TB.mp4"), "--depth", str(tmp_path / "none.npz")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "damaged" in error and "Traceback" not in error
    assert list(outputs.iterdir()) == []
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    assert main([str(text), "-o", str(outputs / "x_TB.mp4")]) == 1  # by content: not a video, not an image
    assert "not a supported image" in capsys.readouterr().err


@pytest.mark.slow
def test_sound_that_mp4_does_not_take_is_re_encoded(tmp_path):
    """A Matroska source with PCM sound: the MP4 gets AAC of the same length."""
    frames, depths, _ = scenes.clip(64, 48, 12)
    source = tmp_path / "pcm.mkv"
    with av.open(str(source), "w") as container:
        video = container.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("pcm_s16le", rate=48000)
        sound.layout = "stereo"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        for start in range(0, 24_000, 1024):
            chunk = av.AudioFrame.from_ndarray(np.zeros((1, 2048), np.int16), format="s16", layout="stereo")
            chunk.sample_rate, chunk.pts = 48000, start
            for packet in sound.encode(chunk):
                container.mux(packet)
        for packet in sound.encode(None):
            container.mux(packet)
    target = tmp_path / "pcm_TB.mp4"
    info = convert_video(source, [target], depth=_depth_zip(depths), options=VideoOptions(depth_kind="disparity"))
    assert info.metadata()["audio"] == {"codec": "pcm_s16le", "handling": "re-encoded as AAC"}
    report = _probe(target)
    assert {stream["codec_name"] for stream in report["streams"]} == {"h264", "aac"}
    assert abs(float(report["format"]["duration"]) - float(_probe(source)["format"]["duration"])) <= 1 / 24


@pytest.mark.slow
def test_the_openvino_engine_runs_a_video(tmp_path, tiny_models):
    frames, _, _ = scenes.clip(64, 48, 6)
    source = tmp_path / "clip.mp4"
    scenes.write_clip(source, frames, fps=24)
    result = Converter(model=str(tiny_models["dpt_hybrid"]), device="cpu", engine="openvino").convert_video(
        source, {"sbs_half": tmp_path / "clip_Half_SBS.mp4"})
    assert result.metadata()["engine"]["engine"] == "openvino" and result.frames == 6
    with av.open(str(tmp_path / "clip_Half_SBS.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6
