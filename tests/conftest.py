"""Shared fixtures: tiny real-architecture models saved like Hub checkpoints, and the Flask app on temp folders."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

# The Hub cannot be reached here; never let a test wait on it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# The suite runs the torch engine unless a test names another: converting even a tiny model to OpenVINO costs
# seconds; tests/test_engines.py compares the engines. Conversions are saved in one folder per test run, so each
# tiny model is converted once per run (gunicorn and Celery workers started by tests inherit both settings).
os.environ.setdefault("ENGINE", "torch")
if "OPENVINO_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["OPENVINO_CACHE"] = tempfile.mkdtemp(prefix="image-to-3d-openvino-")
    atexit.register(shutil.rmtree, os.environ["OPENVINO_CACHE"], ignore_errors=True)
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(ROOT / "bench"))  # ports.py (the ports tests and benches start servers on), soak.py


def pytest_configure(config):
    import url_builders

    url_builders.share()


def pytest_sessionstart(session):
    """No cycle collection while the test modules import torch, transformers and open3d: each full collection walks
    every object made so far (11 of them, 1.6 s, in one fast-tier process here) to find almost no garbage."""
    import gc

    gc.disable()


def pytest_collection_finish(session):
    """Move everything the imports made out of the cycle collector's sight, then let it run again. A full collection
    otherwise walks those half a million objects each time, and the interpreter's last collection at exit once more
    (1.3 s per pytest process). Torch is imported by now: its threads are set here too."""
    import gc

    gc.collect()
    gc.freeze()
    gc.enable()
    _share_the_cores()


def _share_the_cores() -> None:
    """Under pytest-xdist each process takes its share of the cores for torch's threads, as TORCH_THREADS does for
    gunicorn and Celery processes: two processes of two OpenMP threads each on two cores spin while they wait for a
    core the other process holds (1.5 CPU s per process in a fast-tier run here)."""
    processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if processes > 1:
        from converter.depth import set_torch_threads

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        set_torch_threads(max(1, cores // processes))


def pytest_collection_modifyitems(items):
    """Browser tests and tests against a real gunicorn are slow: `make test-fast` (-m "not slow") leaves them out."""
    for item in items:
        if item.get_closest_marker("browser") or {"live_server", "chrome"} & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Folders of tiny random DPT-Hybrid, DPT-SwinV2, Depth Anything, Depth Anything metric, Depth Pro and ZoeDepth
    checkpoints."""
    import model_factory

    return model_factory.build_all(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def dpt_model(tiny_models) -> str:
    return str(tiny_models["dpt_hybrid"])


@pytest.fixture
def photo() -> np.ndarray:
    """A smooth, colourful 96 × 128 RGB test picture."""
    rows, columns = np.mgrid[0:96, 0:128]
    return np.dstack([columns * 2, rows * 2, 255 - columns]).astype(np.uint8)


TWO_HALVES = (230, 40, 40), (40, 80, 230)  # the browser tests' photo: a red left half, a blue right half


def two_halves_png(folder, height: int, width: int):
    """Write the browser tests' photo (left half TWO_HALVES[0], right half TWO_HALVES[1]) to ``folder``; its path."""
    picture = np.zeros((height, width, 3), np.uint8)
    picture[:, : width // 2], picture[:, width // 2:] = TWO_HALVES
    image = folder / "two halves.png"
    image.write_bytes(png_bytes(picture))
    return image


def png_bytes(array: np.ndarray, **save_options) -> bytes:
    """Encode an array as PNG bytes (any Pillow mode the array maps to)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save_options)
    return buffer.getvalue()


def pauses(longest: float = 0.02):
    """Pauses between polls: 1 ms, growing by half up to ``longest``. A poll that sleeps a fixed 50 ms wastes half of
    that on average for every job a test waits for; the growth keeps busy-waiting off the CPU the job needs."""
    pause = 0.001
    while True:
        yield pause
        pause = min(1.5 * pause, longest)


def wait_for_job(client, location: str, timeout: float = 60.0) -> dict:
    """Poll a job's status through the Flask test client until it is done or failed."""
    import time

    deadline = time.monotonic() + timeout
    for pause in pauses():
        view = client.get(location.rstrip("/") + "/status").get_json()
        if view["status"] in ("done", "failed", "cancelled"):
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"job {location} did not finish in {timeout} s")
        time.sleep(pause)


# A test's app or server stands for many users behind one address (the tests'): its rate limit stays on, out of
# their reach, unless a test sets its own (tests/test_rate_limits.py tests the limit and its default). Otherwise a
# test posting more than the default 20 a minute would meet 429s where it checks other answers (fuzzers among them).
OUT_OF_REACH_RATE_LIMIT = "100000 per minute"


@pytest.fixture
def make_app(tmp_path, dpt_model):
    """Build the real app on temp folders (model from the tiny DPT-Hybrid unless overridden); waits for the model."""
    from app import create_app

    apps = []

    def build(**overrides):
        config = {
            "TESTING": True, "DEPTH_MODEL": dpt_model, "OUTPUT_FOLDER": str(tmp_path / "outputs"),
            "UPLOAD_FOLDER": str(tmp_path / "uploads"), "RATE_LIMIT": OUT_OF_REACH_RATE_LIMIT,
        }
        config.update(overrides)
        application = create_app(config)
        assert application.extensions["image_to_3d"].model_status.wait(120), "the model did not load in 120 s"
        apps.append(application)
        return application

    yield build
    import threading

    for application in apps:  # no conversion of this test may end in the next one (and count in its metrics)
        stopper = threading.Thread(target=application.extensions["image_to_3d"].stop, kwargs={"wait": True},
                                   daemon=True)
        stopper.start()
        stopper.join(120)
        assert not stopper.is_alive(), "the app's conversions were still running 120 s after the test"


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def download(client, url: str, timeout: float = 60.0, **kwargs):
    """GET a download with the Flask test client, following the "preparing" answers (202 + Retry-After) until the
    file is whole; the response is read and closed (file responses hold the file open until then)."""
    import time

    deadline = time.monotonic() + timeout
    for pause in pauses():
        response = client.get(url, **kwargs)
        response.get_data()
        response.close()
        if response.status_code != 202:
            return response
        assert int(response.headers["Retry-After"]) > 0, response.headers
        assert time.monotonic() < deadline, f"{url} was still being prepared after {timeout} s"
        time.sleep(pause)


def http_download(url: str, timeout: float = 60.0, poll: float = 0.05):
    """GET a download over HTTP (``requests``), following the 202 "preparing" answers until the file is whole
    (asking again every ``poll`` seconds; a browser waits the Retry-After)."""
    import time

    import requests

    deadline = time.monotonic() + timeout
    while True:
        response = requests.get(url, timeout=timeout)
        if response.status_code != 202:
            return response
        assert int(response.headers["Retry-After"]) > 0, response.headers
        assert time.monotonic() < deadline, f"{url} was still being prepared after {timeout} s"
        time.sleep(poll)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serve(model_folder, folder, workers: int = 2, threads: int = 4, preexec_fn=None, outputs=None, **env_overrides):
    """Run the real app under real gunicorn on 127.0.0.1 until the block ends; yields url, folders and process.
    ``outputs``: an OUTPUT_FOLDER shared with other servers (default: ``folder``/outputs)."""
    import signal
    import socket
    import subprocess
    import time
    import urllib.request
    from types import SimpleNamespace

    folder = Path(folder)
    outputs = Path(outputs) if outputs is not None else folder / "outputs"
    # gunicorn listens on a socket bound here and handed over (fd://): no other process can take its port between a
    # port being chosen and bound.
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    env = dict(
        os.environ, DEPTH_MODEL=str(model_folder),
        OUTPUT_FOLDER=str(outputs), UPLOAD_FOLDER=str(folder / "uploads"), MAX_UPLOAD_MB="2", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT),
        WEB_CONCURRENCY=str(workers), RATE_LIMIT=OUT_OF_REACH_RATE_LIMIT,
    )
    env.update({name: str(value) for name, value in env_overrides.items()})
    present = set(folder.iterdir())  # leftovers(): what the server wrote beside outputs and log, or in uploads
    log = open(folder / "gunicorn.log", "wb")
    with listener:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}", "--workers", str(workers),
             "--threads", str(threads), "--timeout", "120", "app:create_app()"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
            pass_fds=(listener.fileno(),), start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    try:
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if env_overrides.get("EXPECT_UNREADY") and _answers(url + "/healthz"):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not become ready:\n" + (folder / "gunicorn.log").read_text()[-3000:])
            time.sleep(0.3)
        ours = present | {outputs, folder / "gunicorn.log", folder / "uploads"}
        yield SimpleNamespace(url=url, outputs=outputs, env=env, log=folder / "gunicorn.log", process=process,
                              leftovers=lambda: sorted(set(folder.iterdir()) - ours) + sorted(
                                  (folder / "uploads").iterdir()))
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)  # gunicorn's graceful stop waits up to 30 s for a worker's running job
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the master and its workers (a session of their own)
            process.wait()  # reaped: an unwaited Popen warns "still running", which fails the session at exit
        log.close()


