"""Image-to-3D: a single image → depth → coloured 3D point cloud.

    from converter import Converter
    result = Converter(model="Intel/dpt-hybrid-midas", device="auto").convert("photo.jpg")
    result.save("photo.ply")

Nothing here imports torch until a model is loaded, so the web layer and the CLI start fast.
"""

from .depth.models import DEFAULT_MODEL, KNOWN_MODELS
from .errors import (
    ConversionError,
    DamagedImageError,
    DepthFileError,
    ImageTooLargeError,
    InputError,
    ModelUnavailableError,
    OptionError,
    OutputError,
    UnsupportedImageError,
)
from .options import DEFAULT_MAX_POINTS, ConversionOptions
from .exports.outputs import OUTPUTS, OutputSettings
from .pipeline import ConversionResult, Converter


def convert(image, output=None, *, model: str | None = None, device: str = "auto", depth=None,
            align_to: str | None = None, **options) -> ConversionResult:
    """One-call conversion with a process-wide model; writes ``output`` when given. ``align_to``: a metric model to
    fit ``model``'s depth to (metres with its detail). ``options``: the fields of :class:`ConversionOptions` as
    keywords (``fov_deg=60, max_points=500_000``)."""
    converter = Converter(model=model, device=device, align_to=align_to)
    result = converter.convert(image, depth, options=ConversionOptions.from_kwargs(**options))
    if output is not None:
        result.save(output)
    return result


__all__ = [
    "DEFAULT_MAX_POINTS", "DEFAULT_MODEL", "KNOWN_MODELS", "ConversionError", "ConversionOptions", "ConversionResult",
    "Converter", "DamagedImageError", "DepthFileError", "ImageTooLargeError", "InputError", "ModelUnavailableError",
    "OUTPUTS", "OptionError", "OutputError", "OutputSettings", "UnsupportedImageError", "convert",
]
