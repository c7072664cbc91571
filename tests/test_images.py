"""Image loading: every source type, colour modes and profiles, EXIF orientation and focal length, and the
errors for unsupported, damaged and oversized files. All inputs are real files made with Pillow."""

from __future__ import annotations

import io
import itertools
import math
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms, TiffImagePlugin

from converter import DamagedImageError, ImageTooLargeError, InputError, UnsupportedImageError
from converter.images import DEFAULT_MAX_PIXELS, LoadedImage, load_image

ORIENTATION = 0x0112
EXIF_IFD = 0x8769
FOCAL_LENGTH = 0x920A
FOCAL_LENGTH_35MM = 0xA405
FOCAL_PLANE_X_RESOLUTION = 0xA20E
FOCAL_PLANE_RESOLUTION_UNIT = 0xA210
EXIF_IMAGE_WIDTH = 0xA002
EXIF_IMAGE_HEIGHT = 0xA003
FULL_FRAME_DIAGONAL_MM = math.hypot(36, 24)  # 43.27 mm


def encode(image: Image.Image, format: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **params)
    return buffer.getvalue()


@pytest.fixture
def picture() -> np.ndarray:
    """An asymmetric 30 × 20 RGB picture: four differently coloured quadrants and a marked corner."""
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:10, :15] = [220, 30, 30]
    rgb[:10, 15:] = [30, 200, 40]
    rgb[10:, :15] = [40, 50, 210]
    rgb[10:, 15:] = [230, 220, 60]
    rgb[:4, :4] = [255, 255, 255]
    return rgb


# ------------------------------------------------------------------------------------------------ sources


def test_every_kind_of_source_gives_the_same_pixels(picture, tmp_path):
    data = encode(Image.fromarray(picture), "PNG")
    path = tmp_path / "picture.png"
    path.write_bytes(data)
    sources = [
        str(path), path, data, bytearray(data), memoryview(data), io.BytesIO(data), Image.fromarray(picture),
        picture, np.dstack([picture, np.full(picture.shape[:2], 255, np.uint8)]),
    ]
    for source in sources:
        loaded = load_image(source)
        np.testing.assert_array_equal(loaded.rgb, picture)
        assert loaded.alpha is None
        assert loaded.rgb.dtype == np.uint8 and loaded.rgb.flags.c_contiguous
        assert (loaded.width, loaded.height) == (30, 20)
    assert load_image(data).format == "PNG"
    loaded = load_image(data)
    assert load_image(loaded) is loaded
    np.testing.assert_array_equal(np.asarray(loaded.to_pil()), picture)


def test_format_is_decided_by_content_not_by_name(picture, tmp_path):
    misnamed = tmp_path / "really-a-png.jpg"
    misnamed.write_bytes(encode(Image.fromarray(picture), "PNG"))
    np.testing.assert_array_equal(load_image(misnamed).rgb, picture)
    text = tmp_path / "not-an-image.png"
    text.write_text("hello")
    with pytest.raises(UnsupportedImageError):
        load_image(text)


@pytest.mark.parametrize(
    "source, error",
    [
        (b"", UnsupportedImageError),
        (bytearray(), UnsupportedImageError),
        (np.zeros((4, 4), np.uint8), UnsupportedImageError),  # arrays must be [H, W, 3|4]
        (np.zeros((4, 4, 3), np.float32), UnsupportedImageError),
        (np.zeros((4, 4, 2), np.uint8), UnsupportedImageError),
        (np.zeros((0, 4, 4), np.uint8), UnsupportedImageError),
        (np.zeros((4, 0, 3), np.uint8), UnsupportedImageError),
        (12345, TypeError),
    ],
)
def test_bad_sources(source, error):
    with pytest.raises(error):
        load_image(source)


def test_missing_empty_and_folder_paths_are_input_errors(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (tmp_path / "missing.png", empty, tmp_path):
        with pytest.raises(UnsupportedImageError) as caught:
            load_image(path)
        assert "Traceback" not in str(caught.value)


def test_opaque_rgba_array_has_no_alpha_and_transparent_one_keeps_it():
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 3] = 255
    assert load_image(rgba).alpha is None
    rgba[0, 0, 3] = 0
    np.testing.assert_array_equal(load_image(rgba).alpha, rgba[..., 3])


