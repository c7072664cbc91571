"""Randomly initialised depth models of the exact published architectures, saved like Hub checkpoints.

The configs and preprocessor settings follow the published checkpoints' ``config.json`` and
``preprocessor_config.json``; only the weights are random (there is no Hub access here), so timings and memory are
those of the real models while the depth itself is meaningless. Each folder loads through ``Converter(model=folder)``
exactly like a downloaded checkpoint.
"""

from __future__ import annotations

from pathlib import Path

# name: published parameter count as the model cards round it (millions); ours must be within 2 %.
PUBLISHED_MILLIONS = {"dpt-hybrid": 123.0, "dpt-swinv2-tiny": 41.0, "depth-anything-v2-small": 24.8,
                      "depth-pro": 952.0}
MIDAS_NORMALISATION = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
IMAGENET_NORMALISATION = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def dpt_hybrid():
    """Intel/dpt-hybrid-midas: ViT-B/16 on a BiT-R50 stem (3, 4, 9 bottleneck blocks), 384 × 384 input."""
    from transformers import BitConfig, DPTConfig, DPTForDepthEstimation
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    backbone = BitConfig(
        global_padding="same", layer_type="bottleneck", depths=[3, 4, 9], out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True,
    )
    config = DPTConfig(
        is_hybrid=True, image_size=384, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, backbone_config=backbone, backbone_featmap_shape=[1, 1024, 24, 24],
        neck_ignore_stages=[0, 1], backbone_out_indices=[2, 5, 8, 11], readout_type="project",
        reassemble_factors=[1, 1, 1, 0.5], neck_hidden_sizes=[256, 512, 768, 768], fusion_hidden_size=256,
        head_in_index=-1,
    )
    processor = DPTImageProcessorPil(
        size={"height": 384, "width": 384}, keep_aspect_ratio=False, ensure_multiple_of=1, resample=3,
        **MIDAS_NORMALISATION,
    )
    return DPTForDepthEstimation(config), processor


def dpt_swinv2_tiny():
    """Intel/dpt-swinv2-tiny-256: DPT on SwinV2-T (96, depths 2-2-6-2, window 16), 256 × 256 input."""
    from transformers import DPTConfig, DPTForDepthEstimation, Swinv2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    backbone = Swinv2Config(
        image_size=256, patch_size=4, embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=16,
        pretrained_window_sizes=[0, 0, 0, 0], out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = DPTConfig(
        backbone_config=backbone, neck_hidden_sizes=[96, 192, 384, 768], fusion_hidden_size=256,
        reassemble_factors=[1, 1, 1, 1], readout_type="ignore", hidden_size=768, image_size=256,
    )
    processor = DPTImageProcessorPil(
        size={"height": 256, "width": 256}, keep_aspect_ratio=False, ensure_multiple_of=1, resample=3,
        **MIDAS_NORMALISATION,
    )
    return DPTForDepthEstimation(config), processor


def depth_anything_v2_small():
    """depth-anything/Depth-Anything-V2-Small-hf: DINOv2-S/14 backbone, 518 px, aspect kept, multiple of 14."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config
    from transformers.models.dpt.image_processing_pil_dpt import DPTImageProcessorPil

    backbone = Dinov2Config(
        image_size=518, patch_size=14, hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
        out_features=["stage9", "stage10", "stage11", "stage12"], reshape_hidden_states=False, apply_layernorm=True,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone, patch_size=14, reassemble_hidden_size=384, reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=[48, 96, 192, 384], fusion_hidden_size=64, head_hidden_size=32,
        depth_estimation_type="relative", max_depth=1,
    )
    processor = DPTImageProcessorPil(
        size={"height": 518, "width": 518}, keep_aspect_ratio=True, ensure_multiple_of=14, resample=3,
        **IMAGENET_NORMALISATION,
    )
    return DepthAnythingForDepthEstimation(config), processor


class _PreprocessorConfig:
    """A processor we cannot instantiate here (Depth Pro's needs torchvision), saved as its JSON."""

    def __init__(self, **settings):
        self.settings = settings

    def save_pretrained(self, folder: Path) -> None:
        import json

        (Path(folder) / "preprocessor_config.json").write_text(json.dumps(self.settings, indent=2))


def depth_pro():
    """apple/DepthPro-hf: three DINOv2 ViT-L/16 encoders (patches at 3 scales of a 1536 × 1536 input, the whole
    image, the field of view), fusion 256, field-of-view head; 952 M parameters."""
    from transformers import DepthProConfig, DepthProForDepthEstimation

    vit = dict(model_type="dinov2", hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, patch_size=16,
               image_size=384, mlp_ratio=4, layerscale_value=1.0, use_swiglu_ffn=False)
    config = DepthProConfig(
        patch_size=384, fusion_hidden_size=256, intermediate_hook_ids=[11, 5], intermediate_feature_dims=[256, 256],
        scaled_images_ratios=[0.25, 0.5, 1], scaled_images_overlap_ratios=[0.0, 0.5, 0.25],
        scaled_images_feature_dims=[1024, 1024, 512], merge_padding_value=3, use_fov_model=True,
        num_fov_head_layers=2, image_model_config=dict(vit), patch_model_config=dict(vit), fov_model_config=dict(vit),
    )
    processor = _PreprocessorConfig(
        image_processor_type="DepthProImageProcessorFast", do_resize=True, do_rescale=True, do_normalize=True,
        size={"height": 1536, "width": 1536}, resample=2, rescale_factor=1 / 255, **MIDAS_NORMALISATION,
    )
    return DepthProForDepthEstimation(config), processor


BUILDERS = {"dpt-hybrid": dpt_hybrid, "dpt-swinv2-tiny": dpt_swinv2_tiny,
            "depth-anything-v2-small": depth_anything_v2_small, "depth-pro": depth_pro}


def build(name: str, root: Path, seed: int = 0) -> tuple[Path, int]:
    """Save the random-weight model ``name`` under ``root/name`` (once; reused later). Returns (folder, parameters)."""
    import torch

    folder = Path(root) / name
    marker = folder / "parameters.txt"
    if marker.exists() and (folder / "preprocessor_config.json").exists():
        return folder, int(marker.read_text())
    torch.manual_seed(seed)
    model, processor = BUILDERS[name]()
    parameters = sum(p.numel() for p in model.parameters())
    folder.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    marker.write_text(str(parameters))
    return folder, parameters
