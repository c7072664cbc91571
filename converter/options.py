"""Conversion options shared by the CLI, the Python API and the web form, validated in one place."""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import asdict, dataclass, fields

import numpy as np

from .errors import OptionError
from .geometry import DEFAULT_EDGE_RTOL, DEFAULT_RELIEF

# The choices, once: argparse, the web form and validation all read them from here.
MODES = {"perspective": "Perspective (a photo seen by a camera)", "relief": "Relief (drawings, logos, bas-reliefs)"}
DEPTH_KIND_CHOICES = {"metric": "depth in metres (PNG: millimetres)", "disparity": "disparity (larger is nearer)"}
DEFAULT_MAX_POINTS = 1_000_000  # a 12 MP photo → ~15 MB .ply that viewers open at once
DETAIL_LEVELS = {"low": 250_000, "medium": DEFAULT_MAX_POINTS, "high": 2_000_000, "full": 0}  # → max_points
# Numbers typed by people and scripts: ASCII digits and the decimal float grammar only. Python's int() and float()
# also take other scripts' digits ('٣', '３'), superscripts (via str.isdigit), '1_000', 'nan' and 'inf'; we do not.
DECIMAL_GRAMMAR = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
WHOLE_GRAMMAR = r"[+-]?[0-9]+"
_DECIMAL, _WHOLE = re.compile(DECIMAL_GRAMMAR), re.compile(WHOLE_GRAMMAR)
_BLANKS = " \t\r\n"
FOCAL_PX_RANGE = (0.01, 1e7)  # beyond, back-projection overflows float32 (a fuzzer's 1e-300 made infinite points)


def parse_number(text: str, field: str, *, whole: bool = False) -> float | int:
    """A number typed in a form, a query or on the command line → float (``whole``: int). ``field`` names it in the
    OptionError for anything else: other scripts' digits, superscripts, underscores, hex, nan, inf, overflow."""
    stripped = str(text).strip(_BLANKS)
    grammar = _WHOLE if whole else _DECIMAL
    if not grammar.fullmatch(stripped):
        kind = "a whole number" if whole else "a number"
        example = "such as 5000" if whole else "such as 60 or 2.5"
        raise OptionError(f"The field '{field}' must be {kind} written with the digits 0-9 ({example}), not "
                          f"'{_shown(stripped)}'.")
    if whole:
        return int(stripped)
    value = float(stripped)
    if not math.isfinite(value):
        raise OptionError(f"The field '{field}' must be a finite number, not '{_shown(stripped)}'.")
    return value


def _shown(text: str) -> str:
    """At most 40 printable characters of what was typed, for an error sentence."""
    shown = "".join(character if character.isprintable() else "?" for character in text[:40])
    return shown + ("…" if len(text) > 40 else "")



