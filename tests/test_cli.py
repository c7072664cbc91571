"""The command line, run as a user runs it: a subprocess, exit codes, one clear line per problem."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, png_bytes
from plyfile import PlyData

pytestmark = pytest.mark.slow  # real gunicorn or the CLI in subprocesses


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    env.pop("DEPTH_MODEL", None)
    return subprocess.run([sys.executable, "-m", "converter", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd or ROOT, timeout=180)


@pytest.fixture
def image_file(tmp_path, photo) -> Path:
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(photo))
    return path


def test_one_image_to_a_ply(tmp_path, image_file, dpt_model):
    output = tmp_path / "out.ply"
    completed = run_cli(image_file, "-o", output, "--model", dpt_model, "--fov", "50", "--max-points", "2000")
    assert completed.returncode == 0, completed.stderr
    assert "out.ply" in completed.stdout and "fov 50.0 deg (user:fov)" in completed.stdout
    vertices = PlyData.read(str(output))["vertex"]
    assert 0 < vertices.count <= 2000


def test_several_images_into_a_folder_with_progress(tmp_path, image_file, dpt_model):
    second = tmp_path / "other" / "photo.png"  # the same name from another folder must not overwrite
    second.parent.mkdir()
    second.write_bytes(image_file.read_bytes())
    folder = tmp_path / "clouds"
    completed = run_cli(image_file, second, "-o", folder, "--model", dpt_model)
    assert completed.returncode == 0, completed.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["photo-1.json", "photo-1.ply", "photo.json", "photo.ply"]
    assert "2/2" in completed.stderr  # the progress bar


def test_user_depth_gives_metric_geometry(tmp_path, image_file):
    depth = tmp_path / "depth.npy"
    np.save(depth, np.full((96, 128), 2.0, np.float32))
    output = tmp_path / "plane.ply"
    completed = run_cli(image_file, "--depth", depth, "-o", output, "--model", "/nonexistent/model")
    assert completed.returncode == 0, completed.stderr  # no model is needed, so none is loaded
    assert "metres" in completed.stdout
    np.testing.assert_allclose(PlyData.read(str(output))["vertex"]["z"], -2.0)


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"", "the file is empty"), (b"plain text", "not a supported image format"),
     (png_bytes(np.zeros((20, 20, 3), np.uint8))[:50], "damaged or incomplete")],
)
def test_bad_input_is_one_clear_line_and_no_output(tmp_path, dpt_model, content, words):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    output = tmp_path / "bad.ply"
    completed = run_cli(bad, "-o", output, "--model", dpt_model)
    assert completed.returncode == 1
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and words in lines[0].lower()
    assert "Traceback" not in completed.stderr
    assert not output.exists() and list(tmp_path.glob("*.part")) == []


def test_missing_file_and_bad_options(tmp_path, dpt_model):
    missing = run_cli(tmp_path / "nope.jpg", "--model", dpt_model)
    assert missing.returncode == 1 and "nope.jpg" in missing.stderr and "no file" in missing.stderr.lower()
    bad_fov = run_cli(tmp_path / "x.png", "--fov", "0")
    assert bad_fov.returncode == 2 and "between 1 and 179" in bad_fov.stderr
    bad_suffix = run_cli(tmp_path / "x.png", "-o", tmp_path / "x.txt")
    assert bad_suffix.returncode == 2 and ".ply" in bad_suffix.stderr


def test_model_that_cannot_load_says_how_to_fix_it(tmp_path, image_file):
    completed = run_cli(image_file, "-o", tmp_path / "x.ply", "--model", tmp_path / "missing-model")
    assert completed.returncode == 3
    assert "missing-model" in completed.stderr and "DEPTH_MODEL" in completed.stderr
    assert "Traceback" not in completed.stderr and not (tmp_path / "x.ply").exists()


def test_help_names_the_axes_of_each_file_and_the_models():
    completed = run_cli("--help")
    assert completed.returncode == 0
    text = " ".join(completed.stdout.split())  # argparse wraps to the terminal's width
    assert "y up, as glTF, OBJ and .ply/.pcd by default" in text and "--up z turns .ply/.pcd z up" in text
    assert ".las is z up" in text and ".stl z up" in text and "Intel/dpt-hybrid-midas" in text


def test_an_unreachable_hub_is_reported_without_retrying_for_minutes(tmp_path, image_file):
    """Not cached and no Hub: one clear line (a closed local port stands in for the unreachable Hub: bound here and
    never listened on, so it refuses every connection and nothing else can take it while the CLI runs)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        env = dict(os.environ, PYTHONPATH=str(ROOT), HF_ENDPOINT=f"http://127.0.0.1:{closed.getsockname()[1]}",
                   HF_HOME=str(tmp_path / "hf"))
        env.pop("HF_HUB_OFFLINE", None)
        completed = subprocess.run(
            [sys.executable, "-m", "converter", str(image_file), "-o", str(tmp_path / "x.ply"), "--model",
             "someone/some-depth-model"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert completed.returncode == 3
    assert "someone/some-depth-model" in completed.stderr and "cannot be reached" in completed.stderr
    assert "Retry" not in completed.stderr
