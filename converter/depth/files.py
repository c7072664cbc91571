"""User-supplied depth maps: ``.npy`` (float, metres or disparity) or 16-bit PNG (millimetres)."""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
from PIL import Image

from ..errors import DepthFileError
from ..geometry import nearest_indices
from .depthmap import INVERSE_RELATIVE, METRIC, DepthMap

DEPTH_KINDS = {"metric": METRIC, "disparity": INVERSE_RELATIVE}
_NPY_MAGIC = b"\x93NUMPY"


def load_depth_file(source, kind: str = "metric", name: str = "depth map") -> DepthMap:
    """Read a depth map. ``kind``: "metric" (metres; PNG in millimetres) or "disparity" (relative, larger is nearer).

    Zero, NaN and infinite values mark pixels with no depth. The format is decided by content.
    """
    if kind not in DEPTH_KINDS:
        raise DepthFileError(f"Unknown depth kind '{kind}'; use 'metric' or 'disparity'.")
    data = _read_bytes(source, name)
    if data.startswith(_NPY_MAGIC):
        values = _read_npy(data, name)
        scale = 1.0
    else:
        values, bits = _read_png(data, name)
        # 16-bit PNG depth stores millimetres by convention (Kinect, RealSense, TUM, phone depth exports).
        scale = 0.001 if (kind == "metric" and bits == 16) else 1.0
    values = values.astype(np.float32) * np.float32(scale)
    if not np.isfinite(values).any() or not (np.nan_to_num(values) != 0).any():
        raise DepthFileError(f"The {name} holds no valid depth values (all zero, NaN or infinite).")
    if kind == "metric" and np.nanmin(np.where(np.isfinite(values), values, np.nan)) < 0:
        raise DepthFileError(f"The {name} has negative values; metric depth must be positive (0 = no depth).")
    return DepthMap(values=values, native=values, kind=DEPTH_KINDS[kind], source="user")


def _read_bytes(source, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as handle:
                data = handle.read()
        except OSError:
            raise DepthFileError(f"The {name} '{os.fspath(source)}' cannot be read.") from None
    elif hasattr(source, "read"):
        data = source.read()
    else:
        raise TypeError(f"cannot read a depth map from {type(source).__name__}")
    if not data:
        raise DepthFileError(f"The {name} is empty.")
    return data


def _read_npy(data: bytes, name: str) -> np.ndarray:
    try:
        values = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile):
        raise DepthFileError(f"The {name} is not a readable .npy array.") from None
    if not isinstance(values, np.ndarray):  # bytes of a zip load as a lazy .npz archive, not an array
        values.close()
        raise DepthFileError(f"The {name} is not a readable .npy array.")
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise DepthFileError(f"The {name} must be a 2-D array of numbers (H x W); got shape {values.shape}.")
    return values


def _read_png(data: bytes, name: str) -> tuple[np.ndarray, int]:
    try:
        with Image.open(io.BytesIO(data), formats=["PNG", "TIFF"]) as image:
            image.load()
            mode = image.mode
            values = np.asarray(image)
    except Exception:
        raise DepthFileError(f"The {name} must be a .npy array or a 16-bit PNG in millimetres.") from None
    if values.ndim != 2:
        raise DepthFileError(f"The {name} must be a single-channel (greyscale) image; it has {values.shape[2]} channels.")
    # Integer images of 16 bits or more hold millimetres; a float image (TIFF mode "F") already holds metres.
    integer = np.issubdtype(values.dtype, np.integer)
    bits = 16 if integer and (mode.startswith("I") or values.dtype.itemsize >= 2) else 8
    return values, bits


def fit_depth_to_image(depth: DepthMap, width: int, height: int) -> tuple[DepthMap, str | None]:
    """Resize a user depth map to the image with nearest-neighbour (which invents no depth between surfaces).

    Returns the map and a note for the user when it was resized, else None.
    """
    h, w = depth.values.shape
    if (w, h) == (width, height):
        return depth, None
    if abs(w / h - width / height) > 0.02 * (width / height):
        raise DepthFileError(
            f"The depth map is {w} x {h} pixels but the image is {width} x {height}: their shapes differ."
        )
    values = depth.values[np.ix_(nearest_indices(h, height), nearest_indices(w, width))]
    note = f"The depth map ({w} x {h}) was resized to the image's {width} x {height} pixels."
    return DepthMap(values=values, native=depth.native, kind=depth.kind, source=depth.source), note
