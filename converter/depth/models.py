"""The depth models we offer by name. Any other Hub id or local folder works too."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    name: str
    hub_id: str
    label: str
    note: str


DEFAULT_MODEL = "Intel/dpt-hybrid-midas"

KNOWN_MODELS = {
    info.hub_id: info
    for info in (
        ModelInfo("dpt-hybrid", "Intel/dpt-hybrid-midas", "DPT-Hybrid MiDaS", "default; balanced quality, 123 M parameters"),
        ModelInfo("dpt-swinv2-tiny", "Intel/dpt-swinv2-tiny-256", "DPT-SwinV2-Tiny", "fast; 256 px input"),
        ModelInfo(
            "depth-anything-v2-small",
            "depth-anything/Depth-Anything-V2-Small-hf",
            "Depth Anything V2 Small",
            "sharp edges; 25 M parameters",
        ),
    )
}
_BY_SHORT_NAME = {info.name: info.hub_id for info in KNOWN_MODELS.values()}


def resolve_model_name(model: str | None) -> str:
    """A short name from KNOWN_MODELS → its Hub id; anything else (Hub id, folder) unchanged."""
    model = (model or DEFAULT_MODEL).strip()
    return _BY_SHORT_NAME.get(model, model)
