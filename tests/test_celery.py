"""Scale-out for real on 127.0.0.1: a redis-server, two Celery worker processes and two gunicorn web instances sharing
one OUTPUT_FOLDER (JOB_BACKEND=celery). Jobs cross instances, a worker is SIGKILLed mid-job, Redis restarts, a burst
overfills the queue."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import ROOT, http_download, png_bytes, serve, wait_until
from ports import quiet_port  # bench/ports.py (conftest puts bench/ on the path)

from web.jobs.celery.board import PENDING

pytestmark = pytest.mark.slow  # a Redis server, Celery workers and gunicorn in subprocesses

REDIS_SERVER = shutil.which("redis-server")
MAX_QUEUED = 2
FINISHED = ("done", "failed")


class Redis:
    """A throwaway redis-server on a fixed port (kept across restarts), no persistence."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, quiet_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(Exception):
                if client.ping():
                    return
            assert time.monotonic() < deadline and self.process.poll() is None, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=2)


class Workers:
    """Real ``celery worker`` processes (prefork, one child each), each in its own process group."""

    def __init__(self, folder: Path, env: dict):
        self.folder, self.env, self.processes = folder, env, []

    def start(self, count: int, pool: str = "prefork", concurrency: int = 1) -> None:
        for _ in range(count):
            index = len(self.processes)
            with open(self.folder / f"worker{index}.log", "wb") as log:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "celery_gate", "worker", "--concurrency",
                     str(concurrency), "--pool", pool, "--prefetch-multiplier", "1", "--without-gossip",
                     "--without-mingle",
                     "--without-heartbeat", "-Q", "image-to-3d", "-n", f"w{index}@%h", "--loglevel", "INFO"],
                    cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def owning(self, pid: int) -> subprocess.Popen | None:
        """The worker whose process group holds ``pid`` (its pool child)."""
        with contextlib.suppress(ProcessLookupError):
            group = os.getpgid(pid)
            return next((p for p in self.processes if p.pid == group and p.poll() is None), None)
        return None

    def pause(self) -> None:
        """SIGSTOP every worker (main process and pool child): nothing claims a queued job until ``resume``."""
        for process in self.processes:
            if process.poll() is None:  # a worker an earlier test killed has nothing to stop
                os.killpg(process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)

    def kill(self, process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the main process and its pool child at once
        process.wait(10)

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill(process)

    def logs(self) -> str:
        return "\n".join(path.read_text(errors="replace")[-2000:] for path in sorted(self.folder.glob("worker*.log")))


def ready_workers(redis_server: Redis) -> int:
    client = redis_server.client()
    with contextlib.suppress(Exception):
        keys = list(client.scan_iter("image-to-3d:worker:*"))
        return sum(json.loads(value)["state"] == "ready" for value in client.mget(keys) if value) if keys else 0
    return 0


def wait_ready(workers: Workers, redis_server: Redis, count: int) -> None:
    deadline = time.monotonic() + 90  # a hang guard only
    while ready_workers(redis_server) < count:
        assert time.monotonic() < deadline, "the workers did not report ready:\n" + workers.logs()
        assert all(p.poll() is None for p in workers.processes), workers.logs()
        time.sleep(0.2)


def finished_views(client, ids: list[str], workers: Workers) -> list[dict]:
    """Each job's view once all have finished, polled through a test client."""
    deadline = time.monotonic() + 90  # a hang guard only
    while True:
        views = [client.get(f"/api/v1/conversions/{job_id}").get_json() for job_id in ids]
        if all(view["status"] in FINISHED for view in views):
            return views
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.1)


