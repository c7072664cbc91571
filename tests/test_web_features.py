"""Rebuild without the model, the depth cache, sidecar JSON and STL downloads, and model comparisons, through the
Flask test client with real tiny models (no mocks of our code: the model's predict is only wrapped to count calls)."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import download, png_bytes, wait_for_job


def fetch(client, url: str):
    """GET a file (following the 202 "preparing" answers) and close the response."""
    return download(client, url)


def post(client, url: str, data: bytes | None = None, **fields):
    form = dict(fields)
    if data is not None:
        form["image"] = (io.BytesIO(data), "picture.png")
    return client.post(url, data=form, content_type="multipart/form-data")


def convert(client, data: bytes, **fields) -> dict:
    response = post(client, "/api/v1/conversions", data, **fields)
    assert response.status_code == 202, response.get_json()
    view = wait_for_job(client, response.get_json()["status_url"].replace("/api/v1/conversions/", "/jobs/"))
    assert view["status"] == "done", view
    return view


def count_predictions(app, monkeypatch) -> list:
    """Wrap the process-wide model's predictions (the CPU path's predict, the CUDA path's predict_on_device) to count
    its calls; returns the list it appends to."""
    model = app.extensions["image_to_3d"].converter.depth_model
    calls = []
    for name in ("predict", "predict_on_device"):
        original = getattr(model, name)

        def counting(*args, original=original, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)

        monkeypatch.setattr(model, name, counting)
    return calls


def picture(seed: int = 0, size=(48, 64)) -> bytes:
    rows, columns = np.mgrid[0:size[0], 0:size[1]]
    array = np.dstack([columns * 3 + seed * 7, rows * 4, 255 - columns * 2 - seed]).astype(np.uint8)
    return png_bytes(array)


def job_folder(app, job_id: str) -> Path:
    return Path(app.config["OUTPUT_FOLDER"]) / job_id


# --- rebuild ---------------------------------------------------------------------------------------------------------

def test_rebuild_changes_the_geometry_without_calling_the_model(app, client, monkeypatch):
    calls = count_predictions(app, monkeypatch)
    first = convert(client, picture(), fov="60")
    assert len(calls) == 1
    folder = job_folder(app, first["id"])
    assert (folder / "image.npz").is_file() and (folder / "prediction.npz").is_file()
    with np.load(folder / "prediction.npz") as stored:
        assert {"values", "native", "kind", "source"} <= set(stored.files)
    # kept for rebuilds, but not downloadable
    assert fetch(client, f"/jobs/{first['id']}/files/image").status_code == 404
    assert "prediction" not in json.dumps(first["files"])

    response = post(client, f"/api/v1/conversions/{first['id']}/rebuild", fov="30")
    assert response.status_code == 202
    body = response.get_json()
    assert body["id"] != first["id"] and len(body["id"]) == 32 and response.headers["Location"] == body["status_url"]
    rebuilt = wait_for_job(client, f"/jobs/{body['id']}")
    assert rebuilt["status"] == "done", rebuilt
    assert len(calls) == 1, "the rebuild ran the model"
    assert rebuilt["info"]["camera"]["fov_x_deg"] == pytest.approx(30.0)
    assert rebuilt["info"]["camera"]["source"] == "user:fov"
    assert rebuilt["info"]["rebuilt_from"] == first["id"]
    assert rebuilt["info"]["point_count"] == first["info"]["point_count"]  # same detail: kept from the source job
    sidecar = json.loads(fetch(client, rebuilt["files"]["json"]).data)
    assert sidecar["camera"]["fov_x_deg"] == pytest.approx(30.0)
    assert sidecar["job"]["options"]["fov_deg"] == 30.0

    # The page form: relief mode, redirected to the new job's page; still no model call.
    page = client.post(f"/jobs/{rebuilt['id']}/rebuild", data={"mode": "relief"})
    assert page.status_code == 303 and page.headers["Location"].startswith("/jobs/")
    relief = wait_for_job(client, page.headers["Location"])
    assert relief["status"] == "done" and relief["info"]["mode"] == "relief"
    assert len(calls) == 1


def test_rebuild_keeps_a_focal_length_read_from_exif(client):
    from PIL import Image

    rows, columns = np.mgrid[0:60, 0:80]
    array = np.dstack([columns * 3, rows * 4, 255 - columns * 2]).astype(np.uint8)
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 50  # Exif IFD: FocalLengthIn35mmFilm
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95, exif=exif)
    first = convert(client, buffer.getvalue())
    assert first["info"]["camera"]["source"].startswith("exif")
    response = post(client, f"/api/v1/conversions/{first['id']}/rebuild", relief="2")
    rebuilt = wait_for_job(client, f"/jobs/{response.get_json()['id']}")
    assert rebuilt["status"] == "done"
    assert rebuilt["info"]["camera"]["fx"] == pytest.approx(first["info"]["camera"]["fx"])  # the kept image has no EXIF


def test_result_page_offers_the_rebuild_form_and_shows_the_camera(client):
    view = convert(client, picture(), fov="45")
    html = client.get(f"/jobs/{view['id']}").get_data(as_text=True)
    assert f'action="/jobs/{view["id"]}/rebuild"' in html
    assert "Rebuild without re-running the model" in html
    assert "45.0°" in html and "user:fov" in html
    for field in ('name="fov"', 'name="focal_px"', 'name="relief"', 'name="mode"'):
        assert field in html
    assert '<label for="rebuild-fov">' in html


def test_drawing_suggests_relief_mode(client):
    drawing = np.full((60, 80, 3), 255, np.uint8)
    drawing[20:40, 10:70] = 0  # black strokes on white paper
    drawing[10:50, 38:42] = 0
    view = convert(client, png_bytes(drawing))
    html = client.get(f"/jobs/{view['id']}").get_data(as_text=True)
    if view["info"]["looks_like_drawing"]:
        assert "This looks like a drawing: try relief mode" in html and 'id="try-relief"' in html
    else:  # the detector's call, not ours; the hint must then stay away
        assert "This looks like a drawing" not in html


def test_rebuild_of_unknown_failed_or_expired_jobs_is_refused_clearly(app, client):
    unknown = post(client, f"/api/v1/conversions/{'0' * 32}/rebuild", fov="30")
    assert unknown.status_code == 404 and "no such conversion" in unknown.get_json()["error"]
    assert post(client, "/api/v1/conversions/not-an-id/rebuild").status_code == 404

    wrong = io.BytesIO()
    np.save(wrong, np.ones((3, 90), np.float32))
    failed = post(client, "/api/v1/conversions", picture(), depth=(io.BytesIO(wrong.getvalue()), "d.npy"))
    view = wait_for_job(client, f"/jobs/{failed.get_json()['id']}")
    assert view["status"] == "failed"
    refused = post(client, f"/api/v1/conversions/{view['id']}/rebuild", fov="30")
    assert refused.status_code == 409 and refused.get_json()["code"] == "failed"  # it exists, with no result

    done = convert(client, picture())
    bad = post(client, f"/api/v1/conversions/{done['id']}/rebuild", fov="500")
    assert bad.status_code == 400 and "field of view" in bad.get_json()["error"].lower()
    store = app.extensions["image_to_3d"].store
    job = store.get(done["id"])
    job.expires = time.time() - 1
    store.save(job)
    expired = post(client, f"/api/v1/conversions/{done['id']}/rebuild", fov="30")
    assert expired.status_code == 410 and "expired" in expired.get_json()["error"]


# --- depth cache -----------------------------------------------------------------------------------------------------

def test_same_upload_again_skips_the_model(app, client, monkeypatch):
    calls = count_predictions(app, monkeypatch)
    data = picture(3)
    first = convert(client, data, fov="50")
    second = convert(client, data, fov="70", detail="low", relief="2")
    assert len(calls) == 1, "the second conversion of the same bytes ran the model"
    assert first["info"]["depth_cached"] is False and second["info"]["depth_cached"] is True
    assert second["info"]["camera"]["fov_x_deg"] == pytest.approx(70.0)
    assert second["info"]["model"] == first["info"]["model"]
    cache = Path(app.config["OUTPUT_FOLDER"]) / ".cache"
    assert len(list(cache.glob("*.npz"))) == 1

    # A user's depth map never goes through the cache.
    depth = io.BytesIO()
    np.save(depth, np.full((48, 64), 2.0, np.float32))
    user = post(client, "/api/v1/conversions", data, depth=(io.BytesIO(depth.getvalue()), "d.npy"))
    view = wait_for_job(client, f"/jobs/{user.get_json()['id']}")
    assert view["status"] == "done" and view["info"]["depth_cached"] is False and view["info"]["units"] == "metres"
    assert len(calls) == 1 and len(list(cache.glob("*.npz"))) == 1

    # The job sweep leaves the cache alone; the retention sweep deletes entries older than the time to live.
    store = app.extensions["image_to_3d"].store
    store.sweep()
    assert len(list(cache.glob("*.npz"))) == 1
    entry = next(cache.glob("*.npz"))
    old = time.time() - app.config["RESULT_TTL_SECONDS"] - 10
    os.utime(entry, (old, old))
    app.extensions["image_to_3d"].sweeper.run_once()
    assert not entry.exists()


@pytest.mark.slow  # a third of a second or more: the fast tier stays under 30 s
def test_cache_holds_at_most_the_configured_entries(make_app, monkeypatch):
    app = make_app(DEPTH_CACHE_ENTRIES=2)
    client = app.test_client()
    calls = count_predictions(app, monkeypatch)
    cache = Path(app.config["OUTPUT_FOLDER"]) / ".cache"
    for seed in range(3):
        before = set(cache.glob("*.npz"))
        convert(client, picture(seed))
        (entry,) = set(cache.glob("*.npz")) - before
        used = time.time() - 60 + seed  # distinct last uses, set rather than slept: a file system's clock is coarse
        os.utime(entry, (used, used))
    assert len(calls) == 3
    assert len(list(cache.glob("*.npz"))) == 2
    convert(client, picture(0))  # the oldest was evicted: the model runs again
    assert len(calls) == 4
    convert(client, picture(2))  # still cached
    assert len(calls) == 4
    assert len(list(cache.glob("*.npz"))) == 2


# --- downloads: sidecar JSON and STL ---------------------------------------------------------------------------------

def test_sidecar_json_downloads_and_reads_back(client):
    view = convert(client, picture(), fov="55", relief="1.5", stl_width_mm="80")
    response = fetch(client, view["files"]["json"])
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Content-Disposition"].startswith("attachment")
    sidecar = json.loads(response.data)
    assert sidecar["camera"]["source"] == "user:fov"
    assert sidecar["camera"]["fov_x_deg"] == pytest.approx(55.0)
    assert sidecar["units"] == view["info"]["units"] == "relative units"
    assert "y up" in sidecar["axes"] and sidecar["mode"] == "perspective"
    assert sidecar["options"]["relief"] == 1.5
    assert sidecar["job"]["options"]["stl_width_mm"] == 80.0 and sidecar["job"]["id"] == view["id"]


def test_stl_download_is_a_watertight_relief(client):
    import trimesh

    view = convert(client, picture(), stl_width_mm="80", detail="low")
    assert "stl" in view["files"], "no relief.stl: has the converter's .stl writer landed?"
    response = fetch(client, view["files"]["stl"])
    assert response.status_code == 200 and response.mimetype == "model/stl"
    solid = trimesh.load(io.BytesIO(response.data), file_type="stl", process=True)
    assert solid.is_watertight and solid.volume > 0
    width = solid.bounds[1][0] - solid.bounds[0][0]
    assert width == pytest.approx(80.0, rel=1e-3)


def test_new_form_fields_are_validated(client):
    for fields, words in (({"mode": "sideways"}, "mode"), ({"stl_width_mm": "-3"}, "stl width"),
                          ({"stl_width_mm": "wide"}, "stl_width_mm")):
        response = post(client, "/api/v1/conversions", picture(), **fields)
        assert response.status_code == 400, fields
        assert words in response.get_json()["error"].lower()
    html = client.get("/").get_data(as_text=True)
    for field in ('name="mode"', 'name="paper_background"', 'name="stl_width_mm"', 'name="model_b"',
                  'formaction="/compare"'):
        assert field in html
    view = convert(client, picture(), mode="relief", paper_background="1")
    assert view["info"]["mode"] == "relief" and view["info"]["options"]["paper_background"] is True


# --- comparisons -----------------------------------------------------------------------------------------------------

@pytest.fixture
def two_model_app(make_app, tiny_models, dpt_model):
    return make_app(MODELS=[dpt_model, str(tiny_models["depth_anything"])])


def test_compare_runs_two_models_on_the_same_image(two_model_app):
    client = two_model_app.test_client()
    models = two_model_app.config["MODELS"]
    response = post(client, "/api/v1/comparisons", picture(), model_a=models[0], model_b=models[1])
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert len(body["id"]) == 32 and len(body["jobs"]) == 2 and body["jobs"][0] != body["jobs"][1]
    views = [wait_for_job(client, url.replace("/api/v1/conversions/", "/jobs/")) for url in body["jobs"]]
    assert [view["status"] for view in views] == ["done", "done"]
    assert [view["info"]["model"] for view in views] == models
    assert client.get(f"/api/v1/comparisons/{body['id']}").get_json()["jobs"] == body["jobs"]
    page = client.get(body["url"])
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and html.count("data-viewer ") == 2
    for view in views:
        assert f'data-ply-url="{view["files"]["ply"]}"' in html
    assert "depth-anything" in html and "dpt-hybrid" in html
    assert "<script>" not in html and "js/compare.js" in html
    assert list(Path(two_model_app.config["OUTPUT_FOLDER"]).glob(f"compare-{body['id']}.json"))


def test_compare_form_redirects_to_the_comparison_page(two_model_app):
    client = two_model_app.test_client()
    models = two_model_app.config["MODELS"]
    response = post(client, "/compare", picture(), model=models[0], model_b=models[1])
    assert response.status_code == 303 and response.headers["Location"].startswith("/compare/")
    html = client.get(response.headers["Location"]).get_data(as_text=True)
    assert html.count('data-compare-side="') == 2


def test_retention_sweep_deletes_old_comparison_records(two_model_app):
    client = two_model_app.test_client()
    models = two_model_app.config["MODELS"]
    body = post(client, "/api/v1/comparisons", picture(), model_a=models[0], model_b=models[0]).get_json()
    for url in body["jobs"]:
        wait_for_job(client, url.replace("/api/v1/conversions/", "/jobs/"))
    record = Path(two_model_app.config["OUTPUT_FOLDER"]) / f"compare-{body['id']}.json"
    two_model_app.extensions["image_to_3d"].sweeper.run_once()
    assert record.is_file()
    old = time.time() - two_model_app.config["RESULT_TTL_SECONDS"] - 10
    os.utime(record, (old, old))
    two_model_app.extensions["image_to_3d"].sweeper.run_once()
    assert not record.exists()
    assert client.get(body["url"]).status_code == 404


def test_compare_refuses_bad_input_with_json_errors(client):
    unknown = post(client, "/api/v1/comparisons", picture(), model_b="no/such-model")
    assert unknown.status_code == 400 and "Unknown model" in unknown.get_json()["error"]
    missing = post(client, "/api/v1/comparisons", picture())
    assert missing.status_code == 400 and "second model" in missing.get_json()["error"]
    no_image = post(client, "/api/v1/comparisons", None, model_b="x")
    assert no_image.status_code == 400 and no_image.get_json()["code"] == "no_image"
    assert client.get(f"/api/v1/comparisons/{'0' * 32}").status_code == 404
    assert client.get("/compare/../etc").status_code == 404
