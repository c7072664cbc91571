"""Every file a conversion can become, in one table, and the one writer layer that produces them.

A kind (``"ply"``, ``"glb"``, ``"stl"``, …) has a file name inside a web job's folder, the suffixes that select it on
the command line and in ``ConversionResult.save``, a media type, a label for people and a writer. The writers of one
result share an :class:`Artifacts`: the mesh, the encoded texture, the relief solid and the header comments are each
built at most once, however many formats are written, and only when a written format needs them.
"""

from __future__ import annotations

import math
import tempfile
import zipfile
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np

from .. import geometry
from ..errors import OptionError
from ..options import parse_number
from ..mesh import DEFAULT_MAX_DEPTH_RATIO, Mesh, mesh_from_result, mesh_on_grid, texture_image
from . import files as export
from . import mesh_formats as mesh_export
from . import printing
from .cloud_formats import write_las, write_pcd
from .decimate import DETAIL_FRACTIONS, MIN_TARGET_FACES, decimate_mesh, faces_for_detail
from .splats import splats_from_result, write_splat_ply
from .usdz import write_usdz

# Imported where used, for their import time (scipy, PyAV: about 0.1-0.2 s): .stereo, .parallax, ..align.

PREVIEW_MAX_SIDE = 768  # previews are for a web page, shown a few hundred pixels wide
PARALLAX_MAX_SIDE, PARALLAX_FPS = 720, 24  # a 3 s clip: about 0.3 MB and several seconds to render
# Which way is up in the PLY and PCD files (their readers disagree): y as in glTF, three.js, MeshLab and Open3D, or
# z as in Blender (whose PLY importer converts no axes), CloudCompare and survey tools. LAS is always z up, STL too.
UP_AXES = {"y": "y up (glTF, three.js, MeshLab, Open3D)", "z": "z up (Blender, CloudCompare, survey tools)"}
Z_UP_AXES = "right-handed, z up: x right, y forward (into the scene), z up"


def turned_z_up(vectors: np.ndarray | None) -> np.ndarray | None:
    """[N, 3] in the product's y-up frame → z up: (x, y, z) → (x, −z, y), a quarter turn about x (what Blender's
    glTF importer does), so the camera looks along +y and the picture's top is +z. None stays None."""
    if vectors is None:
        return None
    vectors = np.asarray(vectors)
    return np.stack([vectors[:, 0], -vectors[:, 2], vectors[:, 1]], axis=1)


def z_up_axes(axes: str) -> str:
    """The axes line of a file turned z up, from the y-up description ``axes``."""
    return f"{Z_UP_AXES} (the y-up frame '{axes}' turned by (x, y, z) -> (x, -z, y))"


@dataclass(frozen=True)
class OutputSettings:
    """How outputs are made, beyond the conversion itself: the printable relief's size in millimetres, the mesh's
    discontinuity threshold (see :mod:`converter.mesh`) and how far the simplified mesh is simplified (a detail level
    of :data:`converter.exports.decimate.DETAIL_FRACTIONS` or a target number of triangles)."""

    stl_width_mm: float = printing.DEFAULT_WIDTH_MM
    stl_base_mm: float = printing.DEFAULT_BASE_MM
    max_depth_ratio: float = DEFAULT_MAX_DEPTH_RATIO
    simplify: str | int = "low"
    up: str = "y"

    def __post_init__(self):
        printing.check_size(self.stl_width_mm, self.stl_base_mm)
        object.__setattr__(self, "up", parse_up(self.up))
        object.__setattr__(self, "simplify", parse_simplify(self.simplify))
        if not (isinstance(self.max_depth_ratio, (int, float)) and math.isfinite(self.max_depth_ratio)
                and self.max_depth_ratio >= 1.0):
            raise OptionError("The mesh's depth-ratio threshold must be a number of at least 1.")

    @classmethod
    def from_keywords(cls, width_mm: float = printing.DEFAULT_WIDTH_MM, base_mm: float = printing.DEFAULT_BASE_MM,
                      max_depth_ratio: float = DEFAULT_MAX_DEPTH_RATIO, up: str = "y") -> "OutputSettings":
        """The keyword names ``ConversionResult.save`` takes."""
        return cls(stl_width_mm=width_mm, stl_base_mm=base_mm, max_depth_ratio=max_depth_ratio, up=up)


