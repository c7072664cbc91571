"""Peak memory of conversions, measured against converter.memory's estimates (run by hand: ``make bench-memory`` or
``.venv/bin/python bench/memory.py [--quick] [--models] [--json FILE]``).

Every case runs in a fresh subprocess. The process loads a model, converts a 64 × 64 picture once (libraries,
allocator arenas and the forward's buffers are then in place), and resets its peak-RSS counter (``5`` into
``/proc/self/clear_refs``); the case's job then runs — decode the upload's bytes, the model, the geometry, the
files — and its *working* memory is the peak RSS (``VmHWM``) over that job less the RSS before it. That is what
``converter.memory.estimate_job_mb`` predicts; the ratio measured / estimate must stay ≤ 1.25 on every case.

``--models``: the *resident* model instead — each real configuration (random weights, ``bench/models.py``) behind
each engine, peak RSS of a process that loaded it and converted one 1 MP photo — against
``converter.memory.resident_model_mb``.

The job's picture is a 1-bit PNG (a few kB for 49 MP, like the issue's batch): its decoded image costs what any
picture of that size costs. Cleaning is off, so every pixel becomes a point: the most points, the most memory.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

WEB_JOB = "web"  # the files a web job writes before it is done (web.conversion.FIRST_KINDS + its kept state)


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``), MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Start the peak-RSS counter (VmHWM) again from the current RSS (Linux 4.0 and later)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def gradient_png(width: int, height: int, rgb: bool = False) -> bytes:
    """A 1-bit PNG of a dithered gradient, ``width`` × ``height``: a few kB however large (like the issue's batch);
    ``rgb``: a colour gradient instead (decoded at 4 bytes a pixel by Pillow, where a 1-bit one takes 1)."""
    from PIL import Image

    grey = Image.linear_gradient("L").resize((width, height))
    picture = Image.merge("RGB", (grey, grey.transpose(Image.Transpose.ROTATE_180), grey)) if rgb else \
        grey.convert("1")
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def job_worker(args) -> dict:
    """One case: the job's working memory (peak over the job less the RSS before it), MB."""
    import gc

    from converter import ConversionOptions, Converter, load_image, write_outputs
    from converter.memory import estimate_job_mb
    from converter.service_api import DETAIL_LEVELS

    model = Converter(model=args.model_folder, device="cpu", engine=args.engine, max_pixels=60_000_000)
    model.convert(gradient_png(64, 64), options=ConversionOptions())
    data = gradient_png(args.width, args.height, rgb=args.picture == "rgb")
    # Cleaning off: every pixel becomes a point (the random model's depth has edges everywhere), the worst case.
    options = ConversionOptions(max_points=DETAIL_LEVELS[args.detail], normals=args.normals,
                                mode=args.mode, clean=False)
    kinds = args.kinds.split(",")
    web = WEB_JOB in kinds
    names = ["ply", "json", "input", "depth_preview"] + [kind for kind in kinds if kind != WEB_JOB] if web else kinds
    mode = "RGB" if args.picture == "rgb" else "1"
    estimate = estimate_job_mb(args.width, args.height, options, names, state=web, file_mode=mode)
    gc.collect()
    with tempfile.TemporaryDirectory(dir=args.scratch) as folder:
        before = rss_mb()
        reset_peak()
        started = time.perf_counter()
        image = load_image(data, model.max_pixels, draft_points=options.max_points)
        result = model.convert(image, options=options)
        if web:
            result.save_state(folder)
        write_outputs(result, folder, kinds=names)
        seconds = time.perf_counter() - started
        peak = rss_mb("VmHWM")
    return {"width": args.width, "height": args.height, "megapixels": round(args.width * args.height / 1e6, 2),
            "detail": args.detail, "mode": args.mode, "normals": args.normals, "kinds": args.kinds,
            "picture": args.picture,
            "points": int(len(result.points)), "before_mb": round(before, 1), "peak_mb": round(peak, 1),
            "working_mb": round(peak - before, 1), "estimate_mb": round(estimate, 1),
            "ratio": round((peak - before) / estimate, 3), "seconds": round(seconds, 1)}


def model_worker(args) -> dict:
    """The resident model: peak RSS of a process that loaded it and converted a 1 MP picture twice, then a 12 MP one
    at the default detail (the bench photo's size), MB."""
    from converter import Converter
    from converter.memory import resident_model_mb

    started = rss_mb()
    model = Converter(model=args.model_folder, device="cpu", engine=args.engine).load()
    loaded = rss_mb()
    for _ in range(2):  # the second conversion shows memory the first left held
        model.convert(gradient_png(1152, 864, rgb=True))
    one_mp = rss_mb("VmHWM")
    model.convert(gradient_png(4000, 3000, rgb=True))
    depth_model = model.depth_model
    return {"model": args.name, "engine": depth_model.engine, "start_mb": round(started, 1),
            "loaded_mb": round(loaded, 1), "peak_1mp_mb": round(one_mp, 1), "peak_12mp_mb": round(rss_mb("VmHWM"), 1),
            "after_mb": round(rss_mb(), 1), "after_anonymous_mb": round(rss_mb("RssAnon"), 1),
            "after_file_mb": round(rss_mb("RssFile"), 1),  # clean file pages (mapped weights): reclaimable
            "estimate_mb": round(resident_model_mb(args.name, args.engine), 1),
            "torch_module_held": getattr(depth_model, "model", None) is not None}


def run_case(extra: list[str], timeout: float = 1800) -> dict:
    """One worker in a fresh process; its JSON line."""
    command = [sys.executable, __file__, "--worker", *extra]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(extra)} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


