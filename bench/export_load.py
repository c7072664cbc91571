"""Timing goal of queued exports (moved out of tests/test_export_load.py, whose assertions are timing-free): with
the 24 heavy downloads of tests/test_export_load.py being written (MP4, simplified GLB, USDZ and zipped OBJ of
three jobs on each of two embedded gunicorn instances, tiny DPT-Hybrid), ``/healthz`` and a new upload answer
within 0.5 s at the 99th percentile on both instances.

Run by hand (never part of ``make test``):

    .venv/bin/python bench/export_load.py          # prints the figures; exit status 1 when the goal is missed
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import model_factory  # noqa: E402  (tests/: the tiny real-architecture models)
from test_export_load import (  # noqa: E402
    P99_LIMIT_S,
    converted,
    embedded_instances,
    fetch_all_while_probing,
    heavy_urls,
    p99,
)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="export-load-") as folder:
        folder = Path(folder)
        model = model_factory.dpt_hybrid(folder / "dpt-hybrid")
        (folder / "servers").mkdir()
        with embedded_instances(model, folder / "servers", holds=False) as servers:
            views = [converted(server) for server in servers]
            latencies = {"healthz": [], "upload": []}
            took = fetch_all_while_probing(servers, heavy_urls(servers, views), latencies)
    figures = {"healthz_p99_s": round(p99(latencies["healthz"]), 3), "upload_p99_s": round(p99(latencies["upload"]), 3),
               "probes": len(latencies["healthz"]), "exports_s": round(took, 1), "goal_p99_s": P99_LIMIT_S}
    print(figures)
    return 0 if max(figures["healthz_p99_s"], figures["upload_p99_s"]) < P99_LIMIT_S else 1


if __name__ == "__main__":
    sys.exit(main())
