"""A result kept as state: what it takes to convert the same image again with other options, without the model.

A state folder holds two files, each written atomically:

- ``image.npz``: the working image (``rgb`` [H, W, 3] uint8, ``alpha`` [H, W] uint8 when it has one) and how it was
  decoded (``scale``, ``focal_px`` and ``focal_source`` from EXIF, ``format``): the arrays carry no EXIF. Arrays, not
  a PNG: lossless and written in milliseconds, where even a fast PNG costs a twentieth of a conversion.
- ``prediction.npz``: the depth prediction the geometry was made from (``values`` [H, W] and ``native`` [h, w]
  float32, ``kind``, ``source``, ``focal_px``; NaN for none), already aligned for an aligned conversion.

Folders written before the decoding facts were kept in ``image.npz`` (web jobs kept them in their own record) are
read with those facts given as ``image_meta``.
"""

from __future__ import annotations

import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .depth import DepthMap
from .errors import ConversionError
from .exports.files import atomic_output
from .images import DEFAULT_MAX_PIXELS, LoadedImage

IMAGE_FILE, PREDICTION_FILE = "image.npz", "prediction.npz"
STATE_FILES = (IMAGE_FILE, PREDICTION_FILE)
_IMAGE_FACTS = ("scale", "focal_px", "focal_source", "format")


class StateError(ConversionError):
    """A state folder that is missing, incomplete or damaged."""


@dataclass(frozen=True)
class ConversionState:
    """What :meth:`converter.Converter.reconvert` needs: the working image and the prediction at its size."""

    image: LoadedImage
    prediction: DepthMap


def save_state(state: ConversionState, folder: str | os.PathLike) -> list[Path]:
    """Write ``state`` into ``folder`` (which must exist) as its two files; returns their paths."""
    folder = Path(folder)
    return [save_image(folder / IMAGE_FILE, state.image), save_prediction(folder / PREDICTION_FILE, state.prediction)]


def load_state(folder: str | os.PathLike, image_meta: dict | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> ConversionState:
    """The state kept in ``folder``. ``image_meta``: the decoding facts of a folder whose ``image.npz`` lacks them.
    Raises :class:`StateError` when a file is missing or damaged, or the image exceeds ``max_pixels``."""
    folder = Path(folder)
    prediction = load_prediction(folder / PREDICTION_FILE)
    image = load_image_state(folder / IMAGE_FILE, image_meta, max_pixels)
    if prediction is None or image is None:
        raise StateError("The saved result is missing or damaged; convert the image again.")
    return ConversionState(image=image, prediction=prediction.resized(image.width, image.height))


def save_image(path: str | os.PathLike, image: LoadedImage) -> Path:
    """``image``'s arrays and decoding facts as ``.npz``, atomically."""
    arrays = {"rgb": image.rgb} if image.alpha is None else {"rgb": image.rgb, "alpha": image.alpha}
    facts = {"scale": float(image.scale), "focal_px": math.nan if image.focal_px is None else float(image.focal_px),
             "focal_source": image.focal_source or "", "format": image.format or ""}
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays, **{f"meta_{name}": np.array(value) for name, value in facts.items()})
    return Path(path)


def load_image_state(path: str | os.PathLike, image_meta: dict | None = None,
                     max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage | None:
    """The image kept at ``path`` (facts from the file, else from ``image_meta``), or None if it is missing,
    unreadable or larger than ``max_pixels``."""
    try:
        with np.load(path, allow_pickle=False) as kept:
            rgb = kept["rgb"]
            alpha = kept["alpha"] if "alpha" in kept.files else None
            stored = {name: kept[f"meta_{name}"].item() for name in _IMAGE_FACTS if f"meta_{name}" in kept.files}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # missing, cut short or damaged
        return None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] * rgb.shape[1] > max_pixels:
        return None
    facts = stored if len(stored) == len(_IMAGE_FACTS) else (image_meta or {})
    focal_px = facts.get("focal_px")
    focal_px = None if focal_px is None or not math.isfinite(float(focal_px)) else float(focal_px)
    return LoadedImage(rgb=rgb, alpha=alpha, focal_px=focal_px, focal_source=facts.get("focal_source") or None,
                       format=facts.get("format") or None, scale=float(facts.get("scale") or 1.0))


def save_prediction(path: str | os.PathLike, prediction: DepthMap) -> Path:
    """Write ``prediction`` to ``path`` (.npz) atomically."""
    with atomic_output(path) as temporary, open(temporary, "wb") as file:
        np.savez(file, values=np.asarray(prediction.values, np.float32),
                 native=np.asarray(prediction.native, np.float32), kind=np.array(prediction.kind),
                 source=np.array(prediction.source),
                 focal_px=np.array(np.nan if prediction.focal_px is None else prediction.focal_px, np.float64))
    return Path(path)


def load_prediction(path: str | os.PathLike) -> DepthMap | None:
    """The prediction stored at ``path``, or None if it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as data:
            focal_px = float(data["focal_px"]) if "focal_px" in data.files else math.nan
            return DepthMap(values=data["values"].astype(np.float32, copy=False),
                            native=data["native"].astype(np.float32, copy=False), kind=str(data["kind"]),
                            source=str(data["source"]), focal_px=focal_px if math.isfinite(focal_px) else None)
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # missing, cut short or damaged
        return None
