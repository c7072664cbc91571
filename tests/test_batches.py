"""Batches through the real app: several images or a zip, one job each, one page, one zip of everything."""

from __future__ import annotations

import io
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import download, png_bytes, wait_until
from plyfile import PlyData

from web.jobs.store import BatchStore


def pictures(count: int) -> list[bytes]:
    rows, columns = np.mgrid[0:30, 0:40]
    return [png_bytes(np.dstack([columns * (k + 2), rows * 3, np.full((30, 40), 40 * k)]).astype(np.uint8))
            for k in range(count)]


def zipped(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        for name, data in entries.items():
            bundle.writestr(name, data)
    return buffer.getvalue()


def post_batch(client, files: list[tuple[str, bytes]], path="/api/v1/batches", **fields):
    data = {name: [] for name, _ in files}
    for name, body in files:
        data[name].append((io.BytesIO(body), f"{name}.bin"))
    return client.post(path, content_type="multipart/form-data", data={**data, **fields})


def fetch(client, url: str):
    """GET a file (following the 202 "preparing" answers) and close the response."""
    return download(client, url)


def wait_for_batch(client, batch_id: str, timeout: float = 60) -> dict:
    def done():
        view = client.get(f"/api/v1/batches/{batch_id}").get_json()
        return view if view["status"] == "done" else None

    return wait_until(done, timeout, interval=0.05)


def test_a_batch_converts_every_image_and_zips_everything(client):
    response = post_batch(client, [("images", data) for data in pictures(3)], detail="low")
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert len(body["job_ids"]) == 3 and len(set(body["job_ids"])) == 3
    assert response.headers["Location"] == body["url"] == f"/batches/{body['id']}"
    view = wait_for_batch(client, body["id"])
    assert [job["status"] for job in view["views"]] == ["done"] * 3
    download = fetch(client, view["download_url"])
    assert download.status_code == 200 and download.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(download.data)) as bundle:
        names = sorted(bundle.namelist())
        files = ("cloud.ply", "mesh.glb", "result.json")
        assert names == sorted(f"{n:02d}/{file}" for n in (1, 2, 3) for file in files)
        for number, job_id in enumerate(view["job_ids"], start=1):
            cloud = PlyData.read(io.BytesIO(bundle.read(f"{number:02d}/cloud.ply")))["vertex"]
            job = client.get(f"/api/v1/conversions/{job_id}").get_json()
            assert cloud.count == job["info"]["point_count"] > 0
    page = client.get(f"/batches/{body['id']}").get_data(as_text=True)
    assert page.count('class="batch-job"') == 3 and 'id="batch-download"' in page


@pytest.mark.slow  # a whole batch converted (test_a_batch_converts_every_image... keeps one in the fast tier)
def test_the_form_sends_several_images_to_a_batch_page(client):
    response = post_batch(client, [("image", data) for data in pictures(2)], path="/convert")
    assert response.status_code == 303 and response.headers["Location"].startswith("/batches/")
    batch_id = response.headers["Location"].rsplit("/", 1)[1]
    assert len(wait_for_batch(client, batch_id)["job_ids"]) == 2


@pytest.mark.slow  # a whole batch converted (test_a_batch_converts_every_image... keeps one in the fast tier)
def test_a_zip_of_images_is_a_batch_in_the_zips_order(client):
    images = pictures(2)
    archive = zipped({"photos/b.png": images[1], "photos/a.png": images[0], "__MACOSX/._a.png": b"junk",
                      ".DS_Store": b"junk"})
    response = post_batch(client, [("zip", archive)], formats="ply")
    assert response.status_code == 202, response.get_data(as_text=True)
    view = wait_for_batch(client, response.get_json()["id"])
    widths = [client.get(f"/api/v1/conversions/{job_id}").get_json()["info"]["image"]["width"]
              for job_id in view["job_ids"]]
    assert widths == [40, 40] and len(view["job_ids"]) == 2
    with zipfile.ZipFile(io.BytesIO(fetch(client, view["download_url"] + "?formats=ply,stl").data)) as bundle:
        assert sorted(bundle.namelist()) == ["01/cloud.ply", "01/relief.stl", "02/cloud.ply", "02/relief.stl"]