def worker_setting(root: Path, **extra):
    """A running redis-server, a tiny model, an output folder and the workers' environment, all under ``root``."""
    if REDIS_SERVER is None:
        pytest.skip("needs Debian's redis-server (make setup-test installs it)")
    import model_factory

    model = model_factory.dpt_hybrid(root / "dpt-hybrid")
    outputs = root / "shared-outputs"
    outputs.mkdir()
    redis_server = Redis(root / "redis")
    redis_server.start()
    env = dict(os.environ, REDIS_URL=redis_server.url, OUTPUT_FOLDER=str(outputs), DEPTH_MODEL=str(model),
               HF_HUB_OFFLINE="1", PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'tests'}", TORCH_THREADS="1",
               HOLD_CONVERSIONS_WHILE=str(root / "hold-conversions"), HOLD_EXPORTS_WHILE=str(root / "hold-exports"),
               **extra)
    return redis_server, model, outputs, env


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Redis, two workers, two web instances A and B on one shared OUTPUT_FOLDER."""
    import model_factory

    root = tmp_path_factory.mktemp("celery")
    redis_server, model, outputs, env = worker_setting(root, JOB_TIMEOUT_SECONDS="120")
    depth_pro = model_factory.depth_pro(root / "depth-pro")  # a model with its own camera, offered beside the default
    workers = Workers(root, env)
    with contextlib.ExitStack() as stack:
        stack.callback(redis_server.stop)
        stack.callback(workers.stop_all)
        workers.start(2)
        wait_ready(workers, redis_server, 2)
        web = {}
        for name in ("a", "b"):
            (root / name).mkdir()
            web[name] = stack.enter_context(serve(
                model, root / name, workers=1, threads=4, outputs=outputs, JOB_BACKEND="celery",
                REDIS_URL=redis_server.url, MAX_QUEUED_JOBS=MAX_QUEUED, JOB_TIMEOUT_SECONDS=120,
                MODELS=f"{model},{depth_pro}"))
        yield type("Cluster", (), {"redis": redis_server, "workers": workers, "a": web["a"], "b": web["b"],
                                   "outputs": outputs, "depth_pro": depth_pro,
                                   "hold_conversions": Path(env["HOLD_CONVERSIONS_WHILE"]),
                                   "hold_exports": Path(env["HOLD_EXPORTS_WHILE"])})


def post(server, image: bytes, **fields) -> requests.Response:
    return requests.post(server.url + "/api/v1/conversions", files={"image": ("picture.png", image)}, data=fields,
                         timeout=30)


def follow(server, status_url: str, timeout: float = 60, until=lambda view: view["status"] in FINISHED) -> dict:
    deadline = time.monotonic() + timeout
    view = None
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.ConnectionError, ValueError):
            view = requests.get(server.url + status_url, timeout=10).json()
            if until(view):
                return view
        time.sleep(0.1)
    raise AssertionError(f"{status_url} did not get there in {timeout} s; last seen: {view}")


def until_answer(url: str, wanted, timeout: float = 60) -> requests.Response:
    """GET ``url`` until ``wanted(response)``; ``timeout`` is a hang guard only."""
    deadline = time.monotonic() + timeout
    while not wanted(answer := requests.get(url, timeout=10)):
        assert time.monotonic() < deadline, (url, answer.status_code, answer.text[:300])
        time.sleep(0.1)
    return answer


def photo(height: int = 96, width: int = 128) -> bytes:
    rows, columns = np.mgrid[0:height, 0:width]
    return png_bytes(np.dstack([columns * 2 % 256, rows * 2 % 256, 255 - columns % 256]).astype(np.uint8))


def test_a_job_posted_to_one_instance_is_followed_and_downloaded_from_the_other(cluster):
    import trimesh
    from plyfile import PlyData

    ready = requests.get(cluster.b.url + "/readyz", timeout=10)
    assert ready.status_code == 200 and "2 worker" in ready.json()["message"]
    accepted = post(cluster.a, photo())
    assert accepted.status_code == 202
    view = follow(cluster.b, accepted.json()["status_url"])
    assert view["status"] == "done", view
    assert {"ply", "glb"} <= set(view["files"])
    job_folder = cluster.outputs / view["id"]
    assert not (job_folder / "upload.image").exists()  # the upload goes once the job ends
    for kind, url in view["files"].items():
        response = http_download(cluster.b.url + url)
        assert response.status_code == 200 and response.content, kind
        if kind == "ply":
            cloud = PlyData.read(io.BytesIO(response.content))
            assert cloud["vertex"].count == view["info"]["point_count"] > 100
        if kind == "glb":
            scene = trimesh.load(io.BytesIO(response.content), file_type="glb")
            assert sum(len(g.faces) for g in scene.geometry.values()) > 100
    rebuilt = requests.post(cluster.b.url + f"/api/v1/conversions/{view['id']}/rebuild", data={"relief": "2"},
                            timeout=30)
    assert rebuilt.status_code == 202  # a worker rebuilds from the kept files on the shared folder, no upload
    again = follow(cluster.a, rebuilt.json()["status_url"])
    assert again["status"] == "done" and again["info"]["rebuilt_from"] == view["id"]


def test_a_celery_worker_keeps_the_camera_depth_pro_estimated_and_so_does_its_rebuild(cluster):
    accepted = post(cluster.a, photo(), model=str(cluster.depth_pro))
    assert accepted.status_code == 202, accepted.text
    view = follow(cluster.b, accepted.json()["status_url"])
    assert view["status"] == "done", view
    camera = view["info"]["camera"]
    assert camera["source"] == f"model:{cluster.depth_pro}" and view["info"]["units"] == "metres"
    assert camera["fx"] == pytest.approx(camera["model_focal_px"])
    rebuilt = requests.post(cluster.a.url + f"/api/v1/conversions/{view['id']}/rebuild", data={"relief": "2"},
                            timeout=30)
    again = follow(cluster.b, rebuilt.json()["status_url"])
    assert again["status"] == "done" and again["info"]["camera"]["source"] == camera["source"]
    assert again["info"]["camera"]["fx"] == pytest.approx(camera["fx"])


def test_a_batch_posted_to_one_instance_is_followed_and_zipped_by_the_other(cluster):
    import zipfile

    files = [("images", ("a.png", photo(96, 128))), ("images", ("b.png", photo(80, 120)))]
    accepted = requests.post(cluster.a.url + "/api/v1/batches", files=files, data={"detail": "low"}, timeout=30)
    assert accepted.status_code == 202, accepted.text
    batch = accepted.json()
    deadline = time.monotonic() + 90
    while (view := requests.get(cluster.b.url + f"/api/v1/batches/{batch['id']}", timeout=10).json())["status"] \
            != "done":
        assert time.monotonic() < deadline, view
        time.sleep(0.2)
    assert [job["status"] for job in view["views"]] == ["done", "done"]
    archive = http_download(cluster.b.url + view["download_url"] + "?formats=ply,json")
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as bundle:
        assert sorted(bundle.namelist()) == ["01/cloud.ply", "01/result.json", "02/cloud.ply", "02/result.json"]
        widths = [json.loads(bundle.read(f"{n}/result.json"))["image"]["width"] for n in ("01", "02")]
    assert widths == [128, 120]  # upload order kept


def test_probe_header_refuses_from_headers_without_decoding():
    from PIL import Image

    from converter.errors import ImageTooLargeError, UnsupportedImageError
    from converter.images import probe_header

    whole = photo(120, 160)
    assert probe_header(whole[: len(whole) // 2]) == ("PNG", 160, 120)  # damage is for the worker's decode
    with pytest.raises(UnsupportedImageError):
        probe_header(b"%PDF-1.7 not a picture")
    frames = [Image.new("RGB", (100, 100), (i, 0, 0)) for i in range(12)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageTooLargeError, match="frames"):
        probe_header(buffer.getvalue(), max_pixels=100_000)  # 12 frames x 10,000 pixels
    assert probe_header(buffer.getvalue(), max_pixels=120_000)[0] == "GIF"


def test_the_web_tier_checks_headers_at_once_and_the_worker_finds_the_damage(cluster):
    assert post(cluster.a, b"GIF89a but not really an image at all").status_code in (415, 422)
    assert post(cluster.a, b"just some text, not an image").status_code == 415
    tall = png_bytes(np.zeros((8000, 8000, 3), np.uint8))  # 64 MP declared in the header, over the 50 MP cap
    refused = post(cluster.b, tall)
    assert refused.status_code == 422 and "too large" in refused.json()["error"]
    whole = photo(120, 160)
    damaged = post(cluster.a, whole[: len(whole) * 2 // 3])  # header intact, pixel data cut off
    assert damaged.status_code == 202
    view = follow(cluster.b, damaged.json()["status_url"])
    assert view["status"] == "failed" and view["error"] == "The image is damaged or incomplete."
    assert view["files"] == {}


def test_redis_restarted_between_jobs_the_next_job_is_accepted_and_done(cluster):
    before = post(cluster.a, photo())
    assert before.status_code == 202
    finished = follow(cluster.a, before.json()["status_url"])
    cluster.redis.stop()
    # Redis away: the web tier still answers what it can, refuses new work with a retry hint, fails nothing.
    refused = post(cluster.a, photo())
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
    # Readiness is read from Redis at most once a second (WorkersModelStatus.CACHE_SECONDS): b says 503 once its
    # last reading is older than that; wait on that answer, not on the clock.
    unready = until_answer(cluster.b.url + "/readyz", lambda answer: answer.status_code == 503)
    assert "cannot be reached" in unready.json()["message"]
    assert requests.get(cluster.b.url + before.json()["status_url"], timeout=10).json() == finished
    cluster.redis.start()  # the same port, empty: the workers and web instances reconnect
    accepted = post(cluster.b, photo())
    assert accepted.status_code == 202, accepted.text
    assert follow(cluster.a, accepted.json()["status_url"], timeout=60)["status"] == "done"


def test_a_burst_beyond_the_queue_gets_202_or_503_and_every_accepted_job_ends(cluster):
    image = photo(600, 800)
    with cluster.redis.client() as client:
        assert client.zcard(PENDING) == 0  # every earlier job was claimed
    cluster.workers.pause()  # nobody claims a job during the burst: the queue fills, whatever the machine's speed
    try:
        answers = [post(server, image, detail="full") for server in (cluster.a, cluster.b) * 5]
    finally:
        cluster.workers.resume()
    assert {answer.status_code for answer in answers} <= {202, 503}
    refused = [answer for answer in answers if answer.status_code == 503]
    accepted = [answer.json()["status_url"] for answer in answers if answer.status_code == 202]
    assert len(accepted) == MAX_QUEUED and len(refused) == 10 - MAX_QUEUED
    assert all(int(answer.headers["Retry-After"]) > 0 and answer.json()["code"] == "busy" for answer in refused)
    for status_url in accepted:
        view = follow(cluster.a, status_url, timeout=90)
        assert view["status"] == "done" or (view["status"] == "failed" and view["error"].endswith("."))


def test_a_worker_killed_mid_job_the_job_ends_on_the_other_worker(cluster):
    cluster.hold_conversions.touch()  # the job starts, then waits: it is mid-job when its worker is killed
    try:
        accepted = post(cluster.a, photo(), detail="full")
        assert accepted.status_code == 202
        status_url = accepted.json()["status_url"]
        follow(cluster.b, status_url, until=lambda view: view["status"] == "running")
        record = json.loads((cluster.outputs / accepted.json()["id"] / "job.json").read_text())
        assert record["attempt"] == 1
        pid = int(record["owner"].split(":")[1])  # "host:pid:start time" of the pool child running it
        victim = cluster.workers.owning(pid)
        assert victim is not None, record["owner"]
        cluster.workers.kill(victim)
    finally:
        cluster.hold_conversions.unlink()
    # Its heartbeat lapses; a web instance's watch queues attempt 2, which the other worker runs to the end.
    view = follow(cluster.b, status_url, timeout=90)
    assert view["status"] == "done" and view["files"], view
    record = json.loads((cluster.outputs / view["id"] / "job.json").read_text())
    assert record["attempt"] == 2


def test_a_threads_pool_worker_batches_the_forwards_of_its_jobs(tmp_path, make_app):
    """One worker process with `--pool threads --concurrency 4` and BATCH_SIZE=4 (the GPU set-up: one model copy):
    four jobs run at once and share forwards, as the worker's published counts show."""
    # The batcher waits up to a minute for company (a hang guard: four jobs run at once on four threads, so the
    # batch fills): one forward for the four, whatever the machine's speed.
    redis_server, model, outputs, env = worker_setting(tmp_path, BATCH_SIZE="4", BATCH_WAIT_MS="60000")
    workers = Workers(tmp_path, env)
    try:
        workers.start(1, pool="threads", concurrency=4)
        wait_ready(workers, redis_server, 1)
        app = make_app(JOB_BACKEND="celery", REDIS_URL=redis_server.url, OUTPUT_FOLDER=str(outputs),
                       DEPTH_MODEL=str(model))
        client = app.test_client()
        ids = []
        for number in range(4):
            response = client.post("/api/v1/conversions", content_type="multipart/form-data",
                                   data={"image": (io.BytesIO(photo(96, 128 + 8 * number)), "p.png")})
            assert response.status_code == 202, response.get_data(as_text=True)
            ids.append(response.get_json()["id"])
        views = finished_views(client, ids, workers)
        assert [view["status"] for view in views] == ["done"] * 4, views
        deadline = time.monotonic() + 60  # a hang guard only
        while True:  # the worker publishes its counts every few seconds
            [state] = [json.loads(value) for value in redis_server.client().mget(
                list(redis_server.client().scan_iter("*worker:*")))]
            if state.get("predictions", 0) >= 4:
                break
            assert time.monotonic() < deadline, state
            time.sleep(0.5)
        assert state["forwards"] == 1 and state["predictions"] == 4, state
    finally:
        workers.stop_all()
        redis_server.stop()


