"""The depth back-end seam with its engines (converter.depth.backend): tiny random models of every family agree
between torch and OpenVINO in fp32, saved conversions are reused, a model that does not convert falls back to torch
and says so, a bad ENGINE fails at start, and result.json, the page and /readyz say what ran. (Micro-batching around
either engine: tests/test_batching.py.)"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import png_bytes, wait_for_job
from PIL import Image

from converter import Converter
from converter.depth import ENGINE_CHOICES, get_depth_model
from converter.depth import openvino_engine as ov_engine
from converter.depth.backend import ENGINES, engine_class
from converter.errors import OptionError

FAMILIES = ("dpt_hybrid", "dpt_swinv2", "depth_anything", "depth_anything_metric", "dpt_vit", "depth_pro", "zoedepth")


@pytest.fixture(scope="module")
def family_folders(tiny_models, tmp_path_factory) -> dict:
    """The session's tiny models plus a plain DPT (ViT, not hybrid: the Intel/dpt-large family)."""
    import model_factory
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    torch.manual_seed(0)
    config = DPTConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                       intermediate_size=64, neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32,
                       backbone_out_indices=[0, 1, 2, 3], readout_type="project")
    processor = DPTImageProcessorPil(size={"height": 64, "width": 64}, keep_aspect_ratio=False,
                                     image_mean=[0.5] * 3, image_std=[0.5] * 3)
    folder = model_factory._save(tmp_path_factory.mktemp("dpt-vit"), DPTForDepthEstimation(config), processor)
    return {**tiny_models, "dpt_vit": folder}


