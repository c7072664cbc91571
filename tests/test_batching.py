"""Micro-batching (converter.depth.batching) with tiny real models on the CPU: fewer forwards than requests, each
caller gets its own image's prediction, shapes are grouped, errors reach only their own callers, latency bounded.

No assertion here depends on how the machine schedules threads: where a test needs requests to meet in one forward,
the forwards are held until every request is queued (``hold_forwards``), and the waiting window is checked on the
batcher's own clock, which the test sets. How long batching takes is measured in bench/, not asserted."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from batching_gate import hold_forwards
from PIL import Image

from converter.depth import batching, get_depth_model
from converter.depth.batching import BatcherClosed, MicroBatcher


@pytest.fixture(scope="module")
def model(dpt_model):
    """The forward of a loaded back-end (what a MicroBatcher batches)."""
    return get_depth_model(dpt_model, device="cpu").forward


def inputs(count: int, height: int = 64, width: int = 64, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, height, width, generator=generator) for _ in range(count)]


def single(model, pixel_values):
    return model(pixel_values)["predicted_depth"]


def call_at_once(batcher, requests):
    """Each request from its own thread, released together; results (or exceptions) in request order."""
    results = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def call(index):
        barrier.wait()
        try:
            results[index] = batcher.predict(requests[index], timeout=60)["predicted_depth"]
        except Exception as error:  # noqa: BLE001 - compared below
            results[index] = error

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.slow  # seconds of threads and forwards
def test_eight_threads_share_forwards_and_get_their_own_results(model, monkeypatch):
    requests = inputs(8)
    with MicroBatcher(model, max_batch=8, max_wait_ms=300) as batcher:
        hold_forwards(monkeypatch, batcher, 8)
        results = call_at_once(batcher, requests)
        stats = batcher.stats
    assert stats.requests == 8 and sum(stats.batch_sizes) == 8
    assert stats.forwards <= 2 and max(stats.batch_sizes) >= 4
    for pixel_values, result in zip(requests, results):
        expected = single(model, pixel_values)
        assert result.shape == expected.shape == (1, 64, 64)
        torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    assert not torch.equal(results[0], results[1])  # different images, different answers


@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
def test_mixed_shapes_run_in_separate_forwards(tiny_models):
    model = get_depth_model(str(tiny_models["depth_anything"]), device="cpu").forward
    requests = inputs(3, 56, 84, seed=1) + inputs(3, 84, 56, seed=2)
    with MicroBatcher(model, max_batch=8, max_wait_ms=300) as batcher:
        results = call_at_once(batcher, requests)
        stats = batcher.stats
    assert stats.requests == 6 and stats.forwards >= 2
    for pixel_values, result in zip(requests, results):
        expected = single(model, pixel_values)
        assert result.shape == expected.shape
        torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    assert results[0].shape != results[-1].shape


@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
def test_an_error_reaches_only_its_own_forwards_callers(model):
    good = inputs(3)
    bad = torch.randn(1, 5, 64, 64)  # five channels: the model's first convolution refuses it
    with MicroBatcher(model, max_batch=8, max_wait_ms=300) as batcher:
        results = call_at_once(batcher, good + [bad])
        after = batcher.predict(good[0], timeout=60)["predicted_depth"]  # the worker survived
    assert isinstance(results[3], ValueError) and "channel" in str(results[3])
    for pixel_values, result in zip(good, results[:3]):
        assert isinstance(result, torch.Tensor)
        torch.testing.assert_close(result, single(model, pixel_values), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(after, single(model, good[0]), rtol=1e-4, atol=1e-6)


def batcher_clock(monkeypatch, *readings: float) -> None:
    """The batcher's clock (converter.depth.batching's time.monotonic) gives ``readings``, then the last one for
    ever: time passes for the batcher only as the test says."""
    values = list(readings)

    def monotonic() -> float:
        return values.pop(0) if len(values) > 1 else values[0]

    monkeypatch.setattr(batching, "time", SimpleNamespace(monotonic=monotonic))


HOUR_MS = 3_600_000


@pytest.mark.slow  # waits out one real 0.2 s window
def test_a_lone_request_waits_for_company_at_most_max_wait(model, monkeypatch):
    pixel_values = inputs(1)[0]
    # A real window: a lone request is served, and not before its window has passed (the lower bound cannot flake:
    # the worker's queue never returns early; the upper bound is the hang guard, predict's 60 s).
    with MicroBatcher(model, max_batch=8, max_wait_ms=200) as batcher:
        started = time.monotonic()
        batcher.predict(pixel_values, timeout=60)
        assert time.monotonic() - started >= 0.2 and batcher.stats.batch_sizes == [1]
    # While the window is open (an hour, on a clock that stands still) company is waited for and joins the forward.
    batcher_clock(monkeypatch, 0.0)
    with MicroBatcher(model, max_batch=2, max_wait_ms=HOUR_MS) as batcher:
        first = batcher.submit(pixel_values)
        second = batcher.submit(inputs(1, seed=1)[0])
        outputs = first.result(60), second.result(60)
        assert batcher.stats.batch_sizes == [2] and not torch.equal(*(o["predicted_depth"] for o in outputs))
    # Once the batcher's clock says the window is over, a lone request runs: the wait is bounded by the window,
    # not by the batch filling up (were it, this predict would hang and fail after 60 s).
    batcher_clock(monkeypatch, 0.0, 3600.0)
    with MicroBatcher(model, max_batch=8, max_wait_ms=HOUR_MS) as batcher:
        batcher.predict(pixel_values, timeout=60)
        assert batcher.stats.batch_sizes == [1]
    # max_wait_ms=0 does not wait at all, even on a clock that never moves.
    batcher_clock(monkeypatch, 0.0)
    with MicroBatcher(model, max_batch=8, max_wait_ms=0) as batcher:
        batcher.predict(pixel_values, timeout=60)
        assert batcher.stats.batch_sizes == [1]


def test_closed_batcher_refuses_requests(model):
    batcher = MicroBatcher(model, max_batch=4, max_wait_ms=0)
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.predict(inputs(1)[0], timeout=5)
    with pytest.raises(ValueError):
        MicroBatcher(model, max_batch=0)


# Micro-batching wraps any back-end: the OpenVINO one converts the model first (seconds), hence slow.
@pytest.mark.parametrize("engine", ["torch", pytest.param("openvino", marks=pytest.mark.slow)])
def test_depth_model_with_batching_gives_the_single_image_predictions(dpt_model, engine, monkeypatch):
    plain = get_depth_model(dpt_model, device="cpu", engine=engine)
    batched = get_depth_model(dpt_model, device="cpu", engine=engine, batch_size=4, batch_wait_ms=300)
    assert batched is not plain and batched.batcher is not None and batched.engine == engine
    assert get_depth_model(dpt_model, device="cpu", engine=engine, batch_size=4, batch_wait_ms=300) is batched
    before = batched.batcher.stats.forwards
    hold_forwards(monkeypatch, batched.batcher, 4)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)) for _ in range(4)]
    results = [None] * 4
    barrier = threading.Barrier(4)

    def call(index):
        barrier.wait()
        results[index] = batched.predict(images[index])

    threads = [threading.Thread(target=call, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.undo()  # the cached model's batcher forwards as before
    assert batched.batcher.stats.forwards - before <= 2
    for image, result in zip(images, results):
        expected = plain.predict(image)
        assert result.values.shape == (90, 120)
        scale = float(np.abs(expected.values).max())
        np.testing.assert_allclose(result.values, expected.values, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(result.native, expected.native, rtol=1e-4, atol=1e-5 * scale)
