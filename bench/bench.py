"""Benchmark: our conversion against the tutorial route, on a 12 MP and a 1 MP photo, on the CPU.

Run by hand (never part of ``make test``):

    .venv/bin/python bench/bench.py                 # DPT-Hybrid, 12 MP + 1 MP, ours vs tutorial (about 3 minutes)
    .venv/bin/python bench/bench.py --quick         # 1 MP only, no tutorial route with outlier removal
    .venv/bin/python bench/bench.py --models all    # also DPT-SwinV2-Tiny and Depth Anything V2 Small
    .venv/bin/python bench/bench.py --precision     # bf16 vs fp32: speed-up and largest difference
    .venv/bin/python bench/bench.py --throughput    # gunicorn, N workers: conversions per minute, memory per worker
    .venv/bin/python bench/bench.py --no-routes --serving             # web jobs against the library, in one run
    .venv/bin/python bench/bench.py --quick --serving --device cuda --precision   # the same on a GPU (fp16)
    .venv/bin/python bench/bench.py --video --speed --web    # videos: bench/video.py (the rest of the line goes there)

The models are randomly initialised copies of the published architectures (see bench/models.py), saved under
bench/out/models and loaded through ``Converter(model=folder)`` like real checkpoints. Every measurement runs in a
fresh subprocess, so its peak resident memory (VmHWM) is its own. Times are the best of ``--repeat`` runs after one
warm-up conversion; the "bare model forward" is ``model(**inputs)`` on the processed input in the same process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

PHOTOS = {"12mp": (4000, 2667), "1mp": (1224, 816)}


# ---------------------------------------------------------------------------------------------------------------------
# inputs


def make_photo(name: str) -> Path:
    """A photo-like JPEG (smooth shading, edges, fine texture and sensor noise; EXIF 35 mm focal length 26 mm)."""
    import numpy as np
    from PIL import Image

    width, height = PHOTOS[name]
    path = OUT / f"photo-{name}.jpg"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    x /= width
    y /= height
    sky = np.stack([120 + 80 * y, 160 + 60 * y, 230 - 40 * y], axis=-1)
    ground = np.stack([90 + 60 * x, 110 + 40 * np.sin(9 * x), 60 + 30 * y], axis=-1)
    picture = np.where((y > 0.45 + 0.05 * np.sin(6 * x))[..., None], ground, sky)
    for cx, cy, r, colour in ((0.3, 0.62, 0.12, (200, 60, 50)), (0.7, 0.55, 0.08, (40, 90, 200))):
        inside = ((x - cx) * width) ** 2 + ((y - cy) * height) ** 2 < (r * width) ** 2
        picture[inside] = colour
    texture = 18 * np.sin(x * width / 7.0) * np.sin(y * height / 5.0)
    picture += texture[..., None] + rng.normal(0, 6, picture.shape).astype(np.float32)
    image = Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8), "RGB")
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 26  # FocalLengthIn35mmFilm
    image.save(path, format="JPEG", quality=92, exif=exif)
    return path


def model_folder(name: str) -> Path:
    import models

    folder, parameters = models.build(name, OUT / "models")
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# measurements (each in its own process)


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def bare_forward(depth_model, image, repeat: int) -> float:
    """Seconds of the back-end's forward alone (best of ``repeat``), on its prepared input for ``image``."""
    import torch

    pixel_values = depth_model.prepare(image)
    best = float("inf")
    cuda = str(depth_model.device).startswith("cuda")
    for _ in range(repeat):
        started = time.perf_counter()
        depth_model.forward(pixel_values)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return best


