"""The Flask app through its test client: upload → job → download, errors, and what is left on disk."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from conftest import download, png_bytes, wait_for_job
from plyfile import PlyData


def upload(client, data: bytes | None, name: str = "photo.png", url: str = "/convert", **fields):
    form = dict(fields)
    if data is not None:
        form["image"] = (io.BytesIO(data), name)
    return client.post(url, data=form, content_type="multipart/form-data")


def fetch(client, url: str):
    """GET a file (following the 202 "preparing" answers) and close the response."""
    return download(client, url)


def stored_files(app) -> list[str]:
    """Every file in outputs/ (job folders included): nothing is stored anywhere else."""
    from pathlib import Path

    return [str(p) for p in Path(app.config["OUTPUT_FOLDER"]).rglob("*") if p.is_file()]


def test_index_has_the_upload_form(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert '<input type="file" id="image" name="image" multiple required' in html
    assert 'accept="image/*,video/*,.zip,application/zip,' in html  # images, videos (tests/test_web_video.py), zips
    assert 'enctype="multipart/form-data"' in html
    assert "<script>" not in html and "onclick" not in html  # no inline script: a strict CSP holds


def test_upload_converts_and_the_ply_downloads(app, client, photo):
    response = upload(client, png_bytes(photo))
    assert response.status_code == 303
    location = response.headers["Location"]
    assert location.startswith("/jobs/")
    view = wait_for_job(client, location)
    assert view["status"] == "done", view
    assert view["info"]["point_count"] > 0 and view["info"]["units"] == "relative units"
    page = client.get(location)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and view["files"]["ply"] in html and view["files"]["depth_preview"] in html
    download = fetch(client, view["files"]["ply"])
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].startswith("attachment")
    ply = PlyData.read(io.BytesIO(download.data))
    assert ply["vertex"].count == view["info"]["point_count"]
    assert {"x", "y", "z", "red", "green", "blue"} <= {p.name for p in ply["vertex"].properties}
    assert not any(name.endswith((".image", ".depth")) for name in stored_files(app))  # upload deleted


def test_job_ids_are_unguessable_uuid4_hex(client, photo):
    location = upload(client, png_bytes(photo)).headers["Location"]
    job_id = location.rsplit("/", 1)[1]
    assert len(job_id) == 32 and job_id[12] == "4"  # uuid4 version nibble
    wait_for_job(client, location)


def test_json_api_creates_and_reports_a_conversion(client, photo):
    response = upload(client, png_bytes(photo), url="/api/v1/conversions", detail="low", fov="70")
    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"id", "status_url", "delete_token"}
    view = wait_for_job(client, f"/jobs/{body['id']}")
    status = client.get(body["status_url"]).get_json()
    assert status["status"] == "done" and status["stage"] == "done" and status["progress"] == 1.0
    assert status["error"] is None
    assert {"ply", "depth_png", "depth_npy"} <= set(status["files"])
    assert abs(status["info"]["camera"]["fov_x_deg"] - 70) < 1e-6
    assert view["files"] == status["files"]


def test_user_depth_map_replaces_the_model(client):
    image = np.full((40, 50, 3), 200, np.uint8)
    depth = np.full((40, 50), 2.0, np.float32)
    buffer = io.BytesIO()
    np.save(buffer, depth)
    response = client.post("/api/v1/conversions", content_type="multipart/form-data", data={
        "image": (io.BytesIO(png_bytes(image)), "a.png"), "depth": (io.BytesIO(buffer.getvalue()), "d.npy"),
        "depth_kind": "metric"})
    view = wait_for_job(client, f"/jobs/{response.get_json()['id']}")
    assert view["status"] == "done" and view["info"]["units"] == "metres"
    saved = np.load(io.BytesIO(fetch(client, view["files"]["depth_npy"]).data))
    np.testing.assert_allclose(saved, depth)
    ply = PlyData.read(io.BytesIO(fetch(client, view["files"]["ply"]).data))
    np.testing.assert_allclose(ply["vertex"]["z"], -2.0, rtol=1e-6)


@pytest.mark.parametrize(
    ("data", "name", "status", "words"),
    [
        (None, "x.png", 400, "No image was uploaded"),
        (b"", "empty.png", 400, "No image was uploaded"),
        (b"just some text, not a picture", "notes.png", 415, "not a supported image format"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "logo.svg", 415, "not a supported image format"),
        (png_bytes(np.zeros((30, 30, 3), np.uint8))[:60], "cut.png", 422, "damaged or incomplete"),
    ],
)
def test_bad_uploads_get_a_clear_error_and_leave_nothing(app, client, data, name, status, words):
    response = upload(client, data, name)
    assert response.status_code == status
    html = response.get_data(as_text=True)
    assert words in html and "Traceback" not in html
    assert stored_files(app) == []
    api = upload(client, data, name, url="/api/v1/conversions")
    assert api.status_code == status and words in api.get_json()["error"]
    assert client.get("/healthz").status_code == 200


def test_upload_over_the_limit_is_413(make_app):
    app = make_app(MAX_UPLOAD_MB=1)
    client = app.test_client()
    boundary = "xYzZy"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"\x89PNG" + b"0" * (1024 * 1024 + 10) + \
        f"\r\n--{boundary}--\r\n".encode()
    # A hand-made body: the test client's own multipart encoder spools big files to a temp file it never closes.
    response = client.post("/convert", data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert response.status_code == 413
    assert "limit is 1 MB" in response.get_data(as_text=True)
    assert stored_files(app) == []


def test_bad_option_is_400_with_the_reason(app, client, photo):
    response = upload(client, png_bytes(photo), fov="400")
    assert response.status_code == 400
    assert "between 1 and 179" in response.get_data(as_text=True)
    assert upload(client, png_bytes(photo), model="someone/else").status_code == 400
    assert stored_files(app) == []


@pytest.mark.parametrize("path", ["/jobs/0123/status", "/jobs/../../etc/passwd", "/jobs/%2e%2e/status",
                                  "/jobs/" + "a" * 32, "/jobs/" + "a" * 32 + "/files/ply"])
def test_unknown_jobs_and_traversal_are_404(client, path):
    assert client.get(path).status_code == 404


def test_download_kinds_outside_the_table_are_404(client, photo):
    location = upload(client, png_bytes(photo)).headers["Location"]
    wait_for_job(client, location)
    assert client.get(location + "/files/job.json").status_code == 404
    assert client.get(location + "/files/..%2fjob.json").status_code == 404


def test_security_headers_on_every_response(client):
    for path in ("/", "/healthz", "/nowhere"):
        headers = client.get(path).headers
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert "unsafe-inline" not in headers["Content-Security-Policy"]
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"


STRICT_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
              "connect-src 'self'; media-src 'self' blob:; worker-src 'self' blob:; object-src 'none'; "
              "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def test_only_the_job_page_may_compile_webassembly(client, photo):
    """The job page runs the splat viewer (Spark sorts splats in WebAssembly): its CSP adds 'wasm-unsafe-eval' and
    nothing else; every other response, the job's fragment, files and errors included, keeps the strict CSP."""
    location = upload(client, png_bytes(photo)).headers["Location"]
    wait_for_job(client, location)
    page = client.get(location)
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == STRICT_CSP.replace(
        "script-src 'self';", "script-src 'self' 'wasm-unsafe-eval';")
    assert f'data-splat-url="{location}/files/splat_ply"' in page.get_data(as_text=True)
    for path in ("/", "/healthz", "/nowhere", location + "/result", location + "/status", "/jobs/" + "a" * 32,
                 "/static/js/viewer.js", "/api/models"):
        response = fetch(client, path)
        assert response.headers["Content-Security-Policy"] == STRICT_CSP, path
    assert fetch(client, location + "/files/ply").headers["Content-Security-Policy"] == STRICT_CSP


