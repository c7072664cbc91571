"""Videos as web jobs: running one (run), its progress (progress), its files (outputs). See run.py's docstring."""

from .outputs import VIDEO_DOWNLOAD_GROUPS, VIDEO_MEDIA_TYPES, frame_cloud, output_name
from .progress import progress_view
from .run import ChunkPool, run_video_job

__all__ = ["VIDEO_DOWNLOAD_GROUPS", "VIDEO_MEDIA_TYPES", "ChunkPool", "frame_cloud", "output_name", "progress_view",
           "run_video_job"]
