"""Form and API fields → a JobRequest, validated once (by ConversionOptions and JobRequest themselves)."""

from __future__ import annotations

from dataclasses import replace

from converter import KNOWN_MODELS, ConversionOptions, OptionError, VideoOptions
from converter.service_api import (
    DEPTH_KIND_CHOICES,
    DETAIL_LEVELS,
    MODES,
    parse_number,
    parse_simplify,
    parse_up,
    parse_video_kinds,
)

from .job_request import JobRequest

FLAG_WORDS = {"true": True, "false": False, "1": True, "0": False, "on": True, "off": False, "yes": True,
              "no": False, "": False}
_NUMBERS = (("fov", "fov_deg"), ("focal_px", "focal_px"), ("relief", "relief"),
            ("drop_background", "drop_background_percent"))


def parse_request(form, models: list[str], default_model: str) -> JobRequest:
    """A new conversion's fields → JobRequest. Blank fields mean "automatic"."""
    model = (form.get("model") or "").strip() or default_model
    if model not in models:
        raise OptionError(f"Unknown model '{model[:80]}'. Choose one of: {', '.join(models)}.")
    changes, job = _fields(form)
    align_to = (form.get("align_to") or "").strip()
    if align_to:
        if align_to not in models:
            raise OptionError(f"Unknown model to align to '{align_to[:80]}'. Choose one of: {', '.join(models)}.")
        if align_to == model:
            raise OptionError("Align the depth model to a different, metric model (not to itself).")
        known = KNOWN_MODELS.get(align_to)
        if known is not None and not known.metric:
            raise OptionError(f"{known.label} gives relative depth: align to a metric model (one that gives metres).")
        job["align_to"] = align_to
    depth_kind = (form.get("depth_kind") or "").strip().lower()
    if depth_kind:
        if depth_kind not in DEPTH_KIND_CHOICES:
            raise OptionError(f"The depth kind must be one of: {', '.join(DEPTH_KIND_CHOICES)}.")
        changes["depth_kind"] = depth_kind
    check_video_fields(form)
    return JobRequest(options=ConversionOptions(**changes), model=model, **job)


def parse_rebuild(form, source: JobRequest, source_camera: dict | None = None) -> JobRequest:
    """A rebuild's geometry fields on top of the source job's request (same model, same depth). Fields left out keep
    the source's values; a new field of view replaces the source's focal length and back."""
    if (form.get("depth_kind") or "").strip():
        raise OptionError("A rebuild reuses the job's depth: the depth kind cannot change.")
    if (form.get("align_to") or "").strip():
        raise OptionError("A rebuild reuses the job's depth: the model to align to cannot change.")
    changes, job = _fields(form)
    if "fov_deg" in changes:
        changes.setdefault("focal_px", None)
    if "focal_px" in changes and changes["focal_px"] is not None:
        changes.setdefault("fov_deg", None)
    camera = source_camera or {}
    from_exif = str(camera.get("source", "")).startswith("exif")
    if not {"fov_deg", "focal_px"} & set(changes) and from_exif and camera.get("fx"):
        changes["focal_px"] = float(camera["fx"])  # the kept image has no EXIF: keep its focal length
    return replace(source, options=replace(source.options, **changes), rebuild_of=None, **job)


OPTION_FIELDS = ("model", "align_to", "depth_kind", "detail", "max_points", "fov", "focal_px", "relief",
                 "drop_background", "clean", "paper_background", "mode", "stl_width_mm", "mesh", "simplify", "up",
                 "known_length")


def check_single_values(form, names=OPTION_FIELDS) -> None:
    """A field given twice would be read as its first value: an OptionError instead (``form``: a MultiDict)."""
    for name in names:
        if hasattr(form, "getlist") and len(form.getlist(name)) > 1:
            raise OptionError(f"The field '{name}' was given more than once; give it once.")


def _fields(form) -> tuple[dict, dict]:
    """(ConversionOptions fields, JobRequest fields) given in the form; nothing for blank fields."""
    check_single_values(form)
    options: dict = {}
    job: dict = {}
    detail = (form.get("detail") or "").strip().lower()
    if detail:
        if detail not in DETAIL_LEVELS:
            raise OptionError(f"Detail must be one of: {', '.join(DETAIL_LEVELS)}.")
        options["max_points"] = DETAIL_LEVELS[detail]
    max_points = _number(form, "max_points", whole=True)
    if max_points is not None:
        if max_points < 0:
            raise OptionError("Maximum points must be a whole number, 0 or more.")
        options["max_points"] = max_points
    for name, option in _NUMBERS:
        value = _number(form, name)
        if value is not None:
            options[option] = value
    submitted_by_form = bool(form.get("checkboxes_submitted"))  # an unticked box sends nothing at all
    for name in ("clean", "paper_background"):
        if form.get(name) is not None or submitted_by_form:
            options[name] = _flag(name, form.get(name))
    mode = (form.get("mode") or "").strip().lower()
    if mode:
        if mode not in MODES:
            raise OptionError(f"Mode must be one of: {', '.join(MODES)}.")
        options["mode"] = mode
    stl_width = _number(form, "stl_width_mm")
    if stl_width is not None:
        if not 1 <= stl_width <= 2000:
            raise OptionError("STL width must be between 1 and 2000 millimetres.")
        job["stl_width_mm"] = stl_width
    if form.get("mesh") is not None or submitted_by_form:
        job["mesh"] = _flag("mesh", form.get("mesh"))
    simplify = (form.get("simplify") or "").strip()
    if simplify:
        job["simplify"] = parse_simplify(simplify)
    up = (form.get("up") or "").strip()
    if up:
        job["up"] = parse_up(up)
    known = (form.get("known_length") or "").strip()
    if known:
        options["known_length"] = _known_length(known)
    return options, job


