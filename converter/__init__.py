"""Image-to-3D: a single image → depth → coloured 3D point cloud.

    from converter import Converter
    result = Converter(model="Intel/dpt-hybrid-midas", device="auto").convert("photo.jpg")
    result.save("photo.ply")

``__all__`` is what a person converting images needs; what a service built on the converter needs beyond it
(form grammar, job stages, atomic files, stored predictions) is :mod:`converter.service_api`.
Nothing here imports torch until a model is loaded, so the web layer and the CLI start fast.
"""

from .depth import DepthMap
from .depth.models import DEFAULT_MODEL, KNOWN_MODELS
from .errors import (
    ConversionError,
    DamagedImageError,
    DamagedVideoError,
    DepthFileError,
    ImageTooLargeError,
    ImageTooSmallError,
    InputError,
    ModelUnavailableError,
    OptionError,
    OutputError,
    UnsupportedImageError,
    UnsupportedVideoError,
    VideoTooLargeError,
)
from .exports.outputs import OUTPUTS, OutputSettings, write_outputs
from .images import LoadedImage, load_image
from .options import ConversionOptions
from .pipeline import ConversionResult, Converter, PredictionCache, Sources
from .state import ConversionState, StateError, load_state
from .video import VIDEO_OUTPUTS, VideoLimits, VideoOptions, VideoProgress, VideoResult, is_video_file


def convert(image, output=None, *, model: str | None = None, device: str = "auto", depth=None,
            align_to: str | None = None, up: str = "y", **options) -> ConversionResult:
    """One-call conversion with a process-wide model; writes ``output`` when given. ``align_to``: a metric model to
    fit ``model``'s depth to (metres with its detail). ``up``: "z" for a z-up PLY or PCD ``output`` (Blender).
    ``options``: the fields of :class:`ConversionOptions` as keywords (``fov_deg=60, max_points=500_000``)."""
    settings = OutputSettings(up=up)  # checked before the conversion
    converter = Converter(model=model, device=device, align_to=align_to)
    result = converter.convert(image, depth, options=ConversionOptions.from_kwargs(**options))
    if output is not None:
        result.save(output, settings=settings)
    return result


__all__ = [
    # Converting: the converter, its inputs and its result.
    "Converter", "convert", "ConversionOptions", "ConversionResult", "Sources", "PredictionCache", "DepthMap",
    "LoadedImage", "load_image", "DEFAULT_MODEL", "KNOWN_MODELS",
    # Writing the result.
    "OUTPUTS", "OutputSettings", "write_outputs",
    # Keeping a result to convert again without the model.
    "ConversionState", "load_state", "StateError",
    # Videos.
    "VIDEO_OUTPUTS", "VideoLimits", "VideoOptions", "VideoProgress", "VideoResult", "is_video_file",
    # Errors: ConversionError and its kinds (InputError: the input's fault, a 4xx in a service).
    "ConversionError", "InputError", "DamagedImageError", "UnsupportedImageError", "ImageTooLargeError",
    "ImageTooSmallError", "DepthFileError", "OptionError", "OutputError", "ModelUnavailableError",
    "UnsupportedVideoError", "DamagedVideoError", "VideoTooLargeError",
]