def test_heavy_exports_on_two_celery_instances_leave_healthz_and_uploads_answering(cluster):
    """Queued exports in Celery mode: the 24 heavy downloads are written by the workers (held while the web tier
    is probed), the web tier only answers (see tests/test_export_load.py for the embedded run; the timing goal is
    bench/export_load.py's)."""
    from test_export_load import check_under_heavy_exports, converted

    servers = [cluster.a, cluster.b]
    views = [converted(server) for server in servers]
    figures = check_under_heavy_exports(servers, views, cluster.hold_exports)
    print(f"celery, 24 heavy downloads on 2 instances: {figures} (timing goal: bench/export_load.py)")
    assert figures["probes_while_held"] == 10


def test_an_attempt_claims_its_job_while_it_runs_and_the_claim_goes_once_the_job_is_done(cluster):
    """The claim stops a second delivery of a running attempt; once the record is finished a late delivery is
    ignored by the record itself, so the claim goes (the soak, bench/soak.py, saw one key per job kept for
    CLAIM_TTL, two days: Redis grew with every job)."""
    cluster.hold_conversions.touch()
    try:
        accepted = post(cluster.a, photo())
        assert accepted.status_code == 202
        job_id = accepted.json()["id"]
        follow(cluster.b, accepted.json()["status_url"], until=lambda view: view["status"] == "running")
        with cluster.redis.client() as client:
            assert client.exists(f"image-to-3d:claim:{job_id}:1")
    finally:
        cluster.hold_conversions.unlink()
    assert follow(cluster.b, accepted.json()["status_url"])["status"] == "done"
    with cluster.redis.client() as client:
        wait_until(lambda: not client.exists(f"image-to-3d:claim:{job_id}:1"), 60)  # released after the record