# ----------------------------------------------------------------------------------------------- colour modes


def test_mode_1():
    bits = (np.indices((8, 10)).sum(axis=0) % 2).astype(bool)
    loaded = load_image(encode(Image.fromarray(bits), "PNG"))
    np.testing.assert_array_equal(loaded.rgb, np.repeat(np.where(bits, 255, 0)[:, :, None], 3, axis=2))
    assert loaded.alpha is None


def test_mode_L():
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (3, 1))
    loaded = load_image(encode(Image.fromarray(grey, "L"), "PNG"))
    np.testing.assert_array_equal(loaded.rgb, np.dstack([grey] * 3))
    assert loaded.alpha is None


def test_mode_LA():
    grey = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (4, 1))
    alpha = np.zeros_like(grey)
    alpha[:, ::2] = 255
    alpha[0] = 128
    loaded = load_image(encode(Image.fromarray(np.dstack([grey, alpha]), "LA"), "PNG"))
    np.testing.assert_array_equal(loaded.alpha, alpha)
    opaque = alpha == 255
    np.testing.assert_array_equal(loaded.rgb[opaque], np.dstack([grey] * 3)[opaque])


@pytest.mark.parametrize("format", ["PNG", "GIF"])
def test_mode_P_with_transparency(format):
    palette = [0, 0, 0, 250, 10, 10, 10, 250, 10, 10, 10, 250] + [0] * (256 * 3 - 12)
    indices = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 2, 2]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette(palette)
    loaded = load_image(encode(image, format, transparency=0))
    np.testing.assert_array_equal(loaded.alpha, np.where(indices == 0, 0, 255))
    colours = np.array(palette[:12]).reshape(4, 3)
    opaque = indices != 0
    np.testing.assert_array_equal(loaded.rgb[opaque], colours[indices[opaque]])


def test_mode_P_without_transparency():
    indices = np.array([[0, 1], [2, 0]], np.uint8)
    image = Image.fromarray(indices, "P")
    image.putpalette([5, 6, 7, 100, 110, 120, 200, 210, 220] + [0] * (253 * 3))
    loaded = load_image(encode(image, "PNG"))
    assert loaded.alpha is None
    np.testing.assert_array_equal(loaded.rgb, np.array([[5, 6, 7], [100, 110, 120], [200, 210, 220]])[indices])


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_tRNS_colour_key_transparency(mode):
    """A grey or RGB PNG can mark one colour transparent (tRNS chunk); those pixels must give no point."""
    grey = np.full((4, 6), 100, np.uint8)
    grey[0, :3] = 7
    image = Image.fromarray(grey, "L") if mode == "L" else Image.fromarray(np.dstack([grey] * 3), "RGB")
    loaded = load_image(encode(image, "PNG", transparency=7 if mode == "L" else (7, 7, 7)))
    assert loaded.alpha is not None
    np.testing.assert_array_equal(loaded.alpha, np.where(grey == 7, 0, 255))
    np.testing.assert_array_equal(loaded.rgb[1:], 100)


