"""Issue 16's intake holes, through the real app: a batch at the limit on a default server, admission before any
decode (huge 1-bit images), download formats as a set, form limits that name themselves, a known length on a
transparent pixel."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from conftest import png_bytes, wait_for_job
from PIL import Image
from test_batches import fetch, pictures, post_batch, wait_for_batch
from test_hostile_zip import MAX_GROWTH_BYTES, MB, PeakMemory


def test_an_idle_default_server_accepts_a_batch_at_the_limit(make_app):
    app = make_app()  # default settings: 1 conversion at a time, 8 waiting, 20 images per batch
    limit = app.config["MAX_BATCH_IMAGES"]
    assert limit > app.extensions["image_to_3d"].runner.capacity  # the case the issue saw refused forever
    app.extensions["image_to_3d"].runner.convert = lambda job, upload, report: {}  # admission only, here
    response = post_batch(app.test_client(), [("images", data) for data in pictures(limit)])
    assert response.status_code == 202, response.get_data(as_text=True)
    assert len(response.get_json()["job_ids"]) == limit


@pytest.mark.slow
def test_a_batch_at_the_limit_converts_and_downloads_whole(make_app):
    app = make_app()
    client = app.test_client()
    limit = app.config["MAX_BATCH_IMAGES"]
    response = post_batch(client, [("images", data) for data in pictures(limit)], detail="low")
    assert response.status_code == 202, response.get_data(as_text=True)
    view = wait_for_batch(client, response.get_json()["id"], timeout=240)
    assert [job["status"] for job in view["views"]] == ["done"] * limit
    download = fetch(client, view["download_url"] + "?formats=ply")
    names = zipfile.ZipFile(io.BytesIO(download.data)).namelist()
    assert sorted(names) == [f"{number:02d}/cloud.ply" for number in range(1, limit + 1)]


def one_bit_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (width, height), 1).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def test_huge_one_bit_images_are_admitted_from_their_headers_alone(make_app):
    """20 images of 8 megapixels each, tiny on the wire: the request decodes none of them (the jobs do, one at a
    time), so its memory does not follow their pixels."""
    app = make_app(MAX_PIXELS=8_000_000)
    app.extensions["image_to_3d"].runner.convert = lambda job, upload, report: {}
    image = one_bit_png(4000, 2000)
    assert len(image) < 20_000
    with PeakMemory() as memory:
        response = post_batch(app.test_client(), [("images", image)] * 20, detail="full")
    assert response.status_code == 202, response.get_data(as_text=True)
    assert memory.growth < 100 * MB  # decoding them all would be 20 x 8 MP x 3 bytes = 480 MB


def test_a_batch_over_the_pixel_limit_is_refused_from_the_header(make_app):
    app = make_app(MAX_PIXELS=1_000_000)
    response = post_batch(app.test_client(), [("images", pictures(1)[0]), ("images", one_bit_png(2000, 1000))])
    body = response.get_json()
    assert response.status_code == 422 and body["code"] == "image_too_large"
    assert body["error"].startswith("Image 2 of the batch: ") and "1 megapixels" in body["error"]


def test_batch_download_formats_are_a_set(client):
    response = post_batch(client, [("images", data) for data in pictures(2)], detail="low")
    view = wait_for_batch(client, response.get_json()["id"])
    repeated = fetch(client, view["download_url"] + "?formats=" + ",".join(["ply"] * 1000))
    assert repeated.status_code == 200
    assert sorted(zipfile.ZipFile(io.BytesIO(repeated.data)).namelist()) == ["01/cloud.ply", "02/cloud.ply"]
    plain = fetch(client, view["download_url"] + "?formats=ply")
    assert plain.data == repeated.data  # one zip per set, whatever the spelling
    swapped = fetch(client, view["download_url"] + "?formats=json,PLY,json")
    assert sorted(zipfile.ZipFile(io.BytesIO(swapped.data)).namelist()) == [
        "01/cloud.ply", "01/result.json", "02/cloud.ply", "02/result.json"]
    unknown = client.get(view["download_url"] + "?formats=ply,exe,../x", headers={"Accept": "application/json"})
    assert unknown.status_code == 400 and "'../x', 'exe'" in unknown.get_json()["error"]


def test_a_long_text_field_is_413_naming_the_field_and_the_limit(client):
    response = client.post("/api/v1/conversions", data={"image": (io.BytesIO(pictures(1)[0]), "a.png"),
                                                        "mode": "x" * 100_000})
    body = response.get_json()
    assert response.status_code == 413 and body["code"] == "field_too_large"
    assert body["error"] == "The form field 'mode' is too long: the limit is 64 kB per text field."


def test_too_many_parts_is_413_naming_the_parts_limit(client):
    fields = {f"field{k}": "1" for k in range(60)}
    response = client.post("/api/v1/conversions", data={"image": (io.BytesIO(pictures(1)[0]), "a.png"), **fields})
    body = response.get_json()
    assert response.status_code == 413 and body["code"] == "form_too_large"
    assert "50 parts" in body["error"] and "MB" not in body["error"]


@pytest.mark.slow
def test_a_known_length_on_a_transparent_pixel_is_refused_in_perspective_mode(client):
    rgba = np.zeros((48, 64, 4), dtype=np.uint8)
    rgba[:, :, :3] = 120
    rgba[8:40, 8:56, 3] = 255  # an opaque card on a clear background
    response = client.post("/api/v1/conversions", data={
        "image": (io.BytesIO(png_bytes(rgba)), "card.png"), "mode": "perspective",
        "known_length": "2 2 30 20 0.5"})
    assert response.status_code == 202, response.get_data(as_text=True)
    view = wait_for_job(client, response.get_json()["status_url"].replace("/api/v1/conversions/", "/jobs/"))
    assert view["status"] == "failed"
    assert "no surface at the known length's pixel (2, 2)" in view["error"] and "transparent" in view["error"]


@pytest.mark.slow
def test_a_single_huge_one_bit_image_at_full_detail_stays_within_the_memory_bound(make_app, monkeypatch):
    from web import service

    app = make_app()  # the default pixel cap: 50 MP
    app.extensions["image_to_3d"].runner.convert = lambda job, upload, report: {}
    decoded = []
    real_load = service.load_image
    monkeypatch.setattr(service, "load_image", lambda *args, **kwargs: decoded.append(1) or real_load(*args,
                                                                                                        **kwargs))
    image = one_bit_png(7000, 7000)
    with PeakMemory() as memory:
        response = app.test_client().post("/api/v1/conversions", data={
            "image": (io.BytesIO(image), "page.png"), "detail": "full"})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert decoded == []  # admitted from its header: the job decodes it (counted, not timed)
    assert memory.growth < MAX_GROWTH_BYTES, memory.growth / MB


@pytest.mark.parametrize("transparency", [None, 3, bytes([255, 0, 128, 255])])
def test_palette_and_one_bit_images_decode_as_pillow_widens_them(transparency):
    """The lean paths (palette lookup, grey widened once, banded reduction) give Pillow's own pixels."""
    from converter.images import load_image

    rng = np.random.default_rng(5)
    palette_image = Image.fromarray(rng.integers(0, 8, size=(64, 96), dtype=np.uint8), "P")
    palette_image.putpalette(list(rng.integers(0, 256, size=8 * 3)))
    if transparency is not None:
        palette_image.info["transparency"] = transparency
    buffer = io.BytesIO()
    palette_image.save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as reference:
        widened = np.asarray(reference.convert("RGBA"))
    loaded = load_image(buffer.getvalue())
    assert np.array_equal(loaded.rgb, widened[:, :, :3])
    if transparency is None:
        assert loaded.alpha is None
    else:
        assert np.array_equal(loaded.alpha, widened[:, :, 3])
    reduced = load_image(buffer.getvalue(), draft_points=64 * 96 // 16)
    assert reduced.scale < 1 and reduced.rgb.shape[0] < 64
    page = Image.fromarray(rng.integers(0, 2, size=(40, 50), dtype=np.uint8) * 255).convert("1")
    buffer = io.BytesIO()
    page.save(buffer, format="PNG")
    assert np.array_equal(load_image(buffer.getvalue()).rgb, np.asarray(page.convert("RGB")))


@pytest.mark.parametrize("size", [(1, 1), (1, 40), (40, 1)])
def test_a_one_pixel_wide_image_is_422_not_an_internal_error(client, size):
    """Found by the schemathesis run: such an image used to fail its job with "internal error"."""
    image = png_bytes(np.full((size[1], size[0], 3), 90, np.uint8))
    single = client.post("/api/v1/conversions", data={"image": (io.BytesIO(image), "dot.png")})
    assert single.status_code == 422 and single.get_json()["code"] == "image_too_small"
    assert f"{size[0]} x {size[1]} pixels" in single.get_json()["error"]
    batch = post_batch(client, [("images", pictures(1)[0]), ("images", image)])
    assert batch.status_code == 422 and batch.get_json()["error"].startswith("Image 2 of the batch: The image is too")


def test_a_large_transparent_image_is_reduced_in_bands_as_it_would_be_whole(monkeypatch):
    """The banded reduction (what keeps a 50 MP RGBA page from being widened whole) gives the whole-image result,
    last short band included."""
    from converter import images

    monkeypatch.setattr(images, "_BAND_BYTES", 40_000)
    rng = np.random.default_rng(9)
    rgba = rng.integers(0, 256, size=(257, 300, 4), dtype=np.uint8)
    rgba[:50, :, 3] = 0
    image = Image.fromarray(rgba, "RGBA")
    assert image.size[0] * image.size[1] * 4 > images._BAND_BYTES  # the banded path is the one taken
    assert np.array_equal(np.asarray(images._box_reduce(image, 4)), np.asarray(images._reduce_whole(image, 4)))


def test_a_sixteen_bit_image_is_reduced_like_its_eight_bit_picture(monkeypatch):
    """16-bit grey is scaled to 8 bits a band at a time (not widened to float whole), then reduced."""
    from converter import images

    monkeypatch.setattr(images, "_BAND_BYTES", 40_000)
    values = np.random.default_rng(3).integers(0, 65536, size=(130, 200), dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    expected = Image.fromarray(images._grey8(values, 1 / 257), "L").reduce(4)
    assert np.array_equal(np.asarray(images._box_reduce(image, 4)), np.asarray(expected))


def test_a_large_upload_waits_in_the_upload_folder_and_is_never_a_file_there(make_app, tmp_path):
    """Past 500 kB a form's file spills to a temporary file: in UPLOAD_FOLDER (sized by the operator), not /tmp, and
    unlinked from the start, so nothing is left there whatever way the request ends."""
    import os

    from flask import request
    from werkzeug.datastructures import FileStorage
    from werkzeug.test import encode_multipart

    spool = tmp_path / "spool"
    app = make_app(UPLOAD_FOLDER=str(spool))
    assert spool.is_dir()  # made at start
    big = np.random.default_rng(5).integers(0, 256, 600 * 1024, dtype=np.uint8).tobytes()
    boundary, body = encode_multipart({"image": FileStorage(io.BytesIO(big), "a.png")})  # the body, in memory
    with app.test_request_context("/api/v1/conversions", method="POST", data=body,
                                  content_type=f"multipart/form-data; boundary={boundary}"):
        stream = request.files["image"].stream
        target = os.readlink(f"/proc/self/fd/{stream.fileno()}")
        assert target.startswith(f"{spool}/") and target.endswith(" (deleted)"), target
        stream.seek(0)
        assert stream.read() == big
        assert not any(spool.iterdir())