def _known_length(text: str) -> tuple[float, ...]:
    """"x1 y1 x2 y2 m" (spaces or commas) → five floats; the option itself checks what they mean."""
    parts = text.replace(",", " ").split()
    sentence = ("The field 'known_length' must be 5 numbers written with the digits 0-9: X1 Y1 X2 Y2 (two pixels of "
                "the image) and the real distance between them in metres")
    if len(parts) != 5:
        raise OptionError(sentence + ".")
    values = []
    for part in parts:
        try:
            values.append(parse_number(part, "known_length"))
        except OptionError:
            raise OptionError(f"{sentence}; '{part[:20]}' is not such a number.") from None
    return tuple(values)


def _number(form, field: str, whole: bool = False) -> float | int | None:
    """A numeric field (converter.service_api.parse_number: ASCII digits only); None when blank."""
    text = form.get(field) or ""
    if not text.strip(" \t\r\n"):
        return None
    return parse_number(text, field, whole=whole)


def _flag(name: str, value) -> bool:
    """A checkbox or flag field: FLAG_WORDS (any case); an unticked box sends nothing or a blank (False)."""
    word = str(value or "").strip().lower()
    if word not in FLAG_WORDS:
        raise OptionError(f"The field '{name}' must be true or false.")
    return FLAG_WORDS[word]


# What a video job writes unless asked otherwise: what the result page plays (full side-by-side for headsets, the
# anaglyph for any screen, the depth video, the 4D cloud) and the sidecar. Each further video costs an encode a frame.
DEFAULT_VIDEO_OUTPUTS = ("sbs_full", "anaglyph", "depth_video", "ply_sequence", "json")
VIDEO_FIELDS = ("model", "fov", "focal_px", "relief", "max_fps", "start", "end", "max_frames", "stabilise",
                "strength", "convergence", "anaglyph", "ply_points", "video_formats")
_VIDEO_NUMBERS = (("fov", "fov_deg", False), ("focal_px", "focal_px", False), ("relief", "relief", False),
                  ("max_fps", "max_fps", False), ("start", "start", False), ("end", "end", False),
                  ("max_frames", "max_frames", True), ("strength", "strength", False),
                  ("convergence", "convergence", False), ("ply_points", "ply_points", True))


VIDEO_ONLY_FIELDS = tuple(name for name in VIDEO_FIELDS if name not in OPTION_FIELDS)


def parse_video_request(form, models: list[str], default_model: str) -> JobRequest:
    """A video's fields → JobRequest (its ``video`` set; converter.video.VideoOptions checks the values). The
    image-only fields the same form sends (detail, mesh, ...) do not apply to a video and are not read. Blank fields
    mean the defaults; ``video_formats`` (comma-separated kinds of converter.video.VIDEO_OUTPUTS) defaults to
    DEFAULT_VIDEO_OUTPUTS. The upload page sends its boxes instead: ``video_format`` once per ticked kind, and
    ``checkboxes_submitted`` (as for images), so an unticked ``stabilise`` means off and no ticked format is an error,
    not the default."""
    model = (form.get("model") or "").strip() or default_model
    if model not in models:
        raise OptionError(f"Unknown model '{model[:80]}'. Choose one of: {', '.join(models)}.")
    if (form.get("align_to") or "").strip():
        raise OptionError("Alignment to a metric model is for images; a video is stabilised in time instead.")
    options, outputs = _video_fields(form, VIDEO_FIELDS, video=True)
    return JobRequest(model=model, mesh=False, video={"options": options.to_dict(), "outputs": outputs})


def check_video_fields(form) -> None:
    """The video's own fields (max_fps, start, ...), checked where an image is sent too: its job does not read them,
    but a wrong value is a 400 wherever it comes (the API document describes them for every upload)."""
    _video_fields(form, VIDEO_ONLY_FIELDS)


def _video_fields(form, names, video: bool = False) -> tuple[VideoOptions, list[str]]:
    """(VideoOptions, output kinds) from the form's fields among ``names`` (the others: their defaults). ``video``:
    for a video's job (the page's boxes all unticked are then an error; for an image they mean nothing)."""
    check_single_values(form, names)
    values: dict = {}
    for name, option, whole in _VIDEO_NUMBERS:
        value = _number(form, name, whole=whole) if name in names else None
        if value is not None:
            values[option] = value
    if form.get("stabilise") is not None or form.get("checkboxes_submitted"):  # the page's box, unticked: nothing
        values["stabilise"] = _flag("stabilise", form.get("stabilise"))
    anaglyph = (form.get("anaglyph") or "").strip().lower()
    if anaglyph:
        values["anaglyph"] = anaglyph
    options = VideoOptions(**values)
    formats = (form.get("video_formats") or "").strip()
    ticked = [kind for kind in form.getlist("video_format") if kind.strip()] if hasattr(form, "getlist") else []
    if formats and ticked:
        raise OptionError("Give the video formats once: either 'video_formats' or the 'video_format' boxes.")
    if ticked:  # the upload page's boxes, one kind each
        formats = ",".join(ticked)
    elif video and form.get("checkboxes_submitted") and not formats:
        raise OptionError("Tick at least one video output (side by side, anaglyph, depth, 4D point cloud, ...).")
    outputs = parse_video_kinds(formats) if formats else list(DEFAULT_VIDEO_OUTPUTS)
    if "json" not in outputs:
        outputs.append("json")  # the sidecar: the result page reads the job's camera and frames from it
    return options, outputs
