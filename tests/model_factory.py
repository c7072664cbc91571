"""Tiny, randomly initialised depth models of the real architectures, saved like Hub checkpoints.

They load through exactly the code path of a downloaded model; their depth is meaningless (random weights), so
tests use them for plumbing, parity and shapes, and use depth maps of known shape for geometry.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BitConfig,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    DPTConfig,
    DPTForDepthEstimation,
    Swinv2Config,
)
from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

_VIT = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
_NECK = dict(neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32)
_MIDAS_NORMALISATION = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
_IMAGENET_NORMALISATION = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def dpt_hybrid(folder: Path) -> Path:
    """DPT-Hybrid (ViT on a BiT backbone), the architecture of Intel/dpt-hybrid-midas."""
    backbone = BitConfig(
        global_padding="same", layer_type="bottleneck", depths=[1, 1, 1], hidden_sizes=[16, 32, 64], num_groups=2,
        out_features=["stage1", "stage2", "stage3"], embedding_dynamic_padding=True,
    )
    config = DPTConfig(
        is_hybrid=True, image_size=64, patch_size=16, backbone_config=backbone, backbone_featmap_shape=[1, 64, 4, 4],
        reassemble_factors=[1, 1, 1, 0.5], backbone_out_indices=[0, 1, 2, 3], readout_type="project", **_VIT, **_NECK,
    )
    processor = DPTImageProcessorPil(size={"height": 64, "width": 64}, keep_aspect_ratio=False, **_MIDAS_NORMALISATION)
    return _save(folder, DPTForDepthEstimation(config), processor)


def dpt_swinv2(folder: Path) -> Path:
    """DPT on a SwinV2 backbone, the architecture of Intel/dpt-swinv2-tiny-256."""
    backbone = Swinv2Config(
        image_size=64, patch_size=4, embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = DPTConfig(
        backbone_config=backbone, neck_hidden_sizes=[8, 16, 32, 64], fusion_hidden_size=16,
        reassemble_factors=[1, 1, 1, 1], readout_type="ignore", hidden_size=64,
    )
    processor = DPTImageProcessorPil(size={"height": 64, "width": 64}, keep_aspect_ratio=False, **_MIDAS_NORMALISATION)
    return _save(folder, DPTForDepthEstimation(config), processor)


def depth_anything(folder: Path, metric: bool = False) -> Path:
    """Depth Anything (V2 layout: DINOv2 backbone), relative or metric like the -Metric- checkpoints."""
    backbone = Dinov2Config(
        image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False, **_VIT,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, head_hidden_size=16, reassemble_hidden_size=32,
        depth_estimation_type="metric" if metric else "relative", max_depth=20 if metric else 1, **_NECK,
    )
    processor = DPTImageProcessorPil(
        size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
        **_IMAGENET_NORMALISATION,
    )
    return _save(folder, DepthAnythingForDepthEstimation(config), processor)


def _save(folder: Path, model, processor) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_all(root: Path, seed: int = 0) -> dict[str, Path]:
    torch.manual_seed(seed)
    return {
        "dpt_hybrid": dpt_hybrid(root / "dpt-hybrid"),
        "dpt_swinv2": dpt_swinv2(root / "dpt-swinv2"),
        "depth_anything": depth_anything(root / "depth-anything"),
        "depth_anything_metric": depth_anything(root / "depth-anything-metric", metric=True),
    }
