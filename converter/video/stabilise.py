"""Temporal stabilisation of per-frame depth: one scale for a whole shot, no flicker, a fresh start at each cut.

Depth models see each frame alone, so a relative model's disparity drifts in scale and shift from frame to frame (a
metric model's in scale). Each frame's inverse depth ``d`` is fitted by a robust scale and shift,
``s · d + t ≈ R``, to a running *reference* ``R`` made of the frames already stabilised (the RANSAC fit of
:func:`converter.align.fit_inverse_depth`, on means of blocks of at least 4 × 4 pixels): pixels whose colour changed since the previous
frame (moving things, newly revealed ones) are left out of the fit when enough others remain, and pixels that
disagree with the reference by more than ``THRESHOLD`` are outliers, not drag. The fitted frame ``a = s · d + t``
updates the reference (an average with it where they agree, a replacement where they do not, so the reference follows
the scene) and is smoothed in time: where it is within SMOOTHING_GATE of the reference, the output is
``(1 − SMOOTHING) · a + SMOOTHING · previous output`` (farther: a moving edge or a new surface, taken as it is). Metric
depth is fitted in scale only (t = 0). The fit runs on 4 × 4 block means (at least): per-pixel noise in the frame
would bias a least-squares slope towards 0, and that bias would add up from frame to frame.

A shot starts with its own units: relative disparity is mapped so that its 2nd and 98th percentiles become 1 and 2
(metric: 1 / z as it is); the stereo planes of the shot (the 2nd and 98th percentiles of that first stabilised frame)
stay fixed until the next cut, so rendered frames do not pulse. A cheap cut detector (a change of the grey-level
histogram of a thumbnail together with a change of the thumbnail itself) or a failed fit resets the reference: no frame
after a cut is ever fitted to a frame before it. Every frame's scale, shift, inlier share, shot and whether it reset
go into the result's metadata (:class:`FrameFit`).

Off (``stabilise=False``), every frame is normalised alone (relative: its own percentiles to [1, 2]), as single
images are. Arrays: disparity and outputs [H, W] float32, NaN where there is no depth; rgb [H, W, 3] uint8.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..align import fit_inverse_depth
from ..errors import OptionError

THRESHOLD = 0.05  # an inlier's stabilised inverse depth is within 5 % of the reference's
REFERENCE_WEIGHT = 0.5  # weight of the new frame in the reference where they agree
SMOOTHING = 0.5  # weight of the previous output in the output where the frame is near the reference ...
SMOOTHING_GATE = 0.1  # ... within 10 % of it (farther: a moving edge or a new surface, taken as it is)
FIT_PIXELS = 40_000  # the fit runs on at most about this many block means
BLOCK = 4  # the smallest block
MOTION_THRESHOLD = 0.08  # a grey-level change (0–1) above which a pixel counts as moved
MIN_INLIER_SHARE = 0.2  # a fit with fewer inliers than this starts a new shot
CUT_HISTOGRAM = 0.2  # half the L1 distance of two thumbnails' 32-bin grey histograms, above which ...
CUT_DIFFERENCE = 0.1  # ... together with a mean absolute thumbnail change above this, a frame is a cut
PERCENTILES = (2.0, 98.0)
_BLOCK_PIXELS = 1 << 15  # per-pixel work goes this many pixels at a time (its temporaries stay in the cache)


@dataclass(frozen=True)
class FrameFit:
    """How one frame was stabilised: ``stabilised = scale · disparity + shift`` (disparity: the model's, or 1 / z for
    metric depth); inlier_share: the share of compared pixels within THRESHOLD of the reference (None at a shot's
    first frame); shot: the index of its shot; shot_start: the frame its shot starts at (the first frame it may have
    been fitted to); reset: why this frame starts a shot ("start", "cut", "fit failed") or None."""

    index: int
    time: float
    scale: float
    shift: float
    inlier_share: float | None
    shot: int
    shot_start: int
    reset: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


class CutDetector:
    """Says whether a frame starts a new shot, from 64-pixel-wide grey thumbnails (see the module docstring)."""

    def __init__(self, histogram: float = CUT_HISTOGRAM, difference: float = CUT_DIFFERENCE):
        self.histogram, self.difference = histogram, difference
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, rgb: np.ndarray) -> bool:
        thumbnail = grey(rgb[:: max(1, rgb.shape[0] // 36), :: max(1, rgb.shape[1] // 64)])
        counts = np.histogram(thumbnail, bins=32, range=(0.0, 1.0))[0] / thumbnail.size
        previous, self._previous = self._previous, (thumbnail, counts)
        if previous is None:
            return False
        moved = 0.5 * float(np.abs(counts - previous[1]).sum())
        changed = float(np.mean(np.abs(thumbnail - previous[0])))
        return moved > self.histogram and changed > self.difference


class Stabiliser:
    """Feed frames in order: ``stabilised, fit = stabiliser(index, time, disparity, rgb)``. ``metric``: the
    disparity is 1 / metric depth (fitted in scale only). ``enabled=False``: every frame normalised alone."""

    def __init__(self, metric: bool, enabled: bool = True):
        self.metric, self.enabled = metric, enabled
        self.cuts = CutDetector()
        self.bounds: tuple[float, float] | None = None  # (far, near) of the shot, in stabilised units
        self._reference = self._output = self._grey = None
        self._shot, self._shot_start = -1, 0

    def __call__(self, index: int, time: float, disparity: np.ndarray, rgb: np.ndarray) -> tuple[np.ndarray, FrameFit]:
        disparity = np.asarray(disparity, dtype=np.float32)
        valid = np.isfinite(disparity)
        if not valid.all():
            disparity = np.where(valid, disparity, np.float32(np.nan))  # inf and −inf are no depth either
        cut = self.cuts(rgb)
        if not self.enabled:
            scale, shift = self._normaliser(disparity, valid)
            self._shot, self._shot_start = index, index
            output = _affine(disparity, scale, shift)
            self.bounds = None  # each frame's own percentiles
            return output, FrameFit(index, time, scale, shift, None, self._shot, index, "unstabilised")
        shade = _block_means(grey(rgb), self._block(disparity))
        reason = "start" if self._reference is None else "cut" if cut else None
        fit = None
        if reason is None:
            fit = self._fit(disparity, shade)
            if fit is None or fit.inlier_share < MIN_INLIER_SHARE:
                reason, fit = "fit failed", None
        self._grey = shade
        if reason is not None:
            return self._start_shot(index, time, disparity, valid, reason)
        self._output, self._reference = _follow(_affine(disparity, fit.scale, fit.shift), valid, self._reference,
                                                self._output)
        return self._output, FrameFit(index, time, float(fit.scale), float(fit.shift), float(fit.inlier_share),
                                      self._shot, self._shot_start)

    def _start_shot(self, index, time, disparity, valid, reason) -> tuple[np.ndarray, FrameFit]:
        scale, shift = self._normaliser(disparity, valid)
        output = _affine(disparity, scale, shift)
        self._reference, self._output = output.copy(), output
        self._shot, self._shot_start = self._shot + 1, index
        positive = output[np.isfinite(output) & (output > 0)]
        if positive.size:
            far, near = np.percentile(positive, PERCENTILES)
            self.bounds = (float(far), float(near)) if near > far else None
        else:
            self.bounds = None
        return output, FrameFit(index, time, scale, shift, None, self._shot, index, reason)

    def _normaliser(self, disparity, valid) -> tuple[float, float]:
        """(scale, shift) giving a shot's units: relative 2nd–98th percentiles → [1, 2]; metric 1 / z as is."""
        if self.metric or not valid.any():
            return 1.0, 0.0
        low, high = np.percentile(disparity[valid], PERCENTILES)
        if not high > low:
            return 1.0, float(1.0 - low)
        scale = 1.0 / float(high - low)
        return scale, float(1.0 - low * scale)

    def _fit(self, disparity, shade):
        block = self._block(disparity)
        x = _block_means(disparity, block)
        reference = _block_means(self._reference, block)
        mask = np.isfinite(x) & np.isfinite(reference) & (reference > 0)
        if self._grey is not None and self._grey.shape == shade.shape:
            still = np.abs(shade - self._grey) <= MOTION_THRESHOLD
            if (mask & still).mean() >= 0.25 * mask.mean():
                mask &= still
        with np.errstate(divide="ignore", invalid="ignore"):
            target = np.where(mask, 1.0 / reference, np.nan)
        try:
            return fit_inverse_depth(np.nan_to_num(x), target, mask, threshold=THRESHOLD, iterations=128,
                                     shift=not self.metric)
        except OptionError:
            return None

    @staticmethod
    def _block(array) -> int:
        """The side of the blocks the fit averages over: at least BLOCK (per-pixel noise in the frame would bias
        a least-squares slope towards 0, and the bias would add up from frame to frame), more on large frames so
        that about FIT_PIXELS blocks remain."""
        return max(BLOCK, int(np.ceil(np.sqrt(array.shape[0] * array.shape[1] / FIT_PIXELS))))


