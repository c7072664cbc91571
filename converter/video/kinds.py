"""The outputs of a video conversion: one table, read by the CLI (suffixes, ``--format``) and the writers."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import OptionError


@dataclass(frozen=True)
class VideoKind:
    """name: what ``--format`` and the API call it; suffix: how a file of it ends (the first is written, VR players
    recognise the stereo layouts by these); label: what it is."""

    name: str
    suffix: str
    label: str

    @property
    def is_video(self) -> bool:
        return self.suffix.endswith(".mp4")


VIDEO_OUTPUTS = {kind.name: kind for kind in (
    VideoKind("sbs_full", "_LRF_Full_SBS.mp4", "full side-by-side 3D video, left eye left (VR headsets)"),
    VideoKind("sbs_half", "_Half_SBS.mp4", "half side-by-side 3D video, each eye squeezed 2:1 (3D TVs)"),
    VideoKind("tb", "_TB.mp4", "half top-bottom 3D video, left eye on top"),
    VideoKind("anaglyph", ".anaglyph.mp4", "red-cyan anaglyph video, H.264 4:4:4 (no red ghosting)"),
    VideoKind("depth_video", ".depth.mp4", "depth video to look at: 8-bit grey, near is bright"),
    VideoKind("depth16", ".depth16.zip", "lossless depth: one 16-bit PNG per frame in a zip, with depth16.json"),
    VideoKind("ply_sequence", ".ply.zip", "4D point cloud: one decimated binary .ply per frame in a zip"),
    VideoKind("json", ".json", "the sidecar: camera, stabilisation per frame, limits, conversions"),
)}


def video_kind_for_path(path) -> VideoKind:
    """The kind a file name asks for, by its ending (case-insensitive; the longest match wins)."""
    name = str(path).lower()
    matches = [kind for kind in VIDEO_OUTPUTS.values() if name.endswith(kind.suffix.lower())]
    if not matches:
        raise OptionError("For a video, name the output by what it is: " + ", ".join(
            f"{kind.suffix} ({kind.name})" for kind in VIDEO_OUTPUTS.values()) + ".")
    return max(matches, key=lambda kind: len(kind.suffix))


def parse_video_kinds(text: str) -> list[str]:
    """'sbs_full,anaglyph' → the kinds, checked, without repeats."""
    names = [name.strip().lower() for name in str(text).split(",") if name.strip()]
    unknown = [name for name in names if name not in VIDEO_OUTPUTS]
    if unknown or not names:
        raise OptionError(f"Unknown video format(s): {', '.join(unknown) or '(none)'}; choose from: "
                          + ", ".join(VIDEO_OUTPUTS) + ".")
    return list(dict.fromkeys(names))