@pytest.mark.parametrize("case, status, code, words", [
    ("too many", 413, "too_many_images", "at most 2"),
    ("bomb", 413, "too_large", "unpacks to more than 1 mb"),
    ("damaged zip", 422, "damaged_zip", "damaged"),
    ("not an image", 415, "unsupported_format", "image 2 of the batch"),
    ("nothing", 400, "no_image", "no image"),
])
def test_batch_limits_are_stated_and_enforced(make_app, case, status, code, words):
    app = make_app(MAX_BATCH_IMAGES=2, MAX_BATCH_UNPACKED_MB=1)
    client = app.test_client()
    images = pictures(3)
    files = {
        "too many": [("images", data) for data in images],
        "bomb": [("zip", zipped({"big.png": b"\0" * (2 * 1024 * 1024)}))],
        "damaged zip": [("zip", zipped({"a.png": images[0]})[:-30])],
        "not an image": [("images", images[0]), ("images", b"just some text, not a picture")],
        "nothing": [("images", b"")],
    }[case]
    response = post_batch(client, files)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["code"] == code and words in response.get_json()["error"].lower()
    assert not list(Path(app.config["OUTPUT_FOLDER"]).glob("batch-*"))


@pytest.mark.slow  # seconds of threads and forwards
def test_a_batch_is_one_unit_of_admission(make_app):
    """Room for 2 jobs: a batch of 3 still fits the idle server, whole; while it waits, another batch (or a
    single image) is refused whole with 503 and Retry-After, and no job is created for it."""
    app = make_app(MAX_QUEUED_JOBS=1, CONVERSION_WORKERS=1)
    service = app.extensions["image_to_3d"]
    block = threading.Event()
    original = service.runner.convert
    service.runner.convert = lambda *args: (block.wait(60), original(*args))[1]  # held until `finally`
    client = app.test_client()
    try:
        accepted = post_batch(client, [("images", data) for data in pictures(3)])
        assert accepted.status_code == 202, accepted.get_data(as_text=True)
        assert len(accepted.get_json()["job_ids"]) == 3
        jobs_before = set(service.store.root.glob("[0-9a-f]" * 32))
        refused = post_batch(client, [("images", data) for data in pictures(2)])
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
        assert "busy" in refused.get_json()["error"]
        assert set(service.store.root.glob("[0-9a-f]" * 32)) == jobs_before  # nothing created for the refused one
        early = client.get(accepted.get_json()["download_url"], headers={"Accept": "application/json"})
        assert early.status_code == 409 and "still converting" in early.get_json()["error"]
    finally:
        block.set()
    wait_for_batch(client, accepted.get_json()["id"])


def test_unknown_batches_and_bad_formats(client):
    assert client.get("/api/v1/batches/" + "0" * 32).status_code == 404
    assert client.get("/api/v1/batches/../etc").status_code == 404
    response = post_batch(client, [("images", data) for data in pictures(1)])
    view = wait_for_batch(client, response.get_json()["id"])
    bad = client.get(view["download_url"] + "?formats=exe", headers={"Accept": "application/json"})
    assert bad.status_code == 400 and "formats" in bad.get_json()["error"].lower()


def test_expired_batches_are_swept(tmp_path):
    import json
    import os

    store = BatchStore(tmp_path, ttl_seconds=3600)
    batch = store.create(job_ids=["a" * 32])
    assert store.get(batch["id"])["job_ids"] == ["a" * 32]
    assert not store.expired(store.get(batch["id"])) and store.sweep() == 0
    # Two hours old, by its record and its file's time (recorded values, not a wait on the clock).
    path, then = store.path(batch["id"]), time.time() - 7200
    path.write_text(json.dumps({**batch, "created": then}))
    os.utime(path, (then, then))
    assert store.expired(store.get(batch["id"])) and store.sweep() == 1 and store.get(batch["id"]) is None
