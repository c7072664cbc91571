"""Names of the stages a conversion goes through, in order, and how far along each one starts.

The pipeline reports the converter's own stages; a web job adds the ones around them (queued, loading the model,
writing files). One table, so an unknown stage is an error instead of a progress bar that silently stops moving.
"""

from __future__ import annotations

QUEUED = "queued"
RUNNING = "running"
LOADING_MODEL = "loading model"
DECODING = "decoding"
ESTIMATING_DEPTH = "estimating depth"
BUILDING_GEOMETRY = "building geometry"
WRITING_FILES = "writing files"
PREDICTING_VIDEO_DEPTH = "predicting depth"  # a video's depth, in chunks across workers (web.jobs.video)
WRITING_VIDEO = "writing the 3D video"  # a video streamed through the pipeline (its progress counts frames)
DONE = "done"
FAILED = "failed"

PROGRESS = {  # stage → fraction of the work done when it starts
    QUEUED: 0.0, RUNNING: 0.02, LOADING_MODEL: 0.05, DECODING: 0.1, ESTIMATING_DEPTH: 0.2,
    BUILDING_GEOMETRY: 0.7, WRITING_FILES: 0.85, DONE: 1.0, FAILED: 1.0,
    PREDICTING_VIDEO_DEPTH: 0.05, WRITING_VIDEO: 0.05,
}


def progress_of(stage: str) -> float:
    """The progress fraction at which ``stage`` starts; ValueError for a stage that does not exist."""
    try:
        return PROGRESS[stage]
    except KeyError:
        raise ValueError(f"unknown conversion stage {stage!r}") from None
