"""Tiny, randomly initialised depth models of the real architectures, saved like Hub checkpoints.

They load through exactly the code path of a downloaded model; their depth is meaningless (random weights), so
tests use them for plumbing, parity and shapes, and use depth maps of known shape for geometry.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BeitConfig,
    BitConfig,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    DepthProConfig,
    DepthProForDepthEstimation,
    Dinov2Config,
    DPTConfig,
    DPTForDepthEstimation,
    Swinv2Config,
    ZoeDepthConfig,
    ZoeDepthForDepthEstimation,
)
from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil
from transformers.models.zoedepth.image_processing_pil_zoedepth import ZoeDepthImageProcessorPil

_VIT = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
_NECK = dict(neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32)
_MIDAS_NORMALISATION = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
TINY_DEPTH_PRO_FOV_DEG = 55.0  # about what the tiny Depth Pro's field-of-view head says (its bias)
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


def depth_pro(folder: Path) -> Path:
    """Depth Pro with its field-of-view head (three DINOv2 encoders, patches at three scales), the architecture of
    apple/DepthPro-hf at a 128 px input. Its processor class needs torchvision, so its preprocessor_config.json is
    written as the real checkpoint's is (DepthProImageProcessorFast, ±0.5 normalisation, bilinear)."""
    import json

    vit = dict(model_type="dinov2", patch_size=8, image_size=32, **{**_VIT, "num_hidden_layers": 2})
    config = DepthProConfig(
        patch_size=32, fusion_hidden_size=16, intermediate_hook_ids=[1, 0], intermediate_feature_dims=[16, 16],
        scaled_images_ratios=[0.25, 0.5, 1], scaled_images_overlap_ratios=[0.0, 0.5, 0.25],
        scaled_images_feature_dims=[32, 32, 16], merge_padding_value=1, use_fov_model=True, num_fov_head_layers=1,
        image_model_config=dict(vit), patch_model_config=dict(vit), fov_model_config=dict(vit),
    )
    model = DepthProForDepthEstimation(config)
    with torch.no_grad():  # the head's output is the field of view in degrees: random weights would give any angle
        final = model.fov_model.head.layers[-1]
        final.weight.mul_(0.01)
        final.bias.fill_(TINY_DEPTH_PRO_FOV_DEG)
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)
    settings = {"image_processor_type": "DepthProImageProcessorFast", "do_resize": True, "do_rescale": True,
                "do_normalize": True, "size": {"height": 128, "width": 128}, "resample": 2,
                "rescale_factor": 1 / 255, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    (folder / "preprocessor_config.json").write_text(json.dumps(settings, indent=2))
    return folder


def zoedepth(folder: Path) -> Path:
    """ZoeDepth (metric bins on a BEiT DPT), the architecture of Intel/zoedepth-nyu-kitti; its processor pads the
    image by reflection, which the post-processing removes (converter/depth/zoedepth.py)."""
    backbone = BeitConfig(
        image_size=64, patch_size=16, out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False, use_relative_position_bias=True, **_VIT,
    )
    config = ZoeDepthConfig(
        backbone_config=backbone, neck_hidden_sizes=[16, 32, 64, 64], fusion_hidden_size=32, bottleneck_features=32,
        num_relative_features=8, bin_embedding_dim=16, patch_size=16, hidden_size=32,
        reassemble_factors=[4, 2, 1, 0.5],
    )
    processor = ZoeDepthImageProcessorPil(size={"height": 64, "width": 64}, keep_aspect_ratio=True,
                                          ensure_multiple_of=16)
    return _save(folder, ZoeDepthForDepthEstimation(config), processor)


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
        "depth_pro": depth_pro(root / "depth-pro"),
        "zoedepth": zoedepth(root / "zoedepth"),
    }
