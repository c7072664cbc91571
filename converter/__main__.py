"""Command line: python -m converter INPUT... -o OUTPUT — the same pipeline as the web app and the Python API."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .depth.backend import ENGINE_CHOICES, engine_from_environment
from .depth.device import DEVICE_CHOICES
from .depth.huggingface import PRECISIONS
from .depth.models import DEFAULT_MODEL, KNOWN_MODELS, model_from_environment
from .errors import ConversionError, ModelUnavailableError
from .exports import printing
from .exports.outputs import OUTPUTS, UP_AXES, OutputSettings, kind_for_path, parse_kinds, write_outputs
from .options import DEFAULT_MAX_POINTS, DEPTH_KIND_CHOICES, MODES, ConversionOptions, parse_number
from .pipeline import Converter
from .video import cli as video_cli
from .video import is_video_file

EXIT_FAILED, EXIT_USAGE, EXIT_MODEL = 1, 2, 3
FILE_KINDS = [kind for kind in OUTPUTS.values() if kind.suffixes]  # what the command line can write


def _decimal(text: str) -> float:
    """A number on the command line, read as the web form reads one (``service_api.parse_number``: ASCII digits
    only)."""
    try:
        return parse_number(text, "value")
    except ConversionError:
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a finite number written with the digits 0-9") from None


def _whole(text: str) -> int:
    try:
        return parse_number(text, "value", whole=True)
    except ConversionError:
        raise argparse.ArgumentTypeError(f"'{text[:40]}' is not a whole number written with the digits 0-9") from None


def build_parser() -> argparse.ArgumentParser:
    known = ", ".join(f"{info.name} ({info.hub_id})" for info in KNOWN_MODELS.values())
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description="Turn images into coloured 3D point clouds (.ply), meshes (.glb, .obj) or printable reliefs (.stl).",
        epilog="Axes: right-handed, camera at the origin looking down -z, y up, as glTF, OBJ and .ply/.pcd by default; "
               "--up z turns .ply/.pcd z up (Blender); .las is z up (survey tools), .stl z up from the print bed "
               "(millimetres). Metric depth gives metres.",
    )
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image file(s): JPEG, PNG, WebP, BMP, GIF, TIFF")
    parser.add_argument("-o", "--output", help="output file for one input (.ply, .glb, .obj, .stl, ...), or a folder "
                        "for several (default: next to each input, as .ply); a .json sidecar with the camera, units "
                        "and options is written beside it. With --format: the base name (or folder) of the outputs")
    parser.add_argument("--format", metavar="KINDS", help="write several formats at once, comma-separated: "
                        + ", ".join(f"{kind.name} ({kind.suffix})" for kind in FILE_KINDS))
    group = parser.add_argument_group("depth")
    group.add_argument("--model", default=model_from_environment(),
                       help=f"Hub id, local folder or short name: {known} (default: $DEPTH_MODEL or {DEFAULT_MODEL})")
    group.add_argument("--device", default=os.environ.get("DEVICE", "auto"), choices=DEVICE_CHOICES,
                       help="auto = cuda, else mps, else cpu (default: $DEVICE or auto)")
    group.add_argument("--precision", default=os.environ.get("PRECISION", "fp32"), choices=PRECISIONS,
                       help="model precision (bf16 on recent CPUs, fp16 on CUDA); default $PRECISION or fp32")
    group.add_argument("--engine", default=engine_from_environment(), choices=ENGINE_CHOICES,
                       help="what runs the model: auto = OpenVINO on a CPU, torch on a GPU (default: $ENGINE or auto)")
    group.add_argument("--align-to", metavar="METRIC_MODEL",
                       help="a metric model (e.g. depth-pro, depth-anything-v2-metric-indoor-small) to fit --model's "
                       "depth to, robustly in inverse depth: metres with --model's detail; the fit goes into the "
                       ".json sidecar and the disagreement format shows where the two models still differ")
    group.add_argument("--depth", metavar="FILE", help="use this depth map instead of the model: .npy (float) or "
                       "16-bit PNG (millimetres); one input only")
    group.add_argument("--depth-kind", choices=tuple(DEPTH_KIND_CHOICES), default="metric",
                       help="what --depth holds: metric depth (metres) or disparity (larger is nearer)")
    group.add_argument("--relief", type=_decimal, default=ConversionOptions.relief,
                       help="depth range of relative models: far = near x (1 + relief); in relief mode and .stl "
                       "output, the relief height: relief x 0.2 of the image width (default %(default)s)")
    group.add_argument("--mode", choices=tuple(MODES), default="perspective",
                       help="perspective: a photo seen by a pinhole camera; relief: a height field over the image "
                       "(nearer = higher) for drawings, cartoons, logos and bas-reliefs (default %(default)s)")
    group.add_argument("--paper-background", action="store_true",
                       help="make near-white paper connected to the image border transparent (sketches on paper)")
    group = parser.add_argument_group("camera (default: EXIF focal length, else the model's own estimate (Depth Pro), "
                                      "else a 60 degree horizontal field of view)")
    group.add_argument("--fov", type=_decimal, metavar="DEG", help="horizontal field of view in degrees")
    group.add_argument("--focal-px", type=_decimal, metavar="F", help="focal length in pixels (overrides --fov)")
    group.add_argument("--principal-point", type=_decimal, nargs=2, metavar=("CX", "CY"),
                       help="principal point in pixels (default: the image centre)")
    group.add_argument("--known-length", type=_decimal, nargs=5, metavar=("X1", "Y1", "X2", "Y2", "METRES"),
                       help="true scale: the real distance in metres between the surface points at two pixels "
                       "(X Y in the image's pixels); everything is scaled to match and written in metres")
    group = parser.add_argument_group("output")
    group.add_argument("--max-points", type=_whole, default=DEFAULT_MAX_POINTS,
                       help="at most this many points, sampled evenly; 0 = one per pixel (default %(default)s)")
    group.add_argument("--no-clean", dest="clean", action="store_false",
                       help="keep the 'flying pixels' on depth edges")
    group.add_argument("--drop-background", type=_decimal, default=0.0, metavar="PERCENT",
                       help="also drop the farthest PERCENT %% of the pixels (a wall or sky behind the subject)")
    group.add_argument("--normals", action="store_true", help="write per-point normals into the .ply")
    group.add_argument("--mesh", action="store_true", help="write a mesh .ply instead of a point cloud")
    group.add_argument("--simplify", default="low", metavar="DETAIL|FACES",
                       help="simplified_glb output: low (10 %% of the triangles), medium (25 %%), high (50 %%) or a "
                       "number of triangles (default %(default)s)")
    group.add_argument("--stl-width-mm", type=_decimal, default=printing.DEFAULT_WIDTH_MM, metavar="MM",
                       help=".stl output: width of the printed relief in millimetres (default %(default)s)")
    group.add_argument("--up", default="y", metavar="AXIS", help=".ply, .pcd and mesh .ply output: which axis is up: "
                       + ", ".join(f"{name} = {what}" for name, what in UP_AXES.items()) + " (default %(default)s; "
                       ".las is always z up, .glb/.obj/.usdz y up, .stl z up)")
    group.add_argument("--stl-base-mm", type=_decimal, default=printing.DEFAULT_BASE_MM, metavar="MM",
                       help=".stl output: thickness of its flat base in millimetres (default %(default)s)")
    video_cli.add_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if any(is_video_file(path) for path in args.inputs):  # by content: the video pipeline
        return video_cli.main(args)
    try:
        options = ConversionOptions(
            fov_deg=args.fov, focal_px=args.focal_px, principal_point=args.principal_point, relief=args.relief,
            clean=args.clean, max_points=args.max_points, normals=args.normals, depth_kind=args.depth_kind,
            drop_background_percent=args.drop_background, mode=args.mode, paper_background=args.paper_background,
            known_length=args.known_length,
        )
        settings = OutputSettings(stl_width_mm=args.stl_width_mm, stl_base_mm=args.stl_base_mm, simplify=args.simplify,
                                  up=args.up)
        kinds = parse_kinds(args.format) if args.format else None
        jobs = plan_outputs([Path(p) for p in args.inputs], args.output, args.mesh, kinds)
    except (ConversionError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.depth and len(jobs) > 1:
        print("error: --depth goes with one input image only", file=sys.stderr)
        return EXIT_USAGE
    if args.align_to and args.depth:
        print("error: --align-to aligns a model's depth; it does not go with --depth", file=sys.stderr)
        return EXIT_USAGE
    if kinds and "disagreement" in kinds and not args.align_to:
        print("error: the disagreement format needs --align-to", file=sys.stderr)
        return EXIT_USAGE
    if args.known_length and len(jobs) > 1:  # its pixels belong to one picture
        print("error: --known-length goes with one input image only", file=sys.stderr)
        return EXIT_USAGE
    _quiet_libraries()
    converter = Converter(model=args.model, device=args.device, precision=args.precision, engine=args.engine,
                          align_to=args.align_to)
    failures = 0
    progress = _progress_bar(len(jobs), args.quiet)
    for source, targets in jobs:
        started = time.perf_counter()
        try:
            result = converter.convert(source, depth=args.depth, options=options)
            write_outputs(result, targets, settings)
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
                _say(progress, _summary(source, targets, result, time.perf_counter() - started))
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()
    return EXIT_FAILED if failures else 0


def plan_outputs(inputs: list[Path], output: str | None, mesh: bool = False,
                 kinds: list[str] | None = None) -> list[tuple[Path, dict[str, Path]]]:
    """(input, {kind: output file}) per input, the .json sidecar included.

    Without ``kinds``: one input's OUTPUT is a file whose suffix picks the format (or an existing folder); several
    inputs need a folder; the default is a .ply next to each input. With ``kinds``: OUTPUT is the base name (its
    suffix, if a known one, is dropped) or a folder, and each kind is written as base + its suffix.
    """
    if mesh and kinds:
        raise ValueError("--mesh goes with a single .ply output; with --format, ask for mesh_ply")
    target = Path(output) if output is not None else None
    # A folder: one that exists, or a name ending in "/". With --format, any other name is the base name.
    folder = target is not None and (target.is_dir() or output.endswith(("/", os.sep)))
    if target is not None and len(inputs) == 1 and not folder and (target.suffix or kinds):
        if kinds:
            stem = target.name[:-len(_matched(target, kind_for_path(target)))] if _known_suffix(target) else target.name
            return [(inputs[0], _targets(target.with_name(stem), kinds))]
        kind = kind_for_path(target)
        if mesh and kind.name != "ply":
            raise ValueError("--mesh is for .ply output; .glb, .obj and .stl are always meshes")
        return [(inputs[0], _targets(target.with_name(target.name[:-len(_matched(target, kind))]),
                                     ["mesh_ply" if mesh else kind.name], {kind.name: target, "mesh_ply": target}))]
    if target is None:
        return [(path, _targets(path.with_suffix(""), kinds or ["mesh_ply" if mesh else "ply"],
                                {"mesh_ply": path.with_suffix(".ply")})) for path in inputs]
    if target.exists() and not target.is_dir():
        raise ValueError(f"for several inputs the output must be a folder: {output}")
    target.mkdir(parents=True, exist_ok=True)
    pairs, taken = [], set()
    for path in inputs:
        stem, counter = path.stem, 1
        while stem in taken:  # photos from different folders often share a name
            stem, counter = f"{path.stem}-{counter}", counter + 1
        taken.add(stem)
        pairs.append((path, _targets(target / stem, kinds or ["mesh_ply" if mesh else "ply"],
                                     {"mesh_ply": target / f"{stem}.ply"})))
    return pairs


def _targets(base: Path, kinds: list[str], fixed: dict[str, Path] | None = None) -> dict[str, Path]:
    """Each kind as ``base`` + its suffix (or as ``fixed`` says), then the sidecar ``base.json``."""
    targets = {name: (fixed or {}).get(name) or base.with_name(base.name + OUTPUTS[name].suffix) for name in kinds}
    targets.setdefault("json", base.with_name(base.name + ".json"))
    return targets


def _known_suffix(path: Path) -> bool:
    try:
        kind_for_path(path)
    except ConversionError:
        return False
    return True


def _matched(path: Path, kind) -> str:
    """The suffix of ``kind`` that ``path`` ends with (``.zip`` or ``.obj``, …)."""
    return max((suffix for suffix in kind.suffixes if path.name.lower().endswith(suffix)), key=len)


def _program_name() -> str:
    """``image-to-3d`` when run as the installed command, else how it was started."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name and name != "__main__.py" else "python -m converter"


def _summary(source: Path, targets: dict[str, Path], result, seconds: float) -> str:
    k = result.intrinsics
    files = ", ".join(str(path) for name, path in targets.items() if name != "json")
    aligned = ""
    if result.alignment is not None:
        fit = result.alignment.fit
        aligned = (f", aligned to {result.alignment.reference.source} ({fit.inlier_share:.0%} inliers, "
                   f"residual {fit.residual_percent:.1f} %)")
    return (f"{source} -> {files}: {len(result.points):,} points, {result.units}, "
            f"fov {k.fov_x_deg:.1f} deg ({k.source}){aligned}, {seconds:.2f} s")


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
