"""What a depth source returns, with the kind of quantity it is."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INVERSE_RELATIVE = "inverse_relative"  # relative disparity: larger is nearer, unknown scale and shift
METRIC = "metric"  # depth along the optical axis, in metres
KINDS = (INVERSE_RELATIVE, METRIC)


@dataclass(frozen=True)
class DepthMap:
    """A depth prediction.

    values: [H, W] float32 at the image's size (what the transformers pipeline returns as ``predicted_depth``).
    native: [h, w] float32 at the source's own resolution (the model's output grid, or the depth file's), where
        discontinuities are sharp; edges are found there rather than in the smoothed, resized map.
    kind: INVERSE_RELATIVE or METRIC.
    """

    values: np.ndarray
    native: np.ndarray
    kind: str
    source: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown depth kind {self.kind!r}")
