"""Delete now (web.deletion), embedded, through the real app: every file of a job goes (upload, kept state, outputs,
exports, cache entries only it used), every link answers 404, queued jobs never run and running ones stop at their
next stage; only the token's holder (or the creating browser's cookie) may delete. The Celery half: test_celery.py."""

from __future__ import annotations

import io
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import download, png_bytes, wait_for_job, wait_until
from test_batches import post_batch, wait_for_batch

from converter.service_api import WRITING_FILES
from web.deletion import NOT_YOURS, TOKEN_HEADER

KEEP = {".cache", ".trash", ".gitkeep"}


def picture(seed: int = 0) -> bytes:
    rows, columns = np.mgrid[0:24, 0:32]
    return png_bytes(np.dstack([columns * 7 + seed, rows * 9, np.full((24, 32), 90 + seed)]).astype(np.uint8))


def post_image(client, data: bytes | None = None, **fields):
    return client.post("/api/v1/conversions", content_type="multipart/form-data",
                       data={"image": (io.BytesIO(data or picture()), "photo.png"), "detail": "low", **fields})


def files_of(outputs: Path, *ids: str) -> list[str]:
    """Every file under OUTPUT_FOLDER that belongs to one of ``ids`` (its folder, its records, its zips)."""
    return sorted(str(path.relative_to(outputs)) for path in outputs.rglob("*")
                  if path.is_file() and any(item in str(path.relative_to(outputs)) for item in ids))


def cache_entries(outputs: Path) -> list[str]:
    return sorted(path.name for path in (outputs / ".cache").glob("*.npz"))


def links_of(job_id: str) -> list[str]:
    return [f"/api/v1/conversions/{job_id}", f"/jobs/{job_id}", f"/jobs/{job_id}/status", f"/jobs/{job_id}/result",
            f"/jobs/{job_id}/files/ply", f"/api/v1/conversions/{job_id}/files/glb", f"/jobs/{job_id}/files/input"]


@pytest.fixture
def outputs(app) -> Path:
    return Path(app.config["OUTPUT_FOLDER"])


def test_a_finished_conversion_is_deleted_with_every_file_and_every_link_then_answers_404(client, outputs):
    created = post_image(client)
    assert created.status_code == 202
    body = created.get_json()
    job_id, token = body["id"], body["delete_token"]
    assert len(token) >= 40 and token not in created.headers["Location"]
    view = wait_for_job(client, f"/jobs/{job_id}")
    assert view["status"] == "done"
    download(client, view["files"]["glb"]).close()  # a later download: an export's file too
    assert len(files_of(outputs, job_id)) >= 5 and len(cache_entries(outputs)) == 1

    for headers in ({}, {TOKEN_HEADER: "not-the-token"}, {TOKEN_HEADER: token[:-1]}):
        refused = client.delete(f"/api/v1/conversions/{job_id}", headers=headers)
        assert refused.status_code == 403 and refused.get_json()["error"] == NOT_YOURS
    assert client.get(f"/api/v1/conversions/{job_id}").status_code == 200  # refusals change nothing

    deleted = client.delete(f"/api/v1/conversions/{job_id}", headers={TOKEN_HEADER: token})
    assert deleted.status_code == 204 and deleted.data == b""
    assert files_of(outputs, job_id) == [] and cache_entries(outputs) == []
    assert not any((outputs / ".trash").iterdir())
    for link in links_of(job_id):
        assert client.get(link).status_code == 404, link
    again = client.delete(f"/api/v1/conversions/{job_id}", headers={TOKEN_HEADER: token})
    assert again.status_code == 404 and "deleted" in again.get_json()["error"]


def test_a_cache_entry_another_job_still_uses_stays(client, outputs):
    first, second = (post_image(client).get_json() for _ in range(2))  # the same bytes twice
    for job in (first, second):
        assert wait_for_job(client, f"/jobs/{job['id']}")["status"] == "done"
    (entry,) = cache_entries(outputs)
    assert client.delete(f"/api/v1/conversions/{first['id']}",
                         headers={TOKEN_HEADER: first["delete_token"]}).status_code == 204
    assert cache_entries(outputs) == [entry]
    assert client.delete(f"/api/v1/conversions/{second['id']}",
                         headers={TOKEN_HEADER: second["delete_token"]}).status_code == 204
    assert cache_entries(outputs) == []


