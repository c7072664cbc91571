"""The geometry stage of a 1 MP conversion on the CPU (``build_point_cloud``: depth units, cleaning, back-projection,
colours), best of N, for a relative and a metric prediction. No model: the prediction is synthetic. Also the paper
background's mask on a 3 MP drawing (tests/test_relief.py checks its result, not its time).

    .venv/bin/python bench/geometry_speed.py [repeats]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from converter import ConversionOptions, DepthMap, LoadedImage
from converter.images import load_image, paper_mask
from converter.pipeline import build_point_cloud


def scene(kind: str, size: int = 1000) -> tuple[LoadedImage, DepthMap]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    values = (1.0 + x + 0.5 * np.sin(6 * y) + 0.05 * rng.random((size, size))).astype(np.float32)
    if kind == "metric":
        values = 1.0 / values
    native = values[::3, ::3].copy()
    return LoadedImage(rgb=rgb, alpha=None), DepthMap(values=values, native=native, kind=kind, source="bench")


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


if __name__ == "__main__":
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    for kind, options in (("inverse_relative", ConversionOptions(max_points=0)),
                          ("metric", ConversionOptions(max_points=0, normals=True, drop_background_percent=10)),
                          ("inverse_relative", ConversionOptions(max_points=0, mode="relief"))):
        image, prediction = scene(kind)
        seconds = best_of(repeats, lambda: build_point_cloud(image, prediction, options))
        print(f"{kind:17s} {options.mode:11s} normals={options.normals!s:5s} drop={options.drop_background_percent:g}: "
              f"{seconds * 1000:7.1f} ms (best of {repeats})")
    rng = np.random.default_rng(0)
    paper = (232 + rng.integers(-8, 9, (1500, 2000, 3))).astype(np.uint8)
    paper[300:1200, 400:1600] = 40
    paper[500:1000, 600:1400] = 235
    drawing = load_image(paper)
    print(f"paper_mask 3 MP drawing: {best_of(repeats, lambda: paper_mask(drawing)) * 1000:7.1f} ms (best of {repeats})")
