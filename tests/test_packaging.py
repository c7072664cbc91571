"""`pip install .` and `pip install -e .` for real: a fresh venv each, nothing downloaded, used from outside the checkout.

The new venv sees the project's installed dependencies (torch, transformers, pip, setuptools ...) through a .pth file
pointing at this interpreter's site-packages, so `--no-build-isolation --no-index` builds and installs only our
package, offline, in a few seconds; the regular install still resolves the declared dependencies against those.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT, png_bytes
from plyfile import PlyData

pytestmark = pytest.mark.slow

# What an in-tree `pip install .` leaves in the checkout (setuptools' build folder and metadata); both are git-ignored.
BUILD_LEFTOVERS = ("build", "image_to_3d.egg-info")
OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")


def _run(command: list, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run as a user would: no PYTHONPATH into the checkout, Hub offline, pip non-interactive and without a cache."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV"))}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_NO_CACHE_DIR="1")
    env.pop("DEPTH_MODEL", None)
    return subprocess.run([str(part) for part in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _fresh_venv(folder: Path) -> Path:
    """A new venv without pip whose .pth adds this interpreter's site-packages (dependencies, pip, setuptools)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=60)
    python = folder / "bin" / "python"
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], folder).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))  # ordered, no duplicates
    (Path(purelib) / "_image_to_3d_test_deps.pth").write_text("".join(f"{path}\n" for path in ours))
    return python


def _pip_install(python: Path, *target, cwd: Path, deps: bool = False) -> str:
    """pip's output. With ``deps`` pip also resolves our dependencies, still offline: they must all be installed."""
    flags = ["--no-build-isolation", "--no-index"] + ([] if deps else ["--no-deps"])
    completed = _run([python, "-m", "pip", "install", *flags, *target], cwd, timeout=180)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return completed.stdout


def _where_converter(python: Path, cwd: Path) -> tuple[Path, Path]:
    """(converter/__init__.py as imported, the venv's site-packages), from a process started in ``cwd``."""
    completed = _run([python, "-c", "from converter import Converter; import converter, json, sysconfig; "
                      "print(json.dumps([converter.__file__, sysconfig.get_paths()['purelib']]))"], cwd)
    assert completed.returncode == 0, completed.stderr
    module, site_packages = json.loads(completed.stdout)
    return Path(module).resolve(), Path(site_packages).resolve()


def _options(help_text: str) -> set[str]:
    """The option strings of argparse's option lines (not the usage line, whose program name differs)."""
    lines = (line.strip().split("  ")[0] for line in help_text.splitlines() if line.strip().startswith("-"))
    return {option for line in lines for option in OPTION.findall(line)}


@pytest.fixture(autouse=True)
def _needs_a_build_backend():
    """setuptools before 70.1 builds wheels only with the separate `wheel` package (torch pulls a newer one in)."""
    import importlib.util

    import setuptools

    version = tuple(int(part) for part in re.findall(r"\d+", setuptools.__version__)[:2])
    if version < (70, 1) and importlib.util.find_spec("wheel") is None:
        pytest.skip(f"setuptools {setuptools.__version__} needs the wheel package to build")


@pytest.fixture
def checkout_left_clean():
    """Remove what the in-tree build adds to the checkout (only if it was not there before); fail on anything else."""
    before = set(os.listdir(ROOT))
    yield
    added = set(os.listdir(ROOT)) - before
    for name in added & set(BUILD_LEFTOVERS):
        shutil.rmtree(ROOT / name, ignore_errors=True)
    assert added <= set(BUILD_LEFTOVERS), f"the build left {sorted(added - set(BUILD_LEFTOVERS))} in the checkout"


def test_pip_install_gives_the_api_and_the_command_from_anywhere(tmp_path, dpt_model, photo, checkout_left_clean):
    python = _fresh_venv(tmp_path / "venv")
    installed = _pip_install(python, ROOT, cwd=tmp_path, deps=True)
    # Every declared range (torch>=2.13 ...) is met by the project's pins: pip adds nothing but our package.
    assert "Requirement already satisfied: torch" in installed
    assert re.search(r"^Installing collected packages: image-to-3d$", installed, re.MULTILINE), installed
    for name in BUILD_LEFTOVERS:  # what the build does leave must be ignored by git
        if (ROOT / name).exists() and shutil.which("git") and (ROOT / ".git").exists():
            ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=ROOT, timeout=30)
            assert ignored.returncode == 0, f"{name}/ is not in .gitignore"

    module, site_packages = _where_converter(python, tmp_path)
    assert module == site_packages / "converter" / "__init__.py"  # the installed copy, not the checkout
    assert (site_packages / "converter" / "depth" / "__init__.py").is_file()
    for web_part in ("app.py", "web", "templates", "static", "tests"):  # the web app is not part of the wheel
        assert not (site_packages / web_part).exists(), web_part

    command = tmp_path / "venv" / "bin" / "image-to-3d"
    helped = _run([command, "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: image-to-3d ")
    reference = _run([sys.executable, "-m", "converter", "--help"], ROOT)
    assert reference.returncode == 0, reference.stderr
    assert {"--output", "--model", "--device", "--max-points", "--mesh"} <= _options(helped.stdout)
    assert _options(helped.stdout) == _options(reference.stdout)  # the same options as `python -m converter`

    (tmp_path / "photo.png").write_bytes(png_bytes(photo))
    converted = _run([command, "photo.png", "-o", "cloud.ply", "--model", dpt_model, "--device", "cpu",
                      "--max-points", "2000"], tmp_path)
    assert converted.returncode == 0, converted.stderr
    assert "cloud.ply" in converted.stdout
    vertices = PlyData.read(str(tmp_path / "cloud.ply"))["vertex"]
    assert 0 < vertices.count <= 2000
    assert {"x", "y", "z", "red", "green", "blue"} <= {prop.name for prop in vertices.properties}
    assert (tmp_path / "cloud.json").is_file()  # the sidecar, as with `python -m converter`

    failed = _run([command, "missing.png", "-o", "x.ply", "--model", dpt_model], tmp_path)
    assert failed.returncode == 1 and "missing.png" in failed.stderr  # main()'s exit status reaches the shell


def test_editable_install_points_into_the_checkout(tmp_path, checkout_left_clean):
    python = _fresh_venv(tmp_path / "venv")
    _pip_install(python, "-e", ROOT, cwd=tmp_path)

    module, _ = _where_converter(python, tmp_path)
    assert module == (ROOT / "converter" / "__init__.py").resolve()
    web_app = _run([python, "-c", "import app"], tmp_path)
    assert web_app.returncode != 0 and "No module named 'app'" in web_app.stderr  # only `converter` is mapped
    helped = _run([tmp_path / "venv" / "bin" / "image-to-3d", "--help"], tmp_path)
    assert helped.returncode == 0 and "--output" in helped.stdout, helped.stderr