def test_a_job_that_could_never_fit_a_workers_memory_fails_with_the_sentence_and_one_that_fits_runs(tmp_path,
                                                                                                  make_app):
    """JOB_MEMORY_MB=150 in the worker's environment only: the web tier (no limit of its own) estimates both jobs and
    accepts them; the worker fails the one whose estimate exceeds its budget with the sentence naming both numbers
    (it would otherwise start a conversion it cannot hold) and runs the one that fits. A web tier given the same
    JOB_MEMORY_MB refuses the large one at once, 422, before anything reaches Redis."""
    from test_memory_budget import FULL, big_png

    from web.memory_budget import CONVERSION_KINDS
    from converter.service_api import estimate_job_mb

    redis_server, model, outputs, env = worker_setting(tmp_path, JOB_MEMORY_MB="150")
    workers = Workers(tmp_path, env)
    try:
        workers.start(1)
        wait_ready(workers, redis_server, 1)
        tier = dict(JOB_BACKEND="celery", REDIS_URL=redis_server.url, OUTPUT_FOLDER=str(outputs),
                    DEPTH_MODEL=str(model))
        client = make_app(**tier).test_client()
        estimate = estimate_job_mb(3000, 2000, FULL, CONVERSION_KINDS, state=True)
        assert estimate > 150
        ids = []
        for picture, detail in ((big_png(), "full"), (big_png(600, 400), "low")):
            response = client.post("/api/v1/conversions", content_type="multipart/form-data",
                                   data={"image": (io.BytesIO(picture), "p.png"), "detail": detail})
            assert response.status_code == 202, response.get_data(as_text=True)
            ids.append(response.get_json()["id"])
        large, small = finished_views(client, ids, workers)
        assert large["memory_estimate_mb"] == round(estimate)
        assert (large["status"], large["code"]) == ("failed", "too_much_memory"), large
        assert f"about {estimate:,.0f} MB" in large["error"] and "150 MB" in large["error"]
        assert not [path.name for path in (outputs / large["id"]).iterdir() if path.name != "job.json"]
        assert small["status"] == "done" and 0 < small["memory_estimate_mb"] < 150, small

        strict = make_app(JOB_MEMORY_MB=150, **tier).test_client()
        with redis_server.client() as client_redis:
            pending = client_redis.zcard(PENDING)
        refused = strict.post("/api/v1/conversions", content_type="multipart/form-data",
                              data={"image": (io.BytesIO(big_png()), "p.png"), "detail": "full"})
        assert refused.status_code == 422 and refused.get_json()["code"] == "too_much_memory"
        with redis_server.client() as client_redis:
            assert client_redis.zcard(PENDING) == pending
        assert sorted(path.name for path in outputs.iterdir() if not path.name.startswith(".")) == sorted(ids)
    finally:
        workers.stop_all()
        redis_server.stop()


