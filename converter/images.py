"""Load an image from a path, bytes, a file object, a PIL image or an array into RGB + alpha arrays.

The format is decided by content under an allow-list, never by file name; the pixel count is checked from the
header before the full decode; a damaged file is an error rather than a silently half-decoded picture; the EXIF
orientation is applied so the cloud matches the image as people see it; colours end up in sRGB.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError, features

from .errors import DamagedImageError, ImageTooLargeError, ImageTooSmallError, UnsupportedImageError
from .geometry import pixel_grid

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF") + (("AVIF",) if features.check("avif") else ())
DEFAULT_MAX_PIXELS = 50_000_000
MIN_SIDE_PX = 2  # to convert: a surface needs neighbours both ways (a 1-pixel-wide picture loads, but has no shape)

# EXIF tags (CIPA DC-008) used for the focal length.
_EXIF_IFD = 0x8769
_FOCAL_LENGTH = 0x920A
_FOCAL_LENGTH_35MM = 0xA405
_FOCAL_PLANE_X_RESOLUTION = 0xA20E
_FOCAL_PLANE_RESOLUTION_UNIT = 0xA210
_EXIF_IMAGE_WIDTH = 0xA002
_EXIF_IMAGE_HEIGHT = 0xA003
_MM_PER_RESOLUTION_UNIT = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}
# The "35 mm equivalent" is defined by the diagonal of a 36 x 24 mm frame.
_FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)

_SRGB = ImageCms.createProfile("sRGB")
Image.init()  # register every plugin now: Image.open(formats=...) only knows the preinit ones otherwise


@dataclass(frozen=True)
class LoadedImage:
    """An image ready for depth estimation and colouring.

    rgb: [H, W, 3] uint8, sRGB, orientation applied.
    alpha: [H, W] uint8, or None when every pixel is opaque.
    focal_px: the horizontal focal length in pixels of *this* image derived from EXIF, or None.
    focal_source: which EXIF tags gave ``focal_px`` (for the record kept with the result).
    scale: working pixels per pixel of the file (1.0, or 1/2, 1/4, 1/8 when a JPEG was decoded at a reduced DCT
        scale because the output needs no more: see ``load_image(draft_points=...)``).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    focal_px: float | None = None
    focal_source: str | None = None
    format: str | None = None
    scale: float = 1.0

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]

    def to_pil(self) -> Image.Image:
        """The RGB picture the depth model sees (transparent pixels keep their stored colour)."""
        return Image.fromarray(self.rgb, "RGB")

    def picture(self) -> Image.Image:
        """The picture as people see it: RGB, or RGBA when it has transparency (textures, previews)."""
        if self.alpha is None:
            return self.to_pil()
        return Image.fromarray(np.dstack([self.rgb, self.alpha]), "RGBA")


