"""How much memory a conversion takes, known before it runs: from its pixels, its options and the files it writes.

A job's peak over the loaded model is the largest of three moments (MB = 2**20 bytes, as RSS is counted):

- the decode: the file's pixels at full size, before a picture larger than its point grid needs is reduced
  (:func:`working_pixels`) — Pillow's bytes a pixel of its mode, and :data:`DECODE_SLACK_BYTES_PER_PIXEL`;
- the depth: the working picture, the prediction at its size and the depth being made from it, with their
  temporaries — :data:`DEPTH_BYTES_PER_PIXEL` a pixel;
- the files: what the result holds (picture, prediction, depth: :data:`HELD_BYTES_PER_PIXEL` a pixel; points, colours
  and the sample mask: :data:`HELD_BYTES_PER_POINT` a point) plus what writing its files adds. Each kind of file
  adds bytes a point and a pixel (:data:`KIND_BYTES`); kinds that share a built piece (the meshes share one mesh,
  the stereo pictures one pair) count it once, by the family's largest.

Points are the grid samples (``max_points``, 0 = every pixel), as many as the conversion could keep. The coefficients
were measured by ``bench/memory.py`` (peak RSS of each case in a fresh process less its RSS before the job) on the
machine and date bench/RESULTS.md names, section "Memory per job", and rounded up; a measured peak stays within
1.25 x the estimate on every case there. The engine's resident model is a separate figure
(:func:`resident_model_mb`): the web service's budget is what is left beside it.
"""

from __future__ import annotations

import math

MB = 1 << 20

# Measured by bench/memory.py (bench/RESULTS.md, "Memory per job"): AMD EPYC (KVM guest, 2 vCPUs), 2026-12-07.
JOB_BASE_MB = 48.0  # whatever the size: the job's own small arrays, allocator slack, libraries' buffers
DECODE_SLACK_BYTES_PER_PIXEL = 0.25  # over pillow_bytes_per_pixel, while the file is decoded at its full size
DEPTH_BYTES_PER_PIXEL = 21.0  # rgb 3 + prediction 4 + depth 4, its temporaries 8, the sample mask 1 (+ slack)
HELD_BYTES_PER_PIXEL = 12.0  # rgb 3 + prediction 4 + depth 4 held while the files are written (+ slack)
HELD_BYTES_PER_POINT = 17.0  # points 12 + colours 3 + the sample mask 1 (+ slack)
NORMALS_BYTES_PER_POINT = 22.0  # normals 12 held, and their blocks' differences
RELIEF_BYTES_PER_POINT = 12.0  # relief mode: the heights and their float64 normalisation
STATE_BYTES_PER_PIXEL = 0.0  # the kept image and prediction are written from the arrays held (no copy)
# Not in the bench's matrix (it needs two models): reasoned from the arrays, the metric model's prediction at the
# image's size, its resized copy and the disagreement map.
ALIGN_BYTES_PER_PIXEL = 12.0

# kind → (family, bytes a point, bytes a pixel, MB whatever the size) that writing it adds to what the result holds.
# The families in BUILT_FAMILIES are pieces built once and kept for the other kinds (converter.exports.outputs'
# Artifacts). The disagreement maps are reasoned, not measured (they need an aligned conversion).
BUILT_FAMILIES = ("mesh", "stereo", "stl")
KIND_BYTES: dict[str, tuple[str, float, float, float]] = {
    "ply": ("ply", 1.0, 0.0, 0.0),
    "pcd": ("pcd", 100.0, 0.0, 120.0),
    "las": ("las", 64.0, 0.0, 0.0),
    "json": ("json", 0.0, 1.0, 0.0),
    "input": ("input", 0.0, 4.0, 0.0),
    "depth_preview": ("depth_preview", 0.0, 1.0, 0.0),
    "depth_png": ("depth_png", 0.0, 12.0, 0.0),
    "depth_npy": ("depth_npy", 0.0, 1.0, 0.0),
    "glb": ("mesh", 140.0, 16.0, 0.0),
    "obj": ("mesh", 140.0, 16.0, 0.0),
    "mesh_ply": ("mesh", 140.0, 16.0, 0.0),
    "usdz": ("mesh", 150.0, 16.0, 0.0),
    "simplified_glb": ("mesh", 200.0, 40.0, 0.0),
    "stl": ("stl", 50.0, 25.0, 0.0),
    "splat_ply": ("splat_ply", 290.0, 0.0, 0.0),
    "sbs": ("stereo", 0.0, 150.0, 0.0),
    "anaglyph": ("stereo", 0.0, 150.0, 0.0),
    "mp4": ("mp4", 0.0, 2.0, 85.0),
    "disagreement": ("disagreement", 0.0, 8.0, 0.0),
    "disagreement_layer": ("disagreement", 0.0, 8.0, 0.0),
}


def grid_points(width: int, height: int, max_points: int) -> int:
    """How many grid samples a conversion of ``width`` × ``height`` pixels makes (``max_points`` 0: every pixel)."""
    pixels = width * height
    return pixels if max_points <= 0 else min(pixels, max_points)