def parse_up(value) -> str:
    """"y" or "z" (any case, blanks around) → itself; anything else is an OptionError."""
    text = value.strip().lower() if isinstance(value, str) else value
    if text not in UP_AXES:
        raise OptionError(f"up must be one of: {', '.join(f'{name} ({what})' for name, what in UP_AXES.items())}.")
    return text


class Artifacts:
    """What several outputs of one result share, each built on first use and then kept."""

    def __init__(self, result, settings: OutputSettings | None = None, metadata: dict | None = None):
        self.result = result
        self.settings = settings or OutputSettings()
        self.given_metadata = metadata  # a description that contains result.metadata() (a web job's info)

    @cached_property
    def metadata(self) -> dict:
        return self.given_metadata or self.result.metadata()

    @cached_property
    def comments(self) -> list[str]:
        return comment_lines(self.metadata)

    @cached_property
    def z_up_comments(self) -> list[str]:
        """The header comments of a file turned z up: its axes line says so."""
        axes = f"axes: {self.metadata['axes']}"
        return [f"axes: {z_up_axes(self.metadata['axes'])}" if line == axes else line for line in self.comments]

    def comments_for_up(self) -> list[str]:
        return self.z_up_comments if self.settings.up == "z" else self.comments

    def turned(self, vectors: np.ndarray | None) -> np.ndarray | None:
        """Points or normals in the settings' ``up`` frame (the PLY and PCD writers)."""
        return turned_z_up(vectors) if self.settings.up == "z" else vectors

    @cached_property
    def mesh(self) -> Mesh:
        return mesh_from_result(self.result, max_depth_ratio=self.settings.max_depth_ratio)

    @cached_property
    def texture(self) -> mesh_export.Texture:
        return mesh_export.Texture.of(texture_image(self.result.image))

    @cached_property
    def simplified_mesh(self) -> Mesh:
        """The mesh decimated to the settings' detail level or face count, its texture still registered."""
        source, simplify = self.mesh, self.settings.simplify
        target = faces_for_detail(source.face_count, simplify) if isinstance(simplify, str) else simplify
        return decimate_mesh(self.coarse_mesh(target), target, self.to_uv)

    def coarse_mesh(self, target_faces: int) -> Mesh:
        """The grid mesh, or for a small target the mesh of every k-th grid sample: quadric decimation costs in
        proportion to its input (about 36 s for 2 M triangles on one core), and an input at most 2 × the target
        still leaves it room to place vertices where the shape needs them."""
        stride = math.ceil(math.sqrt(max(1.0, self.mesh.face_count / (2.0 * max(target_faces, 1)))))
        if stride <= 1:
            return self.mesh
        r = self.result
        rows, columns = np.arange(0, len(r.grid_rows), stride), np.arange(0, len(r.grid_columns), stride)
        keep = r.keep[np.ix_(rows, columns)]
        index = np.cumsum(r.keep.ravel()).reshape(r.keep.shape) - 1  # cloud index of each kept grid sample
        picked = index[np.ix_(rows, columns)][keep]
        return mesh_on_grid(r.points[picked], keep, r.grid_rows[rows], r.grid_columns[columns],
                            (r.image.width, r.image.height), r.colors[picked],
                            depth=r.grid_depth()[np.ix_(rows, columns)],
                            max_depth_ratio=self.settings.max_depth_ratio)

    def to_uv(self, vertices: np.ndarray) -> np.ndarray:
        """Texture coordinates of points of this result: each projected back into the image it came from."""
        r = self.result
        size = (r.image.width, r.image.height)
        if r.mode == "relief":
            pixels = geometry.relief_to_pixels(vertices, size)
        else:
            pixels = geometry.project_to_pixels(vertices, r.intrinsics)
        return geometry.pixels_to_uv(pixels, size)

    @cached_property
    def stereo_pair(self) -> tuple[np.ndarray, np.ndarray]:
        """(left, right) eye views [H, W, 3] uint8 of the working image (see :mod:`converter.exports.stereo`)."""
        from .stereo import stereo_pair

        r = self.result
        return stereo_pair(r.image.rgb, r.depth, r.image.alpha)

    @cached_property
    def relief_solid(self) -> printing.Solid:
        return printing.relief_solid_from_result(
            self.result, width_mm=self.settings.stl_width_mm, base_mm=self.settings.stl_base_mm)