@pytest.mark.parametrize("format, params", [("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {}), ("BMP", {})])
def test_rgb_and_rgba(picture, format, params):
    loaded = load_image(encode(Image.fromarray(picture), format, **params))
    np.testing.assert_array_equal(loaded.rgb, picture)
    assert loaded.alpha is None
    if format == "BMP":
        return
    alpha = np.full(picture.shape[:2], 255, np.uint8)
    alpha[5:15, 5:25] = 0
    alpha[0, 0] = 77
    rgba = np.dstack([picture, alpha])
    loaded = load_image(encode(Image.fromarray(rgba, "RGBA"), format, **params))
    np.testing.assert_array_equal(loaded.alpha, alpha)
    np.testing.assert_array_equal(loaded.rgb[alpha == 255], picture[alpha == 255])


def test_jpeg_colours_are_close(picture):
    loaded = load_image(encode(Image.fromarray(picture), "JPEG", quality=95, subsampling=0))
    assert loaded.format == "JPEG"
    assert np.abs(loaded.rgb.astype(int) - picture).mean() < 4


CMYK_PIXELS = [
    ((0, 0, 0, 0), (255, 255, 255)),
    ((255, 0, 0, 0), (0, 255, 255)),
    ((0, 255, 0, 0), (255, 0, 255)),
    ((0, 0, 255, 0), (255, 255, 0)),
    ((0, 0, 0, 255), (0, 0, 0)),
]


@pytest.mark.parametrize("format", ["TIFF", "JPEG"])
def test_cmyk(format):
    image = Image.new("CMYK", (len(CMYK_PIXELS), 1))
    image.putdata([cmyk for cmyk, _ in CMYK_PIXELS])
    loaded = load_image(encode(image, format, **({"quality": 100} if format == "JPEG" else {})))
    expected = np.array([[rgb for _, rgb in CMYK_PIXELS]])
    np.testing.assert_allclose(loaded.rgb, expected, atol=3 if format == "JPEG" else 0)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def swapped_primaries_profile() -> bytes:
    """An RGB profile whose red and green primaries are swapped: its (255, 0, 0) is sRGB green."""
    profile = bytearray(srgb_profile())
    (count,) = struct.unpack_from(">I", profile, 128)
    entries = {}
    for index in range(count):
        signature, offset, size = struct.unpack_from(">4sII", profile, 132 + 12 * index)
        entries[signature] = (index, offset, size)
    (red, red_offset, red_size), (green, green_offset, green_size) = entries[b"rXYZ"], entries[b"gXYZ"]
    struct.pack_into(">4sII", profile, 132 + 12 * red, b"rXYZ", green_offset, green_size)
    struct.pack_into(">4sII", profile, 132 + 12 * green, b"gXYZ", red_offset, red_size)
    return bytes(profile)


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_embedded_icc_profile_is_applied(mode):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[:, :3] = [255, 0, 0]
    rgb[:, 3:] = [0, 0, 255]
    image = Image.fromarray(rgb).convert(mode)
    if mode == "RGBA":
        image.putpixel((0, 0), (255, 0, 0, 0))
    same = load_image(encode(image, "PNG", icc_profile=srgb_profile()))
    np.testing.assert_allclose(same.rgb, rgb, atol=1)
    swapped = load_image(encode(image, "PNG", icc_profile=swapped_primaries_profile()))
    np.testing.assert_allclose(swapped.rgb[1, 0], [0, 255, 0], atol=2)  # red in that profile is sRGB green
    np.testing.assert_allclose(swapped.rgb[1, 5], [0, 0, 255], atol=2)
    if mode == "RGBA":  # the alpha channel survives the colour conversion
        assert swapped.alpha[0, 0] == 0 and swapped.alpha[1:].min() == 255


D50 = (0.9642, 1.0, 0.8249)
SRGB_TO_XYZ_D50 = np.array(  # the sRGB primaries adapted to D50, as in sRGB ICC profiles
    [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169], [0.0139322, 0.0971045, 0.7141733]]
)


def srgb_to_lab(rgb) -> tuple[float, float, float]:
    """sRGB (0–255) → CIELAB relative to D50, the ICC profile connection space."""
    c = np.asarray(rgb, float) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = SRGB_TO_XYZ_D50 @ linear / np.array(D50)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])


