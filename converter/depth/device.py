"""Choose the torch device once, at model load, and pass it in."""

from __future__ import annotations

from ..errors import OptionError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(requested: str = "auto") -> str:
    """``auto`` → cuda, else mps, else cpu. An explicit device must exist on this machine."""
    import torch

    requested = (requested or "auto").strip().lower()
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if requested == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not cuda:
            raise OptionError("CUDA was requested (--device cuda) but no CUDA GPU is available; use --device cpu.")
        return requested
    if requested == "mps":
        if not mps:
            raise OptionError("MPS was requested (--device mps) but Apple's Metal backend is not available.")
        return "mps"
    raise OptionError(f"Unknown device '{requested}'; choose one of: {', '.join(DEVICE_CHOICES)}.")