def keys_naming(redis_server: Redis, job_id: str) -> list[str]:
    """Every Redis key whose name holds the job's id, and the shared sets and hashes that list it."""
    with redis_server.client() as client:
        named = [key for key in client.scan_iter("*", count=1000) if job_id in key]
        listed = [key for key in client.scan_iter("image-to-3d:*", count=1000)
                  if (client.type(key) == "zset" and client.zscore(key, job_id) is not None)
                  or (client.type(key) == "hash" and client.hexists(key, job_id))]
    return named + listed


def job_files(outputs: Path, job_id: str) -> list[str]:
    return [str(path) for path in outputs.rglob("*") if path.is_file() and job_id in str(path)]


def test_a_job_deleted_while_queued_or_while_running_leaves_no_file_and_no_redis_key(cluster):
    from web.deletion import TOKEN_HEADER

    cluster.workers.pause()  # nothing claims the first job: it waits in the queue
    try:
        queued = post(cluster.a, photo()).json()
        assert keys_naming(cluster.redis, queued["id"])  # its place in line
        deleted = requests.delete(cluster.b.url + f"/api/v1/conversions/{queued['id']}",
                                  headers={TOKEN_HEADER: queued["delete_token"]}, timeout=30)
        assert deleted.status_code == 204
        assert keys_naming(cluster.redis, queued["id"]) == [] and job_files(cluster.outputs, queued["id"]) == []
    finally:
        cluster.workers.resume()

    cluster.hold_conversions.touch()  # the next job is claimed and running, held before its work
    try:
        running = post(cluster.a, photo(80, 112)).json()
        follow(cluster.b, running["status_url"], until=lambda view: view["status"] == "running")
        assert requests.delete(cluster.a.url + f"/api/v1/conversions/{running['id']}", timeout=30).status_code == 403
        deleted = requests.delete(cluster.a.url + f"/api/v1/conversions/{running['id']}",
                                  headers={TOKEN_HEADER: running["delete_token"]}, timeout=30)
        assert deleted.status_code == 204
        assert requests.get(cluster.b.url + running["status_url"], timeout=10).status_code == 404
    finally:
        cluster.hold_conversions.unlink()
    # The attempt stops at its first stage and its worker lets go of it (its heartbeat, which may have come back
    # meanwhile, goes then): nothing of either job is left.
    let_go = f"job {running['id']} attempt 1: let go"
    wait_until(lambda: any(let_go in log.read_text(errors="replace")
                           for log in cluster.workers.folder.glob("worker*.log")), 60)
    for job_id in (queued["id"], running["id"]):
        assert job_files(cluster.outputs, job_id) == []
        assert keys_naming(cluster.redis, job_id) == []
    # The workers took the deleted jobs' messages and did nothing; they still convert.
    after = post(cluster.b, photo(64, 64))
    assert follow(cluster.a, after.json()["status_url"])["status"] == "done"