def cmyk_profile(ink_colour) -> bytes:
    """A minimal ICC v2 CMYK printer profile (lut8 A2B0 to Lab) whose 16 ink corners print ``ink_colour(c, m, y, k)``.

    PIL.ImageCms can only create sRGB, Lab and XYZ profiles, so the CMYK one is assembled here byte by byte.
    """
    def s15(value):
        return struct.pack(">i", int(round(value * 65536)))

    clut = bytearray()
    for c, m, y, k in itertools.product((0, 1), repeat=4):  # the first input channel varies slowest
        lightness, a, b = srgb_to_lab(ink_colour(c, m, y, k))
        clut += bytes(int(round(np.clip(v, 0, 255))) for v in (lightness * 255 / 100, a + 128, b + 128))
    identity = bytes(range(256))
    a2b0 = b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + b"".join(s15(v) for v in (1, 0, 0, 0, 1, 0, 0, 0, 1))
    a2b0 += identity * 4 + bytes(clut) + identity * 3
    text = b"test CMYK\0"
    tags = [
        (b"desc", b"desc" + bytes(4) + struct.pack(">I", len(text)) + text + bytes(8 + 2 + 1 + 67)),
        (b"wtpt", b"XYZ " + bytes(4) + b"".join(s15(v) for v in D50)),
        (b"cprt", b"text" + bytes(4) + b"none\0"),
        (b"A2B0", a2b0),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    header = struct.pack(">I", offset + len(data)) + b"lcms" + struct.pack(">I", 0x02100000) + b"prtrCMYKLab "
    header += bytes(12) + b"acspAPPL" + bytes(4 + 8 + 8 + 4) + b"".join(s15(v) for v in D50)
    header += bytes(128 - len(header))
    return header + struct.pack(">I", len(tags)) + table + data


def rotated_inks(c, m, y, k):
    """An odd press: cyan ink prints magenta, magenta prints yellow, yellow prints cyan."""
    return tuple(255 * (1 - ink) * (1 - k) for ink in (y, c, m))


@pytest.mark.parametrize("format", ["TIFF", "JPEG"])
def test_cmyk_with_an_icc_profile_uses_the_profile(format):
    image = Image.new("CMYK", (len(CMYK_PIXELS), 1))
    image.putdata([cmyk for cmyk, _ in CMYK_PIXELS])
    params = {"quality": 100} if format == "JPEG" else {}
    loaded = load_image(encode(image, format, icc_profile=cmyk_profile(rotated_inks), **params))
    expected = [rotated_inks(*(v / 255 for v in cmyk)) for cmyk, _ in CMYK_PIXELS]
    np.testing.assert_allclose(loaded.rgb[0], expected, atol=8)  # 8-bit Lab table: a few levels of rounding
    assert np.abs(loaded.rgb[0, 1].astype(int) - [0, 255, 255]).max() > 200  # not the naive cyan
    # The same file with an ordinary profile looks like the plain conversion.
    plain = load_image(encode(image, format, icc_profile=cmyk_profile(naive_inks), **params))
    np.testing.assert_allclose(plain.rgb[0], [rgb for _, rgb in CMYK_PIXELS], atol=8)


def naive_inks(c, m, y, k):
    """The textbook formula (what a conversion without a profile does)."""
    return tuple(255 * (1 - ink) * (1 - k) for ink in (c, m, y))


@pytest.mark.parametrize(
    "mode, profile",
    [("RGB", b"not a profile at all" * 10), ("CMYK", None), ("L", None)],
)
def test_unusable_icc_profile_falls_back_to_a_plain_conversion(mode, profile):
    """A garbage profile, or a profile for another colour space (sRGB in a CMYK or grey file), is ignored."""
    profile = profile or srgb_profile()
    image = Image.new(mode, (3, 2), {"RGB": (10, 20, 30), "CMYK": (255, 0, 0, 0), "L": 90}[mode])
    loaded = load_image(encode(image, "TIFF" if mode == "CMYK" else "PNG", icc_profile=profile))
    expected = {"RGB": (10, 20, 30), "CMYK": (0, 255, 255), "L": (90, 90, 90)}[mode]
    np.testing.assert_array_equal(loaded.rgb, np.tile(expected, (2, 3, 1)))


@pytest.mark.parametrize("format", ["PNG", "TIFF"])
def test_16_bit_greyscale_scales_to_8_bits(format):
    values = np.array([[0, 257, 1000, 32768], [40000, 65280, 65534, 65535]], np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    data = encode(image, format)
    with Image.open(io.BytesIO(data)) as reopened:
        assert reopened.mode.startswith("I")  # stored as 16 bits, not clipped to 8
    loaded = load_image(data)
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(loaded.rgb, np.dstack([expected] * 3))
    assert loaded.alpha is None


def test_float_tiff_in_0_to_1():
    values = np.array([[0.0, 0.25, 0.5, 1.0]], np.float32)
    loaded = load_image(encode(Image.fromarray(values, "F"), "TIFF"))
    np.testing.assert_array_equal(loaded.rgb[..., 0], [[0, 64, 128, 255]])


@pytest.mark.parametrize(
    "mode, value, rgb, alpha",
    [
        ("La", (100, 128), (199, 199, 199), 128),  # premultiplied grey: 100 / (128/255) ≈ 199
        ("RGBa", (50, 25, 0, 128), (100, 50, 0), 128),
        ("PA", (0, 0), (0, 0, 0), 0),
        ("LAB", (255, 128, 128), (254, 255, 254), None),  # white
        ("YCbCr", (255, 128, 128), (255, 255, 255), None),
        ("RGBX", (1, 2, 3, 0), (1, 2, 3), None),
        ("I;16B", 65535, (255, 255, 255), None),
        ("I", 257 * 10, (10, 10, 10), None),
    ],
)
def test_unusual_modes_of_pil_images(mode, value, rgb, alpha):
    loaded = load_image(Image.new(mode, (3, 2), value))
    np.testing.assert_allclose(loaded.rgb[0, 0], rgb, atol=1)
    if alpha is None:
        assert loaded.alpha is None
    else:
        assert loaded.alpha[0, 0] == alpha


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    np.testing.assert_array_equal(load_image(data).rgb[0, 0], [250, 0, 0])


# ------------------------------------------------------------------------------------------------ orientation


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores when the EXIF orientation is ``orientation`` (CIPA DC-008 / TIFF 6.0)."""
    return {
        1: lambda a: a,
        2: np.fliplr,  # 0th row = top, 0th column = right
        3: lambda a: np.rot90(a, 2),  # bottom, right
        4: np.flipud,  # bottom, left
        5: lambda a: np.transpose(a, (1, 0, 2)),  # 0th row = left, 0th column = top
        6: lambda a: np.rot90(a, 1),  # 0th row = right, 0th column = top: shown turned 90° clockwise
        7: lambda a: np.rot90(np.flipud(a), 1),  # 0th row = right, 0th column = bottom
        8: lambda a: np.rot90(a, -1),  # 0th row = left, 0th column = bottom
    }[orientation](upright)


def with_orientation(stored: np.ndarray, orientation: int, format: str, **params) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return encode(Image.fromarray(np.ascontiguousarray(stored)), format, exif=exif.tobytes(), **params)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png(picture, orientation):
    stored = stored_for_orientation(picture, orientation)
    if orientation >= 5:
        assert stored.shape[:2] == (30, 20)
    loaded = load_image(with_orientation(stored, orientation, "PNG"))
    np.testing.assert_array_equal(loaded.rgb, picture)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(picture, orientation):
    stored = stored_for_orientation(picture, orientation)
    loaded = load_image(with_orientation(stored, orientation, "JPEG", quality=95, subsampling=0))
    assert loaded.rgb.shape == picture.shape
    assert np.abs(loaded.rgb.astype(int) - picture).mean() < 5
    assert loaded.rgb[1, 1].min() > 230  # the white mark is top left again
    np.testing.assert_allclose(loaded.rgb[16, 25], [230, 220, 60], atol=12)


@pytest.mark.parametrize("orientation", [0, 9, 300])
def test_invalid_orientation_is_ignored(picture, orientation):
    loaded = load_image(with_orientation(picture, orientation, "PNG"))
    np.testing.assert_array_equal(loaded.rgb, picture)


def insert_app1(jpeg: bytes, payload: bytes) -> bytes:
    """A JPEG with an extra APP1 segment holding ``payload`` right after the SOI marker."""
    assert jpeg[:2] == b"\xff\xd8"
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


@pytest.mark.parametrize(
    "payload",
    [
        b"Exif\x00\x00" + b"\x13\x37garbage" * 8,  # no TIFF header
        b"Exif\x00\x00MM\x00\x2a\x00\x00\xff\xf0",  # first IFD beyond the end
        b"Exif\x00\x00II\x2a\x00\x08\x00\x00\x00\x05\x00" + b"\xff" * 20,  # entries cut short
        b"Exif\x00\x00",  # nothing at all
    ],
)
def test_broken_exif_does_not_stop_loading(picture, payload):
    jpeg = encode(Image.fromarray(picture), "JPEG", quality=95)
    loaded = load_image(insert_app1(jpeg, payload))
    np.testing.assert_array_equal(loaded.rgb, load_image(jpeg).rgb)
    assert loaded.focal_px is None


def test_broken_exif_in_a_png_does_not_stop_loading(picture):
    loaded = load_image(encode(Image.fromarray(picture), "PNG", exif=b"Exif\x00\x00MM\x00\x2a broken"))
    np.testing.assert_array_equal(loaded.rgb, picture)


# ---------------------------------------------------------------------------------------------- EXIF focal


def exif_image(size=(150, 100), orientation=1, format="JPEG", **tags) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    ifd = exif.get_ifd(EXIF_IFD)
    for tag, value in tags.items():
        ifd[int(tag, 16)] = value
    return encode(Image.new("RGB", size, (90, 120, 150)), format, exif=exif.tobytes())


RATIONAL = TiffImagePlugin.IFDRational


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
@pytest.mark.parametrize(
    "tags, expected, source",
    [
        ({"0xA405": 28}, 28 * math.hypot(150, 100) / FULL_FRAME_DIAGONAL_MM, "exif:FocalLengthIn35mmFilm"),
        ({"0xA405": 50}, 50 * math.hypot(150, 100) / FULL_FRAME_DIAGONAL_MM, "exif:FocalLengthIn35mmFilm"),
        # FocalLength 4.2 mm, FocalPlaneXResolution 1000 pixels per cm → 420 pixels.
        ({"0x920A": RATIONAL(42, 10), "0xA20E": RATIONAL(1000, 1), "0xA210": 3}, 420.0,
         "exif:FocalLength+FocalPlaneXResolution"),
        # ... 2540 pixels per inch = 100 per mm → 420 pixels; unit 2 (inch) is also the default.
        ({"0x920A": RATIONAL(42, 10), "0xA20E": RATIONAL(2540, 1), "0xA210": 2}, 420.0,
         "exif:FocalLength+FocalPlaneXResolution"),
        ({"0x920A": RATIONAL(42, 10), "0xA20E": RATIONAL(2540, 1)}, 420.0, "exif:FocalLength+FocalPlaneXResolution"),
        ({"0x920A": RATIONAL(42, 10), "0xA20E": RATIONAL(100, 1), "0xA210": 4}, 420.0,
         "exif:FocalLength+FocalPlaneXResolution"),
        # The camera recorded 300 x 200 pixels; this file is a half-size copy, so half the focal length.
        ({"0x920A": RATIONAL(42, 10), "0xA20E": RATIONAL(1000, 1), "0xA210": 3, "0xA002": 300, "0xA003": 200},
         210.0, "exif:FocalLength+FocalPlaneXResolution"),
        # The 35 mm equivalent wins when both are there.
        ({"0xA405": 28, "0x920A": RATIONAL(42, 10), "0xA20E": RATIONAL(1000, 1), "0xA210": 3},
         28 * math.hypot(150, 100) / FULL_FRAME_DIAGONAL_MM, "exif:FocalLengthIn35mmFilm"),
        ({"0x920A": RATIONAL(42, 10)}, None, None),  # no sensor size: not derivable
        ({"0xA405": 0}, None, None),
        ({}, None, None),
    ],
)
def test_exif_focal_length_in_pixels(format, tags, expected, source):
    loaded = load_image(exif_image(format=format, **tags))
    if expected is None:
        assert loaded.focal_px is None and loaded.focal_source is None
    else:
        assert loaded.focal_px == pytest.approx(expected, rel=1e-9)
        assert loaded.focal_source == source


@pytest.mark.parametrize(
    "tags, expected",
    [
        ({"0xA405": 28}, 28 * math.hypot(150, 100) / FULL_FRAME_DIAGONAL_MM),
        ({"0x920A": RATIONAL(42, 10), "0xA20E": RATIONAL(1000, 1), "0xA210": 3, "0xA002": 300, "0xA003": 200},
         210.0),
    ],
)
def test_exif_focal_length_with_orientation_6(tags, expected):
    loaded = load_image(exif_image(size=(150, 100), orientation=6, **tags))
    assert (loaded.width, loaded.height) == (100, 150)  # upright: width and height swapped
    assert loaded.focal_px == pytest.approx(expected, rel=1e-9)


def test_no_exif_no_focal(picture):
    loaded = load_image(encode(Image.fromarray(picture), "PNG"))
    assert loaded.focal_px is None and loaded.focal_source is None


# ----------------------------------------------------------------------------------------- unsupported formats


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image.png", encode(Image.new("RGB", (4, 4)), "PNG"))
    return buffer.getvalue()


def pillow_file(format: str) -> bytes:
    return encode(Image.new("RGB", (16, 12), (10, 20, 30)), format)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"Hello, this is a text file.\n" * 10, id="text"),
        pytest.param(b"<!DOCTYPE html><html><body><img src=x onerror=alert(1)></body></html>", id="html"),
        pytest.param(
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b'<rect width="10" height="10" fill="red"/></svg>', id="svg",
        ),
        pytest.param(zip_bytes(), id="zip"),
        pytest.param(pillow_file("EPS"), id="eps"),
        pytest.param(pillow_file("PDF"), id="pdf"),
        # Formats Pillow can read but we do not accept.
        pytest.param(pillow_file("PPM"), id="ppm"),
        pytest.param(pillow_file("ICO"), id="ico"),
        pytest.param(pillow_file("PCX"), id="pcx"),
        pytest.param(b"\x00" * 64, id="zeros"),
    ],
)
def test_unsupported_formats(data):
    with pytest.raises(UnsupportedImageError) as caught:
        load_image(data)
    assert caught.value.code == "unsupported_format"
    assert "JPEG" in str(caught.value)


# ---------------------------------------------------------------------------------------------- damaged files


def noise_image(seed=0, size=(64, 48)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "TIFF", "BMP"])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_truncated_files_are_damaged(format, fraction):
    data = encode(noise_image(), format)
    with pytest.raises(DamagedImageError) as caught:
        load_image(data[: int(len(data) * fraction)])
    assert caught.value.code == "damaged_image"


def test_png_with_a_corrupted_chunk_is_damaged():
    data = bytearray(encode(noise_image(), "PNG"))
    data[data.find(b"IDAT") + 100] ^= 0xFF  # the CRC no longer matches
    with pytest.raises(DamagedImageError):
        load_image(bytes(data))


def test_truncated_file_from_a_path(tmp_path):
    path = tmp_path / "cut.jpg"
    data = encode(noise_image(), "JPEG")
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DamagedImageError):
        load_image(path)


# ------------------------------------------------------------------------------------------------ pixel limit


def png_declaring(width: int, height: int) -> bytes:
    """A 67-byte PNG whose header declares ``width`` × ``height`` pixels (a decompression bomb's calling card)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    assert data[12:16] == b"IHDR"
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.mark.parametrize("max_pixels", [100, 1000, 64 * 48 - 1])
def test_pixel_cap(max_pixels):
    data = encode(noise_image(), "PNG")
    with pytest.raises(ImageTooLargeError) as caught:
        load_image(data, max_pixels=max_pixels)
    message = str(caught.value)
    assert "64 x 48" in message
    assert f"{max_pixels / 1e6:g} megapixels" in message
    assert caught.value.code == "image_too_large"
    assert load_image(data, max_pixels=64 * 48).rgb.shape == (48, 64, 3)  # exactly at the limit is fine


def test_pixel_cap_applies_to_pil_images_and_arrays():
    with pytest.raises(ImageTooLargeError):
        load_image(Image.new("RGB", (50, 50)), max_pixels=2000)
    with pytest.raises(ImageTooLargeError, match="50 x 40"):
        load_image(np.zeros((40, 50, 3), np.uint8), max_pixels=1999)
    assert load_image(np.zeros((40, 50, 4), np.uint8), max_pixels=2000).alpha is not None


@pytest.mark.parametrize("width, height", [(30000, 30000), (10000, 10000), (8000, 8000), (100000, 1000)])
def test_decompression_bomb(width, height):
    data = png_declaring(width, height)
    assert len(data) < 100
    with pytest.raises(ImageTooLargeError) as caught:
        load_image(data)
    assert f"{DEFAULT_MAX_PIXELS / 1e6:g} megapixels" in str(caught.value)


def test_decompression_bomb_below_a_custom_limit_is_still_refused():
    with pytest.raises(ImageTooLargeError, match="4000 x 4000"):
        load_image(png_declaring(4000, 4000), max_pixels=1_000_000)


def test_errors_are_input_errors_with_plain_messages():
    for data in (b"text", encode(noise_image(), "PNG")[:500], png_declaring(30000, 30000)):
        with pytest.raises(InputError) as caught:
            load_image(data)
        message = str(caught.value)
        assert "Traceback" not in message and "PIL" not in message and "/" not in message.replace(" / ", "")


def test_loaded_image_is_frozen(picture):
    loaded = load_image(picture)
    assert isinstance(loaded, LoadedImage)
    with pytest.raises(AttributeError):
        loaded.rgb = picture  # type: ignore[misc]