def hold(runner, at_stage: str | None = None):
    """Hold conversions (before their work, or when they report ``at_stage``) until ``release`` is set;
    ``reached`` is set when one is held, ``ended`` each time one's work has returned or raised."""
    reached, release, ended = threading.Event(), threading.Event(), threading.Event()
    original = runner.convert

    def convert(job, upload, report):
        def held_report(stage):
            if stage == at_stage:
                reached.set()
                release.wait(60)
            report(stage)

        try:
            if at_stage is None:
                reached.set()
                release.wait(60)
            return original(job, upload, held_report)
        finally:
            ended.set()

    runner.convert = convert
    return reached, release, ended


def test_a_queued_job_deleted_never_runs_and_leaves_nothing(client, app, outputs):
    runner = app.extensions["image_to_3d"].runner
    reached, release, ended = hold(runner)
    running = post_image(client, picture(1)).get_json()
    assert reached.wait(60)
    queued = post_image(client, picture(2)).get_json()
    assert client.get(f"/api/v1/conversions/{queued['id']}").get_json()["queue_position"] == 1
    assert client.delete(f"/api/v1/conversions/{queued['id']}",
                         headers={TOKEN_HEADER: queued["delete_token"]}).status_code == 204
    assert files_of(outputs, queued["id"]) == [] and runner.queue_position(queued["id"]) is None
    release.set()
    assert wait_for_job(client, f"/jobs/{running['id']}")["status"] == "done"
    runner.shutdown(wait=True)  # the deleted job's thread has come and gone: it ran nothing
    assert files_of(outputs, queued["id"]) == [] and len(cache_entries(outputs)) == 1  # the first job's only
    assert client.get(f"/api/v1/conversions/{queued['id']}").status_code == 404


def test_a_running_job_deleted_stops_at_its_next_stage_and_leaves_nothing(client, app, outputs):
    runner = app.extensions["image_to_3d"].runner
    reached, release, ended = hold(runner, at_stage=WRITING_FILES)  # the model ran: its depth is cached
    job = post_image(client, picture(3)).get_json()
    assert reached.wait(60)
    assert len(cache_entries(outputs)) == 1
    assert client.delete(f"/api/v1/conversions/{job['id']}",
                         headers={TOKEN_HEADER: job["delete_token"]}).status_code == 204
    assert client.get(f"/api/v1/conversions/{job['id']}").status_code == 404  # gone at once
    release.set()
    assert ended.wait(60)
    runner.shutdown(wait=True)
    assert files_of(outputs, job["id"]) == [] and cache_entries(outputs) == []
    assert not any((outputs / ".trash").iterdir())


def test_a_batch_is_deleted_with_its_jobs_and_zips_and_its_token_deletes_one_of_its_jobs(client, outputs):
    created = post_batch(client, [("images", picture(k)) for k in range(3)], detail="low")
    batch = created.get_json()
    wait_for_batch(client, batch["id"])
    download(client, f"/batches/{batch['id']}/download").close()
    assert files_of(outputs, batch["id"])  # its record and its zip
    first, *others = batch["job_ids"]
    assert client.delete(f"/api/v1/conversions/{first}", headers={TOKEN_HEADER: batch["delete_token"]}
                         ).status_code == 204
    assert client.delete(f"/api/v1/batches/{batch['id']}").status_code == 403
    assert client.delete(f"/api/v1/batches/{batch['id']}",
                         headers={TOKEN_HEADER: batch["delete_token"]}).status_code == 204
    assert files_of(outputs, batch["id"], *batch["job_ids"]) == [] and cache_entries(outputs) == []
    for link in [f"/api/v1/batches/{batch['id']}", f"/batches/{batch['id']}",
                 f"/batches/{batch['id']}/download"] + links_of(others[0]):
        assert client.get(link).status_code == 404, link


