"""The command line's video half: ``python -m converter clip.mp4 -o clip_LRF_Full_SBS.mp4``.

``converter/__main__.py`` sends an input here when its content is a video (:func:`converter.video.is_video_file`);
the outputs are named by their endings or by ``--format`` as for images, with a progress bar (frames, frames per
second, time left) on a terminal.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConversionError, ModelUnavailableError
from ..pipeline import Converter
from .kinds import VIDEO_OUTPUTS, parse_video_kinds, video_kind_for_path
from .options import DEFAULT_MAX_FPS, VideoOptions

EXIT_FAILED, EXIT_USAGE, EXIT_MODEL = 1, 2, 3


def add_arguments(parser) -> None:
    """The video options of ``python -m converter``."""
    group = parser.add_argument_group("video (an input whose content is a video; outputs: "
                                      + ", ".join(kind.suffix for kind in VIDEO_OUTPUTS.values()) + ")")
    group.add_argument("--max-fps", type=float, default=DEFAULT_MAX_FPS,
                       help="keep at most this many frames a second (0: all; default %(default)s)")
    group.add_argument("--start", type=float, default=0.0, metavar="SECONDS", help="convert from this time")
    group.add_argument("--end", type=float, metavar="SECONDS", help="convert up to this time")
    group.add_argument("--max-frames", type=int, metavar="N", help="convert at most N frames")
    group.add_argument("--no-stabilise", dest="stabilise", action="store_false",
                       help="each frame's depth on its own (no fit to the shot's reference)")


def main(args) -> int:
    """Convert one video as ``args`` say; the exit status."""
    if len(args.inputs) != 1:
        print("error: convert one video at a time", file=sys.stderr)
        return EXIT_USAGE
    source = Path(args.inputs[0])
    try:
        options = VideoOptions(max_fps=args.max_fps, start=args.start, end=args.end, max_frames=args.max_frames,
                               stabilise=args.stabilise, fov_deg=args.fov, focal_px=args.focal_px,
                               relief=args.relief, depth_kind=args.depth_kind)
        targets = plan_outputs(source, args.output, args.format)
    except ConversionError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    converter = Converter(model=args.model, device=args.device, precision=args.precision, engine=args.engine)
    bar = _bar(args.quiet)
    try:
        result = converter.convert_video(source, targets, depth=args.depth, options=options,
                                         progress=bar.update if bar else None)
    except KeyboardInterrupt:
        _close(bar)
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # one line, no traceback (unforeseen failures: unless --debug)
        _close(bar)
        if isinstance(error, ModelUnavailableError):
            print(f"error: {error}", file=sys.stderr)
            return EXIT_MODEL
        if not isinstance(error, ConversionError):
            if args.debug:
                raise
            error = f"unexpected failure ({type(error).__name__}); run with --debug for details"
        print(f"error: {source}: {error}", file=sys.stderr)
        return EXIT_FAILED
    _close(bar)
    if not args.quiet:
        info = result.metadata()
        files = ", ".join(str(path) for kind, path in targets.items() if kind != "json")
        print(f"{source} -> {files}: {info['frames']} frames, {info['fps']:.3g} fps, {info['units']}, "
              f"{info['stabilisation']['shots']} shot(s), {info['timings_s']['total']:.1f} s")
    return 0


def plan_outputs(source: Path, output: str | None, formats: str | None) -> dict[str, Path]:
    """{kind: path} (with the .json sidecar): ``-o`` names one output by its ending; with ``--format``, ``-o`` is the
    base name (default: the input's, beside it); without either, a full side-by-side video beside the input."""
    if formats:
        kinds = parse_video_kinds(formats)
        base = Path(output) if output else source.with_suffix("")
        if base.is_dir() or (output or "").endswith("/"):
            base = base / source.stem
        else:
            for kind in VIDEO_OUTPUTS.values():  # a known ending on the base is dropped
                if base.name.lower().endswith(kind.suffix.lower()):
                    base = base.with_name(base.name[:-len(kind.suffix)])
                    break
    elif output:
        kind = video_kind_for_path(output)
        base = Path(output[:-len(kind.suffix)])
        kinds = [kind.name]
    else:
        base, kinds = source.with_suffix(""), ["sbs_full"]
    targets = {name: base.with_name(base.name + VIDEO_OUTPUTS[name].suffix) for name in kinds}
    if not formats and output:
        targets = {kinds[0]: Path(output)}
    targets.setdefault("json", base.with_name(base.name + ".json"))
    return targets


class _Bar:
    """A tqdm bar fed by VideoProgress."""

    def __init__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit="frame", file=sys.stderr, dynamic_ncols=True)

    def update(self, progress) -> None:
        if progress.expected and self.bar.total != max(progress.expected, progress.frames):
            self.bar.total = max(progress.expected, progress.frames)
        self.bar.update(progress.frames - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _bar(quiet: bool):
    return None if quiet or not sys.stderr.isatty() else _Bar()


def _close(bar) -> None:
    if bar is not None:
        bar.close()
