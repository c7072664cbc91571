"""A finished video job's files: their names in the job folder, their media types, and one frame of its 4D point
cloud read from the zip (the result page's viewer loads frames as it plays them)."""

from __future__ import annotations

import zipfile

from converter import VIDEO_OUTPUTS

from ...intake.job_request import JobRequest

VIDEO_MEDIA_TYPES = {".mp4": "video/mp4", ".zip": "application/zip", ".json": "application/json"}
# The result page's downloads by use (every kind of converter.video.VIDEO_OUTPUTS in one group).
VIDEO_DOWNLOAD_GROUPS = (("3D videos", ("sbs_full", "sbs_half", "tb", "anaglyph")),
                         ("Depth", ("depth_video", "depth16")),
                         ("4D point cloud", ("ply_sequence",)),
                         ("Data", ("json",)))


def frame_cloud(store, job, index: int) -> bytes | None:
    """The ``index``-th frame's point cloud (binary .ply bytes) of a finished video job's 4D point cloud, or None."""
    request = JobRequest.from_dict(job.request)
    if not request.is_video or "ply_sequence" not in request.video["outputs"] or index < 0:
        return None
    path = store.folder(job.id) / output_name("ply_sequence")
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(name for name in archive.namelist() if name.endswith(".ply"))
            if index >= len(names):
                return None
            return archive.read(names[index])
    except (OSError, zipfile.BadZipFile):
        return None


def output_name(kind: str) -> str:
    """The file of a video job's output ``kind`` (VR players recognise the stereo layouts by these endings)."""
    return "video" + VIDEO_OUTPUTS[kind].suffix
