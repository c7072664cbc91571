"""Video benchmark (issue 22): stabilisation figures, frames per second of the library against the bare forward, and
peak memory for a short and a long clip. Run by hand, never part of `make test`; every figure of one run comes from
this machine (the CPU model is printed with them).

    .venv/bin/python bench/video.py                       # everything (minutes on a 2-core CPU)
    .venv/bin/python bench/video.py --stability           # seconds
    .venv/bin/python bench/video.py --speed --frames 24 --engines torch,openvino --model dpt-swinv2-tiny
    .venv/bin/python bench/video.py --memory              # peak RSS, 10 s vs 60 s clip, each in a fresh process
    .venv/bin/python bench/video.py --speed --web         # and the same clip through the web app (real gunicorn)
    .venv/bin/python bench/video.py --celery              # one Celery worker against two on a chunked clip

Stability: a synthetic truck shot (tests/video_scenes.py: a textured scene, depth known) whose per-frame disparity
carries a random scale (±30 %), shift, 3 % noise and a wrong block in a few frames, fed to the library's stabiliser
(converter/video/stabilise.py), to the same with stabilisation off (each frame normalised alone), and to an iw3-style
min/max EMA implemented here for comparison only: each frame normalised by exponentially weighted (0.75 per frame)
means of the per-frame minima and maxima over a 30-frame look-ahead starting at the frame, never across a cut.
Figures: std(log s_t) of the per-frame scale against the truth, and Video Depth Anything's TAE (x 100).

Speed: a 1280 x 720, 24 fps clip (rendered once into bench/out/). "Bare forward" is the back-end's prepare + forward on
frames already in memory; "library" is Converter.convert_video on the file (decode, depth, stabilisation, rendering,
encoding) for the same frames, each library run timed against the mean of the bare forwards just before and after it
(--rounds N: N runs of each output set, the median ratio). Models have the published configurations and random
weights (bench/models.py).

Memory: peak resident memory (VmHWM) of a fresh process converting a 10 s and a 60 s clip (640 x 360 by default,
--memory-size; tiny random model of tests/model_factory.py, depth video output), so the figure is the pipeline's, not
a large model's, and the run takes minutes, not an hour, on 2 cores.

Celery (issue 22 point 5): the same clip as a web job through a real redis-server and real Celery workers (``celery
-A web.jobs.celery.worker worker --concurrency 1``, TORCH_THREADS=1 each, torch engine), from the POST to "done":
one worker streaming the clip (VIDEO_CHUNK_WORKERS=1: the best one worker does, no overlap predicted twice) against
two workers sharing its chunks (VIDEO_CHUNK_FRAMES/--chunk-frames, overlap 4; the job's worker joins and writes the
outputs). Default model: DPT-Hybrid's published configuration with random weights (a forward costs what the real
one does); the clip is --celery-frames frames of the 640 x 360 truck shot, depth video output. Goal: two workers
>= 1.7 x one. Each worker needs a core: on a 2-core machine anything else running costs the two-worker run most, so
each run also reports its workers' CPU seconds during the job (/proc, the pool children the workers publish): the
busiest worker's bound the wall time where each has a free core, and one worker's over it is the speed-up a quiet
machine approaches.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
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

    def bare_fps() -> float:
        started = time.perf_counter()
        for rgb in frames:
            backend.forward(backend.prepare(rgb))
        if str(backend.device).startswith("cuda"):
            torch.cuda.synchronize()
        return len(frames) / (time.perf_counter() - started)

    # bare, library, bare, library, ...: each library run against the mean of the bare forwards just before and
    # after it (this host's speed drifts by a fifth within minutes; one bare run before all cannot tell 5 %)
    bares = [bare_fps()]
    runs: dict[str, list] = {outputs: [] for outputs in args.outputs.split(";")}
    for _ in range(args.rounds):
        for outputs in runs:
            kinds = outputs.split(",")
            targets = {kind: OUT / "video" / f"speed.{kind}{_suffix(kind)}" for kind in kinds}
            targets[kinds[0]].parent.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            result = converter.convert_video(clip, targets, options=options)
            fps = result.frames / (time.perf_counter() - started)
            bares.append(bare_fps())
            runs[outputs].append((fps, fps / ((bares[-2] + bares[-1]) / 2)))
    rows = {outputs: {"fps": statistics.median(fps for fps, _ in done),
                      "ratio_to_bare": statistics.median(ratio for _, ratio in done),
                      "ratios": [round(ratio, 3) for _, ratio in done]} for outputs, done in runs.items()}
    return {"engine": backend.describe(), "frames": len(frames), "bare_forward_fps": statistics.median(bares),
            "bare_forward_fps_range": [min(bares), max(bares)], "library": rows}


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


# ------------------------------------------------------------------------------------------------------ celery

def celery_speed(args) -> dict:
    """Seconds from POST to done of one clip: one Celery worker (streaming) against two (chunks shared)."""
    import shutil
    import socket
    import tempfile

    import redis as redis_client

    import models

    model = args.celery_model
    folder = models.build(model, OUT / "models")[0] if model in models.BUILDERS else Path(model)
    fps = 24
    clip = make_clip(args.celery_frames / fps, 640, 360, fps)
    root = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    server = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(root)], stdout=subprocess.DEVNULL)
    rows = {}
    try:
        client = redis_client.Redis.from_url(url, decode_responses=True)
        _wait(lambda: _pings(client), 20, "redis-server did not start")
        runs = [("one worker, streaming (VIDEO_CHUNK_WORKERS=1)", 1, "1"),
                ("two workers, chunks shared", 2, "0")]
        if args.celery_one_chunked:
            runs.insert(1, ("one worker, chunked (VIDEO_CHUNK_WORKERS=0)", 1, "0"))
        for name, count, chunk_workers in runs:
            client.flushall()
            rows[name] = _celery_run(root / f"run{len(rows)}", url, client, folder, clip, count, chunk_workers, args)
            row = rows[name]
            print(f"  {name:48s} {row['seconds']:7.1f} s  ({row['frames']} frames, {row['frames'] / row['seconds']:.3f}"
                  f" fps, {row['chunks']} chunk(s) predicted by {row['workers'] or 1} worker(s); CPU s per worker "
                  f"{', '.join(f'{value:.1f}' for value in row['cpu_seconds'])})", flush=True)
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(root, ignore_errors=True)
    one, two = rows["one worker, streaming (VIDEO_CHUNK_WORKERS=1)"], rows["two workers, chunks shared"]
    # The busiest worker's CPU seconds bound the wall time on a machine with a free core per worker: the speed-up a
    # quiet machine approaches, whatever else shared this one.
    return {"model": model, "frames": args.celery_frames, "chunk_frames": args.chunk_frames, "runs": rows,
            "two_over_one": one["seconds"] / two["seconds"],
            "two_over_one_cpu": one["cpu_seconds"][0] / two["cpu_seconds"][0]}


def _celery_run(root: Path, url: str, client, model_folder: Path, clip: Path, count: int, chunk_workers: str,
                args) -> dict:
    """Start ``count`` workers, post the clip through a Celery-mode app, time it to done, stop the workers."""
    import io

    outputs = root / "outputs"
    outputs.mkdir(parents=True)
    env = dict(os.environ, REDIS_URL=url, OUTPUT_FOLDER=str(outputs), UPLOAD_FOLDER=str(root / "uploads"),
               DEPTH_MODEL=str(model_folder), HF_HUB_OFFLINE="1", ENGINE="torch", TORCH_THREADS="1",
               VIDEO_CHUNK_FRAMES=str(args.chunk_frames), VIDEO_CHUNK_OVERLAP="4", VIDEO_CHUNK_WORKERS=chunk_workers,
               PYTHONPATH=str(ROOT))
    workers = []
    try:
        for index in range(count):
            with open(root / f"worker{index}.log", "wb") as log:
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "web.jobs.celery.worker", "worker", "--concurrency", "1",
                     "--pool", "prefork", "--prefetch-multiplier", "1", "--without-gossip", "--without-mingle",
                     "--without-heartbeat", "-Q", "image-to-3d", "-n", f"bench{index}@%h", "--loglevel", "WARNING"],
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        _wait(lambda: _ready(client) >= count, 300, "the workers did not report ready")
        from app import create_app

        app = create_app({"TESTING": True, "JOB_BACKEND": "celery", "REDIS_URL": url, "OUTPUT_FOLDER": str(outputs),
                          "UPLOAD_FOLDER": str(root / "uploads"), "DEPTH_MODEL": str(model_folder),
                          "RATE_LIMIT": "", "MAX_QUEUED_JOBS": 4})
        web = app.test_client()
        pids = _worker_pids(client)
        cpu_before = {pid: _cpu_seconds(pid) for pid in pids}
        started = time.perf_counter()
        created = web.post("/api/v1/conversions", content_type="multipart/form-data",
                           data={"image": (io.BytesIO(clip.read_bytes()), clip.name), "video_formats": "depth_video",
                                 "max_frames": str(args.celery_frames)})
        assert created.status_code == 202, created.get_json()
        status_url = created.get_json()["status_url"]
        view = _wait(lambda: (lambda v: v if v["status"] in ("done", "failed", "cancelled") else None)(
            web.get(status_url).get_json()), 3600, "the job did not end", every=1.0)  # a look a second: the
        # web app runs in this process, on the cores the workers share
        seconds = time.perf_counter() - started
        cpu = sorted((_cpu_seconds(pid) - before for pid, before in cpu_before.items()), reverse=True)
        app.extensions["image_to_3d"].stop()
        assert view["status"] == "done", view
        info = web.get(status_url).get_json()["info"]
        chunks = info.get("chunks") or {}
        return {"seconds": seconds, "frames": info["frames"], "chunks": chunks.get("count", 1),
                "workers": len({name for name in chunks.get("predicted_by") or [] if name}), "cpu_seconds": cpu}
    finally:
        for process in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
        for process in workers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()


def _worker_pids(client) -> list[int]:
    """The pool children converting (each worker publishes its process's pid)."""
    keys = list(client.scan_iter("image-to-3d:worker:*"))
    return [json.loads(value)["pid"] for value in client.mget(keys) if value]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def _ready(client) -> int:
    keys = list(client.scan_iter("image-to-3d:worker:*"))
    return sum(json.loads(value).get("state") == "ready" for value in client.mget(keys) if value) if keys else 0


def _wait(condition, timeout: float, message: str, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(every)


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
    parser.add_argument("--celery", action="store_true", help="one Celery worker against two on a chunked clip")
    parser.add_argument("--celery-model", default="dpt-hybrid",
                        help="celery: a bench/models.py name (real config, random weights) or a model folder")
    parser.add_argument("--celery-frames", type=int, default=96, help="celery: the clip's frames")
    parser.add_argument("--chunk-frames", type=int, default=48, help="celery: VIDEO_CHUNK_FRAMES (the default: 48)")
    parser.add_argument("--celery-one-chunked", action="store_true",
                        help="celery: also time one worker predicting the chunks itself (the default setting)")
    parser.add_argument("--engines", default="torch,openvino")
    parser.add_argument("--model", default="dpt-swinv2-tiny", help="a bench/models.py name (real config, random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="speed: the clip's length")
    parser.add_argument("--frames", type=int, default=48, help="speed: frames timed (of the clip)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="speed: library runs of each output set (each timed against the bare forwards around it)")
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
    everything = not (args.stability or args.speed or args.memory or args.celery)
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
                         outputs=args.outputs, device=args.device, threads=args.threads, rounds=args.rounds)
            figures["speed"][engine] = row
            for outputs, library in row["library"].items():
                runs = f" (median of {', '.join(map(str, library['ratios']))})" if len(library["ratios"]) > 1 else ""
                print(f"  {engine:9s} bare forward {row['bare_forward_fps']:.2f} fps; library [{outputs}] "
                      f"{library['fps']:.2f} fps = {library['ratio_to_bare']:.2f} x the bare forwards around it{runs}")
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
    if args.celery:
        print(f"\ncelery ({args.celery_model}, {args.celery_frames} frames of the 640x360 truck shot, chunks of "
              f"{args.chunk_frames} + 4 overlap, TORCH_THREADS=1 per worker, POST to done)", flush=True)
        figures["celery"] = result = celery_speed(args)
        print(f"  two workers / one: {result['two_over_one']:.2f} x wall time (goal >= 1.7); "
              f"{result['two_over_one_cpu']:.2f} x by the busiest worker's CPU seconds (a core each, nothing else)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
