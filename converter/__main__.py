"""Command line: python -m converter INPUT... -o OUTPUT — the same pipeline as the web app and the Python API."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import printing
from .depth.device import DEVICE_CHOICES
from .depth.models import DEFAULT_MODEL, KNOWN_MODELS
from .errors import ConversionError, ModelUnavailableError
from .options import DEFAULT_MAX_POINTS, ConversionOptions
from .pipeline import Converter

OUTPUT_SUFFIXES = (".ply", ".glb", ".obj", ".stl")
EXIT_FAILED, EXIT_USAGE, EXIT_MODEL = 1, 2, 3


def build_parser() -> argparse.ArgumentParser:
    known = ", ".join(f"{info.name} ({info.hub_id})" for info in KNOWN_MODELS.values())
    parser = argparse.ArgumentParser(
        prog="python -m converter",
        description="Turn images into coloured 3D point clouds (.ply), meshes (.glb, .obj) or printable reliefs (.stl).",
        epilog="Axes: right-handed, y up, camera at the origin looking down -z. Metric depth gives metres.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file(s): JPEG, PNG, WebP, BMP, GIF, TIFF")
    parser.add_argument("-o", "--output", help="output file for one input (.ply, .glb, .obj, .stl), or a folder for "
                        "several (default: next to each input, as .ply); a .json sidecar with the camera, units and "
                        "options is written beside it")
    group = parser.add_argument_group("depth")
    group.add_argument("--model", default=os.environ.get("DEPTH_MODEL", DEFAULT_MODEL),
                       help=f"Hub id, local folder or short name: {known} (default: $DEPTH_MODEL or {DEFAULT_MODEL})")
    group.add_argument("--device", default=os.environ.get("DEVICE", "auto"), choices=DEVICE_CHOICES,
                       help="auto = cuda, else mps, else cpu (default: $DEVICE or auto)")
    group.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                       help="model precision (bf16 on recent CPUs, fp16 on CUDA); default fp32")
    group.add_argument("--depth", metavar="FILE", help="use this depth map instead of the model: .npy (float) or "
                       "16-bit PNG (millimetres); one input only")
    group.add_argument("--depth-kind", choices=("metric", "disparity"), default="metric",
                       help="what --depth holds: metric depth (metres) or disparity (larger is nearer)")
    group.add_argument("--relief", type=float, default=ConversionOptions.relief,
                       help="depth range of relative models: far = near x (1 + relief); in relief mode and .stl "
                       "output, the relief height: relief x 0.2 of the image width (default %(default)s)")
    group.add_argument("--mode", choices=("perspective", "relief"), default="perspective",
                       help="perspective: a photo seen by a pinhole camera; relief: a height field over the image "
                       "(nearer = higher) for drawings, cartoons, logos and bas-reliefs (default %(default)s)")
    group.add_argument("--paper-background", action="store_true",
                       help="make near-white paper connected to the image border transparent (sketches on paper)")
    group = parser.add_argument_group("camera (default: EXIF focal length, else a 60 degree horizontal field of view)")
    group.add_argument("--fov", type=float, metavar="DEG", help="horizontal field of view in degrees")
    group.add_argument("--focal-px", type=float, metavar="F", help="focal length in pixels (overrides --fov)")
    group.add_argument("--principal-point", type=float, nargs=2, metavar=("CX", "CY"),
                       help="principal point in pixels (default: the image centre)")
    group = parser.add_argument_group("output")
    group.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS,
                       help="at most this many points, sampled evenly; 0 = one per pixel (default %(default)s)")
    group.add_argument("--no-clean", dest="clean", action="store_false",
                       help="keep the 'flying pixels' on depth edges")
    group.add_argument("--drop-background", type=float, default=0.0, metavar="PERCENT",
                       help="also drop the farthest PERCENT %% of the pixels (a wall or sky behind the subject)")
    group.add_argument("--normals", action="store_true", help="write per-point normals into the .ply")
    group.add_argument("--mesh", action="store_true", help="write a mesh .ply instead of a point cloud")
    group.add_argument("--stl-width-mm", type=float, default=printing.DEFAULT_WIDTH_MM, metavar="MM",
                       help=".stl output: width of the printed relief in millimetres (default %(default)s)")
    group.add_argument("--stl-base-mm", type=float, default=printing.DEFAULT_BASE_MM, metavar="MM",
                       help=".stl output: thickness of its flat base in millimetres (default %(default)s)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        options = ConversionOptions(
            fov_deg=args.fov, focal_px=args.focal_px, principal_point=args.principal_point, relief=args.relief,
            clean=args.clean, max_points=args.max_points, normals=args.normals, depth_kind=args.depth_kind,
            drop_background_percent=args.drop_background, mode=args.mode, paper_background=args.paper_background,
        )
        printing.check_size(args.stl_width_mm, args.stl_base_mm)
        jobs = plan_outputs([Path(p) for p in args.inputs], args.output, args.mesh)
    except (ConversionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.depth and len(jobs) > 1:
        print("error: --depth goes with one input image only", file=sys.stderr)
        return EXIT_USAGE
    _quiet_libraries()
    converter = Converter(model=args.model, device=args.device, precision=args.precision)
    failures = 0
    progress = _progress_bar(len(jobs), args.quiet)
    for source, target in jobs:
        started = time.perf_counter()
        try:
            result = converter.convert(source, depth=args.depth, options=options)
            result.save(target, mesh=args.mesh, width_mm=args.stl_width_mm, base_mm=args.stl_base_mm, sidecar=True)
        except ModelUnavailableError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_MODEL
        except ConversionError as error:
            failures += 1
            _say(progress, f"error: {source}: {error}", stream=sys.stderr)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # an unforeseen failure: one line, no traceback (unless --debug)
            if args.debug:
                raise
            failures += 1
            _say(progress, f"error: {source}: unexpected failure ({type(error).__name__}); "
                 "run with --debug for details", stream=sys.stderr)
        else:
            if not args.quiet:
                _say(progress, _summary(source, target, result, time.perf_counter() - started))
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()
    return EXIT_FAILED if failures else 0


def plan_outputs(inputs: list[Path], output: str | None, mesh: bool = False) -> list[tuple[Path, Path]]:
    """(input, output file) pairs. One input: OUTPUT is a file (or an existing folder). Several: OUTPUT is a folder."""
    if output is None:
        return [(path, path.with_suffix(".ply")) for path in inputs]
    target = Path(output)
    if len(inputs) == 1 and not target.is_dir() and target.suffix:
        if target.suffix.lower() not in OUTPUT_SUFFIXES:
            raise ValueError(f"the output must end in {', '.join(OUTPUT_SUFFIXES)}: {output}")
        if mesh and target.suffix.lower() != ".ply":
            raise ValueError("--mesh is for .ply output; .glb, .obj and .stl are always meshes")
        return [(inputs[0], target)]
    if target.exists() and not target.is_dir():
        raise ValueError(f"for several inputs the output must be a folder: {output}")
    target.mkdir(parents=True, exist_ok=True)
    pairs, taken = [], set()
    for path in inputs:
        name, counter = f"{path.stem}.ply", 1
        while name in taken:  # photos from different folders often share a name
            name, counter = f"{path.stem}-{counter}.ply", counter + 1
        taken.add(name)
        pairs.append((path, target / name))
    return pairs


def _summary(source: Path, target: Path, result, seconds: float) -> str:
    k = result.intrinsics
    return (f"{source} -> {target}: {len(result.points):,} points, {result.units}, "
            f"fov {k.fov_x_deg:.1f} deg ({k.source}), {seconds:.2f} s")


def _progress_bar(count: int, quiet: bool):
    if count < 2 or quiet:
        return None
    from tqdm import tqdm

    return tqdm(total=count, unit="image", file=sys.stderr)


def _say(progress, text: str, stream=None) -> None:
    if progress is not None:
        progress.write(text, file=stream or sys.stdout)
    else:
        print(text, file=stream or sys.stdout)


def _quiet_libraries() -> None:
    """Library progress bars and advice are noise on a command line."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


if __name__ == "__main__":
    sys.exit(main())
