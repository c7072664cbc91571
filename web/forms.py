"""Read conversion options from a web form or API fields into ConversionOptions keyword arguments."""

from __future__ import annotations

import math

from converter.errors import OptionError
from converter.options import ConversionOptions

JOB_FIELDS = ("model", "mesh", "stl_width_mm")  # options of the job, not of the geometry
MODES = {"perspective": "Perspective (a photo seen by a camera)", "relief": "Relief (drawings, logos, bas-reliefs)"}
# What a rebuild may change: geometry only (the depth, hence the model and any depth map, stays the job's).
REBUILD_FIELDS = ("fov", "focal_px", "relief", "mode", "detail", "max_points", "clean", "drop_background",
                  "paper_background", "mesh", "stl_width_mm")
DETAIL_LEVELS = {"low": 250_000, "medium": 1_000_000, "high": 2_000_000, "full": 0}


def parse_options(form, models: list[str], default_model: str) -> dict:
    """Form fields → options for Converter.convert plus JOB_FIELDS. Blank fields mean "automatic"."""
    options: dict = {}
    model = (form.get("model") or default_model).strip()
    if model not in models:
        raise OptionError(f"Unknown model '{model[:80]}'. Choose one of: {', '.join(models)}.")
    options["model"] = model
    detail = (form.get("detail") or "").strip().lower()
    if detail:
        if detail not in DETAIL_LEVELS:
            raise OptionError(f"Detail must be one of: {', '.join(DETAIL_LEVELS)}.")
        options["max_points"] = DETAIL_LEVELS[detail]
    max_points = _number(form, "max_points", "Maximum points")
    if max_points is not None:
        if max_points != int(max_points) or max_points < 0:
            raise OptionError("Maximum points must be a whole number, 0 or more.")
        options["max_points"] = int(max_points)
    for field, option, label in (("fov", "fov_deg", "Field of view"), ("focal_px", "focal_px", "Focal length"),
                                 ("relief", "relief", "Relief"),
                                 ("drop_background", "drop_background_percent", "Background to drop")):
        value = _number(form, field, label)
        if value is not None:
            options[option] = value
    submitted_by_form = bool(form.get("checkboxes_submitted"))  # an unticked box sends nothing at all
    if form.get("clean") is not None or submitted_by_form:
        options["clean"] = _flag(form.get("clean"))
    if form.get("paper_background") is not None or submitted_by_form:
        options["paper_background"] = _flag(form.get("paper_background"))
    mode = (form.get("mode") or "").strip().lower()
    if mode:
        if mode not in MODES:
            raise OptionError(f"Mode must be one of: {', '.join(MODES)}.")
        options["mode"] = mode
    stl_width = _number(form, "stl_width_mm", "STL width")
    if stl_width is not None:
        if not 1 <= stl_width <= 2000:
            raise OptionError("STL width must be between 1 and 2000 millimetres.")
        options["stl_width_mm"] = stl_width
    options["mesh"] = _flag(form.get("mesh")) if (form.get("mesh") is not None or submitted_by_form) else True
    depth_kind = (form.get("depth_kind") or "").strip().lower()
    if depth_kind:
        options["depth_kind"] = depth_kind
    ConversionOptions.from_kwargs(**{k: v for k, v in options.items() if k not in JOB_FIELDS})  # reject bad values now
    return options


def parse_rebuild_options(form, base: dict) -> dict:
    """Geometry fields of a rebuild form on top of the source job's options ``base`` (same model, same depth).
    Fields left out keep the source's values; a new field of view replaces the source's focal length and back."""
    unknown_kind = (form.get("depth_kind") or "").strip()
    if unknown_kind:
        raise OptionError("A rebuild reuses the job's depth: the depth kind cannot change.")
    given = parse_options(form, [base.get("model") or ""], base.get("model") or "")
    options = {name: value for name, value in base.items() if name != "rebuild_of"}
    submitted_by_form = bool(form.get("checkboxes_submitted"))
    if form.get("mesh") is None and not submitted_by_form:
        given.pop("mesh", None)  # not asked: keep the source's choice
    if "fov_deg" in given:
        options.pop("focal_px", None)
    if "focal_px" in given:
        options.pop("fov_deg", None)
    options.update(given)
    options["model"] = base.get("model")
    ConversionOptions.from_kwargs(**{k: v for k, v in options.items() if k not in JOB_FIELDS})
    return options


def _number(form, field: str, label: str) -> float | None:
    text = (form.get(field) or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise OptionError(f"{label} must be a number.") from None
    if not math.isfinite(value):
        raise OptionError(f"{label} must be a finite number.")
    return value


def _flag(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "on", "yes")
