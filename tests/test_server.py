"""End to end against real gunicorn on 127.0.0.1: upload, follow the job, download, and refuse bad requests."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from conftest import png_bytes
from conftest import wait_for_server_job as wait_done
from plyfile import PlyData

pytestmark = pytest.mark.slow  # real gunicorn or the CLI in subprocesses


def test_upload_page_convert_and_download(live_server, photo):
    session = requests.Session()
    assert "Turn an image into 3D" in session.get(live_server.url + "/", timeout=60).text
    response = session.post(live_server.url + "/convert", files={"image": ("photo.png", png_bytes(photo))},
                            allow_redirects=False, timeout=60)
    assert response.status_code == 303
    job_url = live_server.url + response.headers["Location"]
    view = wait_done(live_server, response.headers["Location"] + "/status")  # any worker process can answer
    assert view["status"] == "done", view
    page = session.get(job_url, timeout=60)
    assert page.status_code == 200 and "Your 3D result" in page.text
    download = session.get(live_server.url + view["files"]["ply"], timeout=60)
    assert download.headers["Content-Disposition"].startswith("attachment")
    cloud = PlyData.read(io.BytesIO(download.content))["vertex"]
    assert cloud.count == view["info"]["point_count"] > 0
    assert not live_server.leftovers()  # the upload was never written outside the job


def test_api_with_options(live_server, photo):
    response = requests.post(live_server.url + "/api/v1/conversions", files={"image": ("p.png", png_bytes(photo))},
                             data={"detail": "low", "focal_px": "100", "clean": "false"}, timeout=60)
    assert response.status_code == 202
    view = wait_done(live_server, response.json()["status_url"])
    assert view["info"]["camera"]["fx"] == 100.0 and view["info"]["camera"]["source"] == "user:focal_px"
    assert view["info"]["point_count"] == photo.shape[0] * photo.shape[1]  # no cleaning, all opaque, under 250 k


def test_oversized_upload_is_413_under_gunicorn(live_server):
    big = b"\x89PNG\r\n\x1a\n" + bytes(3 * 1024 * 1024)
    response = requests.post(live_server.url + "/convert", files={"image": ("big.png", big)}, timeout=60)
    assert response.status_code == 413 and "limit is 2 MB" in response.text
    assert requests.get(live_server.url + "/healthz", timeout=60).status_code == 200


def test_bad_uploads_under_gunicorn_leave_nothing(live_server):
    before = {p for p in live_server.outputs.iterdir()}
    noise = png_bytes(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    for body, status in ((b"", 400), (b"%PDF-1.4 not an image", 415), (noise[: len(noise) // 2], 422)):
        response = requests.post(live_server.url + "/api/v1/conversions", files={"image": ("x.png", body)},
                                 timeout=60)
        assert response.status_code == status
        assert set(response.json()) == {"error", "code"} and "Traceback" not in response.text
    assert {p for p in live_server.outputs.iterdir()} == before
    assert not live_server.leftovers()
    assert requests.get(live_server.url + "/readyz", timeout=60).status_code == 200


def test_a_real_sized_photo_uploads(live_server):
    """A photo of about 1.5 MB (noise does not compress): far more than one multipart read chunk."""
    noise = np.random.default_rng(3).integers(0, 255, (700, 700, 3), dtype=np.uint8)
    body = png_bytes(noise)
    assert 1_000_000 < len(body) < 2 * 1024 * 1024
    response = requests.post(live_server.url + "/api/v1/conversions", files={"image": ("big.png", body)},
                             data={"mesh": "false"}, timeout=60)
    assert response.status_code == 202, response.text
    view = wait_done(live_server, response.json()["status_url"])
    assert view["status"] == "done" and view["info"]["camera"]["width"] == 700
