"""Writers for results. Every writer is atomic: it writes a temporary file beside the target and renames it, so a
failure (disk full, unwritable folder) leaves no partial file behind."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import OutputError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success it becomes ``path``, on failure it is removed."""
    path = Path(path)
    try:
        temporary = _create_temporary(path)
    except OSError as error:
        raise OutputError(_describe(error, path)) from None
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except OSError as error:
        _remove(temporary)
        raise OutputError(_describe(error, path)) from None
    except BaseException:
        _remove(temporary)
        raise


@contextlib.contextmanager
def atomic_output_named(path: str | os.PathLike, name: str | None = None):
    """Like :func:`atomic_output`, but the temporary path is called ``name`` (default: the
    target's own name), for libraries that choose the format from the suffix (Open3D, USD's packager).

    The file is written into a private temporary folder beside the target, then renamed onto atomic_output's
    temporary file, which is renamed into place; the folder is always removed. OSError becomes OutputError.
    """
    path = Path(path)
    with atomic_output(path) as temporary:
        folder = tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            target = Path(folder) / (name or path.name)
            yield target
            os.replace(target, temporary)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _create_temporary(path: Path) -> str:
    """Create an empty, unique ``.NAME.XXXX.part`` beside ``path`` with the usual permissions (0o666 less the umask).

    tempfile.mkstemp would make it 0o600, and the rename would then leave the result readable by its owner only.
    """
    for _ in range(100):
        temporary = os.path.join(path.parent, f".{path.name}.{secrets.token_hex(6)}.part")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary
    raise FileExistsError(errno.EEXIST, "no unique temporary name", str(path))


def _remove(path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _describe(error: OSError, path: Path) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"There is not enough disk space to write '{path.name}'."
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"The output folder is not writable, so '{path.name}' could not be saved."
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return f"The output folder for '{path.name}' does not exist."
    if error.errno == errno.EISDIR:
        return f"'{path.name}' is a folder, so it cannot be overwritten with a file."
    return f"'{path.name}' could not be written."


def write_text(path: str | os.PathLike, text: str) -> None:
    """A UTF-8 text file, written atomically."""
    with atomic_output(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data) -> None:
    """``data`` as indented JSON (no NaN: strict readers reject it), written atomically."""
    write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


PLY_TYPES = {"<f4": "float", "u1": "uchar", "<i4": "int"}
PLY_CHUNK_POINTS = 1 << 20  # vertices made and written at a time: 15-27 MB of records


def ply_header(comments, elements: list[tuple[str, int, list[str]]]) -> bytes:
    """A binary little-endian PLY header: ``comments`` (single ASCII lines), then per element its name, count and
    property lines (e.g. ``"property float x"``)."""
    lines = ["ply", "format binary_little_endian 1.0"]
    lines += [f"comment {one_line(comment)}" for comment in comments]
    for name, count, properties in elements:
        lines.append(f"element {name} {count}")
        lines += properties
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def vertex_records(points: np.ndarray, colors: np.ndarray, normals: np.ndarray | None = None):
    """One structured array of PLY vertices (float x, y, z [, nx, ny, nz], uchar red, green, blue) and its property
    lines. points [N, 3], colors [N, 3] uint8, normals [N, 3] or None."""
    points = np.asarray(points, dtype="<f4")
    colors = np.asarray(colors, dtype=np.uint8)
    count = len(points)
    if points.shape != (count, 3) or colors.shape != (count, 3):
        raise ValueError("points and colors must both be [N, 3]")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if normals is not None:
        fields += [("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertices = np.empty(count, dtype=fields)
    for axis, name in enumerate("xyz"):
        vertices[name] = points[:, axis]
        if normals is not None:
            vertices["n" + name] = np.asarray(normals, dtype="<f4")[:, axis]
    for channel, name in enumerate(("red", "green", "blue")):
        vertices[name] = colors[:, channel]
    return vertices, [f"property {PLY_TYPES[kind]} {name}" for name, kind in fields]


def write_point_cloud_ply(
    path: str | os.PathLike,
    points: np.ndarray,
    colors: np.ndarray,
    normals: np.ndarray | None = None,
    comments: list[str] | tuple[str, ...] = (),
) -> None:
    """Binary little-endian PLY: float x, y, z [, float nx, ny, nz], uchar red, green, blue (one vertex per point).

    points [N, 3] float32, colors [N, 3] uint8, normals [N, 3] float32 or None. One structured array, one write:
    no per-point Python. The records are made and written :data:`PLY_CHUNK_POINTS` at a time: a whole cloud's records
    would be one more copy of it (15 bytes a point, 735 MB at 49 MP).
    """
    count = len(points)
    _, properties = vertex_records(points[:0], colors[:0], None if normals is None else normals[:0])
    if np.shape(points) != (count, 3) or np.shape(colors) != (count, 3):
        raise ValueError("points and colors must both be [N, 3]")
    header = ply_header(comments, [("vertex", count, properties)])
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        handle.write(header)
        for start in range(0, count, PLY_CHUNK_POINTS):
            end = start + PLY_CHUNK_POINTS
            chunk, _ = vertex_records(points[start:end], colors[start:end],
                                      None if normals is None else normals[start:end])
            write_array(handle, chunk)


def write_array(handle, array: np.ndarray) -> None:
    """Write an array's bytes without a copy. Unlike ndarray.tofile, a failed write keeps its errno (disk full)."""
    handle.write(np.ascontiguousarray(array).view(np.uint8).reshape(-1))


def one_line(text: str) -> str:
    """Header comments (PLY, OBJ, STL) are single ASCII lines."""
    return " ".join(str(text).split()).encode("ascii", "replace").decode("ascii")


# A perceptually ordered colour ramp (dark violet → orange → pale yellow), as control points for np.interp.
_RAMP = np.array(
    [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39],
     [252, 255, 164]],
    dtype=np.float32,
)


def colorize_depth(depth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Depth [H, W] → [H, W, 3] uint8 picture: near is bright, far is dark, invalid is black."""
    depth = np.asarray(depth, dtype=np.float32)
    if valid is None:
        valid = np.isfinite(depth) & (depth > 0)
    picture = np.zeros(depth.shape + (3,), dtype=np.uint8)
    if not valid.any():
        return picture
    near, far = np.percentile(depth[valid], [1, 99])
    t = np.clip((far - depth) / max(far - near, 1e-12), 0.0, 1.0)
    stops = np.linspace(0.0, 1.0, len(_RAMP))
    for channel in range(3):
        picture[..., channel] = np.interp(t, stops, _RAMP[:, channel]).astype(np.uint8)
    picture[~valid] = 0
    return picture


def write_depth_preview_png(path: str | os.PathLike, depth: np.ndarray, valid: np.ndarray | None = None) -> None:
    with atomic_output(path) as temporary:
        Image.fromarray(colorize_depth(depth, valid), "RGB").save(temporary, format="PNG", compress_level=1)


def write_depth_png16(path: str | os.PathLike, depth: np.ndarray, scale: float = 1000.0) -> None:
    """16-bit PNG of depth × ``scale`` (millimetres for metres); 0 = no depth; values beyond 65.535 m clip."""
    depth = np.asarray(depth, dtype=np.float32)
    stored = np.where(np.isfinite(depth) & (depth > 0), np.rint(depth * scale), 0)
    stored = np.clip(stored, 0, 65535).astype(np.uint16)
    with atomic_output(path) as temporary:
        Image.fromarray(stored).save(temporary, format="PNG")


def write_depth_npy(path: str | os.PathLike, depth: np.ndarray) -> None:
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, np.asarray(depth, dtype=np.float32))
