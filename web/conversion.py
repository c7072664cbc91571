"""What a web job does: convert the upload and write every download into the job's folder."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from converter import Converter, export
from converter.errors import ConversionError, OutputError
from converter.images import load_image
from converter.mesh import mesh_from_result

from .depth_cache import DepthCache, load_prediction, save_prediction
from .jobs import DOWNLOADS, IMAGE_FILE, PREDICTION_FILE, PREVIEWS, Job

DEFAULT_STL_WIDTH_MM = 100.0
PRIVATE_OPTIONS = ("rebuild_of",)  # internal job fields that are not conversion options

PREVIEW_MAX_SIDE = 1024


def run_conversion(converter: Converter, store, job: Job, image_path: Path, depth_path: Path | None, report,
                   cache: DepthCache | None = None) -> dict:
    """Convert and write the job's files, recording each in ``job.files`` as soon as it exists. Returns the info
    shown on the result page and in the API.

    A rebuild (``job.options["rebuild_of"]``) reuses the source job's stored prediction; otherwise a model
    prediction of the same upload bytes is taken from ``cache`` when there is one. Either way the model is not run.
    """
    options = dict(job.options)
    model = options.pop("model", None)
    make_mesh = options.pop("mesh", True)
    stl_width_mm = options.pop("stl_width_mm", DEFAULT_STL_WIDTH_MM)
    rebuild_of = options.pop("rebuild_of", None)
    if model and model != converter.model:
        converter = Converter(model=model, device=converter.device, precision=converter.precision,
                              max_pixels=converter.max_pixels)
    prediction, cache_key = None, None
    if rebuild_of:
        prediction = load_prediction(store.folder(rebuild_of) / PREDICTION_FILE)
        if prediction is None:
            raise ConversionError("The result to rebuild has expired and was deleted. Convert the image again.")
    elif depth_path is None and cache is not None:
        cache_key = cache.key(Path(image_path).read_bytes(), converter.model, converter.precision)
        prediction = cache.get(cache_key)
    if prediction is None and depth_path is None and not converter.is_loaded:
        report("loading model")
    if prediction is not None:
        options.pop("depth_kind", None)
    result = converter.convert(image_path, depth=None if prediction is not None else depth_path,
                               prediction=prediction, progress=report, **options)
    if cache_key is not None and prediction is None:
        cache.put(cache_key, result.prediction)
    report("writing files")
    folder = store.folder(job.id)

    def write(kind: str, writer, *args) -> None:
        name = (DOWNLOADS.get(kind) or PREVIEWS[kind])[0]
        writer(folder / name, *args)
        job.files.append(name)

    def keep(name: str, writer, *args) -> None:
        """A file the job keeps for rebuilds, not a download."""
        try:
            writer(folder / name, *args)
        except OSError:
            raise OutputError("The server could not store the result: it is out of disk space or its output "
                              "folder is not writable. Please try again later.") from None
        job.files.append(name)

    write("ply", lambda path: result.save(path))
    if make_mesh:
        mesh = mesh_from_result(result)  # once, for the three mesh formats
        write("glb", lambda path: result.save(path, triangles=mesh))
        write("obj", _write_obj_zip, result, mesh)
        write("mesh_ply", lambda path: result.save(path, mesh=True, triangles=mesh))
    write("json", lambda path: result.save_metadata(
        path, extra={"job": {"id": job.id, "options": public_options(job.options)}}))
    write("stl", lambda path: result.save(path, width_mm=stl_width_mm))
    working_image = result.image
    if result.options.paper_background:  # keep the image before the paper was cut away
        working_image = load_image(image_path, converter.max_pixels,
                                   draft_points=0 if depth_path is not None else result.options.max_points)
    keep(IMAGE_FILE, _write_working_image, working_image)
    keep(PREDICTION_FILE, save_prediction, result.prediction)
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
        "mode": result.mode,
        "looks_like_drawing": bool(result.looks_like_drawing),
        "depth_cached": cache_key is not None and prediction is not None,
        "rebuilt_from": rebuild_of,
        "options": public_options(job.options),
    }


def public_options(options: dict) -> dict:
    """A job's options as shown to people (result.json, the API, the rebuild form): no internal fields."""
    return {name: value for name, value in options.items() if name not in PRIVATE_OPTIONS}


def _picture(image) -> Image.Image:
    """A LoadedImage as a PIL image, RGBA when it has alpha."""
    if image.alpha is not None:
        return Image.fromarray(np.dstack([image.rgb, image.alpha]), "RGBA")
    return Image.fromarray(image.rgb, "RGB")


def _write_working_image(path: Path, image) -> None:
    """The image the depth belongs to, lossless (RGBA if it has alpha), at the working size: rebuilds read it."""
    picture = _picture(image)
    with export.atomic_output(path) as temporary:
        picture.save(temporary, format="PNG", compress_level=1)


def _preview_size(depth: np.ndarray) -> np.ndarray:
    """A depth map small enough for a web page (nearest sampling keeps 0 = no depth intact)."""
    height, width = depth.shape
    step = max(1, int(np.ceil(max(height, width) / PREVIEW_MAX_SIDE)))
    return depth[::step, ::step]


def _write_input_preview(path: Path, image) -> None:
    picture = _picture(image)
    picture.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
    with export.atomic_output(path) as temporary:
        picture.save(temporary, format="PNG")


def _write_obj_zip(path: Path, result, mesh) -> None:
    """OBJ, MTL and texture PNG in one zip: one download that a person can unpack and open."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".obj-") as folder:
        result.save(Path(folder) / "mesh.obj", triangles=mesh)
        # Level 1: several times faster than the default on ~100 MB of OBJ text, and only slightly larger.
        with export.atomic_output(path) as temporary, \
                zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as bundle:
            for file in sorted(Path(folder).iterdir()):
                bundle.write(file, arcname=file.name)