def working_pixels(width: int, height: int, max_points: int) -> int:
    """The pixels a conversion works on: a picture over 4 × its point grid is decoded reduced by a whole factor that
    still holds the grid (converter.images: the JPEG's DCT scale or a box average), every other at its size."""
    from .geometry import pixel_grid

    if max_points <= 0 or width * height <= 4 * max_points:
        return width * height
    columns, rows = pixel_grid(width, height, max_points)
    factor = max(1, min(width // len(columns), height // len(rows)))
    return (width // factor) * (height // factor)


def pillow_bytes_per_pixel(mode: str | None) -> int:
    """Bytes a pixel of an image of Pillow ``mode`` takes once decoded (None: unknown, counted as colour)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode is not None and mode.startswith("I;16"):
        return 2
    return 4  # RGB, RGBA, CMYK, YCbCr, LA, I and F are stored 4 bytes a pixel


def estimate_job_mb(width: int, height: int, options=None, kinds=("ply",), *, state: bool = False,
                    depth_file: bool = False, aligned: bool = False, file_mode: str | None = None) -> float:
    """The peak memory of converting a ``width`` × ``height`` picture with ``options`` (a ConversionOptions; None:
    the defaults) and writing ``kinds`` (names of converter.OUTPUTS), over the loaded model, in MB. ``state``: the
    result is also kept (``save_state``); ``aligned``: fitted to a metric model (``align_to``). ``depth_file`` is
    accepted for callers that know it; a user's map costs what a prediction does. ``file_mode``: the file's Pillow
    mode, when its header was read (None: a colour picture, the most a pixel can take)."""
    from .options import ConversionOptions

    options = options if options is not None else ConversionOptions()
    decode_bytes = (pillow_bytes_per_pixel(file_mode) + DECODE_SLACK_BYTES_PER_PIXEL) * width * height
    pixels = working_pixels(width, height, options.max_points)
    points = grid_points(width, height, options.max_points)
    depth_bytes = DEPTH_BYTES_PER_PIXEL * pixels
    held = HELD_BYTES_PER_PIXEL * pixels + HELD_BYTES_PER_POINT * points
    if options.normals:
        held += NORMALS_BYTES_PER_POINT * points
    if options.mode == "relief":
        held += RELIEF_BYTES_PER_POINT * points
    if state:
        held += STATE_BYTES_PER_PIXEL * pixels
    if aligned:
        depth_bytes += ALIGN_BYTES_PER_PIXEL * pixels
        held += ALIGN_BYTES_PER_PIXEL * pixels
    built: dict[str, float] = {}  # a built piece stays while the other kinds are written: each family counts once
    writing = 0.0  # files are written one after another: only the largest writer's temporaries count
    for kind in kinds:
        family, per_point, per_pixel, fixed_mb = KIND_BYTES.get(kind, (kind, 0.0, 0.0, 0.0))
        cost = per_point * points + per_pixel * pixels + fixed_mb * MB
        if family in BUILT_FAMILIES:
            built[family] = max(built.get(family, 0.0), cost)
        else:
            writing = max(writing, cost)
    files_bytes = held + sum(built.values()) + writing
    return JOB_BASE_MB + max(decode_bytes, depth_bytes, files_bytes) / MB


# (model, engine) → peak RSS of a process that loaded it, converted a 1 MP picture twice and a 12 MP one at the
# default detail, MB: bench/memory.py --models (the real configurations, random weights), same machine and date as
# above; OpenVINO after its second start (the first converts the model: 2,186 MB for DPT-Hybrid, 1,513 for Depth
# Anything), with the mapped weights let go once the CPU plugin has repacked them (2026-12-07: 1,675 → 1,388 MB for
# DPT-Hybrid, 1,091 → 906 for Depth Anything; the peak is the first inference, while both copies are resident).
# Depth Pro: bench/RESULTS.md's Depth Pro section (bench.py --cost, 1 MP). A model's name (a Hub id or a folder)
# matches the key its last part starts with.
RESIDENT_MODEL_MB = {
    ("dpt-hybrid", "torch"): 1300.0,
    ("dpt-hybrid", "openvino"): 1400.0,
    ("depth-anything-v2-small", "torch"): 850.0,
    ("depth-anything-v2-small", "openvino"): 950.0,
    ("depthpro", "torch"): 8200.0,
    ("depth-pro", "torch"): 8200.0,
}
# Other models, from their parameters: the line through the two measured above, per engine (python, torch,
# transformers and OpenVINO imported; the weights; the forward's buffers).
RESIDENT_BASE_MB = {"torch": 740.0, "openvino": 840.0}
RESIDENT_BYTES_PER_PARAMETER = {"torch": 5.0, "openvino": 5.0}
UNKNOWN_PARAMETERS = 150e6  # a model not measured and not loaded: about the largest of the usual CPU models


def resident_model_mb(model: str, engine: str, parameters: int | None = None) -> float:
    """The process's peak with ``model`` loaded behind ``engine`` ("torch" or "openvino") and used, MB: measured for
    the models bench/memory.py covers, else from its ``parameters`` (when known)."""
    name = str(model).rstrip("/").rsplit("/", 1)[-1].lower()
    engine = "openvino" if engine == "openvino" else "torch"
    for (known, known_engine), measured in RESIDENT_MODEL_MB.items():
        if known_engine == engine and name.startswith(known):
            return measured
    count = UNKNOWN_PARAMETERS if parameters is None else parameters
    return RESIDENT_BASE_MB[engine] + math.ceil(RESIDENT_BYTES_PER_PARAMETER[engine] * count / MB)