_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32) / np.float32(255.0)


def grey(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 → [H, W] float32 luma in [0, 1] (BT.709 weights on the coded values)."""
    return np.asarray(rgb, np.float32) @ _LUMA


def _block_means(values: np.ndarray, block: int) -> np.ndarray:
    """[H, W] → [H // block, W // block] means of block × block squares (NaN: a block with no finite value)."""
    finite = np.isfinite(values)
    if finite.all():  # a picture's grey, or depth everywhere: no NaN to leave out
        return _block_sums(values, block) * np.float32(1.0 / (block * block))
    counts = _block_sums(finite.astype(np.float32), block)
    sums = _block_sums(np.where(finite, values, np.float32(0)), block)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.float32(np.nan)).astype(np.float32)


def _block_sums(values: np.ndarray, block: int) -> np.ndarray:
    """[H, W] float32 → [H // block, W // block] float32 sums, as ``block`` strided adds of columns and then of
    rows (a reduction over the small axes of a [h, block, w, block] view is three times slower)."""
    height, width = (values.shape[0] // block) * block, (values.shape[1] // block) * block
    values = values[:height, :width]
    columns = values[:, 0::block].copy()
    for offset in range(1, block):
        columns += values[:, offset::block]
    sums = columns[0::block].copy()
    for offset in range(1, block):
        sums += columns[offset::block]
    return sums


def _follow(aligned: np.ndarray, valid: np.ndarray, reference: np.ndarray,
            previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(output, new reference) of a fitted frame ``aligned`` (see the module docstring), [H, W] float32 each,
    computed a block of rows at a time so that the temporaries stay in the cache."""
    output, updated = np.empty_like(aligned), np.empty_like(aligned)
    rows_per_block = max(1, _BLOCK_PIXELS // max(1, aligned.shape[1]))
    for start in range(0, len(aligned), rows_per_block):
        rows = slice(start, start + rows_per_block)
        new, old, last = aligned[rows], reference[rows], previous[rows]
        with np.errstate(invalid="ignore"):
            difference = np.abs(new - old)
            agree = difference <= THRESHOLD * old
            smooth = (difference <= SMOOTHING_GATE * old) & np.isfinite(last)
        output[rows] = np.where(smooth, (1 - SMOOTHING) * new + SMOOTHING * last, new)
        updated[rows] = np.where(agree, (1 - REFERENCE_WEIGHT) * old + REFERENCE_WEIGHT * new,
                                 np.where(valid[rows], new, old))
    return output, updated


def _affine(disparity: np.ndarray, scale: float, shift: float) -> np.ndarray:
    return (np.float32(scale) * disparity + np.float32(shift)).astype(np.float32)
