"""The image processor's resize + rescale + normalise as torch ops, so a GPU prepares its own input.

The PIL processor runs on one CPU thread (decode → PIL resize → numpy); on a GPU that costs more than the forward.
:func:`build_tensor_preprocess` reads a loaded DPT-style processor's settings (DPT, DPT-Hybrid, DPT-SwinV2 and Depth
Anything all use ``DPTImageProcessor``) and returns an equivalent function on tensors, or None where it does not
know the processor or a setting (the caller then keeps the PIL processor).

Output size: exactly the processor's (same aspect and multiple-of rules). Values: PIL resizes uint8 in two
separable passes with a Keys-cubic (a = −0.5) or triangle filter widened when shrinking, storing uint8 between the
passes; torch's ``antialias=True`` uses the same filters, and we round and clamp after each pass in PIL's order.
Measured against DPTImageProcessorPil (Pillow 13) for the tiny models' settings, 384 × 384 (DPT-Hybrid) and 518
keep-aspect multiple-of-14 (Depth Anything V2), on a smooth 150 × 100 picture, 97 × 61 noise and 700 × 90 noise:
max difference one uint8 level (0.0078 in MiDaS units, 0.0175 in ImageNet units) except the 700 × 90 → 384 × 384
case (two levels, where Pillow picks a pass order we do not predict); mean ≤ 0.0003 for noise, 0 for the smooth
picture at 384. See tests/test_tensor_preprocess.py.
"""

from __future__ import annotations

import math
from typing import Callable

from ..torch_kernels import pil_pass_sizes

_MODES = {2: "bilinear", 3: "bicubic"}  # PIL resample codes we can reproduce (BILINEAR, BICUBIC)
_PROCESSORS = ("DPTImageProcessor", "DPTImageProcessorPil", "DPTImageProcessorFast")


def build_tensor_preprocess(processor) -> Callable | None:
    """``processor`` → ``preprocess(rgb)`` taking rgb [H, W, 3] uint8 (any device) and giving pixel_values
    [1, 3, h, w] float32 on the same device; None for processors or settings it does not reproduce."""
    if type(processor).__name__ not in _PROCESSORS:
        return None  # ZoeDepth pads by reflection before resizing with align_corners; others are unknown
    settings = _settings(processor)
    if settings is None:
        return None
    return lambda rgb: _preprocess(rgb, **settings)


def output_size(height: int, width: int, target: tuple[int, int], keep_aspect_ratio: bool, multiple: int) -> tuple[int, int]:
    """The (h, w) DPTImageProcessor resizes an image of ``height`` × ``width`` to (its ``get_resize_output_image_size``)."""
    scale_h, scale_w = target[0] / height, target[1] / width
    if keep_aspect_ratio:  # scale as little as possible
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h

    def constrain(value):
        result = round(value / multiple) * multiple
        return math.ceil(value / multiple) * multiple if result < 0 else result

    return constrain(scale_h * height), constrain(scale_w * width)


def _settings(processor) -> dict | None:
    def get(name, default=None):
        return getattr(processor, name, default)

    if get("do_reduce_labels") or (get("do_pad") and get("size_divisor")) or get("do_center_crop"):
        return None
    settings = dict(resize=None, scale=None, mean=None, std=None)
    if get("do_resize", True):
        size, resample = get("size"), get("resample", 3)
        height = size.get("height") if isinstance(size, dict) else getattr(size, "height", None)
        width = size.get("width") if isinstance(size, dict) else getattr(size, "width", None)
        if not height or not width or int(resample) not in _MODES:
            return None
        multiple = get("ensure_multiple_of", 1) or 1
        if int(multiple) != multiple:
            return None
        settings["resize"] = ((int(height), int(width)), bool(get("keep_aspect_ratio", False)), int(multiple),
                              _MODES[int(resample)])
    if get("do_rescale", True):
        settings["scale"] = float(get("rescale_factor", 1 / 255))
    if get("do_normalize", True):
        mean, std = get("image_mean"), get("image_std")
        if mean is None or std is None:
            return None
        settings["mean"] = [float(v) for v in (mean if hasattr(mean, "__len__") else [mean] * 3)]
        settings["std"] = [float(v) for v in (std if hasattr(std, "__len__") else [std] * 3)]
    return settings


def _preprocess(rgb, resize, scale, mean, std):
    import torch

    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != torch.uint8:
        raise ValueError("expected an [H, W, 3] uint8 tensor")
    image = rgb.permute(2, 0, 1)[None].float()  # [1, 3, H, W], 0..255
    if resize is not None:
        target, keep_aspect, multiple, mode = resize
        size = output_size(rgb.shape[0], rgb.shape[1], target, keep_aspect, multiple)
        # PIL resizes uint8 in two passes, storing uint8 pixels in between: rounding and clamping the cubic overshoot
        # after each pass, in PIL's order, is what makes the result match within one level. Pillow 13 runs the
        # vertical pass first when the height shrinks and that pass leaves less work (measured; ties are rare).
        for step in pil_pass_sizes(rgb.shape[0], rgb.shape[1], size):
            if step != tuple(image.shape[2:]):
                image = torch.nn.functional.interpolate(image, size=step, mode=mode, align_corners=False,
                                                        antialias=True).round_().clamp_(0, 255)
    if scale is not None:
        image = image * scale
    if mean is not None:
        mean_t = torch.tensor(mean, dtype=image.dtype, device=image.device)[None, :, None, None]
        std_t = torch.tensor(std, dtype=image.dtype, device=image.device)[None, :, None, None]
        image = (image - mean_t) / std_t
    return image.contiguous()
