"""What a web job does: convert the upload and write every download into the job's folder."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from converter import Converter, export, mesh_export
from converter.mesh import mesh_from_result, texture_image

from .jobs import DOWNLOADS, PREVIEWS, Job

PREVIEW_MAX_SIDE = 1024


def run_conversion(converter: Converter, store, job: Job, image_path: Path, depth_path: Path | None, report) -> dict:
    """Convert and write the job's files, recording each in ``job.files`` as soon as it exists. Returns the info
    shown on the result page and in the API."""
    if depth_path is None and not converter.is_loaded:
        report("loading model")
    options = dict(job.options)
    model = options.pop("model", None)
    make_mesh = options.pop("mesh", True)
    if model and model != converter.model:
        converter = Converter(model=model, device=converter.device, precision=converter.precision,
                              max_pixels=converter.max_pixels)
    result = converter.convert(image_path, depth=depth_path, progress=report, **options)
    report("writing files")
    folder = store.folder(job.id)

    def write(kind: str, writer, *args) -> None:
        name = (DOWNLOADS.get(kind) or PREVIEWS[kind])[0]
        writer(folder / name, *args)
        job.files.append(name)

    write("ply", lambda path: result.save(path))
    if make_mesh:
        mesh = mesh_from_result(result)
        texture = texture_image(result.image)
        comments = result.describe()
        write("glb", mesh_export.write_glb, mesh, texture)
        write("obj", _write_obj_zip, mesh, texture, comments)
        write("mesh_ply", mesh_export.write_mesh_ply, mesh, comments)
    valid = result.depth > 0
    write("depth_png", export.write_depth_png16, result.depth)
    write("depth_npy", export.write_depth_npy, result.depth)
    write("depth_preview", export.write_depth_preview_png, _preview_size(result.depth), None)
    write("input", _write_input_preview, result.image)
    store.save(job)
    k = result.intrinsics
    return {
        "points": int(len(result.points)),
        "faces": int(len(mesh.faces)) if make_mesh else None,
        "width": k.width,
        "height": k.height,
        "units": result.units,
        "model": result.model,
        "depth_kind": result.prediction.kind,
        "valid_fraction": float(valid.mean()),
        "camera": k.to_dict(),
        "timings": {stage: round(seconds, 4) for stage, seconds in result.timings.items()},
        "notes": result.notes,
    }


def _preview_size(depth: np.ndarray) -> np.ndarray:
    """A depth map small enough for a web page (nearest sampling keeps 0 = no depth intact)."""
    height, width = depth.shape
    step = max(1, int(np.ceil(max(height, width) / PREVIEW_MAX_SIDE)))
    return depth[::step, ::step]


def _write_input_preview(path: Path, image) -> None:
    picture = Image.fromarray(image.rgb, "RGB")
    if image.alpha is not None:
        picture = Image.fromarray(np.dstack([image.rgb, image.alpha]), "RGBA")
    picture.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    with export.atomic_output(path) as temporary:
        picture.save(temporary, format="PNG")


def _write_obj_zip(path: Path, mesh, texture, comments) -> None:
    """OBJ, MTL and texture PNG in one zip: one download that a person can unpack and open."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".obj-") as folder:
        written = mesh_export.write_obj(Path(folder) / "mesh.obj", mesh, texture, comments=comments)
        with export.atomic_output(path) as temporary, zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as bundle:
            for file in written:
                bundle.write(file, arcname=Path(file).name)