def test_errors_are_json_for_api_clients(client):
    response = client.get("/nowhere", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert set(json.loads(response.data)) == {"error", "code"}


def test_model_that_cannot_load_is_explained_and_the_server_keeps_serving(make_app, tmp_path, photo):
    app = make_app(DEPTH_MODEL=str(tmp_path / "no-such-model"))
    client = app.test_client()
    page = client.get("/").get_data(as_text=True)
    assert "is unavailable" in page and "DEPTH_MODEL" in page and "no-such-model" in page
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "unavailable" in ready.get_json()["message"]
    assert client.get("/healthz").status_code == 200
    response = upload(client, png_bytes(photo))
    assert response.status_code == 503 and "DEPTH_MODEL" in response.get_data(as_text=True)
    assert stored_files(app) == []
    # A user depth map needs no model, so that still works.
    buffer = io.BytesIO()
    np.save(buffer, np.full(photo.shape[:2], 1.5, np.float32))
    api = client.post("/api/v1/conversions", content_type="multipart/form-data", data={
        "image": (io.BytesIO(png_bytes(photo)), "a.png"), "depth": (io.BytesIO(buffer.getvalue()), "d.npy")})
    assert wait_for_job(client, f"/jobs/{api.get_json()['id']}")["status"] == "done"


def test_failed_conversion_reports_why_and_keeps_no_files(app, client):
    wrong_shape = io.BytesIO()
    np.save(wrong_shape, np.ones((10, 90), np.float32))
    response = client.post("/api/v1/conversions", content_type="multipart/form-data", data={
        "image": (io.BytesIO(png_bytes(np.zeros((40, 40, 3), np.uint8))), "a.png"),
        "depth": (io.BytesIO(wrong_shape.getvalue()), "d.npy")})
    view = wait_for_job(client, f"/jobs/{response.get_json()['id']}")
    assert view["status"] == "failed" and "shapes differ" in view["error"] and view["files"] == {}
    page = client.get(f"/jobs/{view['id']}").get_data(as_text=True)
    assert "The conversion failed" in page and "shapes differ" in page
    assert [name for name in stored_files(app) if not name.endswith("job.json")] == []


@pytest.mark.slow  # a third of a second or more: the fast tier stays under 30 s
def test_every_download_kind_reads_back(client, tmp_path):
    """Point cloud, GLB, zipped OBJ, mesh PLY, 16-bit depth PNG and .npy, each read by an independent reader."""
    import zipfile

    import trimesh
    from PIL import Image

    image = np.dstack([np.full((30, 40), 200), np.tile(np.arange(40) * 6, (30, 1)), np.full((30, 40), 50)])
    depth = np.full((30, 40), 1.5, np.float32)
    depth[:, 20:] = 3.0  # a step: the mesh must not join the two planes
    buffer = io.BytesIO()
    np.save(buffer, depth)
    response = client.post("/api/v1/conversions", content_type="multipart/form-data", data={
        "image": (io.BytesIO(png_bytes(image.astype(np.uint8))), "a.png"),
        "depth": (io.BytesIO(buffer.getvalue()), "d.npy")})
    view = wait_for_job(client, f"/jobs/{response.get_json()['id']}")
    assert set(view["files"]) >= {"ply", "glb", "obj", "mesh_ply", "depth_png", "depth_npy"}
    points = view["info"]["point_count"]
    media = {"ply": "application/octet-stream", "glb": "model/gltf-binary", "obj": "application/zip",
             "depth_png": "image/png"}
    bodies = {}
    for kind, url in view["files"].items():
        got = fetch(client, url)
        assert got.status_code == 200 and got.data
        if kind in media:
            assert got.mimetype == media[kind]
        if kind not in ("input", "depth_preview"):
            assert got.headers["Content-Disposition"].startswith("attachment")
        bodies[kind] = got.data
    glb = trimesh.load(io.BytesIO(bodies["glb"]), file_type="glb", force="mesh", process=False)
    faces = len(glb.faces)  # written on first request, from the kept image and depth: the same mesh every time
    assert len(glb.vertices) == points and faces > 0
    z = -glb.vertices[glb.faces][:, :, 2]  # depth of each triangle corner
    assert np.all((z.max(axis=1) < 2) | (z.min(axis=1) > 2.9))  # no face bridges the step
    with zipfile.ZipFile(io.BytesIO(bodies["obj"])) as bundle:
        assert sorted(bundle.namelist()) == ["mesh.mtl", "mesh.obj", "mesh_texture.png"]
        bundle.extractall(tmp_path)
    obj = trimesh.load(tmp_path / "mesh.obj", force="mesh", process=False)
    assert len(obj.faces) == faces
    mesh_ply = PlyData.read(io.BytesIO(bodies["mesh_ply"]))
    assert mesh_ply["vertex"].count == points and mesh_ply["face"].count == faces
    stored = np.asarray(Image.open(io.BytesIO(bodies["depth_png"])))
    assert stored.dtype == np.uint16 and stored[0, 0] == 1500 and stored[0, -1] == 3000  # millimetres
    np.testing.assert_allclose(np.load(io.BytesIO(bodies["depth_npy"])), depth)


def test_mesh_can_be_switched_off(client, photo):
    response = upload(client, png_bytes(photo), url="/api/v1/conversions", mesh="false")
    view = wait_for_job(client, f"/jobs/{response.get_json()['id']}")
    assert view["status"] == "done" and "glb" not in view["files"] and "ply" in view["files"]


def test_drop_background_removes_the_far_pixels(client):
    image = np.full((20, 20, 3), 128, np.uint8)
    depth = np.full((20, 20), 1.0, np.float32)
    depth[:, 10:] = 5.0  # the right half is a far wall
    buffer = io.BytesIO()
    np.save(buffer, depth)
    response = client.post("/api/v1/conversions", content_type="multipart/form-data", data={
        "image": (io.BytesIO(png_bytes(image)), "a.png"), "depth": (io.BytesIO(buffer.getvalue()), "d.npy"),
        "drop_background": "40", "clean": "false", "mesh": "false"})
    view = wait_for_job(client, f"/jobs/{response.get_json()['id']}")
    cloud = PlyData.read(io.BytesIO(fetch(client, view["files"]["ply"]).data))["vertex"]
    assert cloud.count == 200 and np.all(cloud["z"] == -1.0)


@pytest.mark.slow  # loads a model of its own
def test_the_model_banner_follows_the_model_the_jobs_use(tiny_models, tmp_path, photo):
    """Without the warm-up (PRELOAD_MODEL off) the first conversion loads the model: from then on no page says
    "loading", and /readyz is ready, although no warm-up ever finished."""
    import shutil

    from app import create_app

    model = tmp_path / "model-of-its-own"  # a folder no test has loaded in this process
    shutil.copytree(tiny_models["dpt_hybrid"], model)
    application = create_app({"TESTING": True, "DEPTH_MODEL": str(model), "PRELOAD_MODEL": False,
                              "OUTPUT_FOLDER": str(tmp_path / "outputs")})
    try:
        client = application.test_client()
        before = client.get("/").get_data(as_text=True)
        assert 'id="model-status"' in before and "loads with the first conversion" in before
        assert client.get("/readyz").status_code == 503
        response = upload(client, png_bytes(photo))
        location = response.headers["Location"]
        assert wait_for_job(client, location)["status"] == "done"
        job_id = location.rsplit("/", 1)[1]
        for page in ("/", location, f"/jobs/{job_id}/result", "/nothing-here"):
            html = client.get(page).get_data(as_text=True)
            assert "loading" not in html and 'id="model-status"' not in html, page
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.get_json()["status"] == "ready"
    finally:
        application.extensions["image_to_3d"].stop()