# (width, height, detail, kinds, mode, normals): 1 to 49 MP at every detail level for the web job; each output
# kind at a size whose run takes seconds; normals and relief mode once.
SIZES = {1: (1152, 864), 4: (2304, 1728), 12: (4000, 3000), 24: (5656, 4242), 49: (8083, 6062)}
DOWNLOAD_KINDS = ("ply", "glb", "obj", "mesh_ply", "stl", "simplified_glb", "usdz", "sbs", "anaglyph", "mp4", "pcd",
                  "las", "splat_ply", "depth_png", "depth_npy", "json")


def matrix(quick: bool) -> list[tuple]:
    cases = []
    sizes = (1, 4) if quick else tuple(SIZES)
    for megapixels in sizes:
        for detail in ("low", "medium", "high", "full"):
            cases.append((*SIZES[megapixels], detail, WEB_JOB, "perspective", False))
    kind_sizes = ((1, "full"),) if quick else ((4, "full"), (12, "medium"))
    for megapixels, detail in kind_sizes:
        for kind in DOWNLOAD_KINDS:
            cases.append((*SIZES[megapixels], detail, kind, "perspective", False))
    cases.append((*SIZES[4], "full", "ply", "perspective", True))
    cases.append((*SIZES[4], "full", "ply,stl,glb", "relief", False))
    return cases


