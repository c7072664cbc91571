"""Video in, 3D video out: a streaming pipeline (decode → depth → stabilise → render → encode) in bounded memory.

    from converter import Converter
    from converter.video import VideoOptions
    Converter(model="depth-anything-v2-small").convert_video("clip.mp4", "clip_LRF_Full_SBS.mp4",
                                                             progress=print)
"""

from .decode import is_video_file, sniff_video
from .kinds import VIDEO_OUTPUTS, VideoKind, parse_video_kinds, video_kind_for_path
from .limits import VideoLimits
from .options import VideoOptions
from .pipeline import VideoProgress, VideoResult, convert_video

__all__ = ["VIDEO_OUTPUTS", "VideoKind", "VideoLimits", "VideoOptions", "VideoProgress", "VideoResult",
           "convert_video", "is_video_file", "parse_video_kinds", "sniff_video", "video_kind_for_path"]
