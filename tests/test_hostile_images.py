"""Hostile image files: bombs in headers and in later frames, animated images, and a fuzzer over mutated files.

Whatever bytes arrive, the loader either returns an image or raises one of the documented InputErrors
(unsupported 415, damaged 422, too large 422); through the web app that means only 4xx answers.
"""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from conftest import png_bytes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from converter.errors import DamagedImageError, ImageTooLargeError, InputError
from converter.images import load_image


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def small_gif(size=(10, 10)) -> bytes:
    return encode(Image.new("P", size, 1), "GIF")


def gif_with_second_frame(width: int, height: int) -> bytes:
    """A valid 10 × 10 GIF, then a second frame whose descriptor declares ``width`` × ``height`` pixels."""
    first = small_gif()
    assert first.endswith(b";")
    descriptor = b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00"
    image_data = b"\x02" + b"\x02\x4c\x01" + b"\x00"  # LZW code size, one tiny sub-block, terminator
    return first[:-1] + descriptor + image_data + b";"


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge image (the data is a few bytes)."""
    import zlib

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def test_a_bomb_in_the_header_is_refused_before_decoding():
    data = png_bomb(100_000, 100_000)
    assert len(data) < 200
    with pytest.raises(ImageTooLargeError, match="too large.*the limit is 50 megapixels"):
        load_image(data)


def test_a_bomb_in_a_second_gif_frame_is_refused():
    data = gif_with_second_frame(60_000, 60_000)
    assert len(data) < 200
    with pytest.raises(ImageTooLargeError, match="frames hold more than 50 megapixels"):
        load_image(data)


def test_animated_images_use_the_first_frame_and_count_every_frame():
    frames = [Image.new("RGB", (40, 30), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    for format in ("GIF", "PNG", "WEBP"):
        options = {"save_all": True, "append_images": frames[1:]}
        if format == "WEBP":
            options["lossless"] = True
        data = encode(frames[0], format, **options)
        loaded = load_image(data)
        assert loaded.rgb.shape == (30, 40, 3)
        assert tuple(loaded.rgb[15, 20]) == (255, 0, 0), format  # the first frame
        with pytest.raises(ImageTooLargeError):
            load_image(data, max_pixels=3 * 40 * 30 - 1)  # fits as one frame, not as three
        assert load_image(data, max_pixels=3 * 40 * 30).rgb.shape == (30, 40, 3)


@pytest.mark.parametrize("size", [(1, 1), (6000, 3), (3, 6000)])
def test_extreme_but_legal_shapes_load(size):
    data = png_bytes(np.full((size[1], size[0], 3), 77, np.uint8))
    loaded = load_image(data)
    assert loaded.rgb.shape == (size[1], size[0], 3) and loaded.rgb.max() == 77


def test_cmyk_jpeg_with_orientation_is_upright_with_the_right_colours():
    cmyk = Image.new("CMYK", (40, 20), (0, 255, 255, 0))  # red in CMYK
    cmyk.paste((255, 0, 255, 0), (0, 0, 10, 20))  # a green stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    loaded = load_image(encode(cmyk, "JPEG", quality=95, exif=exif.tobytes()))
    assert loaded.rgb.shape == (40, 20, 3)  # upright: portrait
    top, bottom = loaded.rgb[2, 10].astype(int), loaded.rgb[-2, 10].astype(int)
    assert top[1] > 150 and top[0] < 100  # the stripe is now at the top, green
    assert bottom[0] > 150 and bottom[1] < 100  # the rest is red


def test_a_16_bit_png_keeps_its_tones():
    ramp = (np.arange(64, dtype=np.uint32) * 1024).astype(np.uint16).reshape(8, 8)
    data = encode(Image.fromarray(ramp), "PNG")
    loaded = load_image(data)
    np.testing.assert_array_equal(loaded.rgb[:, :, 0], np.rint(ramp / 257).astype(np.uint8))


def test_palette_with_transparency_gives_alpha():
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([255, 255, 255, 200, 30, 30] + [0] * 762)
    palette.paste(1, (2, 2, 6, 6))
    data = encode(palette, "PNG", transparency=0)
    loaded = load_image(data)
    assert loaded.alpha is not None and loaded.alpha[0, 0] == 0 and loaded.alpha[3, 3] == 255
    assert tuple(loaded.rgb[3, 3]) == (200, 30, 30)


def _valid_files() -> list[bytes]:
    rng = np.random.default_rng(7)
    picture = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    return [
        encode(picture, "PNG"), encode(picture, "JPEG"), encode(picture.convert("P"), "GIF"),
        encode(picture, "WEBP"), encode(picture, "BMP"), encode(picture, "TIFF"),
        encode(picture.convert("RGBA"), "PNG"), encode(picture, "TIFF", compression="tiff_lzw"),
    ]


VALID_FILES = _valid_files()


@st.composite
def mutated_files(draw):
    data = bytearray(draw(st.sampled_from(VALID_FILES)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "zero_run", "huge_number"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "zero_run":
            data[at:at + 8] = bytes(min(8, len(data) - at))
        elif kind == "huge_number" and len(data) > at + 4:
            data[at:at + 4] = b"\xff\xff\xff\x7f"
    return bytes(data)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
@given(mutated_files())
def test_fuzzed_files_give_an_image_or_a_documented_error(data):
    try:
        loaded = load_image(data, max_pixels=2_000_000)
    except InputError as error:
        assert str(error) and "Traceback" not in str(error)
        assert isinstance(error, InputError)
        return
    assert loaded.rgb.dtype == np.uint8 and loaded.rgb.ndim == 3 and loaded.rgb.shape[2] == 3
    assert loaded.rgb.shape[0] * loaded.rgb.shape[1] <= 2_000_000


@pytest.mark.slow  # about a second or more: make test runs it, make test-fast does not
@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutated_files())
def test_fuzzed_uploads_get_only_4xx_or_a_job(client, data):
    response = client.post("/api/v1/conversions", content_type="multipart/form-data",
                           data={"image": (io.BytesIO(data), "fuzz.bin"), "mesh": "false"})
    assert response.status_code in (202, 400, 413, 415, 422, 503), response.status_code
    body = response.get_json()
    assert ("id" in body) if response.status_code == 202 else (set(body) == {"error", "code"})
    if response.status_code == 503:  # a burst of uploads faster than one worker converts: busy, come back later
        assert body["code"] == "busy" and response.headers["Retry-After"]


def test_truncated_files_are_damaged_not_partial():
    for data in (VALID_FILES[0], VALID_FILES[1]):  # PNG, JPEG
        with pytest.raises(DamagedImageError, match="damaged or incomplete"):
            load_image(data[: len(data) * 2 // 3])
