"""Image-to-3D: a single image → depth → coloured 3D point cloud.

    from converter import Converter
    result = Converter(model="Intel/dpt-hybrid-midas", device="auto").convert("photo.jpg")
    result.save("photo.ply")

Nothing here imports torch until a model is loaded, so the web layer and the CLI start fast.
"""

from .depth import DepthMap, set_torch_threads
from .depth.models import DEFAULT_MODEL, KNOWN_MODELS
from .errors import (
    ConversionError,
    DamagedImageError,
    DepthFileError,
    ImageTooLargeError,
    ImageTooSmallError,
    InputError,
    ModelUnavailableError,
    OptionError,
    OutputError,
    UnsupportedImageError,
    UnsupportedVideoError,
    DamagedVideoError,
    VideoTooLargeError,
)
from .exports.files import atomic_output, write_json
from .exports.outputs import (
    ALIGNMENT_KINDS,
    MESH_KINDS,
    OUTPUTS,
    UP_AXES,
    Artifacts,
    OutputSettings,
    parse_simplify,
    parse_up,
    write_outputs,
)
from .memory import estimate_job_mb, resident_model_mb
from .images import DEFAULT_MAX_PIXELS, LoadedImage, check_convertible_size, load_image, probe_header
from .options import (
    DECIMAL_GRAMMAR,
    DEFAULT_MAX_POINTS,
    DEPTH_KIND_CHOICES,
    DETAIL_LEVELS,
    FOCAL_PX_RANGE,
    MODES,
    WHOLE_GRAMMAR,
    ConversionOptions,
    parse_number,
)
from .pipeline import ConversionResult, Converter
from .stages import (
    BUILDING_GEOMETRY,
    DECODING,
    DONE,
    ESTIMATING_DEPTH,
    FAILED,
    LOADING_MODEL,
    QUEUED,
    RUNNING,
    WRITING_FILES,
    progress_of,
)
from .state import (
    IMAGE_FILE,
    PREDICTION_FILE,
    STATE_FILES,
    ConversionState,
    StateError,
    load_prediction,
    load_state,
    save_prediction,
)

from .video import (
    VIDEO_OUTPUTS,
    VideoLimits,
    VideoOptions,
    VideoProgress,
    VideoResult,
    is_video_file,
)


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
    "ALIGNMENT_KINDS", "Artifacts", "BUILDING_GEOMETRY", "ConversionError", "ConversionOptions", "ConversionResult",
    "ConversionState", "Converter", "DECIMAL_GRAMMAR", "DECODING", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_POINTS",
    "DEFAULT_MODEL", "DEPTH_KIND_CHOICES", "DETAIL_LEVELS", "DONE", "DamagedImageError", "DepthFileError",
    "DepthMap", "ESTIMATING_DEPTH", "FAILED", "FOCAL_PX_RANGE", "IMAGE_FILE", "ImageTooLargeError",
    "ImageTooSmallError", "InputError", "KNOWN_MODELS", "LOADING_MODEL", "LoadedImage", "MESH_KINDS", "MODES",
    "ModelUnavailableError", "OUTPUTS", "OptionError", "OutputError", "OutputSettings", "PREDICTION_FILE", "QUEUED",
    "RUNNING", "STATE_FILES", "StateError", "UP_AXES", "UnsupportedImageError", "WHOLE_GRAMMAR", "WRITING_FILES",
    "atomic_output", "check_convertible_size", "convert", "load_image", "load_prediction", "load_state",
    "parse_number", "parse_simplify", "parse_up", "probe_header", "progress_of", "save_prediction",
    "set_torch_threads", "write_json", "write_outputs",
    "DamagedVideoError", "UnsupportedVideoError", "VIDEO_OUTPUTS", "VideoLimits", "VideoOptions", "VideoProgress",
    "VideoResult", "VideoTooLargeError", "is_video_file",
    "estimate_job_mb", "resident_model_mb",
]