def worker_ours(args) -> dict:
    from converter import ConversionOptions, Converter
    from converter.depth import set_torch_threads

    set_torch_threads(args.threads)
    started = time.perf_counter()
    converter = Converter(model=args.model, device=args.device, precision=args.precision_name,
                          engine=args.engine_name).load()
    load_seconds = time.perf_counter() - started
    rss_loaded = rss_mb()
    output = OUT / f"ours-{Path(args.image).stem}.ply"
    options = {"max_points": args.max_points} if args.max_points is not None else {}
    from PIL import Image

    with Image.open(args.image) as photo:  # same processed shape as the photo (short side above 518 px, same aspect)
        small = photo.convert("RGB").resize((1224, round(1224 * photo.height / photo.width)))
    best, best_timings, forward = float("inf"), {}, float("inf")
    for attempt in range(args.repeat + 1):  # the first is the warm-up; forward and conversion alternate
        if attempt > 0:
            forward = min(forward, bare_forward(converter.depth_model, small, 1))
        started = time.perf_counter()
        result = converter.convert(args.image, options=ConversionOptions(**options))
        written = time.perf_counter()
        result.save(output)
        finished = time.perf_counter()
        timings = dict(result.timings, write=finished - written)
        total = finished - started
        if attempt > 0 and total < best:
            best, best_timings = total, timings
        working = (result.image.width, result.image.height)
        points = len(result.points)
        del result
    return {
        "route": "ours", "total": best, "timings": best_timings, "forward": forward, "load": load_seconds,
        "rss_loaded_mb": rss_loaded, "peak_rss_mb": peak_rss_mb(), "file_mb": output.stat().st_size / 1e6,
        "points": points, "working_size": working,
    }


def worker_cost(args) -> dict:
    """One model's cost through our loading path: load, then a warm-up and ``repeat`` timed 1 MP conversions with
    the model's stages (preprocess, forward, postprocess) from ``result.timings``. For models the transformers
    pipeline cannot run here (Depth Pro's processor needs torchvision), so there is no tutorial route to compare."""
    from converter import ConversionOptions, Converter
    from converter.depth import set_torch_threads

    set_torch_threads(args.threads)
    started = time.perf_counter()
    converter = Converter(model=args.model, device=args.device, precision=args.precision_name).load()
    load_seconds = time.perf_counter() - started
    rss_loaded = rss_mb()
    best, best_timings = float("inf"), {}
    for attempt in range(args.repeat + 1):
        started = time.perf_counter()
        result = converter.convert(args.image, options=ConversionOptions())
        total = time.perf_counter() - started
        if attempt > 0 and total < best:
            best, best_timings = total, dict(result.timings)
        camera = result.intrinsics.source
        del result
    return {"route": "ours", "total": best, "timings": best_timings, "load": load_seconds, "rss_loaded_mb": rss_loaded,
            "peak_rss_mb": peak_rss_mb(), "camera": camera}


def worker_tutorial(args) -> dict:
    """The route most tutorials take: transformers pipeline, Open3D create_from_rgbd_image at full resolution,
    [statistical outlier removal,] write_point_cloud."""
    import numpy as np
    import open3d as o3d
    import torch
    from PIL import Image
    from transformers import pipeline

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    estimator = pipeline("depth-estimation", model=str(args.model), device="cpu")
    load_seconds = time.perf_counter() - started
    rss_loaded = rss_mb()
    output = OUT / f"tutorial{'-sor' if args.outliers else ''}-{Path(args.image).stem}.ply"
    best, best_timings = float("inf"), {}
    for attempt in range(args.repeat + 1):
        timings = {}
        t0 = time.perf_counter()
        image = Image.open(args.image).convert("RGB")
        t1 = time.perf_counter()
        depth = estimator(image)["predicted_depth"].numpy().astype(np.float32)  # relative depth at the image size
        # Tutorials normalise the prediction to a positive range, so that every pixel becomes a point (as with a
        # real model); random weights give negative values that Open3D would silently drop.
        depth = 1.0 + (depth - depth.min()) / max(float(depth.max() - depth.min()), 1e-6)
        t2 = time.perf_counter()
        width, height = image.size
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.asarray(image)), o3d.geometry.Image(depth), depth_scale=1.0,
            depth_trunc=float(depth.max()) + 1.0, convert_rgb_to_intensity=False,
        )
        focal = width / (2 * np.tan(np.radians(30)))
        camera = o3d.camera.PinholeCameraIntrinsic(width, height, focal, focal, width / 2, height / 2)
        cloud = o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, camera)
        t3 = time.perf_counter()
        if args.outliers:
            cloud, _ = cloud.remove_statistical_outlier(nb_neighbors=20, std_ratio=2.0)
        t4 = time.perf_counter()
        o3d.io.write_point_cloud(str(output), cloud)
        t5 = time.perf_counter()
        timings = {"decode": t1 - t0, "model": t2 - t1, "geometry": t3 - t2, "cleaning": t4 - t3, "write": t5 - t4}
        points = len(cloud.points)
        del cloud, rgbd, depth, image
        if attempt > 0 and t5 - t0 < best:
            best, best_timings = t5 - t0, timings
        if args.outliers:
            break  # one run is enough at 25 s; it is also the warm-up-free figure people see
    if args.outliers:
        best, best_timings = t5 - t0, timings
    return {
        "route": "tutorial+sor" if args.outliers else "tutorial", "total": best, "timings": best_timings,
        "load": load_seconds, "rss_loaded_mb": rss_loaded, "peak_rss_mb": peak_rss_mb(),
        "file_mb": output.stat().st_size / 1e6, "points": points,
    }


