"""Mesh writers: glTF 2.0 binary (.glb), Wavefront OBJ (+ .mtl + texture .png) and binary PLY.

Every writer is atomic (see :func:`converter.exports.files.atomic_output`): a failure leaves no partial file. Arrays go
to disk as whole numpy buffers (GLB, PLY) or as text formatted column by column with numpy (OBJ): no per-vertex
or per-face Python.

Texture coordinates: :class:`~converter.mesh.Mesh` holds them in the OpenGL/OBJ convention (origin bottom-left);
OBJ stores them as they are, glTF (origin top-left) as ``(u, 1 − v)``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .files import atomic_output, one_line, ply_header, vertex_records, write_array
from ..geometry import face_normals
from ..mesh import Mesh

GENERATOR = "image-to-3d"

# glTF constants
_FLOAT = 5126
_UNSIGNED_BYTE = 5121
_UNSIGNED_INT = 5125
_ARRAY_BUFFER = 34962
_ELEMENT_ARRAY_BUFFER = 34963
_LINEAR = 9729
_LINEAR_MIPMAP_LINEAR = 9987
_CLAMP_TO_EDGE = 33071
_TRIANGLES = 4
_POINTS = 0
_GLB_MAGIC = 0x46546C67  # "glTF"
_CHUNK_JSON = 0x4E4F534A  # "JSON"
_CHUNK_BIN = 0x004E4942  # "BIN\0"


@dataclass(frozen=True)
class Texture:
    """A texture encoded once as PNG, shared by every mesh format that embeds or ships it."""

    png: bytes
    has_alpha: bool

    @classmethod
    def of(cls, texture: "Image.Image | Texture | None") -> "Texture | None":
        """A PIL image → its PNG (RGB, or RGBA when it has transparency); a Texture or None as it is."""
        if texture is None or isinstance(texture, Texture):
            return texture
        has_alpha = texture.mode in ("RGBA", "LA", "PA") or (texture.mode == "P" and "transparency" in texture.info)
        buffer = io.BytesIO()
        texture.convert("RGBA" if has_alpha else "RGB").save(buffer, format="PNG")
        return cls(png=buffer.getvalue(), has_alpha=has_alpha)


# --------------------------------------------------------------------------------------------------------- glTF


def write_glb(
    path: str | os.PathLike,
    mesh: Mesh,
    texture: Image.Image | Texture | None = None,
    *,
    vertex_colors: bool | None = None,
    unlit: bool = True,
    extras: dict | None = None,
) -> None:
    """Write ``mesh`` as a glTF 2.0 binary.

    With a ``texture`` (a PIL image; RGBA gives alpha-masked transparency) it is embedded as PNG and mapped with
    TEXCOORD_0; without one the mesh carries its vertex colours (COLOR_0, normalised unsigned bytes, RGBA).
    ``vertex_colors``: force COLOR_0 on or off (default: only without a texture, because glTF multiplies the
    texture by COLOR_0, which would darken it). ``unlit``: mark the material KHR_materials_unlit (the colours are
    a photograph, already lit; viewers without the extension fall back to a rough, non-metallic material).
    NORMAL is written when ``mesh.normals`` is set. A mesh without faces is written as points; an empty one as a
    scene with no nodes. ``extras``: JSON-able application data stored in ``asset.extras``.
    """
    texture = Texture.of(texture)
    if vertex_colors is None:
        vertex_colors = texture is None
    views: list[dict] = []
    accessors: list[dict] = []
    blobs: list[tuple[int, bytes | memoryview]] = []  # (offset in the buffer, data)
    size = 0

    def add_view(data: np.ndarray | bytes, target: int | None) -> int:
        nonlocal size
        raw = memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else data
        size = _align(size)
        view = {"buffer": 0, "byteOffset": size, "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        blobs.append((size, raw))
        size += len(raw)
        views.append(view)
        return len(views) - 1

    def add_accessor(data: np.ndarray, component: int, kind: str, target: int | None, **more) -> int:
        accessors.append(
            {"bufferView": add_view(data, target), "componentType": component, "count": len(data), "type": kind,
             **more}
        )
        return len(accessors) - 1

    asset: dict = {"version": "2.0", "generator": GENERATOR}
    if extras:
        asset["extras"] = extras
    document: dict = {"asset": asset, "scene": 0, "scenes": [{"name": "image-to-3d"}]}
    if mesh.vertex_count:
        positions = mesh.vertices.astype("<f4", copy=False)
        attributes = {
            "POSITION": add_accessor(
                positions, _FLOAT, "VEC3", _ARRAY_BUFFER,
                min=[float(v) for v in positions.min(axis=0)], max=[float(v) for v in positions.max(axis=0)],
            )
        }
        if mesh.normals is not None:
            attributes["NORMAL"] = add_accessor(mesh.normals.astype("<f4", copy=False), _FLOAT, "VEC3", _ARRAY_BUFFER)
        if texture is not None:
            uvs = np.empty_like(mesh.uvs, dtype="<f4")
            uvs[:, 0] = mesh.uvs[:, 0]
            uvs[:, 1] = 1.0 - mesh.uvs[:, 1]  # glTF's origin is the top-left of the image
            attributes["TEXCOORD_0"] = add_accessor(uvs, _FLOAT, "VEC2", _ARRAY_BUFFER)
        if vertex_colors:
            # Vertex attributes must be 4-byte aligned, so RGB bytes go as RGBA (VEC3 bytes would need a stride).
            rgba = np.full((mesh.vertex_count, 4), 255, dtype=np.uint8)
            rgba[:, :3] = mesh.colors
            attributes["COLOR_0"] = add_accessor(rgba, _UNSIGNED_BYTE, "VEC4", _ARRAY_BUFFER, normalized=True)
        primitive: dict = {"attributes": attributes, "material": 0}
        if mesh.face_count:
            primitive["indices"] = add_accessor(
                mesh.faces.astype("<u4", copy=False).reshape(-1), _UNSIGNED_INT, "SCALAR", _ELEMENT_ARRAY_BUFFER
            )
            primitive["mode"] = _TRIANGLES
        else:
            primitive["mode"] = _POINTS

        material: dict = {
            "name": "photo",
            "pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0,
                                     "roughnessFactor": 1.0},
            "doubleSided": True,
        }
        if texture is not None:
            document["images"] = [{"bufferView": add_view(texture.png, None), "mimeType": "image/png",
                                   "name": "photo"}]
            document["samplers"] = [{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR,
                                     "wrapS": _CLAMP_TO_EDGE, "wrapT": _CLAMP_TO_EDGE}]
            document["textures"] = [{"source": 0, "sampler": 0}]
            material["pbrMetallicRoughness"]["baseColorTexture"] = {"index": 0, "texCoord": 0}
            if texture.has_alpha:
                material["alphaMode"] = "MASK"
                material["alphaCutoff"] = 0.5
        if unlit:
            material["extensions"] = {"KHR_materials_unlit": {}}
            document["extensionsUsed"] = ["KHR_materials_unlit"]
        document["materials"] = [material]
        document["meshes"] = [{"name": "image-to-3d", "primitives": [primitive]}]
        document["nodes"] = [{"name": "image-to-3d", "mesh": 0}]
        document["scenes"][0]["nodes"] = [0]
        document["accessors"] = accessors
        document["bufferViews"] = views
        size = _align(size)
        document["buffers"] = [{"byteLength": size}]

    text = json.dumps(document, separators=(",", ":"), allow_nan=False).encode("utf-8")
    text += b" " * (_align(len(text)) - len(text))  # the JSON chunk is padded with spaces
    total = 12 + 8 + len(text) + (8 + size if size else 0)
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        handle.write(struct.pack("<III", _GLB_MAGIC, 2, total))
        handle.write(struct.pack("<II", len(text), _CHUNK_JSON))
        handle.write(text)
        if size:
            handle.write(struct.pack("<II", size, _CHUNK_BIN))
            written = 0
            for offset, data in blobs:
                handle.write(b"\0" * (offset - written))
                handle.write(data)
                written = offset + len(data)
            handle.write(b"\0" * (size - written))


def _align(value: int, alignment: int = 4) -> int:
    return (value + alignment - 1) // alignment * alignment


# ---------------------------------------------------------------------------------------------------------- OBJ


def write_obj(
    path: str | os.PathLike,
    mesh: Mesh,
    texture: Image.Image | Texture | None = None,
    *,
    vertex_colors: bool = True,
    comments: list[str] | tuple[str, ...] = (),
) -> list[Path]:
    """Write ``name.obj`` and ``name.mtl`` (and, with a ``texture``, ``name_texture.png``) side by side.

    The texture is not called ``name.png`` so that saving ``photo.obj`` next to its input ``photo.png`` cannot
    overwrite the photo. Vertices are ``v x y z r g b`` (colours 0–1, a widely read extension) when
    ``vertex_colors``; ``vt`` holds one texture coordinate per vertex, so faces are ``f a/a b/b c/c`` (1-based).
    The .obj is renamed into place last. Returns the paths written, the .obj first.
    """
    path = Path(path)
    texture = Texture.of(texture)
    mtl_path = path.with_suffix(".mtl")
    png_path = path.with_name(f"{path.stem}_texture.png")
    material = "photo"
    mtl = [f"# {GENERATOR}", f"newmtl {material}", "Ka 0 0 0", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 1"]
    if texture is not None:
        mtl.append(f"map_Kd {png_path.name}")
    header = [f"# {one_line(comment)}" for comment in (comments or [f"generated by {GENERATOR}"])]
    header += [f"# {mesh.vertex_count} vertices, {mesh.face_count} faces", f"mtllib {mtl_path.name}", "o image-to-3d"]

    written = [path, mtl_path] + ([png_path] if texture is not None else [])
    # Everything is written to temporary files first and renamed only when all are complete: the texture, then the
    # .mtl, then the .obj. A failure before that leaves none of them behind.
    with atomic_output(path) as obj_temporary, atomic_output(mtl_path) as mtl_temporary:
        with atomic_output(png_path) if texture is not None else contextlib.nullcontext() as png_temporary:
            if texture is not None:
                png_temporary.write_bytes(texture.png)
            mtl_temporary.write_text("\n".join(mtl) + "\n", encoding="ascii")
            with open(obj_temporary, "wb") as handle:
                handle.write(("\n".join(header) + "\n").encode("ascii"))
                v = mesh.vertices
                columns = [(v[:, 0], 6), (v[:, 1], 6), (v[:, 2], 6)]
                if vertex_colors:
                    rgb = mesh.colors.astype(np.float32) / np.float32(255.0)
                    columns += [(rgb[:, 0], 4), (rgb[:, 1], 4), (rgb[:, 2], 4)]
                _write_rows(handle, "v ", columns, " ")
                if texture is not None:
                    _write_rows(handle, "vt ", [(mesh.uvs[:, 0], 6), (mesh.uvs[:, 1], 6)], " ")
                handle.write(f"usemtl {material}\ns off\n".encode("ascii"))
                one_based = mesh.faces.astype(np.int64) + 1
                if texture is not None:
                    columns = [(one_based[:, k], 0) for k in (0, 0, 1, 1, 2, 2)]
                    _write_rows(handle, "f ", columns, ["/", " ", "/", " ", "/"])
                else:
                    _write_rows(handle, "f ", [(one_based[:, k], 0) for k in range(3)], " ")
    return written


_ROWS_PER_CHUNK = 1 << 18
_SPACE = ord(" ")


def _write_rows(handle, prefix: str, columns: list[tuple[np.ndarray, int]], separators) -> None:
    """Write ``prefix c0 c1 …\\n`` per row: each column (values [N], decimals) as fixed-point text.

    Formatting is vectorised: the digits of all rows are produced one decimal place at a time into a byte table,
    then the padding is squeezed out with a mask. ``separators``: one string for all gaps, or one per gap.
    """
    if isinstance(separators, str):
        separators = [separators] * (len(columns) - 1)
    count = len(columns[0][0])
    for start in range(0, count, _ROWS_PER_CHUNK):
        stop = min(count, start + _ROWS_PER_CHUNK)
        chunk = [(np.asarray(values[start:stop]), decimals) for values, decimals in columns]
        handle.write(_format_rows(prefix, chunk, separators))


def _format_rows(prefix: str, columns: list[tuple[np.ndarray, int]], separators: list[str]) -> bytes:
    count = len(columns[0][0])
    if count == 0:
        return b""
    blocks: list[np.ndarray] = []
    masks: list[np.ndarray] = []

    def literal(text: str):
        data = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        blocks.append(np.broadcast_to(data, (count, len(data))))
        masks.append(np.ones((count, len(data)), dtype=bool))

    literal(prefix)
    for number, (values, decimals) in enumerate(columns):
        block = _format_column(values, decimals)
        if block is None:  # not representable as fixed point: let Python format this chunk
            return _format_rows_slowly(prefix, columns, separators)
        blocks.append(block)
        masks.append(block != _SPACE)
        literal(separators[number] if number < len(separators) else "\n")
    table = np.concatenate(blocks, axis=1)
    keep = np.concatenate(masks, axis=1)
    return table[keep].tobytes()


def _format_column(values: np.ndarray, decimals: int) -> np.ndarray | None:
    """[N, width] uint8: right-aligned fixed-point text of ``values`` with ``decimals`` places, space padded."""
    if decimals:
        values = np.asarray(values, dtype=np.float64)
        if not np.isfinite(values).all() or np.abs(values).max() >= 1e12:
            return None
        scaled = np.rint(values * 10.0**decimals).astype(np.int64)
    else:
        scaled = np.asarray(values).astype(np.int64)
    negative = scaled < 0
    magnitude = np.abs(scaled)
    largest = int(magnitude.max())
    places = max(len(str(largest)), decimals + 1)  # digits, at least one before the point
    digits = np.ones(len(scaled), dtype=np.int64) * (decimals + 1)
    threshold = 10 ** (decimals + 1)
    while threshold <= largest:
        digits += magnitude >= threshold
        threshold *= 10
    width = 1 + places + (1 if decimals else 0)  # sign, digits, point
    block = np.full((len(scaled), width), _SPACE, dtype=np.uint8)
    column = width - 1
    for place in range(places):
        if decimals and place == decimals:
            block[:, column] = ord(".")
            column -= 1
        magnitude, digit = np.divmod(magnitude, 10)
        block[:, column] = np.where(place < digits, digit + ord("0"), _SPACE)
        column -= 1
    if negative.any():
        signed = np.nonzero(negative)[0]
        first_digit = width - digits[signed] - (1 if decimals else 0)
        block[signed, first_digit - 1] = ord("-")
    return block


def _format_rows_slowly(prefix: str, columns, separators) -> bytes:
    line = prefix
    for number, (_, decimals) in enumerate(columns):
        line += "%.9g" if decimals else "%d"
        line += separators[number] if number < len(separators) else "\n"
    stacked = np.column_stack([np.asarray(values, dtype=np.float64 if d else np.int64) for values, d in columns])
    return ((line * len(stacked)) % tuple(stacked.ravel().tolist())).encode("ascii")


# ---------------------------------------------------------------------------------------------------------- PLY


def write_mesh_ply(path: str | os.PathLike, mesh: Mesh, comments: list[str] | tuple[str, ...] = ()) -> None:
    """Binary little-endian PLY: vertex float x, y, z [, nx, ny, nz], uchar red, green, blue; face
    ``list uchar int vertex_indices``. Texture coordinates are not written (PLY has no standard for them)."""
    vertices, properties = vertex_records(mesh.vertices, mesh.colors, mesh.normals)
    faces = np.empty(mesh.face_count, dtype=[("count", "u1"), ("indices", "<i4", (3,))])
    faces["count"] = 3
    faces["indices"] = mesh.faces
    header = ply_header(comments or [f"generated by {GENERATOR}"], [
        ("vertex", mesh.vertex_count, properties),
        ("face", mesh.face_count, ["property list uchar int vertex_indices"]),
    ])
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        handle.write(header)
        write_array(handle, vertices)
        write_array(handle, faces)


# ---------------------------------------------------------------------------------------------------------- STL


def write_stl(path: str | os.PathLike, solid, header: str = GENERATOR) -> None:
    """Binary STL of a :class:`~converter.exports.printing.Solid` (or anything with ``vertices`` [N, 3] and ``faces``
    [F, 3]): an 80-byte header (never starting with "solid", which readers take for ASCII STL), the triangle count,
    then per triangle its unit normal, three corners (float32, the solid's units: millimetres) and a zero attribute
    word. Written as one numpy buffer, atomically."""
    vertices = np.asarray(solid.vertices, dtype=np.float64)
    faces = np.asarray(solid.faces, dtype=np.int64).reshape(-1, 3)
    corners = vertices[faces]  # [F, 3, 3]
    normals = face_normals(vertices, faces)
    records = np.zeros(len(faces), dtype=[("normal", "<f4", (3,)), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])
    records["normal"] = normals
    records["corners"] = corners
    text = one_line(header).encode("ascii")
    if text.lower().startswith(b"solid"):
        text = b"binary " + text
    with atomic_output(path) as temporary, open(temporary, "wb") as handle:
        handle.write(text[:80].ljust(80, b" "))
        handle.write(struct.pack("<I", len(faces)))
        write_array(handle, records)
