"""Video benchmark (issue 22): stabilisation figures, frames per second of the library against the bare forward, and
peak memory for a short and a long clip. Run by hand, never part of `make test`; every figure of one run comes from
this machine (the CPU model is printed with them).

    .venv/bin/python bench/video.py                       # everything (minutes on a 2-core CPU)
    .venv/bin/python bench/video.py --stability           # seconds
    .venv/bin/python bench/video.py --speed --frames 24 --engines torch,openvino --model dpt-swinv2-tiny
    .venv/bin/python bench/video.py --memory              # peak RSS, 10 s vs 60 s clip, each in a fresh process
    .venv/bin/python bench/video.py --speed --web         # and the same clip through the web app (real gunicorn)

Stability: a synthetic truck shot (tests/video_scenes.py: a textured scene, depth known) whose per-frame disparity
carries a random scale (±30 %), shift, 3 % noise and a wrong block in a few frames, fed to the library's stabiliser
(converter/video/stabilise.py), to the same with stabilisation off (each frame normalised alone), and to an iw3-style
min/max EMA implemented here for comparison only: each frame normalised by exponentially weighted (0.75 per frame)
means of the per-frame minima and maxima over a 30-frame look-ahead starting at the frame, never across a cut.
Figures: std(log s_t) of the per-frame scale against the truth, and Video Depth Anything's TAE (x 100).

Speed: a 1280 x 720, 24 fps clip (rendered once into bench/out/). "Bare forward" is the back-end's prepare + forward on
frames already in memory; "library" is Converter.convert_video on the file (decode, depth, stabilisation, rendering,
encoding) for the same frames. Models have the published configurations and random weights (bench/models.py).

Memory: peak resident memory (VmHWM) of a fresh process converting a 10 s and a 60 s clip (640 x 360 by default,
--memory-size; tiny random model of tests/model_factory.py, depth video output), so the figure is the pipeline's, not
a large model's, and the run takes minutes, not an hour, on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

import video_scenes as scenes  # noqa: E402

EMA_DECAY, EMA_LOOK_AHEAD = 0.75, 30


# ------------------------------------------------------------------------------------------------------ stability

def ema_baseline(disparities, shots) -> list[np.ndarray]:
    """iw3-style: (d − m_t) / (M_t − m_t) + 1 with m_t, M_t exponentially weighted means of the per-frame minima and
    maxima over the look-ahead (frame t weighted most), within the shot."""
    lows = [float(np.nanmin(d)) for d in disparities]
    highs = [float(np.nanmax(d)) for d in disparities]
    out = []
    for t, d in enumerate(disparities):
        window = [k for k in range(t, min(t + EMA_LOOK_AHEAD, len(disparities))) if shots[k] == shots[t]]
        weights = np.array([EMA_DECAY ** (k - t) for k in window])
        low = float(np.dot(weights, [lows[k] for k in window]) / weights.sum())
        high = float(np.dot(weights, [highs[k] for k in window]) / weights.sum())
        out.append(((d - low) / max(high - low, 1e-9) + 1.0).astype(np.float32))
    return out


def stability(width=160, height=120, count=48, seed=0) -> dict:
    from converter.video.stabilise import Stabiliser

    frames, depths, cameras = scenes.clip(width, height, count)
    outliers = (3, 7, 20, 33)
    disparities, _, masks = scenes.perturbed_disparity(depths, seed=seed, outlier_frames=outliers)

    def run(enabled):
        stabiliser = Stabiliser(False, enabled)
        return [stabiliser(i, i / 24, d, rgb)[0] for i, (rgb, d) in enumerate(zip(frames, disparities))]

    started = time.perf_counter()
    stabilised = run(True)
    seconds = time.perf_counter() - started
    variants = {"input": disparities, "stabilised": stabilised, "unstabilised (each frame alone)": run(False),
                "iw3-style min/max EMA": ema_baseline(disparities, [0] * count)}
    rows = {name: {"std_log_scale": scenes.scale_spread(v, depths, masks), "tae": scenes.tae(v, depths, cameras, masks)}
            for name, v in variants.items()}
    return {"clip": f"{width}x{height}, {count} frames, wrong block in frames {list(outliers)}", "rows": rows,
            "stabiliser_ms_per_frame": 1000 * seconds / count}


# ------------------------------------------------------------------------------------------------------ clips

def make_clip(seconds: float, width=1280, height=720, fps=24, unique=24) -> Path:
    """A truck shot of ``unique`` rendered frames played back and forth for ``seconds`` (cached in bench/out)."""
    path = OUT / "clips" / f"truck_{width}x{height}_{seconds:g}s.mp4"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [scenes.render(width, height, camera)[0] for camera in scenes.camera_path(unique, step=0.01)]
    order = [*range(unique), *range(unique - 2, 0, -1)]
    count = round(seconds * fps)
    import av

    partial = path.with_suffix(".part.mp4")
    with av.open(str(partial), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for index in range(count):
            frame = av.VideoFrame.from_ndarray(frames[order[index % len(order)]], format="rgb24")
            frame.pts = index
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    partial.rename(path)
    return path


# ------------------------------------------------------------------------------------------------------ speed

def speed_worker(args) -> dict:
    """In a fresh process: bare forward fps and library fps for one engine and output set."""
    import torch

    from converter import Converter
    from converter.video import VideoOptions
    from converter.video.decode import decode, probe
    from converter.video.limits import VideoLimits

    torch.set_num_threads(args.threads)
    clip = Path(args.clip)
    converter = Converter(model=args.model_folder, device=args.device, engine=args.engine)
    backend = converter.depth_model
    options = VideoOptions(max_frames=args.frames)
    frames = [frame.rgb for frame in decode(probe(clip, VideoLimits(), options), options, VideoLimits())]
    backend.forward(backend.prepare(frames[0]))  # warm-up
    started = time.perf_counter()
    for rgb in frames:
        backend.forward(backend.prepare(rgb))
    if str(backend.device).startswith("cuda"):
        torch.cuda.synchronize()
    bare = len(frames) / (time.perf_counter() - started)
    rows = {}
    for outputs in args.outputs.split(";"):
        kinds = outputs.split(",")
        targets = {kind: OUT / "video" / f"speed.{kind}{_suffix(kind)}" for kind in kinds}
        targets[kinds[0]].parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        result = converter.convert_video(clip, targets, options=options)
        seconds = time.perf_counter() - started
        rows[outputs] = {"fps": result.frames / seconds, "ratio_to_bare": result.frames / seconds / bare}
    return {"engine": backend.describe(), "frames": len(frames), "bare_forward_fps": bare, "library": rows}


def _suffix(kind: str) -> str:
    from converter.video import VIDEO_OUTPUTS

    return VIDEO_OUTPUTS[kind].suffix


def web_speed(clip: Path, engine: str, model_folder: Path, frames: int, outputs: str, threads: int) -> dict:
    """Frames per second of a video job through the web app: real gunicorn (one worker, embedded back-end, as `make
    run` starts it) from the POST of the clip to its job being done (upload, probe, queue, conversion, files)."""
    import tempfile
    import urllib.request
    import uuid

    from bench import serve, wait_for_job

    body = clip.read_bytes()
    fields = {"max_frames": str(frames), "video_formats": outputs.replace(";", ",")}
    boundary = uuid.uuid4().hex
    payload = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n".encode()
                       for name, value in fields.items())
    payload += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"clip.mp4\"\r\n"
                f"Content-Type: video/mp4\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    with tempfile.TemporaryDirectory(prefix="bench-video-web-") as folder, \
            serve(model_folder, folder, workers=1, threads=4, ENGINE=engine, TORCH_THREADS=str(threads)) as server:
        request = urllib.request.Request(server.url + "/api/v1/conversions", data=payload, method="POST", headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}", "Accept": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=600) as response:
            created = json.loads(response.read())
        view = wait_for_job(server.url, created["status_url"], interval=0.2)
        seconds = time.perf_counter() - started
    return {"frames": view["info"]["frames"], "seconds": seconds, "fps": view["info"]["frames"] / seconds,
            "engine": view["info"]["engine"]}


# ------------------------------------------------------------------------------------------------------ memory

def memory_worker(args) -> dict:
    from converter import Converter

    folder = OUT / "video" / "tiny"
    if not (folder / "dpt-hybrid").exists():
        import model_factory

        model_factory.build_all(folder)
    converter = Converter(model=str(folder / "dpt-hybrid"), device="cpu", engine="torch")
    target = OUT / "video" / f"memory_{Path(args.clip).stem}.depth.mp4"
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = converter.convert_video(args.clip, {"depth_video": target})
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    return {"frames": result.frames, "seconds": time.perf_counter() - started, "peak_rss_mb": peak}


def _fresh(kind: str, **settings) -> dict:
    command = [sys.executable, __file__, "--worker", kind] + [f"--{k.replace('_', '-')}={v}" for k, v in
                                                                 settings.items()]
    text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(text.strip().splitlines()[-1])


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(["lscpu"], capture_output=True,
                  text=True).stdout.splitlines() if line.startswith("Model name")), "unknown CPU")
    return f"{model}, {os.cpu_count()} CPUs"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stability", action="store_true")
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--web", action="store_true", help="speed: also through the web app (gunicorn), per engine")
    parser.add_argument("--engines", default="torch,openvino")
    parser.add_argument("--model", default="dpt-swinv2-tiny", help="a bench/models.py name (real config, random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="speed: the clip's length")
    parser.add_argument("--frames", type=int, default=48, help="speed: frames timed (of the clip)")
    parser.add_argument("--outputs", default="depth_video;sbs_full",
                        help="speed: output sets timed, ';' between sets, ',' within one")
    parser.add_argument("--long-seconds", type=float, default=60.0, help="memory: the long clip")
    parser.add_argument("--memory-size", default="640x360", help="memory: the clips' frame size (WxH)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--model-folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(speed_worker(args) if args.worker == "speed" else memory_worker(args)))
        return 0
    everything = not (args.stability or args.speed or args.memory)
    figures = {"machine": machine()}
    print(f"machine: {figures['machine']}")
    if args.stability or everything:
        figures["stability"] = result = stability()
        print(f"\nstability ({result['clip']}; stabiliser {result['stabiliser_ms_per_frame']:.1f} ms/frame)")
        base = result["rows"]["input"]
        for name, row in result["rows"].items():
            print(f"  {name:34s} std(log s) {row['std_log_scale']:.4f} ({row['std_log_scale'] / base['std_log_scale']:.3f}"
                  f" of input)   TAE {row['tae']:.2f} ({row['tae'] / base['tae']:.3f} of input)")
    if args.speed or everything:
        import models

        folder, _ = models.build(args.model, OUT / "models")
        clip = make_clip(args.seconds)
        figures["speed"] = {}
        print(f"\nspeed ({args.model}, {args.frames} frames of a {args.seconds:g} s 1280x720 24 fps clip, "
              f"{args.threads} threads)")
        for engine in args.engines.split(","):
            row = _fresh("speed", clip=clip, engine=engine, model_folder=folder, frames=args.frames,
                         outputs=args.outputs, device=args.device, threads=args.threads)
            figures["speed"][engine] = row
            for outputs, library in row["library"].items():
                print(f"  {engine:9s} bare forward {row['bare_forward_fps']:.2f} fps; library [{outputs}] "
                      f"{library['fps']:.2f} fps = {library['ratio_to_bare']:.2f} x bare")
            if args.web:
                first = args.outputs.split(";")[0]
                row["web"] = web = web_speed(clip, engine, folder, args.frames, first, args.threads)
                library = row["library"][first]["fps"]
                print(f"  {web['engine']['engine']:9s} web [{first}] {web['fps']:.2f} fps ({web['frames']} frames in "
                      f"{web['seconds']:.1f} s, upload to done) = {web['fps'] / library:.2f} x library")
    if args.memory or everything:
        figures["memory"] = {}
        print(f"\nmemory (fresh process each, tiny model, depth video output, {args.memory_size})")
        width, height = (int(side) for side in args.memory_size.split("x"))
        for seconds in (10.0, args.long_seconds):
            row = _fresh("memory", clip=make_clip(seconds, width, height))
            figures["memory"][f"{seconds:g}s"] = row
            print(f"  {seconds:4g} s clip: {row['frames']} frames, peak RSS {row['peak_rss_mb']:.0f} MB "
                  f"({row['seconds']:.0f} s)")
        short, long = figures["memory"]["10s"], figures["memory"][f"{args.long_seconds:g}s"]
        print(f"  long / short peak RSS: {long['peak_rss_mb'] / short['peak_rss_mb']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
