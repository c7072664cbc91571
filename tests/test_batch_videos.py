"""Batches may hold videos (web.routes.batches): a video part among the images, told by its content, is received and
probed as a single video upload is and gets a video job with the form's video fields, while the images get the image
fields; the batch is one unit of admission, refused whole (its sentence naming the part) when any part is refused,
and leaves nothing behind; the batch page lists every job and its zip holds every job's files under its number."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import video_scenes as scenes
from conftest import download
from test_batches import pictures, post_batch, wait_for_batch, zipped

from web.jobs.backend import QueueFullError


def clip(tmp_path, count: int = 6, **options) -> bytes:
    path = tmp_path / f"clip-{count}-{len(options)}.mp4"
    scenes.write_clip(path, scenes.clip(48, 32, count)[0], fps=12, **options)
    return path.read_bytes()


def nothing_left(app, jobs_before: set[str] | None = None) -> None:
    """No job, no batch and no upload made by a refused batch."""
    outputs = Path(app.config["OUTPUT_FOLDER"])
    assert not list(outputs.glob("batch-*"))
    assert {path.name for path in outputs.iterdir() if not path.name.startswith(".")} == (jobs_before or set())
    assert sorted(Path(app.config["UPLOAD_FOLDER"]).iterdir()) == []


def test_a_batch_of_an_image_and_a_video_converts_both_and_zips_both(app, client, tmp_path):
    image = pictures(1)[0]
    response = post_batch(client, [("images", image), ("images", clip(tmp_path))], detail="low",
                          video_formats="sbs_full", max_fps="12")
    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    assert len(body["job_ids"]) == 2
    assert sorted(Path(app.config["UPLOAD_FOLDER"]).iterdir()) == []  # the video moved into its job's folder
    view = wait_for_batch(client, body["id"], timeout=120)
    first, second = view["views"]
    assert [first["status"], second["status"]] == ["done", "done"], (first["error"], second["error"])
    assert "kind" not in first and second["kind"] == "video"
    assert set(second["files"]) == {"sbs_full", "json"} and second["info"]["frames"] == 6
    assert first["info"]["job"]["options"]["max_points"] > 0  # the image fields for the image ...
    assert second["info"]["job"]["options"]["max_fps"] == 12  # ... the video fields for the video
    page = client.get(f"/batches/{body['id']}").get_data(as_text=True)
    assert page.count('class="batch-job"') == 2 and all(job_id in page for job_id in body["job_ids"])
    assert "1 image" in page and "1 video</h1>" in page.replace("\n", "") and 'src=""' not in page
    assert "video: 6 frames" in page
    archive = download(client, view["download_url"])
    assert archive.status_code == 200 and archive.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.data)) as bundle:
        names = sorted(bundle.namelist())
        assert names == ["01/cloud.ply", "01/mesh.glb", "01/result.json", "02/video.json",
                         "02/video_LRF_Full_SBS.mp4"]
        video = bundle.getinfo("02/video_LRF_Full_SBS.mp4")
        assert video.compress_type == zipfile.ZIP_STORED and video.file_size > 1000
        served = client.get(second["files"]["sbs_full"])
        assert bundle.read("02/video_LRF_Full_SBS.mp4") == served.get_data()
        served.close()


@pytest.mark.parametrize("order", ["video second", "video first"])
def test_a_batch_with_a_hostile_video_is_refused_whole_naming_the_part(app, client, tmp_path, order):
    """A tiny clip that declares an hour: the whole batch is refused with the video's sentence and its number, no
    job is made, and the videos already received (a good one before it) are gone from UPLOAD_FOLDER."""
    hours = clip(tmp_path, count=2, times=[0.0, 3600.0])
    files = [("images", pictures(1)[0]), ("images", hours)] if order == "video second" else \
        [("images", clip(tmp_path)), ("images", hours), ("images", pictures(1)[0])]
    response = post_batch(client, files)
    assert response.status_code == 413, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == "video_too_large"
    assert body["error"] == ("Video 2 of the batch: The video runs 3,600 s; the limit is 600 s (convert a part of "
                             "it: start and end).")
    nothing_left(app)


def test_a_damaged_video_after_a_good_one_names_its_number_and_leaves_nothing(app, client, tmp_path):
    good = clip(tmp_path)
    response = post_batch(client, [("images", good), ("images", pictures(1)[0]), ("images", good[: len(good) // 2])])
    assert response.status_code == 422 and response.get_json()["code"] == "damaged_video"
    assert response.get_json()["error"].startswith("Video 3 of the batch: The video is damaged or incomplete")
    nothing_left(app)


def test_videos_count_against_max_batch_images_before_they_are_received(make_app, tmp_path):
    app = make_app(MAX_BATCH_IMAGES=2)
    video = clip(tmp_path)
    response = post_batch(app.test_client(), [("images", pictures(1)[0]), ("images", video), ("images", video)])
    assert response.status_code == 413 and response.get_json()["code"] == "too_many_images"
    assert "at most 2 (videos included)" in response.get_json()["error"]
    nothing_left(app)


def test_a_video_inside_a_zip_is_refused_naming_the_entry(app, client, tmp_path):
    archive = zipped({"a.png": pictures(1)[0], "holiday/clip.mp4": clip(tmp_path)})
    response = post_batch(client, [("zip", archive)])
    assert response.status_code == 415, response.get_data(as_text=True)
    body = response.get_json()
    assert body["code"] == "video_in_zip"
    assert body["error"].startswith("Image 2 of the batch (the zip's entry 2 ('holiday/clip.mp4')) is a video")
    assert "as a part of its own" in body["error"]
    nothing_left(app)


def test_images_beside_a_video_keep_max_upload_mb(make_app, tmp_path):
    """A video lifts the request's cap to MAX_VIDEO_MB, not the images' own: images over MAX_UPLOAD_MB together are
    refused even beside a video."""
    image = pictures(1)[0]
    app = make_app(MAX_UPLOAD_MB=1.5 * len(image) / (1 << 20))
    response = post_batch(app.test_client(), [("images", image), ("images", clip(tmp_path)), ("images", image)])
    assert response.status_code == 413 and response.get_json()["code"] == "too_large"
    nothing_left(app)


def test_a_batch_refused_by_the_queue_removes_the_videos_it_received(app, client, tmp_path, monkeypatch):
    """Admission is whole or nothing: refused after its videos were received (another request took the last place),
    nothing of them stays."""
    def full(*args, **kwargs):
        raise QueueFullError()

    monkeypatch.setattr(app.extensions["image_to_3d"].runner, "submit_batch", full)
    response = post_batch(client, [("images", clip(tmp_path)), ("images", pictures(1)[0])])
    assert response.status_code == 503 and response.headers["Retry-After"]
    nothing_left(app)


@pytest.mark.parametrize("files", ["image", "images", "image and video"])
def test_a_wrong_video_field_is_a_400_wherever_it_is_sent(app, client, tmp_path, files):
    """An image's job does not read the video fields, but a wrong value is still refused (the API document describes
    them for every upload): one image, a batch of images, a batch with a video."""
    image = pictures(1)[0]
    if files == "image":
        response = client.post("/api/v1/conversions", content_type="multipart/form-data",
                               data={"image": (io.BytesIO(image), "a.png"), "anaglyph": "  *"})
        words = "anaglyph"
    else:
        parts = [("images", image), ("images", image if files == "images" else clip(tmp_path))]
        response = post_batch(client, parts, max_fps="fast")
        words = "max_fps"
    assert response.status_code == 400 and words in response.get_json()["error"], response.get_json()
    nothing_left(app)