def worker_precision(args) -> dict:
    """fp32 against bf16 on the same processed input: forward time and the largest difference of the prediction."""
    import numpy as np
    import torch
    from PIL import Image

    from converter.depth import get_depth_model, set_torch_threads

    set_torch_threads(args.threads)
    with Image.open(args.image) as photo:
        image = photo.convert("RGB").resize((1224, 816))
    report = {"route": "precision", "cpu_flags": cpu_flags()}
    predictions = {}
    for precision in ("fp32", "bf16"):
        depth_model = get_depth_model(str(args.model), "cpu", precision)
        depth_model.predict(image)  # warm-up
        forward = bare_forward(depth_model, image, args.repeat + 1)
        predictions[precision] = depth_model.predict(image).native
        report[precision] = forward
    fp32, bf16 = predictions["fp32"], predictions["bf16"]
    span = float(np.percentile(fp32, 98) - np.percentile(fp32, 2)) or 1.0
    report["max_abs_diff"] = float(np.abs(fp32 - bf16).max())
    report["max_diff_of_range"] = report["max_abs_diff"] / span
    report["mean_diff_of_range"] = float(np.abs(fp32 - bf16).mean()) / span
    report["speedup"] = report["fp32"] / report["bf16"]
    del torch
    return report


ENGINE_RUNS = (("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"))


def worker_engines(args) -> dict:
    """Every engine x precision on the same prepared 1 MP input, in this one process: forwards interleaved round by
    round (best of ``repeat``), FLOPs from torch's counter, agreement of the native map with torch fp32."""
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.flop_counter import FlopCounterMode

    from converter.depth import get_depth_model, set_torch_threads

    set_torch_threads(args.threads)
    with Image.open(args.image) as photo:
        image = photo.convert("RGB").resize((1224, 816))
    backends = {f"{engine} {precision}": get_depth_model(str(args.model), "cpu", precision, engine=engine)
                for engine, precision in ENGINE_RUNS}
    inputs = {name: backend.prepare(image) for name, backend in backends.items()}
    outputs = {name: backend.forward(inputs[name])["predicted_depth"][0].float().numpy()
               for name, backend in backends.items()}  # also the warm-up
    best = dict.fromkeys(backends, float("inf"))
    for _ in range(args.repeat):
        for name, backend in backends.items():
            time.sleep(0.5)  # let the previous engine's thread pool (OpenMP or TBB) stop spinning on the cores
            started = time.perf_counter()
            backend.forward(inputs[name])
            best[name] = min(best[name], time.perf_counter() - started)
    reference = backends["torch fp32"]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        reference.model(pixel_values=inputs["torch fp32"])
    flops = counter.get_total_flops()
    truth = outputs["torch fp32"]
    span = float(np.ptp(truth)) or 1.0
    valid = np.abs(truth) > 1e-3 * np.abs(truth).max()  # random weights: the head's ReLU leaves exact zeros
    rows = {}
    for name, backend in backends.items():
        difference = np.abs(outputs[name] - truth)
        relative = difference[valid] / np.abs(truth[valid])
        rows[name] = {"forward": best[name], "gflops_per_s": flops / best[name] / 1e9,
                      "engine_ran": backend.engine, "max_of_range": float(difference.max()) / span,
                      "p50_relative": float(np.percentile(relative, 50)),
                      "p99_relative": float(np.percentile(relative, 99)),
                      "speedup": best["torch fp32"] / best[name]}
    return {"route": "engines", "input": list(inputs["torch fp32"].shape), "gflop": flops / 1e9, "rows": rows,
            "valid_fraction": float(valid.mean())}


