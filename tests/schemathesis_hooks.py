"""Schemathesis hooks for fuzzing this API (tests/test_openapi.py; by hand: ``SCHEMATHESIS_HOOKS=schemathesis_hooks``
with tests/ on PYTHONPATH).

Schemathesis fills a ``format: binary`` field with its own smallest files (1 × 1 pictures, which this server refuses
as too small to have a shape: 422) or arbitrary bytes, so no conversion is ever created and stateful testing can
follow no link. Here file fields also get real pictures of 2 to 24 pixels a side (PNG, JPEG, BMP, random pixels),
as often as the other two kinds, so the links from the creating operations reach the views, rebuilds and downloads.
"""

from __future__ import annotations

import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.core.file_samples import FILE_SAMPLES


def picture(width: int, height: int, kind: str, seed: int) -> bytes:
    """A real picture of random pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


PICTURES = st.builds(picture, st.integers(2, 24), st.integers(2, 24), st.sampled_from(["PNG", "JPEG", "BMP"]),
                     st.integers(0, 2**16))
schemathesis.openapi.format("binary", st.one_of(PICTURES, st.sampled_from(list(FILE_SAMPLES.values())), st.binary()))
