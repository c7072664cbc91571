"""Depth Pro (``apple/DepthPro-hf``, transformers' ``DepthProForDepthEstimation``) without torchvision.

transformers' ``DepthProImageProcessor`` imports torchvision, which the project does not install; its steps are
few, so they are done here with torch alone, reading the checkpoint's ``preprocessor_config.json``:

- preprocessing: uint8 → ×``rescale_factor`` → (x − mean) / std, *then* resize to ``size`` (bilinear, no
  antialiasing: the processor resizes after normalising, so negative values survive);
- the model returns a *canonical inverse depth* [h, w] and, with its field-of-view head, ``field_of_view`` (the
  horizontal field of view in degrees); the focal length in pixels of an image ``W`` wide is
  ``f = W / (2 tan(fov / 2))`` and metric depth is ``f / (W · inverse)`` = ``1 / (2 tan(fov / 2) · inverse)``,
  clamped to [1e-4, 1e4] m, as the processor's ``post_process_depth_estimation`` does (the resize to the image
  happens on the scaled inverse depth, bilinear, also as it does).

The focal length becomes :attr:`DepthMap.focal_px <converter.depth.depthmap.DepthMap>`, the camera the geometry
uses when neither the user nor EXIF gives one.
"""

from __future__ import annotations

import math

MODEL_TYPE = "depth_pro"
_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes → torch modes
MIN_FOV_DEG, MAX_FOV_DEG = 1.0, 179.0  # outside: no usable camera (a random or broken head)


def is_depth_pro(config) -> bool:
    return getattr(config, "model_type", None) == MODEL_TYPE


class DepthProProcessor:
    """The checkpoint's preprocessing and post-processing, with the call signatures of a transformers processor
    (``processor(images=..., return_tensors="pt")``, ``post_process_depth_estimation``), in torch."""

    def __init__(self, settings: dict):
        size = settings.get("size") or {"height": 1536, "width": 1536}
        self.size = (int(size["height"]), int(size["width"]))
        self.do_resize = bool(settings.get("do_resize", True))
        self.mode = _MODES.get(int(settings.get("resample", 2)), "bilinear")
        self.scale = float(settings.get("rescale_factor", 1 / 255)) if settings.get("do_rescale", True) else 1.0
        normalise = settings.get("do_normalize", True)
        self.mean = [float(v) for v in settings.get("image_mean", [0.5] * 3)] if normalise else [0.0] * 3
        self.std = [float(v) for v in settings.get("image_std", [0.5] * 3)] if normalise else [1.0] * 3

    @classmethod
    def from_pretrained(cls, path: str, **kwargs) -> "DepthProProcessor":
        """Read ``preprocessor_config.json`` (Hub id or folder, same caching rules as any processor)."""
        from transformers.image_processing_utils import ImageProcessingMixin

        settings, _ = ImageProcessingMixin.get_image_processor_dict(path, **kwargs)
        return cls(settings)

    def __call__(self, images, return_tensors: str = "pt") -> dict:
        """PIL image (or [H, W, 3] uint8 array/tensor) → {"pixel_values": [1, 3, h, w] float32}."""
        import numpy as np
        import torch

        rgb = images if isinstance(images, torch.Tensor) else torch.from_numpy(
            np.array(images.convert("RGB") if hasattr(images, "convert") else images, dtype=np.uint8))
        return {"pixel_values": self.tensor(rgb)}

    def tensor(self, rgb):
        """[H, W, 3] uint8 tensor (any device) → pixel_values [1, 3, h, w] float32 on the same device."""
        import torch

        image = rgb.permute(2, 0, 1)[None].float() * self.scale
        mean = torch.tensor(self.mean, device=image.device)[None, :, None, None]
        std = torch.tensor(self.std, device=image.device)[None, :, None, None]
        image = (image - mean) / std
        if self.do_resize and tuple(image.shape[2:]) != self.size:
            image = torch.nn.functional.interpolate(image, size=self.size, mode=self.mode,
                                                    **({} if self.mode == "nearest" else {"align_corners": False}))
        return image.contiguous()

    def post_process_depth_estimation(self, outputs, target_sizes) -> list[dict]:
        """Per image: {"predicted_depth": metric depth [H, W] (m), "focal_length": focal in pixels at W or None}."""
        fovs = getattr(outputs, "field_of_view", None)
        results = []
        for index, (height, width) in enumerate(target_sizes):
            fov = None if fovs is None else fovs[index]
            _, values, focal_px = postprocess(outputs.predicted_depth[index], fov, (height, width), self.mode)
            results.append({"predicted_depth": values, "focal_length": focal_px})
        return results


def postprocess(inverse, fov_deg, target: tuple[int, int], mode: str = "bilinear"):
    """Canonical inverse depth [h, w] and the model's field of view (degrees, a 0-d tensor or None) →
    (native metric depth [h, w], metric depth at ``target`` (H, W), focal length in pixels at W or None), tensors
    on ``inverse``'s device, float32. Without a usable field of view the focal length is None and the depth is the
    model's with f = W (what transformers' post-processing gives then)."""
    import torch

    inverse = inverse.float()
    focal_px = None
    factor = 1.0  # W / f: how far the canonical inverse depth is from metric inverse depth
    fov = None if fov_deg is None else float(fov_deg)
    if fov is not None and math.isfinite(fov) and MIN_FOV_DEG <= fov <= MAX_FOV_DEG:
        tangent = math.tan(math.radians(fov) / 2)
        focal_px = 0.5 * target[1] / tangent
        factor = 2 * tangent
    scaled = inverse * factor
    native = 1.0 / scaled.clamp(min=1e-4, max=1e4)
    resized = torch.nn.functional.interpolate(scaled[None, None], size=tuple(target), mode=mode,
                                              **({} if mode == "nearest" else {"align_corners": False}))[0, 0]
    values = 1.0 / resized.clamp(min=1e-4, max=1e4)
    return native, values, focal_px