def worker_start(args) -> dict:
    """Seconds from nothing to a first conversion's depth: model load (+ OpenVINO conversion or reading it back)."""
    from PIL import Image

    from converter.depth import get_depth_model, set_torch_threads

    set_torch_threads(args.threads)
    started = time.perf_counter()
    backend = get_depth_model(str(args.model), "cpu", args.precision_name, engine=args.engine_name)
    loaded = time.perf_counter()
    with Image.open(args.image) as photo:
        backend.predict(photo.convert("RGB"))
    return {"route": "start", "load": loaded - started, "first_prediction": time.perf_counter() - started,
            "engine_ran": backend.engine}


def peak_gflops(threads: int) -> dict:
    """The machine's peak: cores x FMA width x clock. Zen 4 (AVX-512 on two 256-bit FMA pipes): 32 fp32 FLOP per
    cycle per core, twice that in bf16 (VDPBF16PS); the clock is /proc/cpuinfo's."""
    text = Path("/proc/cpuinfo").read_text()
    mhz = next((float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")), float("nan"))
    fp32 = threads * 32 * mhz / 1000.0
    return {"threads": threads, "ghz": mhz / 1000.0, "fp32": fp32, "bf16": 2 * fp32}


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(flag for flag in flags if flag.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))


def run_worker(kind: str, model: Path, image: Path | None, args, **extra) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--model-folder", str(model),
               "--threads", str(args.threads), "--repeat", str(args.repeat), "--device", args.device,
               "--precision-name", getattr(args, "precision_name", "fp32"),
               "--engine-name", getattr(args, "engine_name", None) or os.environ.get("ENGINE", "auto")]
    if image:
        command += ["--image", str(image)]
    for name, value in extra.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------------
# throughput under gunicorn


