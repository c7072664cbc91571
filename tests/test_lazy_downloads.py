"""Downloads written on first request: a web job is done after its first files, every other kind is written once,
as an export task (the link answers 202 until it is whole), under a lock, from the kept image and prediction, by whichever app (process) is asked first.

Jobs convert an uploaded picture with a user depth map (every pixel a point), so their geometry is exact and no
model runs.
"""

from __future__ import annotations

import io
import json
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import trimesh
from conftest import pauses, png_bytes, wait_until
from plyfile import PlyData

from converter import OUTPUTS
from converter.service_api import ALIGNMENT_KINDS, MESH_KINDS
from converter.state import IMAGE_FILE, PREDICTION_FILE
from web.jobs import conversion
from web.jobs.conversion import FIRST_KINDS

H, W = 30, 40


def picture() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (H, W, 3), dtype=np.uint8)


def tilted_depth() -> np.ndarray:
    rows, columns = np.mgrid[0:H, 0:W]
    return (2.0 + 0.02 * columns + 0.004 * rows).astype(np.float32)


def npy_bytes(depth: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, depth)
    return buffer.getvalue()


def submit(client, depth: np.ndarray | None = None, **fields) -> str:
    """POST a conversion of picture() with a metric depth map, every pixel kept; returns the job id."""
    depth = tilted_depth() if depth is None else depth
    form = {"max_points": "0", "clean": "false", **fields,
            "image": (io.BytesIO(png_bytes(picture())), "picture.png"),
            "depth": (io.BytesIO(npy_bytes(depth)), "depth.npy")}
    response = client.post("/api/v1/conversions", data=form, content_type="multipart/form-data")
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()["id"]


def wait_done(client, job_id: str, timeout: float = 60.0) -> dict:
    def finished():
        view = client.get(f"/api/v1/conversions/{job_id}").get_json()
        return view if view["status"] in ("done", "failed") else None

    view = wait_until(finished, timeout, interval=0.05)
    assert view["status"] == "done", view["error"]
    return view


def fetch(client, url: str, timeout: float = 60.0) -> tuple[int, bytes]:
    """(status, body) of a download, following the "preparing" answers (202, Retry-After, JSON) until the file is
    whole; each response closed (a file response holds its file open until then)."""
    deadline = time.monotonic() + timeout
    for pause in pauses():
        response = client.get(url)
        body = response.get_data()
        response.close()
        if response.status_code != 202:
            return response.status_code, body
        assert int(response.headers["Retry-After"]) > 0 and json.loads(body)["status"] == "preparing"
        assert time.monotonic() < deadline, f"{url} was still being prepared after {timeout} s"
        time.sleep(pause)


def folder_of(app, job_id: str):
    return app.extensions["image_to_3d"].store.folder(job_id)


def forget_recent_results() -> None:
    """Another process has none of this one's results in memory: later downloads are made from the kept files."""
    conversion._recent.clear()


def point(cloud, x: int, y: int) -> np.ndarray:
    """The point of pixel (x, y) of a cloud that kept every pixel (index y * W + x)."""
    return np.array([cloud["x"][y * W + x], cloud["y"][y * W + x], cloud["z"][y * W + x]], dtype=np.float64)


# ---------------------------------------------------------------------------------------------- done early


def test_a_done_job_holds_only_its_first_files_but_offers_every_kind(app, client):
    job_id = submit(client)
    view = wait_done(client, job_id)
    first = {OUTPUTS[name].file_name for name in FIRST_KINDS}
    assert {path.name for path in folder_of(app, job_id).iterdir()} == first | {IMAGE_FILE, PREDICTION_FILE,
                                                                                 "job.json"}
    assert set(view["files"]) == set(OUTPUTS) - set(ALIGNMENT_KINDS)  # those need align_to (tests/test_align.py)
    assert view["files"]["glb"] == f"/jobs/{job_id}/files/glb"


def test_without_a_mesh_no_mesh_kind_is_offered_or_served(app, client):
    job_id = submit(client, mesh="false")
    view = wait_done(client, job_id)
    assert set(view["files"]) == set(OUTPUTS) - set(MESH_KINDS) - set(ALIGNMENT_KINDS)
    for kind in MESH_KINDS:
        assert fetch(client, f"/jobs/{job_id}/files/{kind}")[0] == 404, kind
    status, body = fetch(client, view["files"]["stl"])  # the other kinds are still written on request
    assert status == 200 and trimesh.load(io.BytesIO(body), file_type="stl").is_watertight
    assert not {OUTPUTS[kind].file_name for kind in MESH_KINDS} & {p.name for p in folder_of(app, job_id).iterdir()}


