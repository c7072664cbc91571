"""A deterministic arrival order for tests of micro-batching (converter.depth.batching.MicroBatcher).

Whether concurrent requests meet in one forward must not depend on how the machine schedules the threads that send
them: ``hold_forwards`` keeps the batcher's forwards waiting until a given number of requests is queued.
"""

from __future__ import annotations

import threading


def hold_forwards(monkeypatch, batcher, count: int) -> None:
    """The batcher's forwards wait until ``count`` requests are queued. The first forward takes whatever company
    came in its window; every other request is queued by the time the worker looks again, so all of them join one
    second forward: at most two forwards for ``count`` requests (at most ``max_batch`` each), however the threads
    were scheduled. ``monkeypatch`` undoes it."""
    queued, lock, everyone = [0], threading.Lock(), threading.Event()
    submit, forward = batcher.submit, batcher.forward

    def counting_submit(pixel_values):
        future = submit(pixel_values)  # queued when submit returns
        with lock:
            queued[0] += 1
            if queued[0] >= count:
                everyone.set()
        return future

    def held_forward(pixel_values):
        assert everyone.wait(60), "the requests never all arrived"  # a hang guard
        return forward(pixel_values)

    monkeypatch.setattr(batcher, "submit", counting_submit)
    monkeypatch.setattr(batcher, "forward", held_forward)