def holding(folder: Path) -> dict:
    """serve() settings that hold a worker's conversions and exports (tests/holds.py) while the files
    ``folder``/hold-conversions and hold-exports exist."""
    return {"GUNICORN_CMD_ARGS": f"--config {ROOT / 'tests' / 'holds.py'}",
            "HOLD_CONVERSIONS_WHILE": folder / "hold-conversions", "HOLD_EXPORTS_WHILE": folder / "hold-exports"}


@pytest.fixture(scope="session")
def live_server(tiny_models, tmp_path_factory):
    """The real app under real gunicorn on 127.0.0.1 (tiny DPT-Hybrid model), as `make run` serves it."""
    with serve(tiny_models["dpt_hybrid"], tmp_path_factory.mktemp("server")) as server:
        yield server


CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-first-run",
    "--disable-dev-shm-usage", "--window-size=1280,1000",
)


@pytest.fixture
def chrome(tmp_path):
    """Headless Debian Chromium driven by selenium; downloads land in ``driver.download_dir``."""
    import shutil

    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("needs Debian's chromium and chromium-driver (make test installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False,
        "safebrowsing.enabled": False,
    })
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    driver.download_dir = downloads
    yield driver
    driver.quit()


def wait_until(condition, timeout: float = 60, interval: float = 0.1):
    """Call ``condition`` until it returns something truthy (returned), or fail after ``timeout`` seconds (polls at
    most every ``interval`` seconds).

    In a browser a condition may read the page while it is being replaced (a form's answer, a reload): the element it
    found a moment ago is stale, or the new page has not got it yet. That is "not yet", asked again, never a failure
    decided by when the browser happened to swap the page; a failure at the deadline names the last such error."""
    import time

    deadline = time.monotonic() + timeout
    last_error = None
    for pause in pauses(interval):
        try:
            value = condition()
        except _PAGE_CHANGING as error:
            value, last_error = None, error
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting" + (f" (last: {type(last_error).__name__}: {last_error})"
                                                         if last_error else ""))
        time.sleep(pause)