def comment_lines(metadata: dict) -> list[str]:
    """Header lines that say what the numbers in a file mean, from :meth:`ConversionResult.metadata`."""
    k = metadata["camera"]
    options = " ".join(f"{name}={value}" for name, value in metadata["options"].items())
    camera = "camera: pinhole" + (" (not used by relief mode)" if metadata["mode"] == "relief" else "")
    lines = [
        "generated by image-to-3d",
        f"mode: {metadata['mode']}",
        f"axes: {metadata['axes']}",
        f"units: {metadata['units']}",
        f"{camera} fx={k['fx']:.4f} fy={k['fy']:.4f} cx={k['cx']:.4f} cy={k['cy']:.4f} "
        f"width={k['width']} height={k['height']} fov_x_deg={k['fov_x_deg']:.4f} source={k['source']}",
        f"options: {options}",
    ]
    if metadata.get("scale"):
        lines.append(f"scale: {metadata['scale']['description']}")
    lines.append(f"depth: {metadata['depth_source']} kind={metadata['depth_kind']}")  # last: tests and tools read it
    return lines


@dataclass(frozen=True)
class OutputKind:
    """One kind of output file. ``suffixes``: what selects it in a path (the first is the one written by the CLI's
    ``--format``); none for previews, which exist for the web page only."""

    name: str
    file_name: str
    suffixes: tuple[str, ...]
    media_type: str
    label: str
    write: Callable[[Path, Artifacts], None]
    download: bool = True

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


def _point_cloud_ply(path: Path, a: Artifacts) -> None:
    r = a.result
    export.write_point_cloud_ply(path, a.turned(r.points), r.colors, a.turned(r.normals),
                                 comments=a.comments_for_up())


def _mesh_ply(path: Path, a: Artifacts) -> None:
    mesh = a.mesh if a.settings.up == "y" else replace(a.mesh, vertices=a.turned(a.mesh.vertices),
                                                        normals=a.turned(a.mesh.normals))
    mesh_export.write_mesh_ply(path, mesh, comments=a.comments_for_up())


def _glb(path: Path, a: Artifacts) -> None:
    mesh_export.write_glb(path, a.mesh, a.texture, extras=_glb_extras(a))


def _glb_extras(a: Artifacts, **more) -> dict:
    """What a GLB's ``asset.extras`` say about the numbers in it."""
    r = a.result
    return {"axes": r.axes, "units": r.units, "camera": r.intrinsics.to_dict(), "mode": r.mode, **more}


def _obj(path: Path, a: Artifacts) -> None:
    """``.obj``: the OBJ, ``.mtl`` and texture PNG side by side; ``.zip``: the three in one download."""
    if path.suffix.lower() != ".zip":
        mesh_export.write_obj(path, a.mesh, a.texture, comments=a.comments)
        return
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".obj-") as folder:
        mesh_export.write_obj(Path(folder) / "mesh.obj", a.mesh, a.texture, comments=a.comments)
        # Level 1: several times faster than the default on ~100 MB of OBJ text, and only slightly larger.
        with export.atomic_output(path) as temporary, \
                zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bundle:
            for file in sorted(Path(folder).iterdir()):
                bundle.write(file, arcname=file.name)


def _simplified_glb(path: Path, a: Artifacts) -> None:
    mesh_export.write_glb(path, a.simplified_mesh, a.texture, extras=_glb_extras(a, simplified=a.settings.simplify))


def _usdz(path: Path, a: Artifacts) -> None:
    write_usdz(path, a.mesh, a.texture, metres_per_unit=1.0 if a.result.units == "metres" else None)


def _pcd(path: Path, a: Artifacts) -> None:
    write_pcd(path, a.turned(a.result.points), a.result.colors, a.turned(a.result.normals))


def _las(path: Path, a: Artifacts) -> None:
    """Always z up (x right, y forward into the scene, z up), as survey tools expect."""
    write_las(path, turned_z_up(a.result.points), a.result.colors, metric=a.result.units == "metres")


def _splat_ply(path: Path, a: Artifacts) -> None:
    write_splat_ply(path, splats_from_result(a.result, a.settings.max_depth_ratio), comments=a.comments)


def _side_by_side(path: Path, a: Artifacts) -> None:
    from .stereo import side_by_side, write_png

    write_png(path, side_by_side(*a.stereo_pair))


def _anaglyph(path: Path, a: Artifacts) -> None:
    from .stereo import anaglyph, write_png

    write_png(path, anaglyph(*a.stereo_pair))


def _parallax_mp4(path: Path, a: Artifacts) -> None:
    from .parallax import parallax_frames, write_mp4

    r = a.result
    write_mp4(path, parallax_frames(r.image.rgb, r.depth, r.image.alpha, max_side=PARALLAX_MAX_SIDE), PARALLAX_FPS)


