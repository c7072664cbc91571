"""What makes a web job as cheap as the library: one decode per upload, and concurrent jobs sharing forwards."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from batching_gate import hold_forwards
from conftest import png_bytes, wait_for_job

import converter.images
import web.service


def count_calls(monkeypatch, module, name: str) -> list:
    calls = []
    original = getattr(module, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


def post(client, data: bytes, **fields):
    response = client.post("/api/v1/conversions", content_type="multipart/form-data",
                           data={"image": (io.BytesIO(data), "p.png"), **fields})
    assert response.status_code == 202, response.get_data(as_text=True)
    return response.get_json()


def test_an_upload_is_decoded_once_and_a_rebuild_decodes_nothing(app, client, photo, monkeypatch):
    in_request = count_calls(monkeypatch, web.service, "load_image")
    decodes = count_calls(monkeypatch, converter.images, "_decode")  # any decoding of a file's bytes, anywhere
    job = post(client, png_bytes(photo))
    assert wait_for_job(client, f"/jobs/{job['id']}")["status"] == "done"
    assert (len(in_request), len(decodes)) == (1, 1)  # decoded in the request; the job used that picture
    rebuilt = client.post(f"/api/v1/conversions/{job['id']}/rebuild", data={"fov": "40"}).get_json()
    assert wait_for_job(client, f"/jobs/{rebuilt['id']}")["status"] == "done"
    assert (len(in_request), len(decodes)) == (1, 1)  # the kept arrays, not a decode


@pytest.mark.slow  # loads a second model instance (the batching one) and waits for company
def test_concurrent_jobs_share_forwards_when_batching_is_on(make_app, photo, monkeypatch):
    """BATCH_SIZE > 1 (the CUDA default; forced here on the CPU) with several conversion threads: the model's
    micro-batcher runs fewer forwards than there are jobs, and every job still ends done."""
    app = make_app(BATCH_SIZE=4, BATCH_WAIT_MS=300, CONVERSION_WORKERS=4)
    client = app.test_client()
    model = app.extensions["image_to_3d"].converter.depth_model
    assert model.batcher is not None
    before = model.batcher.stats.forwards
    hold_forwards(monkeypatch, model.batcher, 4)  # the four jobs' forwards meet however the threads are scheduled
    pictures = [png_bytes(np.roll(photo, 7 * number, axis=1)) for number in range(4)]
    ids: list[str] = []
    lock = threading.Lock()

    def submit(data: bytes) -> None:
        job = post(client, data)
        with lock:
            ids.append(job["id"])

    threads = [threading.Thread(target=submit, args=(data,)) for data in pictures]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(ids) == 4
    assert all(wait_for_job(client, f"/jobs/{job_id}")["status"] == "done" for job_id in ids)
    assert 1 <= model.batcher.stats.forwards - before <= 2