# ------------------------------------------------------------------------------------------ written once


@pytest.mark.slow  # a third of a second or more: the fast tier stays under 30 s
@pytest.mark.parametrize("kind", ["glb", "stl"])
def test_concurrent_first_requests_get_one_whole_file(app, client, monkeypatch, kind):
    writes, proceed = [], threading.Event()
    real = OUTPUTS[kind]

    def counted(path, artifacts):  # held until every thread has asked and been told "preparing"
        writes.append(path)
        assert proceed.wait(60)  # a hang guard only: the test sets it
        real.write(path, artifacts)

    monkeypatch.setitem(OUTPUTS, kind, replace(real, write=counted))
    job_id = submit(client)
    wait_done(client, job_id)
    path = folder_of(app, job_id) / real.file_name
    assert not path.exists()

    url, start, asked = f"/jobs/{job_id}/files/{kind}", threading.Barrier(6), threading.Barrier(7)
    firsts, answers = [None] * 6, [None] * 6

    def download(index):
        own = app.test_client()  # a test client per thread, as each browser has its own connection
        start.wait(60)
        first = own.get(url)
        first.close()
        firsts[index] = first.status_code
        asked.wait(60)  # every thread has asked while the file is not written
        answers[index] = fetch(own, url)

    threads = [threading.Thread(target=download, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    asked.wait(60)
    proceed.set()
    for thread in threads:
        thread.join(60)
    assert firsts == [202] * 6  # six concurrent first requests, the writer held: all "preparing"
    assert [status for status, _ in answers] == [200] * 6
    assert len({body for _, body in answers}) == 1 and len(answers[0][1]) > 0
    assert writes == [path]
    written = path.stat()
    assert fetch(client, url) == answers[0]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)
    assert writes == [path]
    assert not [p.name for p in folder_of(app, job_id).iterdir() if p.name.endswith(".part")]
    if kind == "glb":
        assert len(trimesh.load(io.BytesIO(answers[0][1]), file_type="glb", force="mesh").faces) == \
            2 * (H - 1) * (W - 1)


# ---------------------------------------------------------------------------- made again from the kept files


@pytest.mark.parametrize("kind", ["stl", *(pytest.param(kind, marks=pytest.mark.slow)  # one kind in the fast tier
                                   for kind in ("glb", "mesh_ply", "las", "depth_npy"))])
def test_a_download_made_from_the_kept_files_equals_the_one_made_from_memory(make_app, kind):
    first = make_app()
    client = first.test_client()
    job_id = submit(client)
    wait_done(client, job_id)
    url, path = f"/jobs/{job_id}/files/{kind}", folder_of(first, job_id) / OUTPUTS[kind].file_name
    status, from_memory = fetch(client, url)  # the job's own result, still in this process's memory
    assert status == 200
    path.unlink()

    forget_recent_results()
    second = make_app()  # another process on the same output folder
    status, from_disk = fetch(second.test_client(), url)
    assert status == 200 and from_disk == from_memory and path.read_bytes() == from_disk


def test_a_second_app_writes_what_the_first_never_wrote(make_app):
    first = make_app()
    client = first.test_client()
    job_id = submit(client)
    view = wait_done(client, job_id)
    status, ply_before = fetch(client, view["files"]["ply"])
    assert status == 200
    forget_recent_results()
    second = make_app()
    other = second.test_client()
    status, stl = fetch(other, view["files"]["stl"])
    assert status == 200 and trimesh.load(io.BytesIO(stl), file_type="stl").is_watertight
    path = folder_of(first, job_id) / OUTPUTS["stl"].file_name
    path.unlink()
    assert fetch(client, view["files"]["stl"]) == (200, stl)  # the first app, asked later: the same bytes
    assert fetch(other, view["files"]["ply"]) == (200, ply_before)
    assert fetch(client, view["files"]["ply"]) == (200, ply_before)


# ---------------------------------------------------------------------------------------- refused requests


def test_unknown_kinds_404_and_an_expired_job_410(app, client):
    job_id = submit(client)
    view = wait_done(client, job_id)
    for kind in ("nonsense", "image", "job", "prediction"):
        assert fetch(client, f"/jobs/{job_id}/files/{kind}")[0] == 404, kind
    assert fetch(client, f"/jobs/{'0' * 32}/files/glb")[0] == 404
    store = app.extensions["image_to_3d"].store
    job = store.get(job_id)
    job.expires = time.time() - 1
    store.save(job)
    for kind in ("ply", "glb", "stl"):
        assert fetch(client, view["files"][kind])[0] == 410, kind
    gone = client.get(f"/api/v1/conversions/{job_id}")
    assert gone.status_code == 410 and gone.get_json()["code"] == "expired"
    assert not (folder_of(app, job_id) / OUTPUTS["glb"].file_name).exists()


# ---------------------------------------------------------------------------------------------- rebuilds


@pytest.mark.parametrize("text", ["3 4 30 25 0.5", *(pytest.param(text, marks=pytest.mark.slow)  # one in the fast tier
                                                   for text in ("3, 4, 30, 25, 0.5", " 3,4 30,25  0.5 "))])
def test_a_rebuild_with_a_known_length_is_in_metres(app, client, text):
    source = submit(client, depth=1.0 / tilted_depth(), depth_kind="disparity")
    source_view = wait_done(client, source)
    assert source_view["info"]["units"] == "relative units"
    response = client.post(f"/api/v1/conversions/{source}/rebuild", data={"known_length": text})
    assert response.status_code == 202, response.get_data(as_text=True)
    rebuilt = response.get_json()["id"]
    assert rebuilt != source
    view = wait_done(client, rebuilt)
    info = view["info"]
    assert info["units"] == "metres" and info["rebuilt_from"] == source
    assert info["scale"]["known_length_m"] == 0.5 and info["scale"]["pixels"] == [[3, 4], [30, 25]]
    status, body = fetch(client, view["files"]["ply"])
    cloud = PlyData.read(io.BytesIO(body))["vertex"]
    assert status == 200 and cloud.count == H * W
    assert np.linalg.norm(point(cloud, 30, 25) - point(cloud, 3, 4)) == pytest.approx(0.5, abs=1e-4)
    assert json.loads(fetch(client, view["files"]["json"])[1])["units"] == "metres"


@pytest.mark.parametrize("fields, words", [
    ({"known_length": "1 2 3"}, "5 numbers"),
    ({"known_length": "1 2 3 4 five"}, "5 numbers"),
    ({"known_length": "1 2 1 2 0.5"}, "two different pixels"),
    ({"known_length": "1 2 3 4 -1"}, "above 0"),
    ({"simplify": "tiny"}, "Simplify to"),
    ({"simplify": "2"}, "at least 4"),
])
def test_bad_rebuild_values_are_400_with_a_sentence(app, client, fields, words):
    source = submit(client)
    wait_done(client, source)
    response = client.post(f"/api/v1/conversions/{source}/rebuild", data=fields)
    assert response.status_code == 400
    body = response.get_json()
    assert words in body["error"] and body["error"].endswith(".")
    assert "Traceback" not in body["error"]


def test_a_rebuild_with_a_known_length_on_a_pixel_without_depth_fails_with_a_sentence(app, client):
    depth = tilted_depth()
    depth[4, 3] = 0.0
    source = submit(client, depth=depth)
    wait_done(client, source)
    response = client.post(f"/api/v1/conversions/{source}/rebuild", data={"known_length": "3 4 30 25 0.5"})
    assert response.status_code == 202
    rebuilt = response.get_json()["id"]
    deadline = time.monotonic() + 60
    while (view := client.get(f"/api/v1/conversions/{rebuilt}").get_json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert view["status"] == "failed" and "no depth at the known length's pixel (3, 4)" in view["error"]
    assert view["files"] == {}


def test_simplify_is_kept_for_a_new_conversion_and_a_rebuild(app, client):
    job_id = submit(client, simplify="300")
    view = wait_done(client, job_id)
    assert view["info"]["job"]["options"]["simplify"] == 300
    status, body = fetch(client, view["files"]["simplified_glb"])
    faces = len(trimesh.load(io.BytesIO(body), file_type="glb", force="mesh").faces)
    assert status == 200 and 0 < faces <= 300
    response = client.post(f"/api/v1/conversions/{job_id}/rebuild", data={"simplify": "medium"})
    rebuilt = wait_done(client, response.get_json()["id"])
    assert rebuilt["info"]["job"]["options"]["simplify"] == "medium"
    status, body = fetch(client, rebuilt["files"]["simplified_glb"])
    medium = len(trimesh.load(io.BytesIO(body), file_type="glb", force="mesh").faces)
    assert status == 200 and faces < medium <= round(0.25 * 2 * (H - 1) * (W - 1)) + 2
