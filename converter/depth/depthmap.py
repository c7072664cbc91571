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
    focal_px: the camera the model estimated, as a focal length in pixels at the size of ``values`` (None: the
        model gives none). Metric depth made with it scales with it: see :func:`converter.geometry.depth_for_focal`.
    """

    values: np.ndarray
    native: np.ndarray
    kind: str
    source: str = ""
    focal_px: float | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown depth kind {self.kind!r}")

    def resized(self, width: int, height: int) -> "DepthMap":
        """The same prediction at another image size: a model's output is resized from its native map with bicubic
        interpolation, as the transformers pipeline does; a user's map with nearest neighbours (no invented depth)."""
        if self.values.shape == (height, width):
            return self
        if self.source == "user":
            from ..geometry import nearest_indices

            h, w = self.values.shape
            values = self.values[np.ix_(nearest_indices(h, height), nearest_indices(w, width))]
        else:
            import torch

            from ..torch_kernels import values_at

            native = torch.from_numpy(np.ascontiguousarray(self.native, dtype=np.float32))
            resized = values_at(native, height, width)
            values = (resized.clone() if resized is native else resized).numpy()  # never an alias of native
        focal_px = None if self.focal_px is None else self.focal_px * width / self.values.shape[1]
        return DepthMap(values=values, native=self.native, kind=self.kind, source=self.source, focal_px=focal_px)
