"""Hostile requests against real gunicorn on 127.0.0.1: odd names, traversal, form abuse, truncation, a burst."""

from __future__ import annotations

import concurrent.futures
import io

import numpy as np
import pytest
import requests
from conftest import png_bytes, serve
from conftest import wait_for_server_job as wait_done
from plyfile import PlyData

pytestmark = pytest.mark.slow  # real gunicorn or the CLI in subprocesses

BOUNDARY = "----hostile-boundary"


def multipart(parts: list[tuple[str, str | None, bytes]], end: bool = True) -> bytes:
    """A hand-written multipart body, so names and structure are exactly what we say."""
    body = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode("utf-8", "surrogateescape")
        body += content + b"\r\n"
    return body + (f"--{BOUNDARY}--\r\n".encode() if end else b"")


def post_raw(server, body: bytes, path: str = "/api/v1/conversions") -> requests.Response:
    return requests.post(server.url + path, data=body, timeout=30,
                         headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


@pytest.fixture(scope="module")
def picture() -> bytes:
    rows, columns = np.mgrid[0:48, 0:64]
    return png_bytes(np.dstack([columns * 4, rows * 5, 255 - columns * 4]).astype(np.uint8))


@pytest.mark.parametrize("filename", ["../../etc/passwd", "..\\\\..\\\\boot.ini", "a" * 10_000, "🙂🚀.png",
                                      "<script>alert(1)</script>.png", "name\x00.png", "", "/abs/path.png"])
def test_any_file_name_is_harmless(live_server, picture, filename):
    before = set(live_server.outputs.iterdir())
    response = post_raw(live_server, multipart([("image", filename, picture)]))
    if response.status_code == 400:  # an empty name reads as "no file chosen", which is also fair
        assert filename == "" and "No image" in response.json()["error"]
        return
    assert response.status_code == 202, response.text
    view = wait_done(live_server, response.json()["status_url"])
    assert view["status"] == "done"
    new = set(live_server.outputs.iterdir()) - before
    assert [path.name for path in new] == [view["id"]]  # stored under the server's id, nowhere else
    page = requests.get(live_server.url + f"/jobs/{view['id']}", timeout=10).text
    assert "<script>alert" not in page and "passwd" not in page


@pytest.mark.parametrize("path", ["/jobs/../app.py", "/jobs/%2e%2e/%2e%2e/app.py", "/jobs/%2e%2e%2fapp.py",
                                  "/static/../app.py", "/static/%2e%2e/app.py", "/jobs/abc%00/status",
                                  "/jobs/" + "0" * 32 + "/files/%2e%2e%2fjob.json", "/jobs/%00"])
def test_traversal_in_download_paths_is_404(live_server, path):
    response = requests.get(live_server.url + path, timeout=10)
    assert response.status_code == 404
    assert "create_app" not in response.text


def test_too_many_form_parts_is_413(live_server, picture):
    parts = [("image", "a.png", picture)] + [(f"field{i}", None, b"x") for i in range(60)]  # the limit: 50
    assert post_raw(live_server, multipart(parts)).status_code == 413


def test_oversized_text_field_is_413(live_server, picture):
    parts = [("image", "a.png", picture), ("fov", None, b"6" * 1_200_000)]
    response = post_raw(live_server, multipart(parts))
    assert response.status_code == 413 and set(response.json()) == {"error", "code"}


@pytest.mark.parametrize("body, sentence", [
    # cut in the middle of the part, or not multipart at all: bytes, but no named field
    (multipart([("image", "a.png", b"\x89PNG\r\n\x1a\n")], end=False)[:-10], "The form could not be read"),
    (multipart([("note", None, b"hello")]), "No image was uploaded"),  # no file field
    (b"--" + BOUNDARY.encode() + b"\r\nthis is not a multipart body", "The form could not be read"),
])
def test_truncated_or_fileless_multipart_is_400(live_server, body, sentence):
    response = post_raw(live_server, body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(sentence)
    assert requests.get(live_server.url + "/healthz", timeout=10).status_code == 200


def test_html_error_pages_for_people_json_for_scripts(live_server):
    page = requests.post(live_server.url + "/convert", files={"image": ("a.txt", b"hello")}, timeout=10)
    assert page.status_code == 415 and page.headers["Content-Type"].startswith("text/html")
    assert "not a supported image format" in page.text and "Traceback" not in page.text
    api = requests.post(live_server.url + "/convert", files={"image": ("a.txt", b"hello")}, timeout=10,
                        headers={"Accept": "application/json"})
    assert api.status_code == 415 and api.json() == {"error": api.json()["error"], "code": "unsupported_format"}


def test_a_burst_larger_than_the_queue(tiny_models, tmp_path, picture):
    """12 simultaneous uploads against 1 worker process with room for 3 jobs (1 converting, 2 waiting): while the
    conversions are held, exactly 3 are accepted and 9 refused at once (they are answered while nothing can end)
    with 503 + Retry-After; released, each accepted one converts to a correct file; memory stays bounded."""
    from conftest import holding

    settings = holding(tmp_path)
    hold = tmp_path / "hold-conversions"
    with serve(tiny_models["dpt_hybrid"], tmp_path, workers=1, threads=16, MAX_QUEUED_JOBS=2,
               CONVERSION_WORKERS=1, **settings) as server:

        def one(index: int):
            return requests.post(server.url + "/api/v1/conversions", timeout=60,
                                 files={"image": (f"burst{index}.png", picture)})

        hold.touch()  # no conversion ends during the burst, however fast or slow the machine
        try:
            with concurrent.futures.ThreadPoolExecutor(12) as pool:
                answers = list(pool.map(one, range(12)))
            statuses = sorted(response.status_code for response in answers)
            assert statuses == [202] * 3 + [503] * 9, statuses
            held = [requests.get(server.url + response.json()["status_url"], timeout=60).json()["status"]
                    for response in answers if response.status_code == 202]
            assert len(held) == 3 and set(held) <= {"queued", "running"}, held  # the hold is what kept them
        finally:
            hold.unlink()
        accepted = [response for response in answers if response.status_code == 202]
        refused = [response for response in answers if response.status_code == 503]
        for response in refused:
            assert int(response.headers["Retry-After"]) > 0 and response.json()["code"] == "busy"
        for response in accepted:
            view = wait_done(server, response.json()["status_url"])
            assert view["status"] == "done"
            ply = requests.get(server.url + view["files"]["ply"], timeout=10).content
            assert PlyData.read(io.BytesIO(ply))["vertex"].count == view["info"]["point_count"] > 0
        rss_kb = _tree_rss_kb(server.process.pid)
        assert rss_kb < 1_500_000, f"gunicorn uses {rss_kb / 1024:.0f} MB"
        assert requests.get(server.url + "/readyz", timeout=10).status_code == 200
        assert not server.leftovers()


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and its children (gunicorn master + workers), from /proc."""
    import os

    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as status:
                fields = dict(line.split(":", 1) for line in status if ":" in line)
        except OSError:
            continue
        if int(entry) == pid or int(fields.get("PPid", "0").strip()) == pid:
            total += int(fields.get("VmRSS", "0 kB").split()[0])
    return total
