"""Synthetic clips with known depth for the video tests and bench: a textured scene seen by a moving pinhole camera,
ray-cast in numpy (no downloads), and the figures the stabilisation is judged by.

Camera: at (x_t, 0, z_t) looking down +Z (world y up; image v down), horizontal field of view 60°. Scene 0: a back
wall, a floor and a ball, warm colours; scene 1 (after a cut): a nearer wall and another ball, cool colours. Textures
are random colour cells fixed in the world, so they move with the geometry.
"""

from __future__ import annotations

import math

import av
import numpy as np

FOV_DEG = 60.0


def render(width: int, height: int, camera: tuple[float, float], scene: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rgb [H, W, 3] uint8, depth [H, W] float32 along the optical axis) of ``scene`` from camera (x, z)."""
    f = width / (2 * math.tan(math.radians(FOV_DEG) / 2))
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    dx, dy = (u - (width - 1) / 2) / f, -(v - (height - 1) / 2) / f
    cx, cz = camera
    walls = (6.0, -1.0, (0.4, 0.1, 3.5), 0.9) if scene == 0 else (3.2, -1.4, (-0.7, 0.3, 2.0), 0.6)
    wall_z, floor_y, centre, radius = walls
    best = np.full(u.shape, wall_z - cz)
    kind = np.zeros(u.shape, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        floor_t = np.where(dy < 0, floor_y / dy, np.inf)
    use = floor_t < best
    best, kind = np.where(use, floor_t, best), np.where(use, 1, kind)
    ox, oy, oz = cx - centre[0], -centre[1], cz - centre[2]
    a = dx * dx + dy * dy + 1
    b = 2 * (ox * dx + oy * dy + oz)
    c = ox * ox + oy * oy + oz * oz - radius * radius
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        ball_t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    use = (ball_t > 0) & (ball_t < best)
    best, kind = np.where(use, ball_t, best), np.where(use, 2, kind)
    x, y, z = cx + best * dx, best * dy, cz + best
    cell = np.where(kind == 0, np.floor(x * 4) * 7919 + np.floor(y * 4) * 104729,
                    np.where(kind == 1, np.floor(x * 3) * 7919 + np.floor(z * 3) * 15485863,
                             np.floor(np.arctan2(y - centre[1], x - centre[0]) * 4) * 31 + np.floor(z * 6) * 613))
    rng = np.random.default_rng(scene)
    palette = rng.integers(0, 256, size=(97, 3))
    palette = (palette * 0.6 + (np.array([200, 120, 60]) if scene == 0 else np.array([30, 90, 180])) * 0.4)
    colour = palette[(cell.astype(np.int64) + kind * 13) % 97]
    shade = np.where(kind == 2, 0.7 + 0.3 * np.clip(-dx, -1, 1), 1.0)[..., None]
    rgb = np.clip(colour * shade, 0, 255).astype(np.uint8)
    return rgb, best.astype(np.float32)


def camera_path(count: int, step: float = 0.03) -> list[tuple[float, float]]:
    """A sideways drift (a truck shot). A push in would make the whole scene nearer, which relative depth cannot tell
    from a change of scale."""
    return [(step * i, 0.0) for i in range(count)]


def clip(width: int, height: int, count: int, cut_at: int | None = None):
    """Frames, depths and cameras of a clip (scene 1 from ``cut_at`` on)."""
    frames, depths, cameras = [], [], camera_path(count)
    for index, camera in enumerate(cameras):
        rgb, depth = render(width, height, camera, 1 if cut_at is not None and index >= cut_at else 0)
        frames.append(rgb)
        depths.append(depth)
    return frames, depths, cameras


def write_clip(path, frames, fps=24, times=None, codec="libx264", pix_fmt="yuv420p", rotation=0,
               audio_seconds: float | None = None, colour: dict | None = None) -> None:
    """Encode ``frames`` with PyAV: ``times`` (seconds, variable frame rate) or a constant ``fps``; ``rotation``:
    a display matrix; ``audio_seconds``: an AAC track of a tone; ``colour``: codec colour properties."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if times is not None:
            stream.codec_context.time_base = stream.time_base = __import__("fractions").Fraction(1, 90000)
        if rotation:
            stream.set_display_rotation(rotation)
        for name, value in (colour or {}).items():
            setattr(stream.codec_context, name, value)
        audio = None
        if audio_seconds:
            audio = container.add_stream("aac", rate=48000)
            audio.layout = "mono"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
            for name, value in (colour or {}).items():
                setattr(frame, name, value)
            frame.pts = round(times[index] * 90000) if times is not None else index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if audio is not None:
            samples, total = 0, int(audio_seconds * 48000)
            while samples < total:
                t = (samples + np.arange(1024)) / 48000
                tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 48000, samples
                samples += 1024
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode(None):
                container.mux(packet)


