"""Per-frame pictures and clouds of a stabilised frame: the stereo layouts, the anaglyph, the depth pictures and the
decimated point cloud. The stereo warp, its disocclusion handling and the anaglyph are the stereo images' own
(:mod:`converter.exports.stereo`); what a video adds is one pair of far/near planes per shot (the stabiliser's
``bounds``), so the rendered depth does not pulse from frame to frame.

Inputs: rgb [H, W, 3] uint8; ``inverse`` [H, W] float32, the stabilised inverse depth (larger is nearer; NaN or ≤ 0:
no depth), in the shot's units (metric: 1 / metres).
"""

from __future__ import annotations

import numpy as np

from .. import geometry
from ..exports.stereo import anaglyph, normalised_nearness, prepare_scene, render_view, side_by_side, top_bottom
from .options import VideoOptions

STEREO_KINDS = ("sbs_full", "sbs_half", "tb", "anaglyph")


def depth_of(inverse: np.ndarray) -> np.ndarray:
    """[H, W] float32 1 / inverse where it is positive, else 0 (no depth)."""
    depth = np.zeros(inverse.shape, np.float32)
    np.divide(1.0, inverse, out=depth, where=np.isfinite(inverse) & (inverse > 0))
    return depth


def nearness(inverse: np.ndarray, bounds: tuple[float, float] | None) -> np.ndarray:
    """[H, W] float32 t in [0, 1]: 0 at the far plane, 1 at the near one (the shot's ``bounds``, else the frame's
    own 2nd and 98th percentiles); 0 without depth."""
    return normalised_nearness(depth_of(inverse), None, bounds)[0]


def stereo_frames(kinds, rgb: np.ndarray, inverse: np.ndarray, bounds, options: VideoOptions) -> dict[str, np.ndarray]:
    """{kind: [h, w, 3] uint8} for the stereo kinds among ``kinds``; the two eyes are rendered once for all."""
    wanted = [kind for kind in kinds if kind in STEREO_KINDS]
    if not wanted:
        return {}
    scene = prepare_scene(rgb, depth_of(inverse), None, convergence=options.convergence, bounds=bounds)
    half = options.strength * scene.shape[1] / 2.0
    left, right = render_view(scene, +half), render_view(scene, -half)
    makers = {"sbs_full": lambda: side_by_side(left, right), "sbs_half": lambda: side_by_side(left, right, half=True),
              "tb": lambda: top_bottom(left, right), "anaglyph": lambda: anaglyph(left, right, method=options.anaglyph)}
    return {kind: makers[kind]() for kind in wanted}


def depth_picture(inverse: np.ndarray, bounds) -> np.ndarray:
    """[H, W, 3] uint8 grey: the normalised nearness, near is bright (the depth video's frames)."""
    grey = np.rint(nearness(inverse, bounds) * 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def depth16(inverse: np.ndarray, bounds, metric: bool) -> np.ndarray:
    """[H, W] uint16: metric depth in millimetres (0: none; beyond 65.535 m clipped), or for relative depth the
    normalised nearness × 65535 (near is large; the shot's far and near planes are 0 and 65535)."""
    if metric:
        depth = depth_of(inverse)
        return np.clip(np.rint(depth * 1000.0), 0, 65535).astype(np.uint16)
    return np.rint(nearness(inverse, bounds) * 65535).astype(np.uint16)


def cloud(rgb: np.ndarray, inverse: np.ndarray, bounds, metric: bool, intrinsics: geometry.Intrinsics,
          options: VideoOptions) -> tuple[np.ndarray, np.ndarray]:
    """(points [N, 3] float32, colours [N, 3] uint8) of at most ``options.ply_points`` grid pixels, in the axes of
    every file (y up, −z forward). Metric: metres. Relative: the images' mapping with the shot's planes,
    1 / z = t + (1 − t) / (1 + relief) (near plane 1, far plane 1 + relief)."""
    height, width = inverse.shape
    columns, rows = geometry.pixel_grid(width, height, options.ply_points)
    sampled = inverse[np.ix_(rows, columns)]
    if metric:
        depth = depth_of(sampled)
    else:
        t = nearness(inverse, bounds)[np.ix_(rows, columns)]
        depth = 1.0 / (t + (1.0 - t) / (1.0 + options.relief))
        depth = np.where(np.isfinite(sampled) & (sampled > 0), depth, 0).astype(np.float32)
    points = geometry.backproject(depth.astype(np.float32), intrinsics, columns, rows)
    colours = geometry.grid_colors(rgb, None, columns, rows)
    keep = depth > 0
    return points[keep].astype(np.float32), colours[keep]
