"""Fetch a depth model into the Hugging Face cache once, so later runs work offline: python -m converter.download.

With the OpenVINO engine (ENGINE=auto on a CPU) it is also converted and saved, so the server's first start is fast."""

from __future__ import annotations

import sys

from .depth import get_depth_model, resolve_model_name
from .depth.models import DEFAULT_MODEL
from .errors import ModelUnavailableError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    model = resolve_model_name(argv[0] if argv else DEFAULT_MODEL)
    print(f"Downloading {model} into the Hugging Face cache ...")
    try:
        depth_model = get_depth_model(model, device="cpu")
    except ModelUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Ready: {model} ({depth_model.parameters / 1e6:.0f} M parameters, {depth_model.kind}, "
          f"{depth_model.engine} engine).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