def picture(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def scale_of(values: np.ndarray) -> float:
    """The output range; a random metric head's output is nearly constant, so at least 1 % of its magnitude."""
    return max(float(np.ptp(values)), 1e-2 * float(np.abs(values).max()))


def network_output(metric_depth: np.ndarray) -> np.ndarray:
    """Depth Pro's metric depth is f / (W · inverse depth), clamped at 10⁴ m where a random head's inverse depth is
    about 0: there a rounding-level difference in the network's output is hundreds of metres, so the engines are
    compared in inverse depth (1 / m)."""
    return 1.0 / metric_depth


@pytest.mark.slow  # converts each family once (seconds each): make test runs it, make test-fast does not
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_agrees_between_torch_and_openvino_in_fp32(family_folders, family):
    path = str(family_folders[family])
    torch_model = get_depth_model(path, "cpu", engine="torch")
    openvino_model = get_depth_model(path, "cpu", engine="openvino")
    assert openvino_model.engine == "openvino" and openvino_model.describe()["precision"] == "fp32"
    # Two aspect ratios: Depth Anything keeps the aspect, so the second is a second converted shape.
    for image in (picture(90, 150), picture(160, 70, seed=1)):
        expected, got = torch_model.predict(image), openvino_model.predict(image)
        assert got.native.shape == expected.native.shape and got.values.shape == (image.height, image.width)
        assert got.kind == expected.kind
        for ours, theirs in ((got.native, expected.native), (got.values, expected.values)):
            if family == "depth_pro":  # compared in inverse depth, what the network outputs: see network_output
                ours, theirs = network_output(ours), network_output(theirs)
            assert np.abs(ours - theirs).max() <= 1e-4 * scale_of(theirs)
        # The model's own camera (Depth Pro's field of view) survives the converted model; others have none.
        assert (got.focal_px is None) == (expected.focal_px is None) == (family != "depth_pro")
        if family == "depth_pro":
            assert got.focal_px == pytest.approx(expected.focal_px, rel=1e-4)


@pytest.mark.slow  # reads a saved conversion back (about a second)
def test_a_second_load_reuses_the_saved_conversion(tiny_models):
    path = str(tiny_models["dpt_hybrid"])
    first = get_depth_model(path, "cpu", engine="openvino")  # converted (or read back) once in this run
    before = dict(ov_engine.STATS)
    second = engine_class("openvino")(path, device="cpu", precision="fp32")  # a fresh instance: a new start
    assert second.model is None  # nothing to convert: the torch module was never loaded
    assert ov_engine.STATS["converted"] == before["converted"]
    assert ov_engine.STATS["loaded"] == before["loaded"] + 1
    image = picture(70, 90)
    np.testing.assert_array_equal(second.predict(image).native, first.predict(image).native)


def mapped_from(folder) -> int:
    """This process's resident kB of the files it has memory-mapped from ``folder`` (/proc/self/smaps)."""
    prefix, resident, current = str(folder.resolve()), 0, ""
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            fields = line.split(maxsplit=5)
            if "-" in fields[0] and not fields[0].endswith(":"):
                current = fields[5].strip() if len(fields) == 6 else ""
            elif fields[0] == "Rss:" and current.startswith(prefix):
                resident += int(fields[1])
    return resident


@pytest.mark.slow  # converts a tiny model (seconds)
@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="reads /proc/self/smaps (Linux)")
def test_the_mapped_weights_are_let_go_once_repacked_and_the_output_does_not_change(tiny_models, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setenv("OPENVINO_CACHE", str(tmp_path))
    path = str(tiny_models["dpt_hybrid"])
    engine_class("openvino")(path, device="cpu", precision="fp32")  # converts and saves
    model = engine_class("openvino")(path, device="cpu", precision="fp32")  # a second start: the files mapped
    image = picture(70, 90)
    first = model.predict(image).native  # the first inference repacks the rest of the weights
    assert mapped_from(tmp_path) == 0  # the file's pages are not held beside the repacked copy
    np.testing.assert_array_equal(model.predict(image).native, first)  # read again from the file where needed
    np.testing.assert_array_equal(get_depth_model(path, "cpu", engine="openvino").predict(image).native, first)


@pytest.mark.slow  # loads a model twice (about a second)
def test_a_model_that_does_not_convert_falls_back_to_torch_and_says_so(tiny_models, tmp_path, monkeypatch, caplog):
    import openvino

    def refuse(*args, **kwargs):
        raise RuntimeError("this model has an operation OpenVINO does not know")

    monkeypatch.setenv("OPENVINO_CACHE", str(tmp_path))  # nothing saved: it must convert, and it cannot
    monkeypatch.setattr(openvino, "convert_model", refuse)
    path = str(tiny_models["dpt_swinv2"])
    with caplog.at_level(logging.WARNING, logger="converter.depth.openvino_engine"):
        model = engine_class("openvino")(path, device="cpu", precision="fp32")
    assert model.engine == "torch" and "did not convert" in model.describe()["fallback"]
    assert len([r for r in caplog.records if "running it with torch" in r.getMessage()]) == 1
    image = picture(64, 80)
    expected = get_depth_model(path, "cpu", engine="torch").predict(image)
    np.testing.assert_allclose(model.predict(image).values, expected.values, rtol=1e-5, atol=1e-6)
    from converter.depth.backend import BatchedBackend

    batched = BatchedBackend(model, 2, 0.0)  # micro-batching around it still says why it runs on torch
    try:
        assert batched.describe() == model.describe()
    finally:
        batched.batcher.close()


def test_the_registry_offers_auto_and_every_engine():
    assert ENGINE_CHOICES == ("auto", *ENGINES) and {"torch", "openvino"} <= set(ENGINES)


@pytest.mark.parametrize("engine", ["tensorrt", "OpenVINO-GPU", "fast"])
def test_a_bad_engine_is_a_clear_error_at_start(make_app, engine):
    with pytest.raises(OptionError, match=f"Unknown engine '{engine.lower()}'; choose one of: auto, torch, openvino"):
        Converter(engine=engine)
    with pytest.raises(OptionError, match="Unknown engine"):
        make_app(ENGINE=engine)  # the app does not start, rather than failing its first job


def test_openvino_off_the_cpu_is_refused_with_a_reason():
    from converter.depth.backend import resolve_engine

    with pytest.raises(OptionError, match="runs on the CPU"):
        resolve_engine("openvino", "cuda")
    assert resolve_engine("auto", "cuda") == "torch"


def test_the_cli_refuses_an_unknown_engine(capsys):
    from converter.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["photo.jpg", "--engine", "tensorrt"])
    assert exit_.value.code == 2 and "invalid choice: 'tensorrt'" in capsys.readouterr().err


