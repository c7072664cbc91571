"""A clip's depth predicted in chunks and joined (converter/video/chunks.py): the plan covers every frame once, the
join removes a drift between chunks (known truth: chunks written by hand with a scale and shift each), and a clip
predicted in chunks by a tiny real model converts to the same frames as when streamed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import video_scenes as scenes

from converter import Converter
from converter.depth import INVERSE_RELATIVE
from converter.errors import ConversionError, OptionError
from converter.video import VideoLimits, VideoOptions, convert_video
from converter.video.chunks import Chunk, ChunkedPredictions, plan_chunks, predict_chunk
from converter.video.decode import Frame


def _write_chunk(path, times, disparities, start, lead):
    with open(path, "wb") as handle:
        np.savez(handle, times=np.asarray(times, np.float64), natives=np.stack(disparities).astype(np.float16),
                 focals=np.full(len(times), np.nan), kind=np.asarray(INVERSE_RELATIVE), start=np.float64(start),
                 lead=np.float64(lead))


def test_the_plan_covers_the_clip_once_with_leads(tmp_path):
    frames, _, _ = scenes.clip(32, 24, 30)
    source = tmp_path / "clip.mp4"
    scenes.write_clip(source, frames, fps=10)
    chunks, expected = plan_chunks(source, VideoOptions(), VideoLimits(), chunk_frames=8, overlap=2)
    assert expected == 30 and len(chunks) == 4
    assert chunks[0].start == 0 and chunks[0].lead == 0
    assert all(abs(a.end - b.start) < 1e-9 for a, b in zip(chunks, chunks[1:]))  # no gap, no double
    # Each chunk predicts (30 + 3 · 2) / 4 = 9 frames: the first owns 9, the others 7 and a lead of 2.
    assert [round(chunk.start * 10) for chunk in chunks] == [0, 9, 16, 23]
    assert all(abs(chunk.lead - 0.2) < 1e-9 for chunk in chunks[1:])
    assert chunks[-1].end is None
    single, _ = plan_chunks(source, VideoOptions(), VideoLimits(), chunk_frames=30, overlap=2)
    assert single == [Chunk(0, 0.0, None, 0.0)]
    with pytest.raises(OptionError):
        plan_chunks(source, VideoOptions(), VideoLimits(), chunk_frames=4, overlap=4)


def test_the_join_removes_each_chunks_own_scale_and_shift(tmp_path):
    """Truth: a disparity ramp that changes a little every frame; each chunk carries its own (s, t)."""
    rate, per_chunk, overlap = 10.0, 6, 2
    truth = [np.outer(np.linspace(1, 2, 12), np.ones(16)) * (1 + 0.01 * i) for i in range(18)]
    drift = [(1.0, 0.0), (1.3, 0.4), (0.7, -0.2)]
    paths = []
    for k, (scale, shift) in enumerate(drift):
        first = max(0, k * per_chunk - (overlap if k else 0))
        indices = range(first, min(18, (k + 1) * per_chunk))
        path = tmp_path / f"{k}.npz"
        _write_chunk(path, [i / rate for i in indices], [scale * truth[i] + shift for i in indices],
                     start=k * per_chunk / rate, lead=overlap / rate if k else 0.0)
        paths.append(path)
    joined = ChunkedPredictions(paths, model_name="test")
    values = [joined.for_frame(Frame(i, i / rate, np.zeros((12, 16, 3), np.uint8))).values for i in range(18)]
    for i in range(18):
        np.testing.assert_allclose(values[i], truth[i], rtol=2e-3, atol=2e-3)  # float16 storage
    joins = joined.describe()["joins"]
    assert [join["chunk"] for join in joins] == [0, 1, 2] and joins[1]["frames"] == overlap
    assert joins[1]["scale"] == pytest.approx(1 / 1.3, rel=1e-2) and joins[2]["inlier_share"] > 0.9


def test_a_missing_chunk_is_a_sentence(tmp_path):
    rate = 10.0
    _write_chunk(tmp_path / "0.npz", [0.0, 0.1], [np.ones((4, 4))] * 2, 0.0, 0.0)
    (tmp_path / "1.npz").write_bytes(b"not an npz")
    joined = ChunkedPredictions([tmp_path / "0.npz", tmp_path / "1.npz"])
    with pytest.raises(ConversionError, match="missing"):
        joined.for_frame(Frame(2, 2 / rate, np.zeros((4, 4, 3), np.uint8)))
    with pytest.raises(ConversionError, match="missing"):
        ChunkedPredictions([tmp_path / "1.npz"])


@pytest.mark.slow
def test_a_clip_predicted_in_chunks_converts_every_frame(tmp_path, dpt_model):
    frames, _, _ = scenes.clip(48, 32, 14)
    source = tmp_path / "clip.mp4"
    scenes.write_clip(source, frames, fps=12)
    options, limits = VideoOptions(), VideoLimits()
    converter = Converter(model=dpt_model, engine="torch")
    chunks, _ = plan_chunks(source, options, limits, chunk_frames=5, overlap=2)
    assert len(chunks) == 3
    counted = []
    paths = []
    for chunk in reversed(chunks):  # any order: each chunk is on its own
        paths.insert(0, tmp_path / f"chunk{chunk.index}.npz")
        own = predict_chunk(source, chunk, converter.depth_model, options, limits, paths[0], progress=counted.append)
        assert own == (6 if chunk.index == 0 else 4)  # (14 + 2 · 2) / 3 = 6 predicted each
    joined = ChunkedPredictions(paths, model_name=dpt_model, engine=converter.depth_model.describe())
    result = convert_video(source, [tmp_path / "out.depth.mp4", tmp_path / "out.json"], predictions=joined,
                           model_name=dpt_model, options=options, limits=limits)
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert result.frames == 14 == sidecar["frames"]
    assert sidecar["model"] == dpt_model and sidecar["chunks"]["count"] == 3
    assert [join["frames"] for join in sidecar["chunks"]["joins"]] == [0, 2, 2]
    assert sidecar["engine"]["engine"] == "torch"


def test_the_writing_pass_reads_a_chunk_only_once_it_needs_it(tmp_path):
    """With the plan and ``ready``, the frames of chunk 0 are given before chunk 1 is asked for (it is written only
    then: a chunk still being predicted elsewhere), and chunk 1 is asked for at its lead, for the cross-fade."""
    rate, overlap = 10.0, 2
    plan = [Chunk(0, 0.0, 0.6, 0.0), Chunk(1, 0.6, None, overlap / rate)]
    truth = [np.full((4, 6), 1.0 + 0.1 * i) for i in range(10)]
    _write_chunk(tmp_path / "0.npz", [i / rate for i in range(6)], truth[:6], 0.0, 0.0)
    asked = []

    def ready(index):
        asked.append((index, len(given)))
        if index == 1 and not (tmp_path / "1.npz").exists():
            _write_chunk(tmp_path / "1.npz", [i / rate for i in range(4, 10)], truth[4:], 0.6, overlap / rate)

    given = []
    joined = ChunkedPredictions([tmp_path / "0.npz", tmp_path / "1.npz"], chunks=plan, ready=ready,
                                predicted_by=lambda: ["here", "there"])
    for i in range(10):
        given.append(joined.for_frame(Frame(i, i / rate, np.zeros((4, 6, 3), np.uint8))).values)
    assert asked[0] == (0, 0) and asked[1] == (1, 4)  # chunk 1 first asked for at frame 4, its lead's first
    for i in range(10):
        np.testing.assert_allclose(given[i], truth[i], rtol=2e-3)
    assert joined.describe()["predicted_by"] == ["here", "there"]


def test_a_failed_chunk_stops_the_others_and_is_what_every_wait_raises(tmp_path):
    """Embedded chunk threads: chunk 1 fails at once; chunk 0, stopped by it at its next frame, is not what is
    reported: waiting for either gives chunk 1's sentence, and nothing is left running."""
    import threading

    from web.jobs.video.run import ChunkPool

    started = threading.Event()
    frames_of_zero = []

    def predict_one(chunk, target, progress):
        if chunk.index == 1:
            started.wait(10)
            raise ConversionError("The depth model failed on frame 7.")
        started.set()
        for frame in range(1, 12_000):  # a minute at most: it stops at the frame after chunk 1 failed
            frames_of_zero.append(frame)
            progress(frame)
            threading.Event().wait(0.005)
        target.write_bytes(b"never")

    plan = [Chunk(0, 0.0, 1.0, 0.0), Chunk(1, 1.0, None, 0.1)]
    files = ChunkPool(2).start(tmp_path, plan, 20, predict_one)
    try:
        for index in (0, 1):
            with pytest.raises(ConversionError, match="frame 7"):
                files.ready(index)
    finally:
        files.close()
    assert frames_of_zero[-1] < 11_999 and not files.paths[0].exists()
