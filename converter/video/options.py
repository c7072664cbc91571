"""Options of a video conversion, validated once when made (the CLI and the Python API build one)."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from ..errors import OptionError
from ..exports.stereo import DEFAULT_CONVERGENCE, DEFAULT_STRENGTH
from ..geometry import DEFAULT_RELIEF

DEFAULT_MAX_FPS = 30.0
DEFAULT_PLY_POINTS = 20_000  # points per frame of the 4D point cloud
ANAGLYPH_METHODS = ("dubois", "color")


@dataclass(frozen=True)
class VideoOptions:
    """max_fps: frames closer than 1 / max_fps to the last kept one are skipped (0: keep all). start, end: seconds
    of the source to convert (end None: to its end). max_frames: at most this many frames (None: the limit's).
    stabilise: fit every frame's inverse depth to the shot's running reference (see :mod:`converter.video.stabilise`).
    fov_deg, focal_px: the camera (else the container's, the model's, 60°). relief: depth range of relative depth,
    as for images. depth_kind: what a depth video you bring holds, "metric" or "disparity". strength, convergence:
    the stereo disparity and the screen plane, as for stereo images. anaglyph: "dubois" or "color". ply_points: points
    per frame of the point-cloud sequence. batch_frames: frames per forward (0: 8 on CUDA, else 1)."""

    max_fps: float = DEFAULT_MAX_FPS
    start: float = 0.0
    end: float | None = None
    max_frames: int | None = None
    stabilise: bool = True
    fov_deg: float | None = None
    focal_px: float | None = None
    relief: float = DEFAULT_RELIEF
    depth_kind: str = "metric"
    strength: float = DEFAULT_STRENGTH
    convergence: float = DEFAULT_CONVERGENCE
    anaglyph: str = "dubois"
    ply_points: int = DEFAULT_PLY_POINTS
    batch_frames: int = 0

    def __post_init__(self):
        if not (_number(self.max_fps) and 0 <= self.max_fps <= 240):
            raise OptionError("max_fps must be between 0 (keep every frame) and 240.")
        if not (_number(self.start) and self.start >= 0):
            raise OptionError("The start must be a number of seconds, 0 or more.")
        if self.end is not None and not (_number(self.end) and self.end > self.start):
            raise OptionError("The end must be a number of seconds after the start.")
        if self.max_frames is not None and not (_whole(self.max_frames) and self.max_frames >= 1):
            raise OptionError("max_frames must be a whole number, 1 or more.")
        if self.fov_deg is not None and not (_number(self.fov_deg) and 1 <= self.fov_deg <= 179):
            raise OptionError("The field of view must be between 1 and 179 degrees.")
        if self.focal_px is not None and not (_number(self.focal_px) and self.focal_px > 0):
            raise OptionError("The focal length must be a positive number of pixels.")
        if not (_number(self.relief) and 0 < self.relief <= 100):
            raise OptionError("Relief must be a number above 0 and at most 100.")
        if self.depth_kind not in ("metric", "disparity"):
            raise OptionError("The depth kind must be 'metric' or 'disparity'.")
        if not (_number(self.strength) and 0 <= self.strength <= 0.2):
            raise OptionError("The stereo strength must be between 0 and 0.2 (a fraction of the width).")
        if not (_number(self.convergence) and 0 <= self.convergence <= 1):
            raise OptionError("The convergence must be between 0 and 1.")
        if self.anaglyph not in ANAGLYPH_METHODS:
            raise OptionError("The anaglyph method must be 'dubois' or 'color'.")
        if not (_whole(self.ply_points) and 16 <= self.ply_points <= 5_000_000):
            raise OptionError("ply_points must be a whole number from 16 to 5,000,000.")
        if not (_whole(self.batch_frames) and 0 <= self.batch_frames <= 64):
            raise OptionError("batch_frames must be a whole number from 0 (automatic) to 64.")
        object.__setattr__(self, "stabilise", bool(self.stabilise))

    def to_dict(self) -> dict:
        return asdict(self)


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
