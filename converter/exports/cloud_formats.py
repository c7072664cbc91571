"""Point cloud writers for tools that do not read PLY well: PCD (the Point Cloud Library's format, through Open3D) and
LAS 1.2 (lidar and GIS tools, through laspy).

Both are atomic like every writer (:func:`converter.exports.files.atomic_output`). Coordinates are written as given;
the output table (:mod:`converter.exports.outputs`) turns them: LAS z up (x right, y forward into the scene, z up),
as survey tools expect, and PCD y up or z up as asked. The LAS header says which in its system identifier.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from ..errors import OutputError
from .files import atomic_output, atomic_output_named
from .mesh_formats import GENERATOR

LAS_METRIC_SCALE = 0.001  # metres per stored integer step: millimetres
LAS_RELATIVE_RESOLUTION = 1e-6  # relative clouds: at most this fraction of their extent per integer step
_LAS_INT_RANGE = 2**31 - 2  # LAS stores coordinates as int32


# ---------------------------------------------------------------------------------------------------------- PCD


def write_pcd(
    path: str | os.PathLike, points: np.ndarray, colors: np.ndarray, normals: np.ndarray | None = None
) -> None:
    """Binary PCD (v0.7) through Open3D: fields x y z [normal_x normal_y normal_z] rgb, float32 coordinates, colours
    packed as PCL does (one uint32 0x00RRGGBB per point).

    points [N, 3] float, colors [N, 3] uint8, normals [N, 3] float or None. An empty cloud (which Open3D refuses to
    write) gives a valid PCD with ``POINTS 0``, as the PLY writer gives a PLY with no vertices.
    """
    points, colors = _check_cloud(points, colors)
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float64)
        if normals.shape != points.shape:
            raise ValueError("normals must be [N, 3] like points")
    if len(points) == 0:
        _write_empty_pcd(path, normals is not None)
        return

    import open3d as o3d  # heavy; only this writer needs it

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.astype(np.float64)))
    cloud.colors = o3d.utility.Vector3dVector(colors.astype(np.float64) / 255.0)
    if normals is not None:
        cloud.normals = o3d.utility.Vector3dVector(normals)
    # Open3D picks the format from the suffix: the temporary is "cloud.pcd" whatever the target is called.
    with atomic_output_named(path, "cloud.pcd") as temporary:
        # Open3D reports failure by returning False (and a console warning, silenced here: the error says it).
        with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
            written = o3d.io.write_point_cloud(str(temporary), cloud, write_ascii=False, compressed=False)
        if not written:
            raise OutputError(f"'{Path(path).name}' could not be written.")
        # Open3D does not check its writes: on a full disk it returns True with a truncated file. Check the size.
        record = 4 * (7 if normals is not None else 4)
        if not _pcd_is_complete(temporary, len(points) * record):
            raise OutputError(f"'{Path(path).name}' could not be written completely; the disk may be full.")


def _pcd_is_complete(path: Path, data_size: int) -> bool:
    """Whether a binary PCD file is its header plus exactly ``data_size`` bytes of points."""
    with open(path, "rb") as handle:
        start = handle.read(4096)
        end = start.find(b"DATA binary\n")
        if end < 0:
            return False
        return os.fstat(handle.fileno()).st_size == end + len(b"DATA binary\n") + data_size


def _write_empty_pcd(path: str | os.PathLike, with_normals: bool) -> None:
    fields = ["x", "y", "z"] + (["normal_x", "normal_y", "normal_z"] if with_normals else []) + ["rgb"]
    header = [
        "# .PCD v0.7 - Point Cloud Data file format", "VERSION 0.7", "FIELDS " + " ".join(fields),
        "SIZE " + " ".join("4" for _ in fields), "TYPE " + " ".join("F" for _ in fields[:-1]) + " U",
        "COUNT " + " ".join("1" for _ in fields), "WIDTH 0", "HEIGHT 1", "VIEWPOINT 0 0 0 1 0 0 0", "POINTS 0",
        "DATA binary",
    ]
    with atomic_output(path) as temporary:
        temporary.write_bytes(("\n".join(header) + "\n").encode("ascii"))


# ---------------------------------------------------------------------------------------------------------- LAS


def write_las(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray, *, metric: bool,
              up: str = "z") -> None:
    """Uncompressed LAS 1.2, point format 2 (x, y, z, intensity 0, 16-bit RGB), read by CloudCompare, PDAL, QGIS and
    lidar viewers. Format 2 rather than 1.4's format 7: every LAS reader takes it, and 1.4 adds nothing we use.

    points [N, 3] float (metres when ``metric``, else relative units), colors [N, 3] uint8 stored as value × 257
    (0–255 → 0–65535). LAS stores integers × scale + offset: the offset is the cloud's minimum, the scale 1 mm for
    metric clouds and, for relative ones, the largest power of ten at most 1e-6 of the extent (coarser only when
    the extent would not fit in 32 bits). The header names the generator, the units and which axis is ``up``.
    """
    import laspy  # only this writer needs it

    points, colors = _check_cloud(points, colors)
    if not np.isfinite(points).all():
        raise ValueError("points must be finite")
    scale, offsets = _las_scale_and_offsets(points, metric)
    header = laspy.LasHeader(point_format=2, version="1.2")
    header.scales = np.full(3, scale)
    header.offsets = offsets
    header.generating_software = GENERATOR
    header.system_identifier = f"{up} up, {'metres' if metric else 'relative units'}"
    las = laspy.LasData(header)
    las.x, las.y, las.z = points[:, 0], points[:, 1], points[:, 2]
    wide = colors.astype(np.uint16) * np.uint16(257)
    las.red, las.green, las.blue = wide[:, 0], wide[:, 1], wide[:, 2]
    las.update_header()
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        las.write(handle, do_compress=False)


def _las_scale_and_offsets(points: np.ndarray, metric: bool) -> tuple[float, np.ndarray]:
    """(scale, offsets [3]) for LAS integer coordinates: see :func:`write_las`."""
    if len(points) == 0:
        return (LAS_METRIC_SCALE if metric else LAS_RELATIVE_RESOLUTION), np.zeros(3)
    low = points.min(axis=0)
    extent = float((points.max(axis=0) - low).max())
    if metric:
        scale = LAS_METRIC_SCALE
    elif extent > 0:
        scale = 10.0 ** math.floor(math.log10(extent * LAS_RELATIVE_RESOLUTION))
    else:
        scale = LAS_RELATIVE_RESOLUTION  # a single position: any step keeps it exactly at the offset
    if extent / scale > _LAS_INT_RANGE:
        scale = 10.0 ** math.ceil(math.log10(extent / _LAS_INT_RANGE))
    return scale, low.astype(np.float64)


def _check_cloud(points, colors) -> tuple[np.ndarray, np.ndarray]:
    """points [N, 3] as float64 and colors [N, 3] as uint8 (an empty array of any shape counts as [0, 3])."""
    points = np.asarray(points, dtype=np.float64)
    colors = np.asarray(colors)
    points = points.reshape(0, 3) if points.size == 0 else points
    colors = colors.reshape(0, 3) if colors.size == 0 else colors
    if points.ndim != 2 or points.shape[1] != 3 or colors.shape != points.shape:
        raise ValueError("points and colors must both be [N, 3]")
    return points, colors.astype(np.uint8, copy=False)
