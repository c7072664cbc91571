"""Metric depth from two models: a sharp relative model's depth fitted to a metric model's.

Relative models (MiDaS, DPT, Depth Anything) give disparity up to an unknown scale and shift: their output ``d`` is
affine in inverse depth, ``1 / z ≈ s · d + t``. A metric model (Depth Anything Metric, ZoeDepth, Depth Pro) gives
``z`` in metres, often blurrier. Fitting ``s`` and ``t`` so that the relative model's inverse depth matches the
metric model's gives metres with the relative model's detail.

The fit is robust, because the two models disagree where one of them is wrong (sky, glass, thin structures) and
those pixels must not drag it: **RANSAC** on two-pixel samples (a deterministic generator) picks the (s, t) with
the most pixels whose inverse depth agrees within ``threshold`` (relative), then an ordinary least-squares refit on
those inliers, repeated until the inlier set settles. The residual reported is the median relative depth
difference over the inliers, in percent. Shapes: every map here is [H, W] float32 at the image's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .depth import INVERSE_RELATIVE, METRIC, DepthMap
from .errors import OptionError

DEFAULT_THRESHOLD = 0.05  # an inlier's inverse depth is within 5 % of the metric model's
DEFAULT_ITERATIONS = 256
SAMPLE_PIXELS = 20_000  # RANSAC scores hypotheses on this many random pixels; the refit uses all inliers
_HYPOTHESES_AT_ONCE = 4  # hypotheses scored together (see _inlier_counts)
ALIGNED_TO = " aligned to "  # an aligned DepthMap's source: "<relative model> aligned to <metric model>"
DISAGREEMENT_RANGE = 0.25  # the disagreement picture's colour scale spans ±25 %


@dataclass(frozen=True)
class AlignmentFit:
    """1 / z_metric ≈ scale · d + shift, where d is the relative model's disparity (or a metric model's 1 / z).

    inlier_share: the share of compared pixels within the threshold; residual_percent: the median relative depth
    difference over the inliers, in percent; pixels: how many pixels were compared."""

    scale: float
    shift: float
    inlier_share: float
    residual_percent: float
    pixels: int
    threshold: float = DEFAULT_THRESHOLD
    method: str = "RANSAC on inverse depth, least-squares refit on the inliers"

    def to_dict(self) -> dict:
        return {"scale": self.scale, "shift": self.shift, "inlier_share": self.inlier_share,
                "residual_percent": self.residual_percent, "pixels": self.pixels,
                "inlier_threshold_percent": 100.0 * self.threshold, "method": self.method}


@dataclass
class Alignment:
    """What an aligned conversion adds: the fit, the two models' raw predictions (kept for the depth cache) and
    the disagreement map: (z_aligned − z_metric) / z_metric [H, W] float32, NaN where either has no depth."""

    fit: AlignmentFit
    relative: DepthMap
    reference: DepthMap
    disagreement: np.ndarray

    def describe(self) -> dict:
        """For result.json."""
        valid = np.isfinite(self.disagreement)
        share = float(np.mean(np.abs(self.disagreement[valid]) > DISAGREEMENT_RANGE)) if valid.any() else 0.0
        return {**self.fit.to_dict(), "relative_model": self.relative.source, "metric_model": self.reference.source,
                "disagreement_over_25_percent_share": share}


def inverse_depth(prediction: DepthMap, values: np.ndarray | None = None) -> np.ndarray:
    """A prediction's values as something affine in inverse depth: disparity as is, metric depth inverted (NaN
    where there is no depth)."""
    values = prediction.values if values is None else values
    if prediction.kind == INVERSE_RELATIVE:
        return np.where(np.isfinite(values), values, np.nan).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(values) & (values > 0), 1.0 / values, np.nan).astype(np.float32)


def fit_inverse_depth(disparity: np.ndarray, metric_depth: np.ndarray, mask: np.ndarray | None = None, *,
                      threshold: float = DEFAULT_THRESHOLD, iterations: int = DEFAULT_ITERATIONS,
                      seed: int = 0, shift: bool = True) -> AlignmentFit:
    """Robust (s, t) with 1 / metric_depth ≈ s · disparity + t (see the module docstring).

    disparity, metric_depth: [H, W]; mask: [H, W] bool of pixels that may be compared (None: all with finite
    values and metric depth > 0). ``shift=False``: scale only (t = 0; one-pixel hypotheses), for two metric maps."""
    target = np.full(metric_depth.shape, np.nan, np.float64)
    positive = np.isfinite(metric_depth) & (metric_depth > 0)
    target[positive] = 1.0 / metric_depth[positive]
    usable = positive & np.isfinite(disparity)
    if mask is not None:
        usable &= mask
    x, y = disparity[usable].astype(np.float64), target[usable]
    if len(x) < 16 or np.ptp(x) <= 0:
        raise OptionError("The two depth maps have too few pixels in common (or a flat relative map) to be aligned.")
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(x), size=min(len(x), SAMPLE_PIXELS), replace=False)
    xs, ys = x[sample], y[sample]
    pairs = rng.integers(0, len(xs), size=(iterations, 2))
    x1, x2, y1, y2 = xs[pairs[:, 0]], xs[pairs[:, 1]], ys[pairs[:, 0]], ys[pairs[:, 1]]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        scales = (y2 - y1) / (x2 - x1) if shift else y1 / x1
        shifts = y1 - scales * x1 if shift else np.zeros_like(scales)
    good = np.isfinite(scales) & np.isfinite(shifts) & (scales > 0)  # larger disparity is nearer: s > 0
    if not good.any():
        raise OptionError("The relative depth map does not follow the metric one anywhere: it cannot be aligned.")
    scales, shifts = scales[good], shifts[good]
    best = int(np.argmax(_inlier_counts(scales, shifts, xs, ys, threshold)))
    scale, offset = float(scales[best]), float(shifts[best])
    inliers = np.abs(scale * x + offset - y) <= threshold * y
    for _ in range(10):  # refit on the inliers until they settle
        if inliers.sum() < 2:
            break
        if shift:
            line = _line(x[inliers], y[inliers])
            if line is None:  # every inlier at one x: the hypothesis stands
                break
            scale, offset = line
        else:
            kept = x[inliers]
            scale, offset = float(np.sum(kept * y[inliers]) / np.sum(kept * kept)), 0.0
        updated = np.abs(scale * x + offset - y) <= threshold * y
        if np.array_equal(updated, inliers):
            break
        inliers = updated
    with np.errstate(divide="ignore", invalid="ignore"):
        depth_error = np.abs(y[inliers] / (scale * x[inliers] + offset) - 1.0)
    residual = float(np.median(depth_error)) * 100.0 if inliers.any() else float("nan")
    return AlignmentFit(scale=float(scale), shift=float(offset), inlier_share=float(inliers.mean()),
                        residual_percent=residual, pixels=int(len(x)), threshold=threshold)


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float] | None:
    """Least-squares (s, t) of y ≈ s · x + t from the centred sums; None when every x is the same.

    No BLAS call (``@``, lstsq) here: OpenBLAS splits a long dot product over its own threads, which then spin at
    full priority for a while afterwards, and lstsq held the interpreter's lock; in a video, the writer thread's fits
    took cores and the lock from the forward (90 ms of a core a frame)."""
    mean_x, mean_y = float(x.mean()), float(y.mean())
    centred = x - mean_x
    spread = float(np.sum(centred * centred))
    if not spread > 0:
        return None
    scale = float(np.sum(centred * (y - mean_y))) / spread
    return scale, mean_y - scale * mean_x


def _inlier_counts(scales, shifts, xs, ys, threshold: float) -> np.ndarray:
    """[hypotheses] int: how many pixels each (scale, shift) fits within ``threshold`` · y, |s · x + t − y| ≤
    threshold · y. Scored a few hypotheses at a time in one reused buffer, which stays in the cache (three times
    faster than 64 at a time)."""
    tolerance = threshold * ys
    counts = np.empty(len(scales), np.int64)
    errors = np.empty((_HYPOTHESES_AT_ONCE, len(xs)), xs.dtype)
    for start in range(0, len(scales), _HYPOTHESES_AT_ONCE):
        chunk = slice(start, start + _HYPOTHESES_AT_ONCE)
        error = errors[:len(scales[chunk])]
        np.multiply(scales[chunk, None], xs, out=error)
        error += shifts[chunk, None]
        error -= ys
        np.abs(error, out=error)
        counts[chunk] = np.count_nonzero(error <= tolerance, axis=1)
    return counts


def camera_model(source: str) -> str:
    """The model whose camera an aligned prediction carries: the metric one (the only one that may estimate it)."""
    return source.rsplit(ALIGNED_TO, 1)[-1]


def apply_fit(disparity: np.ndarray, fit: AlignmentFit) -> np.ndarray:
    """Metric depth [H, W] float32 from disparity: 1 / (s · d + t); 0 (no depth) where that is not positive."""
    inverse = fit.scale * disparity.astype(np.float64) + fit.shift
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.where(np.isfinite(inverse) & (inverse > 0), 1.0 / inverse, 0.0)
    return depth.astype(np.float32)


def align(relative: DepthMap, reference: DepthMap, opaque: np.ndarray | None = None) -> tuple[DepthMap, Alignment]:
    """The relative prediction in metres, fitted to the metric ``reference`` (both at the same image size).

    Returns the aligned DepthMap (metric, the relative model's detail, the reference's camera if it estimated one)
    and the :class:`Alignment`. ``opaque``: [H, W] bool, pixels of the subject (transparent ones are not compared).
    """
    if reference.kind != METRIC:
        raise OptionError(f"'{reference.source}' gives relative depth: align to a metric model (one that gives "
                          "metres, such as Depth Anything V2 Metric, ZoeDepth or Depth Pro).")
    if reference.values.shape != relative.values.shape:
        height, width = relative.values.shape
        reference = reference.resized(width, height)
    disparity = inverse_depth(relative)
    fit = fit_inverse_depth(disparity, reference.values, opaque)
    values = apply_fit(disparity, fit)
    native = apply_fit(inverse_depth(relative, relative.native), fit)
    aligned = DepthMap(values=values, native=native, kind=METRIC,
                       source=f"{relative.source}{ALIGNED_TO}{reference.source}", focal_px=reference.focal_px)
    with np.errstate(divide="ignore", invalid="ignore"):
        disagreement = np.where((values > 0) & (reference.values > 0), values / reference.values - 1.0, np.nan)
    return aligned, Alignment(fit=fit, relative=relative, reference=reference,
                              disagreement=disagreement.astype(np.float32))


def disagreement_picture(disagreement: np.ndarray, reference_name: str = "the metric model"):
    """The disagreement map as an RGB PIL image with its colour scale and legend below: blue where the aligned
    depth is nearer than the metric model's, red where farther, white where they agree, grey where not compared;
    the scale is clipped at ±25 %."""
    from PIL import Image, ImageDraw

    height, width = disagreement.shape
    colours = _diverging(np.clip(np.nan_to_num(disagreement) / DISAGREEMENT_RANGE, -1, 1))
    colours[~np.isfinite(disagreement)] = (128, 128, 128)
    legend_width = max(width, 320)
    canvas = Image.new("RGB", (legend_width, height + 58), (255, 255, 255))
    canvas.paste(Image.fromarray(colours, "RGB"), ((legend_width - width) // 2, 0))
    bar_left, bar_right, top = 20, legend_width - 20, height + 8
    ramp = np.linspace(-1, 1, bar_right - bar_left)
    bar = np.repeat(_diverging(ramp)[None], 10, axis=0)
    canvas.paste(Image.fromarray(bar, "RGB"), (bar_left, top))
    draw = ImageDraw.Draw(canvas)
    percent = int(round(DISAGREEMENT_RANGE * 100))
    for label, x in ((f"-{percent}% nearer", bar_left), ("0", (bar_left + bar_right) // 2),
                     (f"+{percent}% farther", bar_right)):
        size = draw.textlength(label)
        draw.text((min(max(x - size / 2, 0), legend_width - size), top + 12), label, fill=(0, 0, 0))
    caption = f"aligned depth vs {reference_name}; grey: not compared"
    draw.text((max((legend_width - draw.textlength(caption)) / 2, 0), top + 30), caption, fill=(0, 0, 0))
    return canvas


def disagreement_layer(disagreement: np.ndarray, max_side: int = 768):
    """The disagreement map alone as an RGBA PIL image to lay over the picture: the colours of
    :func:`disagreement_picture`, transparent where nothing was compared, at most ``max_side`` on its longer side
    (nearest sampling: a NaN never bleeds into a neighbour)."""
    from PIL import Image

    step = max(1, -(-max(disagreement.shape) // max_side))
    sampled = disagreement[::step, ::step]
    rgba = np.zeros(sampled.shape + (4,), np.uint8)
    rgba[..., :3] = _diverging(np.clip(np.nan_to_num(sampled) / DISAGREEMENT_RANGE, -1, 1))
    rgba[..., 3] = np.where(np.isfinite(sampled), 255, 0)
    return Image.fromarray(rgba, "RGBA")


def _diverging(values: np.ndarray) -> np.ndarray:
    """[...] in [-1, 1] → [..., 3] uint8: blue (−1) → white (0) → red (+1)."""
    blue, white, red = np.array([33, 102, 172.0]), np.array([247, 247, 247.0]), np.array([178, 24, 43.0])
    v = values[..., None]
    colour = np.where(v < 0, white + (blue - white) * (-v), white + (red - white) * v)
    return np.clip(np.round(colour), 0, 255).astype(np.uint8)
