"""The pipeline's device path (what CUDA runs) exercised on the CPU device: preprocessing and geometry as torch ops,
only the final arrays coming back, and concurrent conversions sharing forwards through the micro-batcher."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from batching_gate import hold_forwards

from converter import ConversionOptions, Converter
from converter.depth import get_depth_model


@pytest.fixture
def photo_pair():
    rows, columns = np.mgrid[0:90, 0:120]
    first = np.dstack([columns * 2, rows * 2, 255 - columns]).astype(np.uint8)
    second = np.dstack([255 - rows * 2, columns, (rows + columns) % 256]).astype(np.uint8)
    return first, second


@pytest.mark.parametrize("options", [
    ConversionOptions(),
    ConversionOptions(max_points=0, clean=False),
    ConversionOptions(mode="relief", normals=True),
    ConversionOptions(known_length=(10, 10, 100, 80, 1.5)),
])
def test_the_device_path_gives_the_cpu_paths_result(dpt_model, photo_pair, options):
    photo = photo_pair[0]
    on_cpu = Converter(model=dpt_model, device="cpu").convert(photo, options=options)
    on_device = Converter(model=dpt_model, device="cpu", on_device=True).convert(photo, options=options)
    assert "device_geometry" in on_device.timings and "device_geometry" not in on_cpu.timings
    assert on_device.units == on_cpu.units and on_device.intrinsics == on_cpu.intrinsics
    # The torch preprocessing matches the PIL processor to about one uint8 level, so the prediction differs a little.
    agree = np.mean(on_device.keep == on_cpu.keep)
    assert agree > 0.97
    both = on_device.keep & on_cpu.keep
    index_device = np.cumsum(on_device.keep.ravel()).reshape(on_device.keep.shape) - 1
    index_cpu = np.cumsum(on_cpu.keep.ravel()).reshape(on_cpu.keep.shape) - 1
    points_device = on_device.points[index_device[both]]
    points_cpu = on_cpu.points[index_cpu[both]]
    extent = np.ptp(points_cpu, axis=0).max()
    assert np.abs(points_device - points_cpu).max() < 0.02 * extent
    assert np.abs(on_device.colors[index_device[both]].astype(int) - on_cpu.colors[index_cpu[both]]).max() <= 1
    assert on_device.prediction.values.shape == on_cpu.prediction.values.shape == photo.shape[:2]
    assert on_device.metadata()["point_count"] == len(on_device.points)


def test_concurrent_conversions_share_forwards(dpt_model, photo_pair, monkeypatch):
    """Four threads at once through a converter with batch_size 4: fewer forwards than conversions, and each result
    equals its own conversion alone."""
    alone = [Converter(model=dpt_model, device="cpu", on_device=True).convert(picture) for picture in photo_pair]
    batched = Converter(model=dpt_model, device="cpu", on_device=True, batch_size=4, batch_wait_ms=200)
    model = get_depth_model(dpt_model, "cpu", tensor_preprocess=True, batch_size=4, batch_wait_ms=200)
    before = model.batcher.stats.forwards
    hold_forwards(monkeypatch, model.batcher, 4)  # the four meet however the threads are scheduled
    results: dict[int, object] = {}
    start = threading.Barrier(4)

    def convert(number: int) -> None:
        start.wait()
        results[number] = batched.convert(photo_pair[number % 2])

    threads = [threading.Thread(target=convert, args=(number,)) for number in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == [0, 1, 2, 3]
    assert model.batcher.stats.forwards - before <= 2
    for number, result in results.items():
        reference = alone[number % 2]
        np.testing.assert_allclose(result.prediction.native, reference.prediction.native, rtol=1e-4, atol=1e-5)
        assert np.array_equal(result.keep, reference.keep)


def test_the_device_path_aligns_like_the_cpu_path(tiny_models, photo_pair):
    """With ``align_to``, the model still runs and the geometry still happens on the device; the aligned metres are
    the CPU path's (the same fit of the same two predictions), and the points back-project that aligned depth."""
    relative, metric = str(tiny_models["depth_anything"]), str(tiny_models["depth_anything_metric"])
    options = ConversionOptions(max_points=0, clean=False)
    on_cpu = Converter(model=relative, device="cpu", align_to=metric).convert(photo_pair[0], options=options)
    on_device = Converter(model=relative, device="cpu", on_device=True, align_to=metric).convert(
        photo_pair[0], options=options)
    assert "device_geometry" in on_device.timings and "align" in on_device.timings
    assert on_device.alignment is not None and on_device.units == on_cpu.units == "metres"
    assert on_device.prediction.kind == "metric" and " aligned to " in on_device.prediction.source
    assert on_device.metadata()["alignment"]["metric_model"] == metric
    # The torch preprocessing differs from PIL's by about one uint8 level: the fits agree closely, not exactly.
    assert on_device.alignment.fit.scale == pytest.approx(on_cpu.alignment.fit.scale, rel=0.05)
    both = (on_device.depth > 0) & (on_cpu.depth > 0)
    assert both.mean() > 0.95
    assert np.median(np.abs(on_device.depth[both] / on_cpu.depth[both] - 1)) < 0.02
    # Every pixel is a point here (no cleaning, full grid): z is minus the aligned depth, row-major.
    kept = on_device.keep
    assert np.allclose(-on_device.points[:, 2], on_device.prediction.values[kept], rtol=1e-5)
