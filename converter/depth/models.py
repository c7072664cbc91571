"""The depth models we offer by name. Any other Hub id or local folder works too."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelInfo:
    """name: the short name (CLI, API); note: what it is good at, one line; metric: gives metres (a model to
    align a relative one to, see converter.align); camera: estimates its own focal length (Depth Pro)."""

    name: str
    hub_id: str
    label: str
    note: str
    metric: bool = False
    camera: bool = False


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
        ModelInfo(
            "depth-anything-v2-metric-indoor-small",
            "depth-anything/Depth-Anything-V2-Metric-Indoor-Small-hf",
            "Depth Anything V2 Metric Indoor Small",
            "metres for rooms and objects (trained on Hypersim, up to 20 m); 25 M parameters",
            metric=True,
        ),
        ModelInfo(
            "depth-anything-v2-metric-outdoor-small",
            "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf",
            "Depth Anything V2 Metric Outdoor Small",
            "metres for streets and landscapes (trained on Virtual KITTI, up to 80 m); 25 M parameters",
            metric=True,
        ),
        ModelInfo(
            "zoedepth-nyu-kitti",
            "Intel/zoedepth-nyu-kitti",
            "ZoeDepth (NYU + KITTI)",
            "metres indoors and outdoors (picks a head per image); smooth, 345 M parameters",
            metric=True,
        ),
        ModelInfo(
            "depth-pro",
            "apple/DepthPro-hf",
            "Depth Pro",
            "metres and its own camera (focal length) from any photo; sharpest boundaries, 952 M parameters, slow on "
            "a CPU",
            metric=True,
            camera=True,
        ),
    )
}
_BY_SHORT_NAME = {info.name: info.hub_id for info in KNOWN_MODELS.values()}


def model_from_environment(environ=os.environ) -> str:
    """The model $DEPTH_MODEL names; the default when it is unset or empty (the CLI and the service alike)."""
    return (environ.get("DEPTH_MODEL") or "").strip() or DEFAULT_MODEL


def resolve_model_name(model: str | None) -> str:
    """A short name from KNOWN_MODELS → its Hub id; anything else (Hub id, folder) unchanged."""
    model = (model or DEFAULT_MODEL).strip()
    return _BY_SHORT_NAME.get(model, model)
