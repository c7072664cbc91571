"""What a service built on the converter needs beyond the library's own surface (:data:`converter.__all__`).

A web front end turns forms into options, reports stages, stores files and predictions of its own; these names are
for that, kept apart so that the top-level list stays what a person converting images needs. ``web/`` imports
from ``converter`` and from here only.
"""

from .depth import set_torch_threads
from .depth.backend import engine_from_environment
from .depth.models import model_from_environment
from .exports.files import atomic_output, write_json
from .exports.outputs import ALIGNMENT_KINDS, MESH_KINDS, UP_AXES, Artifacts, parse_simplify, parse_up
from .images import DEFAULT_MAX_PIXELS, check_convertible_size, probe_header
from .memory import estimate_job_mb, resident_model_mb
from .options import (
    DECIMAL_GRAMMAR,
    DEPTH_KIND_CHOICES,
    DETAIL_LEVELS,
    FOCAL_PX_RANGE,
    MODES,
    WHOLE_GRAMMAR,
    parse_number,
)
from .stages import DONE, FAILED, PREDICTING_VIDEO_DEPTH, QUEUED, RUNNING, WRITING_FILES, WRITING_VIDEO, progress_of
from .state import STATE_FILES, load_prediction, save_prediction
from .video import convert_video, parse_video_kinds, sniff_video
from .video.chunks import Chunk, ChunkedPredictions, plan_chunks, predict_chunk
from .video.decode import SNIFF_BYTES as VIDEO_SNIFF_BYTES
from .video.options import ANAGLYPH_METHODS
from .video.decode import probe as probe_video

__all__ = [
    # Settings read from the environment, and the process's torch threads.
    "engine_from_environment", "model_from_environment", "set_torch_threads",
    # Checking an upload before accepting it.
    "DEFAULT_MAX_PIXELS", "check_convertible_size", "probe_header",
    # Options as a form and an API document describe them.
    "DECIMAL_GRAMMAR", "DEPTH_KIND_CHOICES", "DETAIL_LEVELS", "FOCAL_PX_RANGE", "MODES", "WHOLE_GRAMMAR",
    "parse_number", "parse_simplify", "parse_up", "UP_AXES", "ANAGLYPH_METHODS",
    # A job's memory, known before it runs.
    "estimate_job_mb", "resident_model_mb",
    # Which outputs a job offers, and sharing a result's pieces between them.
    "ALIGNMENT_KINDS", "MESH_KINDS", "Artifacts",
    # A job's stages around the conversion's own.
    "DONE", "FAILED", "QUEUED", "RUNNING", "WRITING_FILES", "progress_of",
    # Files: atomic writes, a kept state's file names, predictions stored on their own (a depth cache).
    "STATE_FILES", "atomic_output", "load_prediction", "save_prediction", "write_json",
    # Videos: a video told by its content and checked before work, its options, limits and outputs, and its depth
    # predicted in chunks (on several workers) and joined (converter.video.chunks); a video job's stages.
    "VIDEO_SNIFF_BYTES", "convert_video", "parse_video_kinds",
    "probe_video", "sniff_video", "Chunk", "ChunkedPredictions", "plan_chunks", "predict_chunk",
    "PREDICTING_VIDEO_DEPTH", "WRITING_VIDEO",
]