def _stl(path: Path, a: Artifacts) -> None:
    mesh_export.write_stl(path, a.relief_solid, header=f"image-to-3d relief {a.settings.stl_width_mm:g} mm")


def _json(path: Path, a: Artifacts) -> None:
    extra = {"ply_pcd_axes": z_up_axes(a.metadata["axes"])} if a.settings.up == "z" else {}  # the files written
    export.write_json(path, {**a.metadata, **extra})


def _depth_png(path: Path, a: Artifacts) -> None:
    export.write_depth_png16(path, a.result.depth)


def _depth_npy(path: Path, a: Artifacts) -> None:
    export.write_depth_npy(path, a.result.depth)


def _depth_preview(path: Path, a: Artifacts) -> None:
    depth = a.result.depth
    step = math.ceil(max(depth.shape) / PREVIEW_MAX_SIDE)  # nearest sampling keeps 0 = no depth intact
    export.write_depth_preview_png(path, depth[::step, ::step])


def _disagreement(path: Path, a: Artifacts) -> None:
    """Where the aligned relative model still differs from the metric model (see :mod:`converter.align`)."""
    from ..align import disagreement_picture

    alignment = a.result.alignment
    if alignment is None:
        raise OptionError("The disagreement map exists only for a conversion aligned to a metric model "
                          "(--align-to, or 'Align to a metric model' on the page).")
    picture = disagreement_picture(alignment.disagreement, alignment.reference.source)
    with export.atomic_output(path) as temporary:
        picture.save(temporary, format="PNG", compress_level=1)


def _disagreement_layer(path: Path, a: Artifacts) -> None:
    """The same map without its legend, transparent where not compared: a layer over the page's picture."""
    from ..align import disagreement_layer

    if a.result.alignment is None:
        raise OptionError("The disagreement map exists only for a conversion aligned to a metric model.")
    with export.atomic_output(path) as temporary:
        disagreement_layer(a.result.alignment.disagreement, PREVIEW_MAX_SIDE).save(temporary, format="PNG",
                                                                                   compress_level=1)


def _input_preview(path: Path, a: Artifacts) -> None:
    """The picture at most PREVIEW_MAX_SIDE on its longer side: a box average by a whole factor (fast, no
    ringing), PNG at the fastest compression. A web job writes it before it is done, so it must cost little."""
    picture = a.result.image.picture()
    factor = math.ceil(max(picture.size) / PREVIEW_MAX_SIDE)
    if factor > 1:
        picture = picture.reduce(factor) if picture.mode == "RGB" else \
            picture.convert("RGBa").reduce(factor).convert("RGBA")
    with export.atomic_output(path) as temporary:
        picture.save(temporary, format="PNG", compress_level=1)