@contextlib.contextmanager
def serve(model: Path, folder: str, workers: int, threads: int, **environment):
    """gunicorn on 127.0.0.1 as `make run` starts it, until the block ends.

    (Not tests/conftest.serve: the benchmark runs without pytest, from `make bench`'s runtime set-up.)"""
    import socket
    import urllib.request
    from types import SimpleNamespace

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, DEPTH_MODEL=str(model), OUTPUT_FOLDER=f"{folder}/outputs",
               HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), WEB_CONCURRENCY=str(workers), MAX_QUEUED_JOBS="64",
               **{"RATE_LIMIT": "", **environment})  # no rate limit: one address timing many conversions
    log = open(f"{folder}/gunicorn.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--threads",
         str(threads), "--timeout", "300", "app:create_app()"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.perf_counter() - started > 120:
                raise RuntimeError("gunicorn did not become ready: " + Path(f"{folder}/gunicorn.log").read_text()[-2000:])
            time.sleep(0.1)
        yield SimpleNamespace(url=url, process=process, ready_seconds=time.perf_counter() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def wait_for_job(url: str, status_url: str, interval: float) -> dict:
    """Poll a job's status until it is done (its view) or failed (RuntimeError)."""
    import urllib.request

    while True:
        with urllib.request.urlopen(url + status_url, timeout=60) as response:
            view = json.loads(response.read())
        if view["status"] == "done":
            return view
        if view["status"] == "failed":
            raise RuntimeError(view)
        time.sleep(interval)


def throughput(model: Path, photo: Path, workers: int, threads: int, conversions: int) -> dict:
    import tempfile
    import urllib.request
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import psutil

    body = photo.read_bytes()

    def post_and_wait(url: str) -> float:
        boundary = uuid.uuid4().hex
        payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
                   f"Content-Type: image/jpeg\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(url + "/api/v1/conversions", data=payload, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        started = time.perf_counter()
        while True:
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    status_url = json.loads(response.read())["status_url"]
                break
            except urllib.error.HTTPError as error:  # 503: the queue is full; come back later
                if error.code != 503:
                    raise
                time.sleep(0.2)
        wait_for_job(url, status_url, 0.05)
        return time.perf_counter() - started

    with tempfile.TemporaryDirectory() as folder, serve(model, folder, workers, threads) as server:
        master = psutil.Process(server.process.pid)
        with ThreadPoolExecutor(max_workers=workers * 2) as pool:  # warm each worker
            list(pool.map(lambda _: post_and_wait(server.url), range(workers * 2)))
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(2, workers * 2)) as pool:
            latencies = list(pool.map(lambda _: post_and_wait(server.url), range(conversions)))
        elapsed = time.perf_counter() - started
        children = master.children()
        memory = [child.memory_full_info() for child in children]
        return {
            "workers": workers, "threads": threads, "conversions": conversions, "seconds": elapsed,
            "per_minute": 60.0 * conversions / elapsed, "median_latency": sorted(latencies)[len(latencies) // 2],
            "worker_rss_mb": [m.rss / 2**20 for m in memory], "worker_uss_mb": [m.uss / 2**20 for m in memory],
            "master_rss_mb": master.memory_info().rss / 2**20, "ready_seconds": server.ready_seconds,
        }


def photo_variants(photo: Path, count: int) -> list[Path]:
    """``count`` distinct JPEGs of the same size (the photo with a little different noise): repeated bytes would let the
    web app's depth cache skip the model, which is not what a service of many users sees."""
    import numpy as np
    from PIL import Image

    with Image.open(photo) as picture:
        base = np.asarray(picture.convert("RGB")).astype(np.int16)
        exif = picture.info.get("exif", b"")
    paths = []
    for number in range(count):
        path = OUT / f"variant-{photo.stem}-{number}.jpg"
        if not path.exists():
            noise = np.random.default_rng(100 + number).integers(-3, 4, base.shape, dtype=np.int16)
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(path, quality=92, exif=exif)
        paths.append(path)
    return paths


def worker_library(args) -> dict:
    """The library end to end, sequentially: Converter.convert + result.save(".ply") per photo (model loaded)."""
    from converter import Converter
    from converter.depth import set_torch_threads

    set_torch_threads(args.threads)
    photos = [Path(path) for path in args.image.split(",")]
    converter = Converter(model=args.model, device=args.device, precision=args.precision_name,
                          engine=args.engine_name).load()
    converter.convert(photos[0]).save(OUT / "library-warmup.ply")
    started = time.perf_counter()
    for number, photo in enumerate(photos):
        converter.convert(photo).save(OUT / f"library-{number}.ply")
    elapsed = time.perf_counter() - started
    return {"route": "library", "conversions": len(photos), "seconds": elapsed,
            "per_minute": 60.0 * len(photos) / elapsed}


def serving(model: Path, conversions: int, threads: int, device: str = "cpu", precision: str = "fp32",
            engine: str = "auto", downloads: bool = True) -> dict:
    """Web (make run defaults: one gunicorn worker, 4 threads, one conversion at a time) against the library, on the
    same distinct 1 MP photos, one after the other in this run; then every offered download of every web job is
    fetched to show that lazily written files all exist."""
    import tempfile
    import urllib.request
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    photos = photo_variants(make_photo("1mp"), conversions + 2)
    library = run_worker("library", model, ",".join(str(path) for path in photos[2:]),
                         argparse.Namespace(threads=threads, repeat=1, device=device, precision_name=precision,
                                            engine_name=engine))

    def post(url: str, photo: Path) -> str:
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"p.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode()
        payload = head + photo.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(url + "/api/v1/conversions", data=payload, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["status_url"]

    def wait(url: str, status_url: str) -> dict:
        return wait_for_job(url, status_url, 0.25)  # the page polls every 0.6 s

    environment = {"DEVICE": device, "PRECISION": precision, "ENGINE": engine}
    with tempfile.TemporaryDirectory() as folder, serve(model, folder, 1, 4, **environment) as server:
        for photo in photos[:2]:  # warm-up
            wait(server.url, post(server.url, photo))
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as pool:  # two clients, uploads overlap the running conversion
            status_urls = list(pool.map(lambda photo: post(server.url, photo), photos[2:]))
        views = [wait(server.url, status_url) for status_url in status_urls]
        elapsed = time.perf_counter() - started
        fetched, download_seconds = 0, time.perf_counter()
        for view in views if downloads else ():
            for kind, file_url in view["files"].items():
                with urllib.request.urlopen(server.url + file_url, timeout=300) as response:
                    if response.status != 200 or not response.read():
                        raise RuntimeError(f"{kind} of {view['id']} could not be fetched")
                fetched += 1
        download_seconds = time.perf_counter() - download_seconds
    web = {"route": "web", "conversions": conversions, "seconds": elapsed, "per_minute": 60.0 * conversions / elapsed}
    return {"library": library, "web": web, "ratio": web["per_minute"] / library["per_minute"],
            "downloads_fetched": fetched, "download_seconds": download_seconds,
            "kinds": sorted(views[0]["files"])}


# ---------------------------------------------------------------------------------------------------------------------
# report


def engines_report(names: list[str], args, figures: dict) -> None:
    """--engines: forward per engine x precision for every model, then start times and conversions/min (first model)."""
    import tempfile

    peak = peak_gflops(args.threads)
    figures["peak_gflops"] = peak
    print(f"\n## Engines (1224 x 816 photo, {args.threads} threads, forwards interleaved, best of {args.repeat})\n\n"
          f"peak {peak['fp32']:.0f} GFLOP/s fp32, {peak['bf16']:.0f} bf16 ({args.threads} cores x 32 FLOP/cycle x "
          f"{peak['ghz']:.2f} GHz; bf16 x2)\n")
    print("| model | engine | forward s | x torch fp32 | GFLOP/s | % of peak | max \\|Δ\\|/range | p50 \\|Δ\\|/\\|d\\| "
          "| p99 \\|Δ\\|/\\|d\\| |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as cache:
        os.environ["OPENVINO_CACHE"] = cache  # fresh: the start figures below include a conversion
        for name in names:
            report = run_worker("engines", model_folder(name), make_photo("1mp"), args)
            figures.setdefault("engines", {})[name] = report
            for engine, row in report["rows"].items():
                top = peak["bf16" if "bf16" in engine else "fp32"]
                print(f"| {name} | {engine}{'' if row['engine_ran'] in engine else ' (fell back)'} | "
                      f"{row['forward']:.3f} | {row['speedup']:.2f} | {row['gflops_per_s']:.0f} | "
                      f"{100 * row['gflops_per_s'] / top:.0f} | {row['max_of_range']:.1e} | {row['p50_relative']:.1e} "
                      f"| {row['p99_relative']:.1e} |", flush=True)
        if args.forward_only:
            return
        folder, photo = model_folder(names[0]), make_photo("1mp")
        fresh = tempfile.mkdtemp(dir=cache)
        os.environ["OPENVINO_CACHE"] = fresh
        first = run_worker("start", folder, photo, args, engine_name="openvino")
        second = run_worker("start", folder, photo, args, engine_name="openvino")
        torch_start = run_worker("start", folder, photo, args, engine_name="torch")
        figures["start"] = {"openvino_first": first, "openvino_second": second, "torch": torch_start}
        print(f"\nstart to first depth ({names[0]}, OpenVINO fp32): first start (converting) "
              f"{first['first_prediction']:.1f} s, second start (saved conversion) {second['first_prediction']:.1f} s; "
              f"torch {torch_start['first_prediction']:.1f} s\n")
        os.environ["OPENVINO_CACHE"] = cache
        rows = []
        for engine, precision in ENGINE_RUNS:  # one library conversion, stage by stage
            row = run_worker("ours", folder, photo, argparse.Namespace(**{**vars(args), "precision_name": precision,
                                                                           "engine_name": engine}))
            row["route"] = f"{engine} {precision}"
            rows.append(row)
        figures["engine_stages"] = rows
        print_table(f"{names[0]}, 1 MP photo, library conversion by stage", rows)
        print("\n" + "; ".join(f"{row['route']}: total / forward = {row['total'] / row['timings']['forward']:.2f}"
                               for row in rows))
        if args.conversions <= 0:
            return
        print(f"\n| engine | library conversions/min (1 MP) | web conversions/min (make run defaults, distinct 1 MP) |")
        print("| --- | --- | --- |")
        for engine, precision in ENGINE_RUNS:
            report = serving(folder, args.conversions, args.threads, "cpu", precision, engine, downloads=False)
            figures.setdefault("engine_serving", {})[f"{engine} {precision}"] = report
            print(f"| {engine} {precision} | {report['library']['per_minute']:.1f} | {report['web']['per_minute']:.1f} |",
                  flush=True)


def describe_machine() -> str:
    import torch

    model_name = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name")), platform.processor())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{model_name}, {os.cpu_count()} CPUs, {memory:.0f} GiB RAM, Python {platform.python_version()}, "
            f"torch {torch.__version__}, flags: {' '.join(cpu_flags())}")


def print_table(name: str, rows: list[dict]) -> None:
    stages = ["decode", "preprocess", "forward", "postprocess", "model", "depth_units", "cleaning", "backproject",
              "geometry", "write"]
    print(f"\n## {name}\n")
    print("| route | " + " | ".join(stages) + " | total s | peak RSS MB | file MB | points |")
    print("| --- " * (len(stages) + 5) + "|")
    for row in rows:
        cells = [f"{row['timings'][s]:.3f}" if s in row["timings"] else "" for s in stages]
        print(f"| {row['route']} | " + " | ".join(cells)
              + f" | {row['total']:.2f} | {row['peak_rss_mb']:.0f} | {row['file_mb']:.1f} | {row['points']:,} |")
    ours = next((row for row in rows if row["route"] == "ours"), None)
    if ours:
        outside = ours["total"] - ours["timings"]["forward"]
        print(f"\nbare model forward {ours['forward']:.3f} s; ours / forward = {ours['total'] / ours['forward']:.3f}; "
              f"non-model work {outside:.3f} s = {100 * outside / ours['timings']['forward']:.1f} % of the forward "
              f"in the same conversion; "
              f"model load (cold start) {ours['load']:.2f} s; RSS after load {ours['rss_loaded_mb']:.0f} MB; "
              f"working size {ours['working_size'][0]}x{ours['working_size'][1]}")
        for row in rows:
            if row is not ours:
                print(f"{row['route']} / ours = {row['total'] / ours['total']:.1f}x")


def main() -> int:
    if "--video" in sys.argv[1:]:  # videos have their own benchmark: bench/video.py, the rest of the line passed on
        rest = [arg for arg in sys.argv[1:] if arg != "--video"]
        return subprocess.call([sys.executable, str(Path(__file__).with_name("video.py")), *rest])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 MP only, without the slow outlier-removal route")
    parser.add_argument("--models", default="dpt-hybrid", help="comma-separated names, or 'all'")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs after the warm-up (best is kept)")
    parser.add_argument("--precision", action="store_true", help="bf16 against fp32")
    parser.add_argument("--engines", action="store_true", help="every engine x precision: forward, GFLOP/s, agreement "
                        "with torch fp32, start times, library and web conversions/min at 1 MP")
    parser.add_argument("--forward-only", action="store_true", help="--engines: the forward table only")
    parser.add_argument("--throughput", action="store_true", help="gunicorn conversions per minute for 1 MP photos")
    parser.add_argument("--conversions", type=int, default=12, help="conversions per throughput setting")
    parser.add_argument("--no-routes", action="store_true", help="skip ours-vs-tutorial (with --precision/--throughput)")
    parser.add_argument("--serving", action="store_true", help="web jobs against the library, 1 MP, in one run")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda: where ours, the library and the web "
                        "app run (the tutorial route stays on the CPU)")
    parser.add_argument("--cost", action="store_true", help="only each model's load and 1 MP conversion cost through "
                        "our path (no tutorial route: for models whose transformers processor cannot run here)")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    # internal: one measurement in this process
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-folder", dest="model", help=argparse.SUPPRESS)
    parser.add_argument("--image", help=argparse.SUPPRESS)
    parser.add_argument("--outliers", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--precision-name", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--engine-name", default=os.environ.get("ENGINE", "auto"), help=argparse.SUPPRESS)
    parser.add_argument("--max-points", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker = {"ours": worker_ours, "tutorial": worker_tutorial, "precision": worker_precision,
                  "library": worker_library, "cost": worker_cost, "engines": worker_engines,
                  "start": worker_start}[args.worker]
        print(json.dumps(worker(args)))
        return 0

    import models

    figures: dict = {"machine": describe_machine(), "threads": args.threads}
    print(f"# Benchmark\n\nmachine: {figures['machine']}; torch threads: {args.threads}")
    names = list(models.BUILDERS) if args.models == "all" else args.models.split(",")
    for name in names:
        folder, parameters = models.build(name, OUT / "models")
        published = models.PUBLISHED_MILLIONS[name]
        print(f"\n{name}: {parameters / 1e6:.1f} M parameters (published about {published} M, "
              f"{100 * (parameters / 1e6 - published) / published:+.1f} %)")
        figures.setdefault("parameters", {})[name] = parameters
    if args.cost:
        print("\n| model | load | conversion | preprocess | forward | postprocess | geometry | peak RSS | camera |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for name in names:
            row = run_worker("cost", model_folder(name), make_photo("1mp"), args)
            t = row["timings"]
            print(f"| {name} | {row['load']:.1f} s | {row['total']:.2f} s | {t.get('preprocess', 0):.3f} s | "
                  f"{t.get('forward', 0):.2f} s | {t.get('postprocess', 0):.3f} s | {t.get('geometry', 0):.3f} s | "
                  f"{row['peak_rss_mb']:.0f} MB | {row['camera']} |", flush=True)
            figures.setdefault("cost", {})[name] = row
        args.no_routes = True
    photos = [] if args.no_routes else ["1mp"] if args.quick else ["12mp", "1mp"]
    for name in names:
        folder = model_folder(name)
        for photo_name in photos:
            photo = make_photo(photo_name)
            rows = [run_worker("ours", folder, photo, args)]
            rows.append(run_worker("tutorial", folder, photo, args, outliers=0))
            if not args.quick and (photo_name == "12mp" or name == "dpt-hybrid"):
                rows.append(run_worker("tutorial", folder, photo, args, outliers=1))
            if photo_name == "12mp" and name == "dpt-hybrid" and not args.quick:
                full = run_worker("ours", folder, photo, args, max_points=0)
                full["route"] = "ours max_points=0"
                rows.append(full)
            print_table(f"{name}, {photo_name} photo", rows)
            figures.setdefault("runs", []).append({"model": name, "photo": photo_name, "rows": rows})
    if args.precision:
        report = run_worker("precision", model_folder(names[0]), make_photo("1mp"), args)
        figures["precision"] = report
        print(f"\n## bf16 ({names[0]}, 1 MP)\n\nflags {report['cpu_flags']}: fp32 forward {report['fp32']:.3f} s, "
              f"bf16 {report['bf16']:.3f} s, speed-up {report['speedup']:.2f}x; largest difference "
              f"{report['max_abs_diff']:.4g} = {100 * report['max_diff_of_range']:.2f} % of the 2-98 % range "
              f"(mean {100 * report['mean_diff_of_range']:.3f} %)")
    if args.engines:
        engines_report(names, args, figures)
    if args.throughput:
        print(f"\n## Throughput under gunicorn ({names[0]}, 1 MP photos)\n")
        print("| workers | threads | conversions/min | median latency s | worker RSS MB | worker USS MB | ready s |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for workers, threads in ((1, 4), (2, 4)):  # the app gives each worker cores / workers torch threads
            row = throughput(model_folder(names[0]), make_photo("1mp"), workers, threads, args.conversions)
            figures.setdefault("throughput", []).append(row)
            print(f"| {workers} | {threads} | {row['per_minute']:.1f} | {row['median_latency']:.2f} | "
                  f"{', '.join(f'{v:.0f}' for v in row['worker_rss_mb'])} | "
                  f"{', '.join(f'{v:.0f}' for v in row['worker_uss_mb'])} | {row['ready_seconds']:.1f} |", flush=True)
    if args.serving:
        precision = "fp16" if args.device.startswith("cuda") and args.precision else "fp32"
        report = serving(model_folder(names[0]), args.conversions, args.threads, args.device, precision)
        figures["serving"] = report
        library, web = report["library"], report["web"]
        print(f"\n## Serving ({names[0]}, {args.conversions} distinct 1 MP photos)\n\n"
              f"library (convert + .ply): {library['per_minute']:.1f} conversions/min; web (make run defaults, JSON "
              f"API): {web['per_minute']:.1f}/min; web / library = {report['ratio']:.2f}. Then every offered download "
              f"of every job fetched: {report['downloads_fetched']} files in {report['download_seconds']:.1f} s "
              f"({', '.join(report['kinds'])}).", flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