def test_a_clients_many_queued_jobs_do_not_keep_another_clients_one_waiting(tmp_path, make_app):
    """Fair share with Celery: one worker holds A's first job while A queues five more, then B posts one. B's task
    has the broker's first priority (A's have 1 to 5: A's jobs already in), so the worker takes B's next: position
    1 in B's view, and the second job to start (before fair share: the seventh)."""
    started = tmp_path / "started.log"
    redis_server, model, outputs, env = worker_setting(tmp_path, CONVERSIONS_STARTED_LOG=str(started))
    hold = Path(env["HOLD_CONVERSIONS_WHILE"])
    workers = Workers(tmp_path, env)
    try:
        workers.start(1)
        wait_ready(workers, redis_server, 1)
        app = make_app(JOB_BACKEND="celery", REDIS_URL=redis_server.url, OUTPUT_FOLDER=str(outputs),
                       DEPTH_MODEL=str(model), MAX_QUEUED_JOBS=20)
        client = app.test_client()

        def post_from(address: str) -> str:
            response = client.post("/api/v1/conversions", content_type="multipart/form-data",
                                   data={"image": (io.BytesIO(photo()), "p.png")},
                                   environ_base={"REMOTE_ADDR": address})
            assert response.status_code == 202, response.get_data(as_text=True)
            return response.get_json()["id"]

        hold.touch()
        a_jobs = [post_from("198.51.100.1") for _ in range(6)]
        wait_until(lambda: started.is_file() and started.read_text().split() == a_jobs[:1])  # held, 5 wait
        b_job = post_from("198.51.100.2")
        waiting = [b_job, *a_jobs[1:]]
        assert {job_id: client.get(f"/api/v1/conversions/{job_id}").get_json()["queue_position"]
                for job_id in waiting} == {job_id: place for place, job_id in enumerate(waiting, 1)}
        hold.unlink()
        views = finished_views(client, [*a_jobs, b_job], workers)
        assert [view["status"] for view in views] == ["done"] * 7, views
        assert started.read_text().split() == [a_jobs[0], *waiting]
        with redis_server.client() as client_redis:  # every job left (released after its record): none remembered
            wait_until(lambda: not client_redis.exists("image-to-3d:client-of", "image-to-3d:jobs-of",
                                                       "image-to-3d:last-priority-of"))
    finally:
        hold.unlink(missing_ok=True)
        workers.stop_all()
        redis_server.stop()