def load_image(source, max_pixels: int = DEFAULT_MAX_PIXELS, draft_points: int = 0) -> LoadedImage:
    """Decode ``source`` (path, bytes, binary file object, PIL image or [H, W, 3|4] uint8 array).

    ``draft_points`` > 0: a JPEG file is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that still gives at least
    the sampling grid of ``geometry.pixel_grid(width, height, draft_points)`` — several times faster and smaller for
    a large photo when fewer points are wanted. ``LoadedImage.scale`` then says by how much; EXIF focal lengths are in
    the pixels of the decoded picture.
    """
    if isinstance(source, LoadedImage):
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source, max_pixels)
    if isinstance(source, Image.Image):
        return _from_pil(source, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise UnsupportedImageError("The file is empty: no image was uploaded.")
        return _decode(io.BytesIO(bytes(source)), max_pixels, draft_points)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as handle:
                if os.fstat(handle.fileno()).st_size == 0:
                    raise UnsupportedImageError("The file is empty.")
                return _decode(handle, max_pixels, draft_points)
        except FileNotFoundError:
            raise UnsupportedImageError(f"There is no file named '{os.fspath(source)}'.") from None
        except IsADirectoryError:
            raise UnsupportedImageError(f"'{os.fspath(source)}' is a folder, not an image file.") from None
    if hasattr(source, "read"):
        return _decode(source, max_pixels, draft_points)
    raise TypeError(f"cannot load an image from {type(source).__name__}")


def check_convertible_size(width: int, height: int) -> None:
    """An ImageTooSmallError unless the picture has at least ``MIN_SIDE_PX`` pixels a side (loading does not care;
    converting does)."""
    if min(width, height) < MIN_SIDE_PX:
        raise ImageTooSmallError(f"The image is too small: {width} x {height} pixels; converting needs at least "
                                 f"{MIN_SIDE_PX} pixels a side.")


def probe_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Check an upload from its headers alone, without decoding pixels: (format, width, height).

    For a web tier that hands the bytes to a worker to decode: the format (by content, under the allow-list) and the
    declared pixels of every frame are refused at once; damage deeper in the file shows only in the worker's decode.
    """
    if not data:
        raise UnsupportedImageError("The file is empty: no image was uploaded.")
    with _opened(io.BytesIO(bytes(data)), max_pixels) as image:
        return image.format, image.size[0], image.size[1]


def _decode(stream, max_pixels: int, draft_points: int = 0) -> LoadedImage:
    with _opened(stream, max_pixels) as image:
        scale = _draft(image, draft_points)
        return _from_pil(image, max_pixels, scale, reduce_points=draft_points if scale == 1.0 else 0)


@contextlib.contextmanager
def _opened(stream, max_pixels: int):
    """The image opened by content under the allow-list, its declared pixels (every frame) checked: headers only."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _ignore_metadata_warnings()
        try:
            image = Image.open(stream, formats=ALLOWED_FORMATS)
        except UnidentifiedImageError:
            raise UnsupportedImageError(
                "This is not a supported image format. Use JPEG, PNG, WebP, BMP, GIF or TIFF."
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_large(None, max_pixels) from None
        except (OSError, SyntaxError, ValueError, EOFError):
            raise DamagedImageError("The image is damaged or incomplete.") from None
        with image:
            declared = _declared_pixels(image, stream)
            if declared > max_pixels:
                raise _too_large(image.size if declared == image.size[0] * image.size[1] else None, max_pixels,
                                 frames=declared > image.size[0] * image.size[1])
            yield image


def _draft(image: Image.Image, draft_points: int) -> float:
    """Ask a not yet decoded JPEG for the smallest DCT scale that keeps the point grid; returns the scale (≤ 1)."""
    if draft_points <= 0 or image.format != "JPEG" or image.size[0] * image.size[1] <= draft_points:
        return 1.0
    width, height = image.size
    columns, rows = pixel_grid(width, height, draft_points)  # stored orientation: a rotation swaps both alike
    original = image.size
    try:
        drafted = image.draft(image.mode, (len(columns), len(rows)))
    except (OSError, ValueError):
        return 1.0
    if drafted is None or image.size == original:
        return 1.0
    return drafted[1][2] / original[0]  # the box is the original size over the DCT scale: exactly 1/2, 1/4 or 1/8


def _from_pil(image: Image.Image, max_pixels: int, scale: float = 1.0, reduce_points: int = 0) -> LoadedImage:
    width, height = image.size
    if width * height > max_pixels:
        raise _too_large(image.size, max_pixels)
    if width == 0 or height == 0:
        raise DamagedImageError("The image is damaged or incomplete.")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        _ignore_metadata_warnings()
        previous_truncated = ImageFile.LOAD_TRUNCATED_IMAGES
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            image.seek(0)  # animated images: the first frame only
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_large(image.size, max_pixels) from None
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError):
            raise DamagedImageError("The image is damaged or incomplete.") from None
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous_truncated
    with warnings.catch_warnings():
        _ignore_metadata_warnings()
        focal_px, focal_source = _exif_focal(image, scale)
        factor = _reduction_factor(image, reduce_points)
        if factor > 1:
            # Any format (JPEG got its DCT scale above): average k × k blocks once, before any heavy work.
            orientation = _orientation(image)
            reduced = _box_reduce(image, factor)
            upright = reduced.transpose(_TRANSPOSES[orientation]) if orientation in _TRANSPOSES else reduced
            scale /= factor
            focal_px = None if focal_px is None else focal_px / factor
        else:
            orientation = _orientation(image)  # transposed only when needed: exif_transpose copies even then
            upright = image.transpose(_TRANSPOSES[orientation]) if orientation in _TRANSPOSES else image
    rgb, alpha = _to_srgb(upright)
    return LoadedImage(
        rgb=rgb, alpha=alpha, focal_px=focal_px, focal_source=focal_source, format=image.format, scale=scale
    )


_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_DEEP_GREY_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
_REDUCIBLE_MODES = ("RGB", "RGBA", "L", "LA", "CMYK", "1", "P") + _DEEP_GREY_MODES
_BAND_BYTES = 8 * 1024 * 1024  # a 1-bit or palette image is widened to RGBA one band of rows at a time


def _reduction_factor(image: Image.Image, points: int) -> int:
    """The largest whole k such that the image reduced k times still holds the point grid of ``points``."""
    if points <= 0 or image.mode not in _REDUCIBLE_MODES or image.size[0] * image.size[1] <= 4 * points:
        return 1
    columns, rows = pixel_grid(image.size[0], image.size[1], points)
    return max(1, min(image.size[0] // len(columns), image.size[1] // len(rows)))


def _box_reduce(image: Image.Image, factor: int) -> Image.Image:
    """k × k box average; with alpha, weighted by it so transparent pixels do not darken the edges."""
    if image.mode in ("1", "P") + _DEEP_GREY_MODES or (image.mode in ("RGBA", "LA") and image.size[0] * image.size[1] * 4 > _BAND_BYTES):
        return _reduce_in_bands(image, factor)
    return _reduce_whole(image, factor)


def _reduce_whole(image: Image.Image, factor: int) -> Image.Image:
    if image.mode in ("RGBA", "LA"):
        premultiplied = "RGBa" if image.mode == "RGBA" else "La"
        return image.convert(premultiplied).reduce(factor).convert(image.mode)
    reduced = image.reduce(factor)
    reduced.info = dict(image.info)  # keeps the ICC profile for the colour conversion that follows
    return reduced


def _reduce_in_bands(image: Image.Image, factor: int) -> Image.Image:
    """A large image reduced k × k a band of rows at a time, widened on the way (1-bit to L, palette to RGB or
    RGBA, alpha premultiplied): a 50 MP page never exists again at 3 or 4 bytes a pixel, only its reduced picture
    does."""
    width, height = image.size
    if image.mode in ("RGBA", "LA"):
        wide = image.mode
    else:
        wide = "L" if image.mode in ("1",) + _DEEP_GREY_MODES else ("RGBA" if "transparency" in image.info else "RGB")
    deep_scale = _deep_grey_scale(image) if image.mode in _DEEP_GREY_MODES else None
    rows = factor * max(1, _BAND_BYTES // (width * 4 * factor))
    reduced = Image.new(wide, (-(-width // factor), -(-height // factor)))
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(height, top + rows)))
        if deep_scale is None:
            band = band.convert(wide)
        else:  # 16-bit or float grey: scaled to 8 bits as _to_srgb scales it, with the whole image's scale
            band = Image.fromarray(_grey8(np.asarray(band), deep_scale), "L")
        reduced.paste(_reduce_whole(band, factor), (0, top // factor))
    reduced.info = {key: value for key, value in image.info.items() if key != "transparency"}
    return reduced


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # broken EXIF: as stored
        return 1


def _ignore_metadata_warnings() -> None:
    """Inside catch_warnings: Pillow's UserWarnings about broken metadata ("Corrupt EXIF data", ...) are harmless
    here (broken EXIF is ignored), and must neither flood the logs nor fail where warnings are errors."""
    warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")


def _from_array(array: np.ndarray, max_pixels: int) -> LoadedImage:
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4) or 0 in array.shape:
        raise UnsupportedImageError("An image array must be uint8 with shape [H, W, 3] or [H, W, 4].")
    if array.shape[0] * array.shape[1] > max_pixels:  # the cap bounds the work, not only the decoding
        raise _too_large((array.shape[1], array.shape[0]), max_pixels)
    rgb = np.ascontiguousarray(array[:, :, :3])
    alpha = np.ascontiguousarray(array[:, :, 3]) if array.shape[2] == 4 else None
    if alpha is not None and alpha.min() == 255:
        alpha = None
    return LoadedImage(rgb=rgb, alpha=alpha)


def _declared_pixels(image: Image.Image, stream) -> int:
    """Pixels of every frame, read from headers only (a bomb may hide in a later frame we would never decode)."""
    if image.format == "GIF":
        return _gif_frame_pixels(stream)
    try:
        frames = int(getattr(image, "n_frames", 1) or 1)  # PNG, WebP and TIFF read this from their headers
    except (OSError, ValueError, EOFError, SyntaxError):
        raise DamagedImageError("The image is damaged or incomplete.") from None
    finally:
        image.seek(0)
    return frames * image.size[0] * image.size[1]


def _gif_frame_pixels(stream) -> int:
    """Sum of width × height over a GIF's frames, walking its block structure without decompressing anything."""
    position = stream.tell()
    try:
        stream.seek(0)
        data = stream.read()
    finally:
        stream.seek(position)
    total, offset = 0, 13
    if len(data) < 13:
        raise DamagedImageError("The image is damaged or incomplete.")
    if data[10] & 0x80:  # global colour table
        offset += 3 << ((data[10] & 0x07) + 1)
    while offset < len(data):
        block = data[offset]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            offset = _skip_sub_blocks(data, offset + 2)
        elif block == 0x2C:  # image descriptor
            if offset + 10 > len(data):
                break
            width = int.from_bytes(data[offset + 5:offset + 7], "little")
            height = int.from_bytes(data[offset + 7:offset + 9], "little")
            total += width * height
            flags = data[offset + 9]
            offset += 10
            if flags & 0x80:  # local colour table
                offset += 3 << ((flags & 0x07) + 1)
            offset = _skip_sub_blocks(data, offset + 1)  # after the LZW minimum code size
        else:
            break  # garbage after the frames: what came before is what counts
    return total


def _skip_sub_blocks(data: bytes, offset: int) -> int:
    while offset < len(data):
        size = data[offset]
        offset += 1 + size
        if size == 0:
            break
    return offset


def _too_large(size, max_pixels: int, frames: bool = False) -> ImageTooLargeError:
    megapixels = max_pixels / 1e6
    if frames:
        return ImageTooLargeError(
            f"The image is too large: its frames hold more than {megapixels:g} megapixels in all, the limit."
        )
    if size:
        return ImageTooLargeError(
            f"The image is too large: {size[0]} x {size[1]} pixels; the limit is {megapixels:g} megapixels."
        )
    return ImageTooLargeError(f"The image is too large; the limit is {megapixels:g} megapixels.")


def _to_srgb(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow mode → ([H, W, 3] uint8 sRGB, [H, W] uint8 alpha or None)."""
    mode = image.mode
    if mode.startswith("I") or mode == "F":
        # 16-bit and float greyscale: Pillow's convert("L") clips instead of scaling.
        grey = _grey8(np.asarray(image), _deep_grey_scale(image))
        return np.repeat(grey[:, :, None], 3, axis=2), None
    if mode in ("1", "L") and "transparency" not in image.info and "icc_profile" not in image.info:
        return _grey_to_rgb(image), None
    if mode == "P" and image.palette is not None and image.palette.mode == "RGB":
        return _palette_to_rgb(image)
    if mode == "P" or (mode in ("L", "RGB") and "transparency" in image.info):
        # A palette, or a grey/RGB PNG whose tRNS chunk makes one colour transparent.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa"):
        image = (image.convert("LA") if mode == "La" else image).convert("RGBA")  # Pillow has no La → RGBA
    elif mode == "1":
        image = image.convert("L")
    image = _apply_icc_profile(image)
    if image.mode == "RGBA":
        rgb, alpha = _bands(image, 3), _bands(image.getchannel("A"), 1)
        return rgb, (None if alpha.min() == 255 else alpha)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return _pixels(image), None


def _pixels(image: Image.Image) -> np.ndarray:
    return _bands(image, len(image.getbands()))


def _bands(image: Image.Image, channels: int) -> np.ndarray:
    """The first ``channels`` of an 8-bit image as [H, W, C] uint8 ([H, W] for one), writable, copied out of
    Pillow a band of rows at a time: the picture exists twice (Pillow's and ours), never three times
    (np.asarray goes through a whole-image bytes copy)."""
    width, height = image.size
    out = np.empty((height, width, channels) if channels > 1 else (height, width), dtype=np.uint8)
    rows = max(1, _BAND_BYTES // max(1, width * len(image.getbands())))
    for top in range(0, height, rows):
        band = np.asarray(image.crop((0, top, width, min(height, top + rows))))
        out[top:top + rows] = band[:, :, :channels] if channels > 1 and band.ndim == 3 else band
    return out


def _deep_grey_scale(image: Image.Image) -> float:
    """The factor to 8 bits of a 16-bit or float grey image: 1/257, or 255 for a float image within [0, 1]."""
    if image.mode != "F":
        return 1.0 / 257.0
    extrema = image.getextrema()
    return 255.0 if extrema and extrema[1] <= 1.0 else 1.0 / 257.0


def _grey8(values: np.ndarray, scale: float) -> np.ndarray:
    return np.clip(np.rint(values.astype(np.float32) * np.float32(scale)), 0, 255).astype(np.uint8)


def _grey_to_rgb(image: Image.Image) -> np.ndarray:
    """[H, W, 3] uint8 from a 1-bit or grey image, widened once (no full-size RGB Pillow copy on the way)."""
    width, height = image.size
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rows = max(1, _BAND_BYTES // max(1, width * 3))
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(height, top + rows)))
        rgb[top:top + rows] = np.asarray(band if band.mode == "L" else band.convert("L"))[:, :, None]
    return rgb


def _palette_to_rgb(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """A palette image through its palette: the 256 colours go through the ICC profile (if any), then one lookup
    per pixel makes the [H, W, 3] picture and the [H, W] alpha (None when every pixel is opaque)."""
    colours = np.zeros((256, 3), dtype=np.uint8)
    palette = np.frombuffer(bytes(image.getpalette("RGB") or b""), dtype=np.uint8).reshape(-1, 3)[:256]
    colours[:len(palette)] = palette
    swatch = Image.fromarray(colours[None, :, :], "RGB")
    swatch.info = {"icc_profile": image.info["icc_profile"]} if image.info.get("icc_profile") else {}
    colours = np.asarray(_apply_icc_profile(swatch).convert("RGB"))[0]
    opacity = np.full(256, 255, dtype=np.uint8)
    transparency = image.info.get("transparency")
    if isinstance(transparency, int) and 0 <= transparency < 256:
        opacity[transparency] = 0
    elif isinstance(transparency, bytes):
        opacity[:len(transparency[:256])] = np.frombuffer(transparency[:256], dtype=np.uint8)
    indices = np.asarray(image)
    used = np.bincount(indices.ravel(), minlength=256) > 0
    alpha = opacity[indices] if opacity[used[:256]].min() < 255 else None
    return colours[indices], alpha


def _apply_icc_profile(image: Image.Image) -> Image.Image:
    """Convert CMYK and wide-gamut RGB to sRGB with the embedded ICC profile; without one, a plain conversion."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK", "L"):
        return image.convert("RGB") if image.mode == "CMYK" else image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        output_mode = "RGBA" if image.mode == "RGBA" else "RGB"
        if image.mode == "L":
            return image  # a grey profile changes tones only slightly; keep the stored values
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode=output_mode)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image.convert("RGB") if image.mode == "CMYK" else image


def _exif_focal(image: Image.Image, scale: float = 1.0) -> tuple[float | None, str | None]:
    """Horizontal focal length in pixels of the *upright* image, from EXIF; (None, None) when not derivable.

    ``image.size`` is the decoded size; ``scale`` is decoded pixels per stored pixel (JPEG draft decoding)."""
    try:
        exif = image.getexif()
        tags = dict(exif.get_ifd(_EXIF_IFD))
        width, height = image.size
        orientation = exif.get(0x0112, 1)
    except Exception:  # broken EXIF is common and harmless
        return None, None
    if orientation in (5, 6, 7, 8):  # rotated by 90°: the upright image's width is the stored height
        width, height = height, width
    try:
        focal_35mm = float(tags.get(_FOCAL_LENGTH_35MM) or 0)
        if focal_35mm > 0:
            return focal_35mm * math.hypot(width, height) / _FULL_FRAME_DIAGONAL_MM, "exif:FocalLengthIn35mmFilm"
        focal_mm = float(tags.get(_FOCAL_LENGTH) or 0)
        x_resolution = float(tags.get(_FOCAL_PLANE_X_RESOLUTION) or 0)
        unit_mm = _MM_PER_RESOLUTION_UNIT.get(int(tags.get(_FOCAL_PLANE_RESOLUTION_UNIT, 2)))
        if focal_mm > 0 and x_resolution > 0 and unit_mm:
            focal_px = focal_mm * x_resolution / unit_mm  # in the sensor's pixel grid, as recorded
            recorded = (int(tags.get(_EXIF_IMAGE_WIDTH) or 0), int(tags.get(_EXIF_IMAGE_HEIGHT) or 0))
            if min(recorded) > 0:
                focal_px *= max(image.size) / max(recorded)  # the file may be a resized copy (or draft-decoded)
            else:
                focal_px *= scale
            return focal_px, "exif:FocalLength+FocalPlaneXResolution"
    except (TypeError, ValueError, ZeroDivisionError):
        pass
    return None, None


# ------------------------------------------------------------------------------------- drawings and paper


PAPER_TOLERANCE = 45  # how much darker than the paper (0–255 luminance) a pixel may be and still be paper
PAPER_MAX_CHROMA = 45  # max − min of R, G, B: paper is grey-ish, coloured ink is not
_PAPER_MIN_LEVEL = 150  # a border darker than this is not paper
_PAPER_MAX_SWEEPS = 512


def paper_mask(loaded: LoadedImage) -> np.ndarray:
    """[H, W] bool: the near-white paper connected to the image border (see :func:`remove_paper_background`)."""
    rgb = loaded.rgb
    height, width = rgb.shape[:2]
    rgb16 = rgb.astype(np.int16)
    chroma = rgb16.max(axis=2) - rgb16.min(axis=2)
    luminance = (rgb.astype(np.int32) @ np.array([77, 150, 29], dtype=np.int32)) >> 8  # 0–255
    del rgb16
    transparent = np.zeros((height, width), dtype=bool) if loaded.alpha is None else loaded.alpha == 0
    border = np.zeros((height, width), dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    candidates = border & ~transparent & (chroma <= PAPER_MAX_CHROMA)
    if not candidates.any():
        return np.zeros((height, width), dtype=bool)
    level = float(np.median(luminance[candidates]))
    if level < _PAPER_MIN_LEVEL:
        return np.zeros((height, width), dtype=bool)
    paper = (chroma <= PAPER_MAX_CHROMA) & (luminance >= level - PAPER_TOLERANCE)
    opaque_border = border & ~transparent
    if (paper & opaque_border).sum() < 0.5 * opaque_border.sum():
        return np.zeros((height, width), dtype=bool)  # the border is not mostly paper: a photo, not a sheet
    passable = paper | transparent
    reached = _flood_from_border(passable, border)
    return reached & ~transparent


def remove_paper_background(loaded: LoadedImage) -> LoadedImage:
    """The image with the paper background made transparent (alpha 0).

    Rule: the paper level is the median luminance of the border's low-saturation pixels (no paper when it is below
    150, or when less than half of the opaque border is paper); a pixel is paper when its chroma (max − min of R, G,
    B) is at most 45 and its luminance at least the paper level − 45 (paper grain and uneven light pass, pencil
    lines and ink do not); the paper that goes is the part of it connected (4-neighbours, through already
    transparent pixels) to the image border, so white regions *inside* a closed drawn shape stay. Vectorised:
    alternate sweeps along rows and columns, each spreading the border's reach over whole runs of paper pixels,
    until nothing changes (at most 512 sweeps: one per turn of the longest path).
    """
    paper = paper_mask(loaded)
    if not paper.any():
        return loaded
    alpha = np.full(paper.shape, 255, dtype=np.uint8) if loaded.alpha is None else loaded.alpha.copy()
    alpha[paper] = 0
    return LoadedImage(
        rgb=loaded.rgb, alpha=alpha, focal_px=loaded.focal_px, focal_source=loaded.focal_source,
        format=loaded.format, scale=loaded.scale,
    )


def _flood_from_border(passable: np.ndarray, border: np.ndarray) -> np.ndarray:
    """Pixels of ``passable`` connected (4-neighbours) to a passable pixel of ``border``."""
    reached = passable & border
    if not reached.any():
        return reached
    rows = _Runs(passable)
    columns = _Runs(np.ascontiguousarray(passable.T))
    count = int(reached.sum())
    for sweep in range(_PAPER_MAX_SWEEPS):
        if sweep % 2 == 0:
            reached = rows.spread(reached)
        else:
            reached = columns.spread(np.ascontiguousarray(reached.T)).T
        if sweep % 2 == 1:
            new_count = int(reached.sum())
            if new_count == count:
                break
            count = new_count
    return np.ascontiguousarray(reached)


class _Runs:
    """Runs of equal values along the rows of a boolean [H, W] array, for spreading a flag over whole runs."""

    def __init__(self, passable: np.ndarray):
        self.passable = passable
        flat = passable.ravel()
        change = np.empty(flat.size, dtype=bool)
        change[0] = True
        np.not_equal(flat[1:], flat[:-1], out=change[1:])
        change[:: passable.shape[1]] = True
        self.starts = np.flatnonzero(change)
        self.lengths = np.diff(np.append(self.starts, flat.size))

    def spread(self, reached: np.ndarray) -> np.ndarray:
        any_reached = np.maximum.reduceat(reached.ravel().view(np.uint8), self.starts).astype(bool)
        spread = np.repeat(any_reached, self.lengths).reshape(self.passable.shape)
        return spread & self.passable


def looks_like_drawing(loaded: LoadedImage) -> bool:
    """Whether the picture looks like a drawing, cartoon or logo rather than a photo (relief mode suits it better).

    Cheap (a ≤ 128-pixel copy): true when at least 5 % of it is transparent, or when it has a plain background (at
    least 70 % of the border and 25 % of the picture within 40 levels of the border's median colour) and few
    colours elsewhere (8 colours, at 3 bits per channel, cover at least 85 % of the remaining pixels).
    """
    step = max(1, math.ceil(max(loaded.width, loaded.height) / 128))
    rgb = loaded.rgb[::step, ::step].astype(np.int16)
    if loaded.alpha is not None:
        alpha = loaded.alpha[::step, ::step]
        if np.mean(alpha < 128) >= 0.05:
            return True
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    near = np.abs(rgb - background).max(axis=2) <= 40
    border_near = np.concatenate([near[0], near[-1], near[:, 0], near[:, -1]])
    if border_near.mean() < 0.7 or near.mean() < 0.25:
        return False
    rest = rgb[~near]
    if len(rest) < 0.01 * near.size:
        return True  # a blank page (or nearly)
    codes = (rest[:, 0] >> 5) * 64 + (rest[:, 1] >> 5) * 8 + (rest[:, 2] >> 5)
    counts = np.sort(np.bincount(codes, minlength=512))[::-1]
    return bool(counts[:8].sum() >= 0.85 * len(rest))
