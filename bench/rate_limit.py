"""Timing goal of the rate limit (web.intake.rate_limits; tests/test_rate_limits.py asserts no durations): a client
over its RATE_LIMIT gets 429 with Retry-After within 10 ms, and the other clients are unaffected meanwhile.

Real gunicorn as `make run` starts it (one worker, 4 threads), the tiny DPT-Hybrid of the tests, RATE_LIMIT
"20 per minute" and TRUSTED_PROXIES=127.0.0.1, so that X-Forwarded-For stands for the clients' addresses. One client
spends its 20 and then floods POST /api/v1/conversions (each answer timed), while another thread posts at the same
time as other clients, each from an address of its own: an empty form, answered 400 for want of an image after the
same limit check. Once with the embedded back-end (the counts in this process's memory) and, where redis-server is
installed, once with Celery's (the counts in Redis; no Celery worker is needed for these answers). Prints p50, p99
and max of each with the CPU; exit status 1 when the goal is missed.

Run by hand (never part of ``make test``):

    .venv/bin/python bench/rate_limit.py                 # --refused 1000
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import model_factory  # noqa: E402  (tests/: the tiny real-architecture models)

GOAL_S = 0.010  # p99 of the 429s
LIMIT = 20  # per minute
FLOODER = "198.51.100.1"


def cpu_model() -> str:
    """/proc/cpuinfo's model name."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


@contextlib.contextmanager
def gunicorn(model: Path, folder: Path, ready_path: str, **settings):
    """The app under gunicorn on 127.0.0.1 (one worker, 4 threads) until the block ends; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = listener.getsockname()[1]
    env = dict(os.environ, DEPTH_MODEL=str(model), OUTPUT_FOLDER=str(folder / "outputs"),
               UPLOAD_FOLDER=str(folder / "uploads"), HF_HUB_OFFLINE="1", ENGINE="torch", PYTHONPATH=str(ROOT),
               RATE_LIMIT=f"{LIMIT} per minute", TRUSTED_PROXIES="127.0.0.1", **settings)
    log = open(folder / "gunicorn.log", "wb")
    with listener:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}", "--workers", "1", "--threads",
             "4", "app:create_app()"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            pass_fds=(listener.fileno(),))
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2) as response:
                    if response.status == 200:
                        break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start:\n" + (folder / "gunicorn.log").read_text()[-3000:])
            time.sleep(0.2)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextlib.contextmanager
def redis_server(folder: Path):
    """A throwaway redis-server on a free port, no persistence; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder.mkdir()
    process = subprocess.Popen([shutil.which("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save",
                                "", "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


def post(connection: http.client.HTTPConnection, address: str) -> tuple[int, str | None, float]:
    """One empty POST /api/v1/conversions from ``address``: status, Retry-After and seconds to the whole answer."""
    started = time.perf_counter()
    connection.request("POST", "/api/v1/conversions", body=b"",
                       headers={"X-Forwarded-For": address, "Content-Length": "0"})
    response = connection.getresponse()
    response.read()
    return response.status, response.getheader("Retry-After"), time.perf_counter() - started


def flood(port: int, refused: int) -> dict:
    """The flooding client's ``refused`` answers over its limit, and the other clients' answers meanwhile."""
    flooder = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    spent = [post(flooder, FLOODER)[0] for _ in range(LIMIT)]
    assert spent == [400] * LIMIT, spent  # counted, refused for want of an image
    others, stop = [], threading.Event()

    def other_clients():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        number = 0
        while not stop.is_set():
            number += 1
            others.append(post(connection, f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}"))

    thread = threading.Thread(target=other_clients)
    thread.start()
    try:
        answers = [post(flooder, FLOODER) for _ in range(refused)]
    finally:
        stop.set()
        thread.join()
    return {"refused": answers, "others": others}


def figures(answers: list[tuple[int, str | None, float]]) -> str:
    """p50, p99 and max in ms, and which answer (in the order sent) was the slowest."""
    times = [seconds for _, _, seconds in answers]
    ordered = sorted(times)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000

    return (f"p50 {rank(0.5):.2f} ms, p99 {rank(0.99):.2f} ms, max {ordered[-1] * 1000:.2f} ms "
            f"(answer {times.index(ordered[-1]) + 1})")


def p99(answers) -> float:
    ordered = sorted(seconds for _, _, seconds in answers)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--refused", type=int, default=1000, help="answers over the limit to time (default 1000)")
    options = parser.parse_args()
    print(f"{os.cpu_count()} × {cpu_model()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; gunicorn 1 "
          f"worker × 4 threads; RATE_LIMIT {LIMIT} per minute; {options.refused} answers over the limit")
    met = True
    with tempfile.TemporaryDirectory(prefix="rate-limit-") as folder:
        folder = Path(folder)
        model = model_factory.dpt_hybrid(folder / "dpt-hybrid")
        back_ends = [("embedded, counts in memory", "/readyz", {})]
        if shutil.which("redis-server"):
            back_ends.append(("celery, counts in Redis", "/healthz", {"JOB_BACKEND": "celery", "JOB_WATCH": "0"}))
        else:
            print("redis-server not installed: the Celery back-end is left out")
        for number, (name, ready_path, settings) in enumerate(back_ends):
            with contextlib.ExitStack() as stack:
                if settings.get("JOB_BACKEND") == "celery":
                    settings = {**settings, "REDIS_URL": stack.enter_context(redis_server(folder / "redis"))}
                (folder / str(number)).mkdir()
                port = stack.enter_context(gunicorn(model, folder / str(number), ready_path, **settings))
                result = flood(port, options.refused)
            flooded, others = result["refused"], result["others"]
            # The sliding window lets the flooder through again as the previous minute's count decays (about one
            # request every 60 / LIMIT s once a minute has turned): admitted (400, an empty form), at most LIMIT.
            admitted = [answer for answer in flooded if answer[0] == 400]
            refused = [answer for answer in flooded if answer[0] != 400]
            wrong_refusals = [answer[:2] for answer in refused
                              if answer[0] != 429 or not (answer[1] or "").isdigit() or int(answer[1]) < 1]
            if len(admitted) > LIMIT:
                wrong_refusals.append(f"{len(admitted)} admitted, over the limit of {LIMIT}")
            wrong_others = [answer[0] for answer in others if answer[0] != 400]
            print(f"\n{name}:")
            print(f"  {len(refused)} over the limit: {figures(refused)}; "
                  f"{len(refused) - len(wrong_refusals)} of them 429 with Retry-After ≥ 1; "
                  f"{len(admitted)} admitted again as the window slid")
            print(f"  {len(others)} other clients meanwhile: {figures(others)}; "
                  f"{len(others) - len(wrong_others)} of them answered 400 as usual (none limited)")
            ok = p99(refused) <= GOAL_S and not wrong_refusals and not wrong_others
            print(f"  goal (429 + Retry-After within {GOAL_S * 1000:.0f} ms at p99, others unaffected): "
                  f"{'PASS' if ok else 'FAIL'}")
            met = met and ok
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
