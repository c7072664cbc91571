"""Videos through the web app (web.jobs.video), embedded, through the real app: a video is told from an image by its
content and goes to the same addresses; its job reports frames, frames per second and time left; it can be
cancelled; its outputs are served (videos with range requests) and read back by ffprobe; the 4D viewer's frames
come one at a time. Hostile videos: test_hostile_video.py. Celery's chunks: test_celery_video.py."""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest
import video_scenes as scenes
from conftest import wait_for_job, wait_until
from plyfile import PlyData

from web.deletion import TOKEN_HEADER


def clip_bytes(tmp_path, count: int = 8, fps: int = 12, width: int = 48, height: int = 32, **options) -> bytes:
    frames, _, _ = scenes.clip(width, height, count)
    path = tmp_path / f"clip{count}.mp4"
    scenes.write_clip(path, frames, fps=fps, **options)
    return path.read_bytes()


def post_video(client, data: bytes, name: str = "holiday.png", **fields):
    """A video under an image's name and field: its content decides."""
    return client.post("/api/v1/conversions", content_type="multipart/form-data",
                       data={"image": (io.BytesIO(data), name), **fields})


def probe(data: bytes, tmp_path: Path) -> dict:
    path = tmp_path / f"probe-{time.monotonic_ns()}.mp4"
    path.write_bytes(data)
    text = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json",
                           str(path)], capture_output=True, text=True, check=True, timeout=60).stdout
    return json.loads(text)


def test_a_video_in_the_image_field_becomes_a_video_job_with_every_output(client, tmp_path):
    created = post_video(client, clip_bytes(tmp_path, audio_seconds=0.5), video_formats="sbs_full,ply_sequence")
    assert created.status_code == 202, created.get_json()
    body = created.get_json()
    view = wait_for_job(client, f"/jobs/{body['id']}", timeout=120)
    assert view["status"] == "done", view
    assert view["kind"] == "video" and set(view["files"]) == {"sbs_full", "ply_sequence", "json"}
    info = view["info"]
    assert info["kind"] == "video" and info["frames"] == 8 and info["audio"]["handling"] == "stream-copied"
    sbs = client.get(view["files"]["sbs_full"])
    sbs_data = sbs.get_data()
    sbs.close()
    assert sbs.status_code == 200 and sbs.mimetype == "video/mp4"
    assert "attachment" in sbs.headers["Content-Disposition"] and "_LRF_Full_SBS.mp4" in sbs.headers["Content-Disposition"]
    streams = probe(sbs_data, tmp_path)["streams"]
    video = next(stream for stream in streams if stream["codec_type"] == "video")
    assert (video["width"], video["height"], int(video["nb_read_frames"])) == (96, 32, 8)
    assert any(stream["codec_type"] == "audio" for stream in streams)
    part = client.get(view["files"]["sbs_full"] + "?play=1", headers={"Range": "bytes=0-99"})
    part_data = part.get_data()
    part.close()
    assert part.status_code == 206 and len(part_data) == 100 and "attachment" not in part.headers.get(
        "Content-Disposition", "")
    frame = client.get(f"/jobs/{body['id']}/frames/3")
    assert frame.status_code == 200
    cloud = PlyData.read(io.BytesIO(frame.data))
    assert cloud["vertex"].count > 0 and "frame 3 at" in " ".join(cloud.comments)
    assert client.get(f"/jobs/{body['id']}/frames/8").status_code == 404
    assert client.get(f"/jobs/{body['id']}/files/depth_video").status_code == 404  # not asked for
    page = client.get(f"/jobs/{body['id']}").get_data(as_text=True)
    assert "<video" in page and "frames" in page


def hold_after(app, predictions: int) -> threading.Event:
    """The app's depth model waits after ``predictions`` frames until the returned event is set: a test decides
    when the job may go on instead of hoping it is slow enough."""
    backend = app.extensions["image_to_3d"].converter.depth_model
    inner = getattr(backend, "backend", backend)
    released, calls, predict = threading.Event(), [], inner.predict

    def held(*args, **kwargs):
        calls.append(1)
        if len(calls) > predictions:
            released.wait(120)
        return predict(*args, **kwargs)

    inner.predict = held
    return released


def test_a_running_video_shows_frames_fps_and_time_left_then_cancels(make_app, tmp_path):
    app = make_app()
    client = app.test_client()
    release = hold_after(app, 3)
    created = post_video(client, clip_bytes(tmp_path, count=60, fps=24), max_fps="24")
    body = created.get_json()
    try:
        wait_until(lambda: ((client.get(body["status_url"]).get_json().get("video") or {}).get("frames") or 0) >= 2,
                   timeout=120)
    except AssertionError:
        release.set()
        raise
    view = client.get(body["status_url"]).get_json()
    progress = view["video"]
    assert progress["expected"] == 60 and 2 <= progress["frames"] <= 60 and progress["fps"] > 0
    assert progress["seconds_left"] is not None and view["status"] == "running"
    refused = client.post(view["cancel_url"])
    assert refused.status_code == 403
    cancelled = client.post(view["cancel_url"], headers={TOKEN_HEADER: body["delete_token"]})
    release.set()
    assert cancelled.status_code == 200
    final = wait_for_job(client, f"/jobs/{body['id']}", timeout=120)
    assert final["status"] == "cancelled" and final["code"] == "cancelled" and "stopped on request" in final["error"]
    folder = Path(app.config["OUTPUT_FOLDER"]) / body["id"]
    assert sorted(path.name for path in folder.iterdir()) == ["job.json"]  # nothing partial, no upload
    again = client.post(view["cancel_url"], headers={TOKEN_HEADER: body["delete_token"]})
    assert again.status_code == 409


@pytest.mark.parametrize("workers", [2])
def test_embedded_chunks_join_into_the_same_frames(make_app, tmp_path, workers):
    """VIDEO_CHUNK_WORKERS > 1: the clip's depth is predicted in chunks at once, then joined and written."""
    app = make_app(VIDEO_CHUNK_FRAMES=4, VIDEO_CHUNK_OVERLAP=2, VIDEO_CHUNK_WORKERS=workers)
    client = app.test_client()
    release = hold_after(app, 3)
    created = post_video(client, clip_bytes(tmp_path, count=11), video_formats="depth_video")
    status_url = created.get_json()["status_url"]
    try:  # held after 3 predictions, whichever chunks made them: at least one frame of a chunk's own is counted
        running = wait_until(lambda: (client.get(status_url).get_json().get("video") or {}).get("frames"),
                             timeout=120)
        progress = client.get(status_url).get_json()
    finally:
        release.set()
    assert 1 <= running <= 3 and progress["video"]["phase"] == "predicting depth"
    assert progress["video"]["expected"] == 11 and 0.05 < progress["progress"] < 0.75
    view = wait_for_job(client, f"/jobs/{created.get_json()['id']}", timeout=120)
    assert view["status"] == "done", view
    info = view["info"]
    assert info["frames"] == 11 and info["chunks"]["count"] == 3
    assert [join["frames"] for join in info["chunks"]["joins"]] == [0, 2, 2]
    folder = Path(app.config["OUTPUT_FOLDER"]) / view["id"]
    assert not (folder / "chunks").exists() and not (folder / "upload.video").exists()
