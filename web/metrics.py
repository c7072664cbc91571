"""Prometheus metrics for the operator, served at ``/metrics``.

Two kinds, kept apart so that both are right with several processes:

- Events (jobs ended, stage and export durations, uploads refused) are counters and histograms recorded where they
  happen: web processes and Celery worker processes alike. With several processes on one machine (gunicorn
  ``--workers N``, Celery prefork children) set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder before they start
  (``make run`` and ``make worker`` do): prometheus-client then keeps each process's values in that folder and a
  scrape adds them up. A web instance serves its machine's web processes at ``/metrics``; a Celery worker serves its
  machine's worker processes on ``WORKER_METRICS_PORT`` (when set). Prometheus scrapes both and sums across hosts.
- State (jobs by status, queue length, workers ready) is read from the shared state at scrape time (the job records
  on the shared folder, the queue, the workers' published states), so any instance answers the same, and nothing is
  double counted by adding instances up: these are labelled gauges, to be read with ``max``, not ``sum``.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

PREFIX = "image_to_3d"
SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

JOBS_ENDED = Counter(f"{PREFIX}_jobs_ended", "Conversion attempts that ended, by status and error code",
                     ["status", "code"])
STAGE_SECONDS = Histogram(f"{PREFIX}_stage_seconds", "Time spent in each stage of a conversion", ["stage"],
                          buckets=SECONDS)
EXPORT_SECONDS = Histogram(f"{PREFIX}_export_seconds", "Time to write one later download, by kind and status",
                           ["kind", "status"], buckets=SECONDS)
UPLOADS_REFUSED = Counter(f"{PREFIX}_uploads_refused", "Uploads (POSTs) refused, by reason (the error code)",
                          ["reason"])
STATE_CACHE_SECONDS = 5.0  # a scrape reads every job record at most this often


class StateCollector:
    """Jobs by status, queue length and workers ready, read from the service's shared state at scrape time."""

    def __init__(self, service):
        self.service = service
        self._read_at, self._counts = 0.0, {}

    def collect(self):
        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "Job records on the shared folder, by status", labels=["status"])
        for status, count in sorted(self._job_counts().items()):
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(f"{PREFIX}_queue_length", "Conversions accepted and not yet started",
                                value=self._job_counts().get("queued", 0))
        yield GaugeMetricFamily(f"{PREFIX}_workers_ready", "Conversion workers whose model is ready",
                                value=self.service.workers_ready())

    def _job_counts(self) -> dict:
        if time.monotonic() - self._read_at > STATE_CACHE_SECONDS:
            self._counts, self._read_at = self.service.store.count_by_status(), time.monotonic()
        return self._counts


def registry_for(service) -> CollectorRegistry:
    """The registry a scrape of this web process reads: this machine's processes' events, and the shared state."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        for collector in (JOBS_ENDED, STAGE_SECONDS, EXPORT_SECONDS, UPLOADS_REFUSED):
            registry.register(collector)
    registry.register(StateCollector(service))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_worker_metrics(port: int) -> None:
    """A Celery worker's own exporter: its machine's worker processes' events (multiprocess mode when set)."""
    from prometheus_client import start_http_server

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, registry=registry)
    else:
        start_http_server(port, registry=REGISTRY)
