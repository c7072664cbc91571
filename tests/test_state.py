"""The library's state API: a result kept on disk, loaded back and converted again with other options, no model;
and the web layer's promise to use only the package's public names."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import converter
from converter import ConversionOptions, Converter, DepthMap, LoadedImage, StateError, load_state
from converter.state import IMAGE_FILE, PREDICTION_FILE, save_prediction

ROOT = Path(__file__).resolve().parent.parent


def _image(height: int = 24, width: int = 32, alpha: bool = False) -> LoadedImage:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    clear = None
    if alpha:
        clear = np.full((height, width), 255, np.uint8)
        clear[:, :4] = 0
    return LoadedImage(rgb=rgb, alpha=clear, focal_px=40.0, focal_source="EXIF 35 mm equivalent", format="JPEG",
                       scale=0.5)


def _prediction(height: int = 24, width: int = 32, kind: str = "inverse_relative", focal_px=None) -> DepthMap:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    values = 1.0 + x / width + 0.5 * y / height
    if kind == "metric":
        values = 1.0 / values
    return DepthMap(values=values, native=values[::2, ::2].copy(), kind=kind, source="some/model", focal_px=focal_px)


@pytest.mark.parametrize("alpha, kind, focal_px", [(False, "inverse_relative", None), (True, "metric", 30.0)])
def test_a_saved_state_reconverts_to_the_same_result(tmp_path, alpha, kind, focal_px):
    options = ConversionOptions(max_points=0, normals=True)
    first = Converter().convert(_image(alpha=alpha), prediction=_prediction(kind=kind, focal_px=focal_px),
                                options=options)
    written = first.save_state(tmp_path)
    assert sorted(path.name for path in written) == sorted([IMAGE_FILE, PREDICTION_FILE])

    state = load_state(tmp_path)
    assert (state.image.focal_px, state.image.focal_source, state.image.format, state.image.scale) == \
        (40.0, "EXIF 35 mm equivalent", "JPEG", 0.5)
    assert state.prediction.focal_px == focal_px and state.prediction.kind == kind
    again = Converter.reconvert(state, options)
    np.testing.assert_array_equal(again.points, first.points)
    np.testing.assert_array_equal(again.colors, first.colors)
    np.testing.assert_array_equal(again.normals, first.normals)
    np.testing.assert_array_equal(again.depth, first.depth)
    assert again.intrinsics == first.intrinsics and again.model == first.model == "some/model"
    assert "geometry" in again.timings


def test_reconvert_with_other_options_equals_a_conversion_with_them(tmp_path):
    Converter().convert(_image(), prediction=_prediction()).save_state(tmp_path)
    other = ConversionOptions(mode="relief", max_points=200, clean=False)
    again = Converter(model="no/such-model", align_to="no/such-metric-model").reconvert(load_state(tmp_path), other)
    direct = Converter().convert(_image(), prediction=_prediction(), options=other)
    assert again.mode == "relief" and len(again.grid_rows) * len(again.grid_columns) <= 200
    np.testing.assert_array_equal(again.points, direct.points)
    assert again.alignment is None  # no model was asked for, neither the converter's nor its align_to


def test_the_state_is_the_image_before_its_paper_was_removed(tmp_path):
    paper = np.full((24, 32, 3), 250, np.uint8)
    paper[8:16, 10:20] = 20  # a dark drawing on white paper
    image = LoadedImage(rgb=paper, alpha=None)
    first = Converter().convert(image, prediction=_prediction(), options=ConversionOptions(paper_background=True))
    assert first.image.alpha is not None  # the paper became transparent for this result
    first.save_state(tmp_path)
    state = load_state(tmp_path)
    assert state.image.alpha is None
    np.testing.assert_array_equal(state.image.rgb, paper)
    plain = Converter.reconvert(state, ConversionOptions())
    assert len(plain.points) > len(first.points)  # without paper removal the paper is surface again


def test_folders_written_before_the_image_facts_moved_in_still_load(tmp_path):
    """Web jobs kept only rgb/alpha in image.npz and the decoding facts in their own record."""
    image = _image()
    np.savez(tmp_path / IMAGE_FILE, rgb=image.rgb)
    save_prediction(tmp_path / PREDICTION_FILE, _prediction())
    meta = {"focal_px": 40.0, "focal_source": "EXIF", "format": "PNG", "scale": 0.5}
    state = load_state(tmp_path, meta)
    assert (state.image.focal_px, state.image.focal_source, state.image.format, state.image.scale) == \
        (40.0, "EXIF", "PNG", 0.5)
    assert load_state(tmp_path).image.scale == 1.0  # no facts at all: the image as decoded at full size


@pytest.mark.parametrize("damage", ["no prediction", "no image", "garbage image", "too many pixels"])
def test_a_missing_or_damaged_state_is_a_state_error(tmp_path, damage):
    Converter().convert(_image(), prediction=_prediction()).save_state(tmp_path)
    if damage == "no prediction":
        (tmp_path / PREDICTION_FILE).unlink()
    elif damage == "no image":
        (tmp_path / IMAGE_FILE).unlink()
    elif damage == "garbage image":
        (tmp_path / IMAGE_FILE).write_bytes(b"not an npz")
    with pytest.raises(StateError, match="convert the image again"):
        load_state(tmp_path, max_pixels=100 if damage == "too many pixels" else 50_000_000)


LIBRARY_NAMES = {  # what a person converting images needs: converter.__all__
    "Converter", "convert", "ConversionOptions", "ConversionResult", "Sources", "PredictionCache", "DepthMap",
    "LoadedImage", "load_image", "DEFAULT_MODEL", "KNOWN_MODELS",
    "OUTPUTS", "OutputSettings", "write_outputs",
    "ConversionState", "load_state", "StateError",
    "VIDEO_OUTPUTS", "VideoLimits", "VideoOptions", "VideoProgress", "VideoResult", "is_video_file",
    "ConversionError", "InputError", "DamagedImageError", "UnsupportedImageError", "ImageTooLargeError",
    "ImageTooSmallError", "DepthFileError", "OptionError", "OutputError", "ModelUnavailableError",
    "UnsupportedVideoError", "DamagedVideoError", "VideoTooLargeError",
}
SERVICE_NAMES = {  # what a service needs beyond them: converter.service_api.__all__
    "engine_from_environment", "model_from_environment", "set_torch_threads",
    "DEFAULT_MAX_PIXELS", "check_convertible_size", "probe_header",
    "DECIMAL_GRAMMAR", "DEPTH_KIND_CHOICES", "DETAIL_LEVELS", "FOCAL_PX_RANGE", "MODES", "WHOLE_GRAMMAR",
    "ANAGLYPH_METHODS",
    "parse_number", "parse_simplify", "parse_up", "UP_AXES",
    "estimate_job_mb", "resident_model_mb",
    "ALIGNMENT_KINDS", "MESH_KINDS", "Artifacts",
    "DONE", "FAILED", "QUEUED", "RUNNING", "WRITING_FILES", "progress_of",
    "STATE_FILES", "atomic_output", "load_prediction", "save_prediction", "write_json",
    "VIDEO_SNIFF_BYTES", "convert_video", "parse_video_kinds",
    "probe_video", "sniff_video", "Chunk", "ChunkedPredictions", "plan_chunks", "predict_chunk",
    "PREDICTING_VIDEO_DEPTH", "WRITING_VIDEO",
}
PUBLIC_MODULES = {"converter": LIBRARY_NAMES, "converter.service_api": SERVICE_NAMES}


def test_the_two_public_lists_are_these_exactly():
    """A name joins either list on purpose: this test changes with it."""
    from converter import service_api

    assert sorted(converter.__all__) == sorted(LIBRARY_NAMES) and len(converter.__all__) == len(LIBRARY_NAMES) == 36
    assert sorted(service_api.__all__) == sorted(SERVICE_NAMES) and len(service_api.__all__) == len(SERVICE_NAMES)
    assert not LIBRARY_NAMES & SERVICE_NAMES
    for module, names in ((converter, LIBRARY_NAMES), (service_api, SERVICE_NAMES)):
        assert all(hasattr(module, name) for name in names)


def _converter_submodule_imports(path: Path) -> list[str]:
    """Every import in ``path`` of something in ``converter`` other than the public names of ``converter`` and of
    ``converter.service_api`` (a module inside ``converter``, or a name neither lists), as 'file:line name'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [f"{path.name}:{node.lineno} {alias.name}" for alias in node.names
                      if alias.name.startswith("converter.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module in PUBLIC_MODULES:
                found += [f"{path.name}:{node.lineno} {node.module}.{alias.name}" for alias in node.names
                          if alias.name not in PUBLIC_MODULES[node.module]]
            elif node.module.startswith("converter."):
                found.append(f"{path.name}:{node.lineno} {node.module}")
    return found


def test_the_web_layer_imports_only_the_converter_packages_public_names():
    files = sorted((ROOT / "web").rglob("*.py")) + [ROOT / "app.py"]
    assert len(files) > 10
    offending = [hit for path in files for hit in _converter_submodule_imports(path)]
    assert offending == [], ("web/ and app.py import from converter and converter.service_api only, their listed "
                             "names: " + ", ".join(offending))


def test_the_import_check_sees_submodule_imports(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import converter.geometry\nfrom converter.exports import outputs\n"
                      "from converter import stages, Converter\nfrom converter.service_api import write_json, "
                      "save_state\n\ndef later():\n    from converter.state import X\n")
    assert _converter_submodule_imports(sample) == [
        "sample.py:1 converter.geometry", "sample.py:2 converter.exports", "sample.py:3 converter.stages",
        "sample.py:4 converter.service_api.save_state", "sample.py:7 converter.state"]