@pytest.mark.parametrize("environment, engine, model", [
    ({}, "auto", None),
    ({"ENGINE": "", "DEPTH_MODEL": ""}, "auto", None),  # empty is unset, for the CLI as for the service
    ({"ENGINE": " Torch ", "DEPTH_MODEL": " some/model "}, "torch", "some/model"),
])
def test_the_cli_the_service_and_the_library_read_engine_and_model_alike(monkeypatch, environment, engine, model):
    from converter.__main__ import build_parser
    from converter.depth.backend import check_engine
    from converter.depth.models import DEFAULT_MODEL
    from web.settings import from_env

    for name in ("ENGINE", "DEPTH_MODEL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    model = model or DEFAULT_MODEL
    cli = build_parser().parse_args(["photo.jpg"])
    service = from_env(environment)
    assert (cli.engine, cli.model) == (service["ENGINE"], service["DEPTH_MODEL"]) == (engine, model)
    assert check_engine(None) == engine


def test_result_json_the_page_and_readyz_say_which_engine_ran(client, photo):
    ready = client.get("/readyz").get_json()
    assert ready["engine"] == "torch" and ready["precision"] == "fp32"  # the test run's ENGINE (conftest)
    response = client.post("/api/v1/conversions", content_type="multipart/form-data",
                           data={"image": (io.BytesIO(png_bytes(photo)), "a.png")})
    view = wait_for_job(client, f"/jobs/{response.get_json()['id']}")
    assert view["status"] == "done"
    assert view["info"]["engine"] == {"engine": "torch", "precision": "fp32", "device": "cpu"}
    page = client.get(f"/jobs/{response.get_json()['id']}").get_data(as_text=True)
    assert "torch, fp32 on the cpu" in page


def test_a_user_depth_map_names_no_engine(photo):
    buffer = io.BytesIO()
    np.save(buffer, np.full(photo.shape[:2], 2.0, np.float32))
    result = Converter().convert(photo, depth=buffer.getvalue())
    assert result.engine is None and "engine" not in result.metadata()


@pytest.mark.slow  # the CLI in a subprocess, converting to OpenVINO
def test_the_cli_runs_the_engine_it_is_given_and_the_sidecar_says_so(tmp_path, dpt_model, photo):
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(photo))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    completed = subprocess.run([sys.executable, "-m", "converter", str(image), "-o", str(tmp_path / "out.ply"),
                                "--model", dpt_model, "--engine", "openvino", "--max-points", "500"],
                               capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert completed.returncode == 0, completed.stderr
    sidecar = json.loads((tmp_path / "out.json").read_text())
    assert sidecar["engine"] == {"engine": "openvino", "precision": "fp32", "device": "cpu"}


@pytest.mark.slow  # converts two shapes of a tiny model (seconds)
def test_openvino_holds_no_torch_module_after_converting_a_new_shape(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENVINO_CACHE", str(tmp_path))  # nothing saved: each shape is converted here
    model = engine_class("openvino")(str(tiny_models["depth_anything"]), device="cpu", precision="fp32")
    assert model.engine == "openvino" and model.model is None  # converted at start, then dropped
    before = ov_engine.STATS["converted"]
    model.predict(picture(60, 150))  # another aspect ratio: a second conversion loads the module again
    assert ov_engine.STATS["converted"] == before + 1
    assert model.model is None


@pytest.mark.slow  # a shape that does not convert runs on torch (a second)
def test_a_shape_that_does_not_convert_runs_on_torch_and_drops_it_after(tiny_models, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENVINO_CACHE", str(tmp_path))
    path = str(tiny_models["depth_anything"])
    model = engine_class("openvino")(path, device="cpu", precision="fp32")
    monkeypatch.setattr(ov_engine, "MAX_CONVERSIONS", 0)  # this process has converted its share of shapes
    image = picture(150, 60)
    expected = get_depth_model(path, "cpu", engine="torch").predict(image)
    before = ov_engine.STATS["converted"]
    np.testing.assert_allclose(model.predict(image).values, expected.values, rtol=1e-5, atol=1e-6)
    assert ov_engine.STATS["converted"] == before  # torch ran it
    assert model.engine == "openvino" and model.model is None