def test_a_comparison_is_deleted_with_both_of_its_jobs(make_app, tiny_models):
    app = make_app(MODELS=[str(tiny_models["dpt_hybrid"]), str(tiny_models["depth_anything"])])
    outputs = Path(app.config["OUTPUT_FOLDER"])
    with app.test_client() as client:
        created = client.post("/api/v1/comparisons", content_type="multipart/form-data",
                              data={"image": (io.BytesIO(picture()), "p.png"), "detail": "low",
                                    "model_b": str(tiny_models["depth_anything"])})
        assert created.status_code == 202, created.get_data(as_text=True)
        comparison = created.get_json()
        for job_id in comparison["job_ids"]:
            wait_for_job(client, f"/jobs/{job_id}")
        assert client.delete(f"/api/v1/comparisons/{comparison['id']}",
                             headers={TOKEN_HEADER: "x" * 43}).status_code == 403
        assert client.delete(f"/api/v1/comparisons/{comparison['id']}",
                             headers={TOKEN_HEADER: comparison["delete_token"]}).status_code == 204
        assert files_of(outputs, comparison["id"], *comparison["job_ids"]) == [] and cache_entries(outputs) == []
        assert client.get(f"/compare/{comparison['id']}").status_code == 404


def test_the_creating_browser_deletes_from_the_page_with_its_cookie_and_another_browser_cannot(app, outputs):
    browser, stranger = app.test_client(), app.test_client()
    form = browser.post("/convert", content_type="multipart/form-data",
                        data={"image": (io.BytesIO(picture(5)), "p.png"), "detail": "low"})
    assert form.status_code == 303
    page = form.headers["Location"]
    job_id = page.rsplit("/", 1)[1]
    cookie = form.headers["Set-Cookie"]
    assert cookie.startswith("delete_token=") and f"Path={page}" in cookie
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    wait_for_job(browser, page)
    assert 'href="/jobs/%s/delete"' % job_id in browser.get(page).get_data(as_text=True)
    confirm = browser.get(f"{page}/delete")
    assert confirm.status_code == 200 and f'action="{page}/delete"' in confirm.get_data(as_text=True)

    refused = stranger.post(f"{page}/delete", headers={"Accept": "text/html"})
    assert refused.status_code == 403 and "Only whoever created this can delete it" in refused.get_data(as_text=True)
    assert files_of(outputs, job_id)

    deleted = browser.post(f"{page}/delete")
    assert deleted.status_code == 303 and deleted.headers["Location"] == "/deleted"
    assert "delete_token=;" in deleted.headers["Set-Cookie"]  # the browser forgets it
    assert "Deleted" in browser.get("/deleted").get_data(as_text=True)
    assert files_of(outputs, job_id) == [] and browser.get(page).status_code == 404


def test_the_delete_token_is_never_logged(client, caplog):
    caplog.set_level(logging.DEBUG)
    body = post_image(client, picture(6)).get_json()
    wait_for_job(client, f"/jobs/{body['id']}")
    client.delete(f"/api/v1/conversions/{body['id']}", headers={TOKEN_HEADER: body["delete_token"]})
    assert caplog.records and not any(body["delete_token"] in record.getMessage() for record in caplog.records)


def hold_exports(runner):
    """Hold exports before their work until ``release``; ``ended`` is set once one has returned."""
    reached, release, ended = threading.Event(), threading.Event(), threading.Event()
    original = runner.export

    def export(target):
        reached.set()
        release.wait(60)
        try:
            return original(target)
        finally:
            ended.set()

    runner.export = export
    return reached, release, ended


@pytest.mark.parametrize("what", ["a job's mesh", "a batch's zip"])
def test_an_export_in_flight_when_its_owner_is_deleted_leaves_nothing(client, app, outputs, what):
    runner = app.extensions["image_to_3d"].runner
    if what == "a job's mesh":
        created = post_image(client, picture(7)).get_json()
        wait_for_job(client, f"/jobs/{created['id']}")
        url, delete, ids = (f"/api/v1/conversions/{created['id']}/files/glb", f"/api/v1/conversions/{created['id']}",
                            [created["id"]])
    else:
        created = post_batch(client, [("images", picture(k)) for k in (8, 9)], detail="low").get_json()
        wait_for_batch(client, created["id"])
        url, delete, ids = (f"/api/v1/batches/{created['id']}/download", f"/api/v1/batches/{created['id']}",
                            [created["id"], *created["job_ids"]])
    reached, release, ended = hold_exports(runner)
    assert client.get(url).status_code == 202  # queued, and held before it writes
    assert reached.wait(60)
    assert client.delete(delete, headers={TOKEN_HEADER: created["delete_token"]}).status_code == 204
    release.set()
    assert ended.wait(60)
    assert files_of(outputs, *ids) == [] and cache_entries(outputs) == []
    assert client.get(url).status_code == 404
