"""Schemathesis hooks for fuzzing this API: schemathesis.toml loads them for every ``st run`` started from the
repository's root (tests/test_openapi.py does so).

Schemathesis fills a ``format: binary`` field with its own smallest files (1 × 1 pictures, which this server refuses
as too small to have a shape: 422) or arbitrary bytes, so no conversion is ever created and stateful testing can
follow no link. Here file fields also get real pictures of 2 to 24 pixels a side (PNG, JPEG, BMP, random pixels),
as often as the other two kinds, so the links from the creating operations reach the views, rebuilds and downloads.
"""

from __future__ import annotations

import io

import jsonschema_rs
import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.core.file_samples import FILE_SAMPLES
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transforms import to_wire_text
from schemathesis.transport.serialization import Binary


def picture(width: int, height: int, kind: str, seed: int) -> bytes:
    """A real picture of random pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind)
    return buffer.getvalue()


PICTURES = st.builds(picture, st.integers(2, 24), st.integers(2, 24), st.sampled_from(["PNG", "JPEG", "BMP"]),
                     st.integers(0, 2**16))
schemathesis.openapi.format("binary", st.one_of(PICTURES, st.sampled_from(list(FILE_SAMPLES.values())), st.binary()))


def as_read(form: dict, properties: dict) -> dict | None:
    """A generated multipart form as this server reads it, or None when a field is not sent as the schema says.

    Every plain part is text: schemathesis spells ``True`` as ``true`` and ``3`` as ``3``; a list is one part per
    item, so an empty list is a field left out and a list of one is that one value; a file field arrives as a file
    only when it holds bytes."""
    read = {}
    for name, value in form.items():
        if isinstance(value, list) and len(value) <= 1:
            if not value:
                continue
            value = value[0]
        binary = (properties.get(name) or {}).get("format") == "binary"
        if binary != isinstance(value, (bytes, bytearray, Binary)):
            return None
        if isinstance(value, list):
            read[name] = [to_wire_text(item) for item in value]  # a field given twice: this server answers 400
        else:
            read[name] = "file" if binary else to_wire_text(value)
    return read


@schemathesis.hook
def filter_case(context, case) -> bool:
    """Keep a negative form only if the server can tell it from a valid one.

    Schemathesis makes a form negative by changing a field's type (``relief=3`` for a field the document spells as
    text, ``paper_background=True``, ``mesh=[]``), then checks that the server refuses it. In multipart/form-data
    every one of those reaches the server as text that the document calls valid (``3``, ``true``, nothing), so
    accepting it is right, and schemathesis would call it a failure (ST201). Schemathesis already drops such
    mutations for query, path and header parameters and for url-encoded forms; this does the same for multipart
    bodies: a negative case whose form, read as the server reads it, is valid is not sent."""
    meta = case.meta
    if meta is None or not isinstance(case.body, dict) or "multipart/form-data" not in (case.media_type or ""):
        return True
    modes = {location: info.mode for location, info in meta.components.items()}
    if modes.get(ParameterLocation.BODY) != GenerationMode.NEGATIVE or any(
            mode == GenerationMode.NEGATIVE for location, mode in modes.items() if location != ParameterLocation.BODY):
        return True
    schema = case.operation.definition.raw["requestBody"]["content"]["multipart/form-data"]["schema"]
    read = as_read(case.body, schema.get("properties", {}))
    return read is None or not jsonschema_rs.validator_for(schema).is_valid(read)
