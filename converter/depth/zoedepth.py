"""ZoeDepth's post-processing without torchvision.

transformers' ZoeDepth processors pad the image by reflection before the model (``int(√(H / 2) · 3)`` rows above and
below, ``int(√(W / 2) · 3)`` columns left and right, against boundary artefacts) and remove that padding afterwards
with ``torchvision``'s resize, which the project does not install. The same steps in torch: resize the prediction
to the padded size (bicubic, no antialiasing), then crop the padding. The native map is cropped by the same share,
so edges found on it line up with the image.
"""

from __future__ import annotations

import math

MODEL_TYPE = "zoedepth"
PADDING_FACTOR = 3


def is_padded_zoedepth(config, processor) -> bool:
    """A ZoeDepth checkpoint whose processor pads (all published ones do)."""
    return getattr(config, "model_type", None) == MODEL_TYPE and bool(getattr(processor, "do_pad", True))


def padding(height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of padding the processor adds on each side of an image of ``height`` × ``width``."""
    return int(math.sqrt(height / 2) * PADDING_FACTOR), int(math.sqrt(width / 2) * PADDING_FACTOR)


def postprocess(native, target: tuple[int, int]):
    """The model's depth [h, w] of the padded image (a tensor) → (native depth [h', w'] with the padding cropped,
    depth [H, W] at ``target``), both float32 on ``native``'s device."""
    import torch

    height, width = target
    pad_h, pad_w = padding(height, width)
    native = native.float()
    padded = torch.nn.functional.interpolate(native[None, None], size=(height + 2 * pad_h, width + 2 * pad_w),
                                             mode="bicubic", align_corners=False)[0, 0]
    values = padded[pad_h:pad_h + height, pad_w:pad_w + width]
    rows, columns = native.shape
    crop_h = round(rows * pad_h / (height + 2 * pad_h))
    crop_w = round(columns * pad_w / (width + 2 * pad_w))
    cropped = native[crop_h:rows - crop_h or None, crop_w:columns - crop_w or None]
    return cropped.contiguous(), values.contiguous()