@dataclass(frozen=True)
class ConversionOptions:
    """How a depth map becomes points.

    fov_deg: horizontal field of view, degrees (overrides EXIF). focal_px: focal length in pixels (overrides
    fov_deg). principal_point: (cx, cy) in pixels. relief: depth range of relative models, far = near·(1 + relief).
    clean: drop flying pixels on depth edges; edge_rtol: their relative depth jump. max_points: output density,
    0 = one point per pixel. normals: write per-point normals. depth_kind: "metric" or "disparity" for a user depth
    map. drop_background_percent: also drop the farthest N % of the (opaque, valid) pixels — a quick way to cut
    away a wall or sky behind the subject. mode: "perspective" (pinhole camera back-projection) or "relief" (a height
    field over the image, nearer = higher, height ``RELIEF_HEIGHT · relief`` of the image width: see
    :mod:`converter.geometry`). paper_background: make near-white paper connected to the image border transparent.
    known_length: (x1, y1, x2, y2, metres): the real distance between the surface points at two pixels (in the
    file's pixels, like principal_point); the whole result is scaled so that it holds, and its units become metres.
    """

    fov_deg: float | None = None
    focal_px: float | None = None
    principal_point: tuple[float, float] | None = None
    relief: float = DEFAULT_RELIEF
    clean: bool = True
    edge_rtol: float = DEFAULT_EDGE_RTOL
    max_points: int = DEFAULT_MAX_POINTS
    normals: bool = False
    depth_kind: str = "metric"
    drop_background_percent: float = 0.0
    mode: str = "perspective"
    paper_background: bool = False
    known_length: tuple[float, float, float, float, float] | None = None

    def __post_init__(self):
        if self.fov_deg is not None and not (_finite(self.fov_deg) and 1.0 <= self.fov_deg <= 179.0):
            raise OptionError("The field of view must be between 1 and 179 degrees.")
        if self.focal_px is not None and not (_finite(self.focal_px) and
                                              FOCAL_PX_RANGE[0] <= self.focal_px <= FOCAL_PX_RANGE[1]):
            raise OptionError("The focal length must be a positive number of pixels, from 0.01 to 10,000,000.")
        if self.principal_point is not None:
            try:
                valid = len(self.principal_point) == 2 and all(_finite(value) for value in self.principal_point)
            except TypeError:  # not a sequence at all
                valid = False
            if not valid:
                raise OptionError("The principal point must be two numbers: CX CY in pixels.")
            object.__setattr__(self, "principal_point", tuple(float(v) for v in self.principal_point))
        if not (_finite(self.relief) and 0 < self.relief <= 100):
            raise OptionError("Relief must be a number above 0 and at most 100.")
        if not (_finite(self.edge_rtol) and 0 < self.edge_rtol <= 10):
            raise OptionError("The edge threshold must be a number above 0 and at most 10.")
        whole = isinstance(self.max_points, numbers.Integral) and not isinstance(self.max_points, bool)
        if not whole or self.max_points < 0:
            raise OptionError("max_points must be a whole number, 0 or more (0 keeps every pixel).")
        if not (_finite(self.drop_background_percent) and 0 <= self.drop_background_percent < 100):
            raise OptionError("The background to drop must be a percentage from 0 up to (not including) 100.")
        if self.depth_kind not in DEPTH_KIND_CHOICES:
            raise OptionError("The depth kind must be 'metric' or 'disparity'.")
        if self.mode not in MODES:
            raise OptionError("The mode must be 'perspective' (a photo seen by a camera) or 'relief' (a height field "
                              "for drawings, logos and bas-reliefs).")
        if not isinstance(self.paper_background, (bool, np.bool_)) and self.paper_background not in (0, 1):
            raise OptionError("paper_background must be true or false.")
        object.__setattr__(self, "paper_background", bool(self.paper_background))
        if self.known_length is not None:
            object.__setattr__(self, "known_length", _known_length(self.known_length))
        _plain_numbers(self)  # last: only validated values are converted

    @classmethod
    def from_kwargs(cls, **kwargs) -> "ConversionOptions":
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown conversion option(s): {', '.join(unknown)}")
        return cls(**kwargs)

    def to_dict(self) -> dict:
        return asdict(self)


def _known_length(value) -> tuple[float, float, float, float, float]:
    """(x1, y1, x2, y2, metres) as floats; pixel coordinates finite, the distance positive, the two pixels apart."""
    try:
        numbers_given = tuple(value)
    except TypeError:
        numbers_given = ()
    if len(numbers_given) != 5 or not all(_finite(number) for number in numbers_given):
        raise OptionError("A known length is five numbers: X1 Y1 X2 Y2 (two pixels of the image) and the real "
                          "distance between them in metres.")
    x1, y1, x2, y2, metres = (float(number) for number in numbers_given)
    if not 0 < metres <= 1e6:
        raise OptionError("The known length must be a distance in metres above 0.")
    if (x1, y1) == (x2, y2):
        raise OptionError("The known length needs two different pixels.")
    return x1, y1, x2, y2, metres


def _finite(value) -> bool:
    """A finite real number; numpy scalars count (numbers.Real), booleans do not."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _plain_numbers(options: ConversionOptions) -> None:
    """numpy scalars (np.int64(5000), np.float32(60)) → int / float, so to_dict() stays JSON-friendly."""
    for name in ("fov_deg", "focal_px", "relief", "edge_rtol", "max_points", "drop_background_percent"):
        value = getattr(options, name, None)
        if value is not None and not isinstance(value, (int, float)):
            object.__setattr__(options, name, int(value) if isinstance(value, numbers.Integral) else float(value))