OUTPUTS: dict[str, OutputKind] = {kind.name: kind for kind in (
    OutputKind("ply", "cloud.ply", (".ply",), "application/octet-stream", "Point cloud (.ply)", _point_cloud_ply),
    OutputKind("glb", "mesh.glb", (".glb",), "model/gltf-binary", "Mesh, glTF binary (.glb)", _glb),
    OutputKind("obj", "mesh-obj.zip", (".obj", ".zip"), "application/zip",
               "Mesh, Wavefront (.obj + .mtl + texture, zipped)", _obj),
    OutputKind("mesh_ply", "mesh.ply", (".mesh.ply",), "application/octet-stream", "Mesh (.ply)", _mesh_ply),
    OutputKind("depth_png", "depth.png", (".depth.png",), "image/png", "Depth map, 16-bit PNG", _depth_png),
    OutputKind("depth_npy", "depth.npy", (".npy",), "application/octet-stream", "Depth map (.npy)", _depth_npy),
    OutputKind("json", "result.json", (".json",), "application/json", "Camera, units and options (.json)", _json),
    OutputKind("stl", "relief.stl", (".stl",), "model/stl", "3D-print relief (.stl)", _stl),
    OutputKind("simplified_glb", "mesh-simplified.glb", (".simplified.glb",), "model/gltf-binary",
               "Mesh, simplified for games and the web (.glb)", _simplified_glb),
    OutputKind("usdz", "mesh.usdz", (".usdz",), "model/vnd.usdz+zip", "Mesh for AR Quick Look on iPhone/iPad (.usdz)",
               _usdz),
    OutputKind("sbs", "stereo.sbs.png", (".sbs.png",), "image/png",
               "Stereo pair, side by side for VR viewers and 3D TVs (.png)", _side_by_side),
    OutputKind("anaglyph", "stereo.anaglyph.png", (".anaglyph.png",), "image/png",
               "Anaglyph for red-cyan glasses (.png)", _anaglyph),
    OutputKind("mp4", "parallax.mp4", (".mp4",), "video/mp4", "Parallax clip, 3 s (.mp4)", _parallax_mp4),
    OutputKind("pcd", "cloud.pcd", (".pcd",), "application/octet-stream", "Point cloud, PCL (.pcd)", _pcd),
    OutputKind("las", "cloud.las", (".las",), "application/octet-stream", "Point cloud, LAS for survey tools (.las)",
               _las),
    OutputKind("splat_ply", "splats.splat.ply", (".splat.ply",), "application/octet-stream",
               "Gaussian splats for splat viewers (.splat.ply)", _splat_ply),
    OutputKind("disagreement", "disagreement.png", (".disagreement.png",), "image/png",
               "Disagreement of the two models after alignment (.png)", _disagreement),
    OutputKind("disagreement_layer", "disagreement_layer.png", (), "image/png", "Disagreement layer",
               _disagreement_layer, download=False),
    OutputKind("input", "input.png", (), "image/png", "Input picture", _input_preview, download=False),
    OutputKind("depth_preview", "depth_preview.png", (), "image/png", "Depth picture", _depth_preview,
               download=False),
)}
MESH_KINDS = ("glb", "obj", "mesh_ply", "simplified_glb", "usdz")
ALIGNMENT_KINDS = ("disagreement", "disagreement_layer")  # only for a conversion aligned to a metric model


def parse_simplify(value) -> str | int:
    """A detail level ("low", "medium", "high") or a whole number of triangles (at least 4) → itself; else an
    OptionError. Text holding a number counts as the number."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in DETAIL_FRACTIONS:
            return text
        if text[:1].isascii() and text[:1].isdigit():  # a count: ASCII digits only ('¹', '٣' are refused below)
            value = parse_number(text, "simplify", whole=True)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= MIN_TARGET_FACES:
        return int(value)
    raise OptionError(f"Simplify to a detail level ({', '.join(DETAIL_FRACTIONS)}) or a number of triangles "
                      f"written with the digits 0-9 (at least {MIN_TARGET_FACES}).")


def kind_for_path(path: str | Path) -> OutputKind:
    """The output kind a file name asks for, by its longest known suffix (``x.depth.png`` before ``.png``)."""
    name = Path(path).name.lower()
    matches = [(len(suffix), kind) for kind in OUTPUTS.values() for suffix in kind.suffixes if name.endswith(suffix)]
    if not matches:
        raise OptionError(f"Cannot write '{Path(path).name}': the output must end in one of "
                          f"{', '.join(suffix for kind in OUTPUTS.values() for suffix in kind.suffixes)}.")
    return max(matches, key=lambda match: match[0])[1]


def parse_kinds(text: str) -> list[str]:
    """``"ply,glb,stl"`` → known kind names, in the given order, without repeats; an unknown one is an OptionError."""
    names = []
    for name in (part.strip().lower() for part in str(text).split(",")):
        if not name or name in names:
            continue
        kind = OUTPUTS.get(name)
        if kind is None or not kind.suffixes:
            choices = ", ".join(k.name for k in OUTPUTS.values() if k.suffixes)
            raise OptionError(f"Unknown output format '{name[:40]}'. Choose from: {choices}.")
        names.append(name)
    if not names:
        raise OptionError("Name at least one output format.")
    return names


def write_outputs(result, targets: dict[str, Path] | str | Path, settings: OutputSettings | None = None, *,
                  kinds=None, artifacts: Artifacts | None = None) -> dict[str, Path]:
    """Write several outputs of one result, sharing what they have in common.

    ``targets``: kind name → path; or a folder, with ``kinds`` (names) written under their ``file_name``.
    ``artifacts``: reuse the shared pieces of an earlier call for the same result. Returns kind → path written.
    """
    if not isinstance(targets, dict):
        folder = Path(targets)
        targets = {name: folder / OUTPUTS[name].file_name for name in kinds}
    shared = artifacts or Artifacts(result, settings)
    written = {}
    for name, path in targets.items():
        OUTPUTS[name].write(Path(path), shared)
        written[name] = Path(path)
    return written
