"""An independent splat rasterizer for the tests: reads a 3DGS ``.splat.ply`` with plyfile and renders it as the
3DGS paper does, in numpy. Nothing here comes from ``converter.exports.splats``.

Per Gaussian: covariance Σ = R S Sᵀ Rᵀ (R from the unit quaternion (w, x, y, z), S = diag(exp(scale))); EWA
projection Σ' = J W Σ Wᵀ Jᵀ with W the view rotation and J the Jacobian of the pinhole projection at the centre,
plus 0.3 px² on the diagonal (the low-pass filter of the 3DGS rasterizer, which viewers copy); alpha =
min(0.99, sigmoid(opacity) · exp(−½ dᵀ Σ'⁻¹ d)) at each pixel centre, skipped below 1/255; colours 0.5 + C0 · f_dc;
composited front to back by the depth of the centres, over a black background.

Camera: the converter's pinhole (y up, looking down −z; pixel (u, v) centres at integers, v down).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from plyfile import PlyData

C0 = 0.5 / math.sqrt(math.pi)
LOW_PASS_PX2 = 0.3
MAX_RADIUS_PX = 12


@dataclass
class Camera:
    """Pinhole intrinsics of a width × height picture; ``rotation`` [3, 3] turns the scene about ``pivot`` [3]
    before it is seen (the same as moving the camera the opposite way around the pivot)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    rotation: np.ndarray = None
    pivot: np.ndarray = None

    def zoomed(self, factor: int) -> "Camera":
        """The same view at ``factor`` × the resolution (pixel centres stay centres)."""
        return Camera(self.width * factor, self.height * factor, self.fx * factor, self.fy * factor,
                      (self.cx + 0.5) * factor - 0.5, (self.cy + 0.5) * factor - 0.5, self.rotation, self.pivot)

    def orbited(self, degrees: float, pivot) -> "Camera":
        """The camera moved ``degrees`` around the vertical axis through ``pivot`` (the scene turned the other way)."""
        angle = math.radians(degrees)
        rotation = np.array([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0],
                             [-math.sin(angle), 0, math.cos(angle)]])
        return Camera(self.width, self.height, self.fx, self.fy, self.cx, self.cy, rotation,
                      np.asarray(pivot, dtype=np.float64))

    def view(self, points: np.ndarray) -> np.ndarray:
        """Scene points [N, 3] → camera frame [N, 3]."""
        if self.rotation is None:
            return points
        return (points - self.pivot) @ self.rotation.T + self.pivot

    def project(self, camera_points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Camera-frame points [N, 3] → (u [N], v [N], depth [N])."""
        depth = -camera_points[:, 2]
        return (self.fx * camera_points[:, 0] / depth + self.cx, self.cy - self.fy * camera_points[:, 1] / depth,
                depth)


def read_splats(path) -> dict[str, np.ndarray]:
    """centres [N, 3], rotations [N, 3, 3], scales [N, 3] (linear), opacity [N] (0–1), rgb [N, 3] (0–1)."""
    vertex = PlyData.read(str(path))["vertex"]

    def columns(*names):
        return np.column_stack([np.asarray(vertex[name], dtype=np.float64) for name in names])

    q = columns("rot_0", "rot_1", "rot_2", "rot_3")
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    rotations = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=1),
    ], axis=1)
    return {
        "centres": columns("x", "y", "z"),
        "rotations": rotations,
        "scales": np.exp(columns("scale_0", "scale_1", "scale_2")),
        "opacity": 1.0 / (1.0 + np.exp(-np.asarray(vertex["opacity"], dtype=np.float64))),
        "rgb": np.clip(0.5 + C0 * columns("f_dc_0", "f_dc_1", "f_dc_2"), 0.0, 1.0),
    }


def render(splats: dict[str, np.ndarray], camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    """(rgb [H, W, 3] float in [0, 1], accumulated alpha [H, W]) of the splats seen by ``camera``."""
    centres = camera.view(splats["centres"])
    u, v, depth = camera.project(centres)
    front = depth > 1e-6
    scaled = splats["rotations"] * splats["scales"][:, None, :]  # R S
    covariance = scaled @ scaled.transpose(0, 2, 1)
    if camera.rotation is not None:
        covariance = camera.rotation @ covariance @ camera.rotation.T
    x, y = centres[:, 0], centres[:, 1]
    jacobian = np.zeros((len(centres), 2, 3))
    jacobian[:, 0, 0] = camera.fx / depth
    jacobian[:, 0, 2] = camera.fx * x / depth ** 2
    jacobian[:, 1, 1] = -camera.fy / depth
    jacobian[:, 1, 2] = -camera.fy * y / depth ** 2
    screen = jacobian @ covariance @ jacobian.transpose(0, 2, 1)
    a, b, c = screen[:, 0, 0] + LOW_PASS_PX2, screen[:, 0, 1], screen[:, 1, 1] + LOW_PASS_PX2
    determinant = a * c - b * b
    conic = np.stack([c / determinant, -b / determinant, a / determinant], axis=1)
    largest = 0.5 * (a + c) + np.sqrt(np.maximum(0.25 * (a - c) ** 2 + b * b, 0.0))
    radius = min(int(np.ceil(3.0 * np.sqrt(largest[front].max()))), MAX_RADIUS_PX)

    offsets = np.arange(-radius, radius + 1)
    dx, dy = (grid.ravel() for grid in np.meshgrid(offsets, offsets))
    columns = np.rint(u)[:, None].astype(np.int64) + dx[None, :]
    rows = np.rint(v)[:, None].astype(np.int64) + dy[None, :]
    du, dv = columns - u[:, None], rows - v[:, None]
    power = -0.5 * (conic[:, :1] * du * du + 2 * conic[:, 1:2] * du * dv + conic[:, 2:] * dv * dv)
    alpha = np.minimum(0.99, splats["opacity"][:, None] * np.exp(power))
    used = (alpha >= 1 / 255) & front[:, None] & (columns >= 0) & (columns < camera.width) & (rows >= 0) \
        & (rows < camera.height)
    owner = np.broadcast_to(np.arange(len(centres))[:, None], used.shape)[used]
    pixel, alpha = (rows * camera.width + columns)[used], alpha[used]

    order = np.lexsort((depth[owner], pixel))  # by pixel, then front to back
    pixel, alpha, owner = pixel[order], alpha[order], owner[order]
    log_keep = np.log1p(-alpha)
    before = np.cumsum(log_keep) - log_keep  # Σ log(1 − α) of everything earlier in the sorted list
    starts = np.flatnonzero(np.r_[True, pixel[1:] != pixel[:-1]])
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(pixel)]))
    weight = alpha * np.exp(before - before[group_start])  # α · transmittance within its pixel
    size = camera.width * camera.height
    rgb = np.stack([np.bincount(pixel, weight * splats["rgb"][owner, channel], size) for channel in range(3)], axis=1)
    coverage = np.bincount(pixel, weight, size)
    return rgb.reshape(camera.height, camera.width, 3), coverage.reshape(camera.height, camera.width)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two pictures with values in [0, 1]."""
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))
