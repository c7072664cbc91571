"""The few kernels the array API standard lacks, for torch tensors on the model's device (CUDA).

:mod:`converter.geometry` is written once against the array API and runs on numpy and on torch; where numpy's
result comes from a kernel the standard has no name for, the torch equivalent is here, made to give numpy's (and
PIL's) numbers: numpy's percentile exactly, PIL's BOX resize of the grid colours in its integer arithmetic, and
the bicubic resize ``DepthMap.resized`` uses. Tensors are on one device; shapes as in :mod:`converter.geometry`.
"""

from __future__ import annotations

import numpy as np

# A leaf: nothing here imports the rest of the package (geometry imports this), nor torch until a kernel runs.


def percentile(values, q: float):
    """numpy's ``percentile(values, q)`` (method 'linear') of a 1-D tensor, exactly: two order statistics by
    ``kthvalue`` (linear time; ``torch.quantile`` refuses more than 16 M values) and numpy's own lerp."""
    import torch

    count = values.numel()
    position = q / 100.0 * (count - 1)
    below = int(np.floor(position))
    above = min(below + 1, count - 1)
    fraction = position - below
    low = torch.kthvalue(values, below + 1).values
    high = low if above == below else torch.kthvalue(values, above + 1).values
    fraction = torch.tensor(fraction, dtype=values.dtype, device=values.device)
    # numpy's _lerp: a + (b − a)·t, computed from b when t ≥ 0.5 so that t = 1 gives b exactly
    difference = high - low
    return torch.where(fraction >= 0.5, high - difference * (1 - fraction), low + difference * fraction)


def grid_colors(rgb, alpha, grid_size: tuple[int, int]):
    """[Hg, Wg, 3] uint8 colours of a grid of ``grid_size`` (Wg, Hg) over rgb [H, W, 3] uint8, area-averaged over
    each block like PIL's BOX resize; with alpha [H, W] uint8, premultiplied so transparent pixels add nothing (as
    :func:`converter.geometry.grid_colors`). The grid at full image size gives the pixels themselves."""
    import torch

    height, width = rgb.shape[:2]
    if grid_size == (width, height):
        return rgb
    image = rgb.permute(2, 0, 1).long()  # [3, H, W] in PIL's integer arithmetic
    if alpha is not None:
        a = alpha.long()[None]
        image = torch.cat([_muldiv255(image, a), a])  # PIL "RGBa": premultiplied, rounded to uint8
    for step in pil_pass_sizes(height, width, (grid_size[1], grid_size[0])):
        image = _box_resize(image, step)
    if alpha is not None:  # back to straight alpha as PIL does: truncating 255·c/a, clipped; a = 0 or 255 → as is
        a = image[3:]
        divided = torch.div(image[:3] * 255, a.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
        image = torch.where((a > 0) & (a < 255), divided, image[:3])
    return image.permute(1, 2, 0).to(torch.uint8)


def values_at(native, height: int, width: int):
    """A model's prediction [height, width] from its native map [h, w]: bicubic, as the transformers pipeline
    resizes (the one resize of a prediction: ``DepthMap.resized`` calls it on the host, the device path on CUDA)."""
    import torch

    if tuple(native.shape) == (height, width):
        return native
    return torch.nn.functional.interpolate(native[None, None], size=(height, width), mode="bicubic",
                                           align_corners=False)[0, 0]


_PRECISION_BITS = 22  # PIL's fixed point for 8-bit resampling (Resample.c: 32 − 8 − 2)


def _box_weights(size_in: int, size_out: int, device):
    """PIL's BOX filter taps for one axis, in its fixed point: indices and int64 weights [size_out, K]. Each output
    averages the input pixels whose centres its box covers (out-of-range taps weigh 0)."""
    import torch

    scale = size_in / size_out
    support = 0.5 * max(scale, 1.0)  # PIL: filter support × filterscale (no narrower than a pixel when enlarging)
    centre = (np.arange(size_out) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.int64), 0)  # PIL: (int)(center - support + 0.5)
    last = np.minimum((centre + support + 0.5).astype(np.int64), size_in)
    taps = int((last - first).max())
    index = first[:, None] + np.arange(taps)[None, :]
    x = (index - centre[:, None] + 0.5) / max(scale, 1.0)  # PIL: filter((x + xmin - center + 0.5) * ss)
    weight = ((x > -0.5) & (x <= 0.5) & (index < last[:, None])).astype(np.float64)
    weight /= weight.sum(axis=1, keepdims=True)
    fixed = (0.5 + weight * (1 << _PRECISION_BITS)).astype(np.int64)  # weights are ≥ 0: PIL's rounding
    index = np.minimum(index, size_in - 1)
    return torch.as_tensor(index, device=device), torch.as_tensor(fixed, device=device)


def _box_resize(image, size: tuple[int, int]):
    """[C, H, W] int64 uint8 levels → [C, h, w], one axis at a time in PIL's integer arithmetic (so a later
    un-premultiplication, which divides by small alphas, amplifies no rounding difference)."""
    for axis, (size_in, size_out) in ((2, (image.shape[2], size[1])), (1, (image.shape[1], size[0]))):
        if size_in == size_out:
            continue
        index, weight = _box_weights(size_in, size_out, image.device)
        gathered = image.index_select(axis, index.reshape(-1))
        if axis == 2:
            gathered = gathered.reshape(image.shape[0], image.shape[1], size_out, -1)
            total = (gathered * weight).sum(-1)
        else:
            gathered = gathered.reshape(image.shape[0], size_out, -1, image.shape[2])
            total = (gathered * weight[:, :, None]).sum(2)
        image = ((total + (1 << (_PRECISION_BITS - 1))) >> _PRECISION_BITS).clamp_(0, 255)
    return image


def _muldiv255(channels, alpha):
    """PIL's premultiplication, c·a/255 rounded as its MULDIV255 macro does it (int64 tensors)."""
    product = channels * alpha + 128
    return (product + (product >> 8)) >> 8


def pil_pass_sizes(height: int, width: int, size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """The (h, w) after each of PIL's two resampling passes from height × width to ``size``: Pillow 13 runs the
    vertical pass first when the height shrinks and that pass leaves less work, else the horizontal one (measured)."""
    vertical_first = size[0] < height and size[0] * width < size[1] * height
    return ((size[0], width) if vertical_first else (height, size[1])), tuple(size)