def _page_changing_errors() -> tuple[type[BaseException], ...]:
    try:
        from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    except ImportError:  # no browser tests here
        return ()
    return StaleElementReferenceException, NoSuchElementException


_PAGE_CHANGING = _page_changing_errors()


def canvas_pixels(driver, canvas) -> np.ndarray:
    """[H, W, 3] int RGB of a canvas's drawing buffer, read in the browser."""
    import base64
    import io

    from PIL import Image

    data_url = driver.execute_script("return arguments[0].toDataURL('image/png');", canvas)
    picture = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB")
    return np.asarray(picture).astype(int)


def wait_for_server_job(server, status_url: str, timeout: float = 60) -> dict:
    """Poll a job's status on a real server (``serve``/``live_server``) until it is done or failed."""
    import requests

    def finished():
        view = requests.get(server.url + status_url, timeout=10).json()
        return view if view["status"] in ("done", "failed") else None

    return wait_until(finished, timeout)


def click_pixel(driver, canvas, row: int, column: int) -> None:
    """Click (press and release without moving) at the centre of one pixel of the canvas's drawing buffer."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder

    left, top, width, height, buffer_width, buffer_height = driver.execute_script(
        "const c = arguments[0], r = c.getBoundingClientRect();"
        "return [r.left, r.top, r.width, r.height, c.width, c.height];", canvas)
    x = left + (column + 0.5) * width / buffer_width
    y = top + (row + 0.5) * height / buffer_height
    actions = ActionBuilder(driver)
    actions.pointer_action.move_to_location(int(x), int(y)).click()
    actions.perform()