def perturbed_disparity(depths, seed: int = 0, outlier_frames=(3, 7)):
    """The truth's disparity 1 / z with, per frame, a random scale (±30 %), shift, 3 % noise and, in
    ``outlier_frames``, a wrong block (a quarter of the picture): what an unsteady depth model gives. Returns the
    disparities, the scales and the outlier masks."""
    rng = np.random.default_rng(seed)
    out, scales, masks = [], [], []
    for index, depth in enumerate(depths):
        truth = 1.0 / depth
        scale = float(np.exp(rng.uniform(np.log(0.7), np.log(1.3))))
        shift = float(rng.uniform(-0.2, 0.2) * truth.mean())
        noisy = truth * (1 + 0.03 * rng.standard_normal(truth.shape))
        d = scale * noisy + shift
        mask = np.zeros(depth.shape, bool)
        if index in outlier_frames:
            h, w = depth.shape
            mask[h // 8: h // 8 + h // 2, w // 8: w // 8 + w // 2] = True
            d[mask] = float(np.percentile(d, 99)) * rng.uniform(0.8, 1.5, size=int(mask.sum()))
        out.append(d.astype(np.float32))
        scales.append(scale)
        masks.append(mask)
    return out, scales, masks


def scale_spread(disparities, depths, masks=None) -> float:
    """std(log s_t) of the per-frame least-squares scales s_t with d_t ≈ s_t / z_t + b_t (outlier blocks left out)."""
    logs = []
    for index, (d, depth) in enumerate(zip(disparities, depths)):
        keep = np.isfinite(d) & (depth > 0)
        if masks is not None:
            keep &= ~masks[index]
        truth = 1.0 / depth[keep]
        design = np.stack([truth, np.ones_like(truth)], axis=1)
        (s, _), *_ = np.linalg.lstsq(design, d[keep].astype(np.float64), rcond=None)
        logs.append(math.log(max(s, 1e-9)))
    return float(np.std(logs))


def tae(disparities, depths, cameras, masks=None) -> float:
    """Video Depth Anything's temporal alignment error: the whole clip's disparity aligned to the truth by one scale and
    shift (least squares), turned into depth, each frame reprojected into the next with the known cameras (and the next
    into it), the mean AbsRel against that frame's depth where the truth says the point is seen; × 100."""
    keep_all = [np.isfinite(d) & (z > 0) & (True if masks is None else ~m) for d, z, m in
                zip(disparities, depths, masks or [None] * len(depths))]
    x = np.concatenate([d[k] for d, k in zip(disparities, keep_all)]).astype(np.float64)
    y = np.concatenate([1.0 / z[k] for z, k in zip(depths, keep_all)])
    (s, b), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), y, rcond=None)
    predicted = [1.0 / np.maximum(s * d.astype(np.float64) + b, 1e-3) for d in disparities]
    errors = []
    for k in range(len(depths) - 1):
        for a, c in ((k, k + 1), (k + 1, k)):
            errors.append(_reprojected_absrel(predicted[a], predicted[c], depths[a], depths[c], cameras[a], cameras[c],
                                              keep_all[a], keep_all[c]))
    return 100.0 * float(np.mean(errors))


def _reprojected_absrel(z_from, z_to, truth_from, truth_to, cam_from, cam_to, keep_from, keep_to) -> float:
    height, width = z_from.shape
    f = width / (2 * math.tan(math.radians(FOV_DEG) / 2))
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    cx, cy = (width - 1) / 2, (height - 1) / 2

    def move(z, truth):
        x = (u - cx) / f * z + cam_from[0] - cam_to[0]
        y = (v - cy) / f * z
        zz = z + cam_from[1] - cam_to[1]
        return np.rint(x / zz * f + cx).astype(int), np.rint(y / zz * f + cy).astype(int), zz

    tu, tv, tz = move(truth_from, truth_from)
    pu, pv, pz = move(z_from, truth_from)
    inside = keep_from & (tu >= 0) & (tu < width) & (tv >= 0) & (tv < height)
    seen = np.zeros_like(inside)
    seen[inside] = np.abs(truth_to[tv[inside], tu[inside]] - tz[inside]) < 0.02 * tz[inside]
    seen[inside] &= keep_to[tv[inside], tu[inside]]
    target = z_to[tv[seen], tu[seen]]
    return float(np.mean(np.abs(pz[seen] - target) / target)) if seen.any() else 0.0
