"""Micro-batching: concurrent requests in one process share one forward on the device.

A GPU runs a batch of 8 in little more than the time of one, but a web process receives images one at a time from
several threads. :class:`MicroBatcher` lets each thread call ``predict(pixel_values)`` as if alone; a single worker
thread collects up to ``max_batch`` requests (waiting at most ``max_wait_ms`` after the first), groups them by input
shape (Depth Anything keeps the aspect ratio, so shapes differ), runs one forward per group and hands each caller
its own slice. An error in a forward reaches the callers of that forward only. The forward is any back-end's
(:meth:`converter.depth.backend.DepthBackend.forward`): :class:`BatchedBackend` wraps a whole back-end.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from .backend import DepthBackend


class BatcherClosed(RuntimeError):
    """The batcher was closed before (or while) a request could run."""


@dataclass
class BatchStats:
    """Counts for tests and benchmarks: forwards run, requests served and the size of each forward's batch."""

    forwards: int = 0
    requests: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class MicroBatcher:
    """Batch concurrent single-image calls of ``forward`` (pixel_values [B, 3, h, w] → {name: tensor [B, ...]},
    a back-end's forward).

    ``predict(pixel_values [1, 3, h, w]) → {name: tensor [1, ...]}``: that image's slice of every output.
    ``max_batch`` 1 means no batching (still serialised on the worker thread); ``max_wait_ms`` bounds how long a
    request waits for company.
    """

    def __init__(self, forward, max_batch: int = 8, max_wait_ms: float = 2.0):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self.forward = forward
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_ms) / 1000.0
        self.stats = BatchStats()
        self._requests: queue.Queue = queue.Queue()
        self._closed = threading.Event()
        self._stats_lock = threading.Lock()
        self._worker = threading.Thread(target=self._run, name="depth-micro-batcher", daemon=True)
        self._worker.start()

    def predict(self, pixel_values, timeout: float | None = None):
        """One image's outputs {name: [1, ...]}; blocks until its batch has run. Raises what the forward raised."""
        return self.submit(pixel_values).result(timeout)

    def submit(self, pixel_values) -> Future:
        """Queue one image (pixel_values [1, 3, h, w]); the Future gives its outputs {name: [1, ...]}."""
        if pixel_values.ndim != 4 or pixel_values.shape[0] != 1:
            raise ValueError("pixel_values must be [1, 3, h, w]")
        future: Future = Future()
        if self._closed.is_set():
            future.set_exception(BatcherClosed("the depth batcher is closed"))
            return future
        self._requests.put((pixel_values, future))
        if self._closed.is_set():  # closed while we queued: make sure nobody waits forever
            self._fail_pending()
        return future

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop the worker after the batch in flight; requests still queued fail with BatcherClosed."""
        self._closed.set()
        self._requests.put(None)  # wake the worker
        self._worker.join(timeout)
        self._fail_pending()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ------------------------------------------------------------------------------------------------- worker

    def _run(self) -> None:
        while not self._closed.is_set():
            first = self._requests.get()
            if first is None:
                continue
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    item = self._requests.get(timeout=remaining) if remaining > 0 else self._requests.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    break
                batch.append(item)
            self._run_batch(batch)

    def _run_batch(self, batch) -> None:
        groups: dict[tuple, list] = {}
        for pixel_values, future in batch:
            if future.set_running_or_notify_cancel():
                key = (tuple(pixel_values.shape), pixel_values.dtype, str(pixel_values.device))
                groups.setdefault(key, []).append((pixel_values, future))
        for group in groups.values():
            self._forward(group)

    def _forward(self, group) -> None:
        import torch

        try:
            inputs = group[0][0] if len(group) == 1 else torch.cat([values for values, _ in group])
            outputs = self.forward(inputs)
        except BaseException as error:  # noqa: BLE001 - handed to exactly this forward's callers
            for _, future in group:
                future.set_exception(error)
            return
        with self._stats_lock:
            self.stats.forwards += 1
            self.stats.requests += len(group)
            self.stats.batch_sizes.append(len(group))
        for index, (_, future) in enumerate(group):
            future.set_result({name: value[index:index + 1] for name, value in outputs.items()})

    def _fail_pending(self) -> None:
        while True:
            try:
                item = self._requests.get_nowait()
            except queue.Empty:
                return
            if item is not None and item[1].set_running_or_notify_cancel():
                item[1].set_exception(BatcherClosed("the depth batcher is closed"))


class BatchedBackend(DepthBackend):
    """Any back-end whose forwards are shared by concurrent requests: ``forward`` goes through a
    :class:`MicroBatcher`; everything else (prepare, postprocess, attributes) is the wrapped back-end's."""

    def __init__(self, backend: DepthBackend, max_batch: int, max_wait_ms: float):
        self.backend = backend
        self.batcher = MicroBatcher(backend.forward, max_batch, max_wait_ms)

    def __getattr__(self, name):  # model_id, kind, device, engine, precision, processor, model, ...
        return getattr(self.backend, name)

    def prepare(self, image):
        return self.backend.prepare(image)

    def forward(self, pixel_values) -> dict:
        return self.batcher.predict(pixel_values)

    def postprocess(self, outputs: dict, size: tuple[int, int]):
        return self.backend.postprocess(outputs, size)

    def finish(self, outputs: dict, size: tuple[int, int]):
        return self.backend.finish(outputs, size)

    def describe(self) -> dict:
        return self.backend.describe()  # the wrapped engine's own account (an OpenVINO fallback says why)

    def close(self) -> None:
        """Stop the micro-batcher's worker, then the wrapped back-end."""
        self.batcher.close()
        self.backend.close()