def colour_cases(quick: bool) -> list[tuple]:
    """Colour pictures: decoded at 4 bytes a pixel before they are reduced to the working size."""
    return [(*SIZES[4 if quick else 24], detail, WEB_JOB, "perspective", False) for detail in ("low", "full")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 and 4 MP only")
    parser.add_argument("--models", action="store_true", help="the resident models instead of the jobs")
    parser.add_argument("--model-names", default="dpt-hybrid,depth-anything-v2-small",
                        help="--models: which (bench/models.py names)")
    parser.add_argument("--only", action="append",
                        help="a case: WIDTHxHEIGHT:DETAIL:KINDS[:MODE[:PICTURE[:normals]]] (e.g. 8083x6062:full:web); "
                             "again for more")
    parser.add_argument("--engine", default="torch", help="the jobs' engine (their model is the tiny DPT-Hybrid)")
    parser.add_argument("--json", type=Path, help="also write every row to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--what", default="job", help=argparse.SUPPRESS)
    parser.add_argument("--model-folder", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--height", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--detail", default="full", help=argparse.SUPPRESS)
    parser.add_argument("--kinds", default=WEB_JOB, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="perspective", help=argparse.SUPPRESS)
    parser.add_argument("--normals", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--picture", default="1-bit", help=argparse.SUPPRESS)
    parser.add_argument("--rescore", type=Path, help="recompute the estimates of rows saved by --json (no run)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(model_worker(args) if args.what == "model" else job_worker(args)), flush=True)
        return 0

    if args.rescore:
        rows = [rescored(row) for row in json.loads(args.rescore.read_text())]
        summarise(rows, table=True)
        return 0
    print(f"# {platform.processor() or platform.machine()}, {cpu_model()}, {datetime.date.today()}", flush=True)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    if args.models:
        import models as bench_models

        os.environ["OPENVINO_CACHE"] = str(work / "openvino")  # the first start converts, the second reads it back
        for name in args.model_names.split(","):
            folder, _ = bench_models.build(name, ROOT / "bench" / "out" / "models")
            for engine, start in (("torch", "any"), ("openvino", "first"), ("openvino", "second")):
                row = run_case(["--what", "model", "--model-folder", str(folder), "--name", name,
                                "--engine", engine])
                rows.append({**row, "start": start})
                print(json.dumps(rows[-1]), flush=True)
    else:
        import model_factory

        folder = model_factory.dpt_hybrid(work / "dpt-hybrid")
        cases = [(*case, "1-bit") for case in matrix(args.quick)] + \
            [(*case, "rgb") for case in colour_cases(args.quick)]
        if args.only:
            cases = []
            for only in args.only:
                size, detail, kinds, *rest = only.split(":")
                width, height = (int(side) for side in size.split("x"))
                mode = rest[0] if rest else "perspective"
                cases.append((width, height, detail, kinds, mode, "normals" in rest[2:],
                              rest[1] if len(rest) > 1 else "1-bit"))
        for width, height, detail, kinds, mode, normals, picture in cases:
            extra = ["--model-folder", str(folder), "--engine", args.engine, "--width", str(width),
                     "--height", str(height), "--detail", detail, "--kinds", kinds, "--mode", mode,
                     "--scratch", str(work), "--picture", picture] + (["--normals"] if normals else [])
            row = run_case(extra)
            rows.append(row)
            print(json.dumps(row), flush=True)
        summarise(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def rescored(row: dict) -> dict:
    """A saved row with its estimate made again by today's converter.memory (the measurement stays)."""
    from converter import ConversionOptions
    from converter.memory import estimate_job_mb
    from converter.service_api import DETAIL_LEVELS

    options = ConversionOptions(max_points=DETAIL_LEVELS[row["detail"]], normals=row["normals"],
                                mode=row["mode"], clean=False)
    kinds = row["kinds"].split(",")
    web = WEB_JOB in kinds
    names = ["ply", "json", "input", "depth_preview"] + [kind for kind in kinds if kind != WEB_JOB] if web else kinds
    mode = "RGB" if row.get("picture") == "rgb" else "1"
    estimate = estimate_job_mb(row["width"], row["height"], options, names, state=web, file_mode=mode)
    return {**row, "estimate_mb": round(estimate, 1), "ratio": round(row["working_mb"] / estimate, 3)}


def summarise(rows: list[dict], table: bool = False) -> None:
    """The ratio range (and with ``table``, the rows as a Markdown table for bench/RESULTS.md)."""
    if table:
        print("| picture | MP | detail | kinds | points | measured MB | estimate MB | measured / estimate |")
        print("| --- | ---: | --- | --- | ---: | ---: | ---: | ---: |")
        for row in rows:
            kinds = row["kinds"] + (" (relief)" if row["mode"] == "relief" else "") + \
                (" + normals" if row["normals"] else "")
            print(f"| {row.get('picture', '1-bit')} | {row['megapixels']:g} | {row['detail']} | {kinds} | "
                  f"{row['points']:,} | {row['working_mb']:,.0f} | {row['estimate_mb']:,.0f} | {row['ratio']:.2f} |")
    ratios = [row["ratio"] for row in rows]
    print(f"# measured / estimate: {min(ratios):.2f} to {max(ratios):.2f} over {len(rows)} cases", flush=True)


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
