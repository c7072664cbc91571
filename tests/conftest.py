"""Shared fixtures: tiny real-architecture models saved like Hub checkpoints, and the Flask app on temp folders."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

# The Hub cannot be reached here; never let a test wait on it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Folders of tiny random DPT-Hybrid, DPT-SwinV2, Depth Anything and Depth Anything metric checkpoints."""
    import model_factory

    return model_factory.build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def dpt_model(tiny_models) -> str:
    return str(tiny_models["dpt_hybrid"])


@pytest.fixture
def photo() -> np.ndarray:
    """A smooth, colourful 96 × 128 RGB test picture."""
    rows, columns = np.mgrid[0:96, 0:128]
    return np.dstack([columns * 2, rows * 2, 255 - columns]).astype(np.uint8)
