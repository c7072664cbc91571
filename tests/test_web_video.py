"""Videos through the web app (web.jobs.video), embedded, through the real app: a video is told from an image by its
content and goes to the same addresses; its job reports frames, frames per second and time left; it can be
cancelled; its outputs are served (videos with range requests) and read back by ffprobe; the 4D viewer's frames
come one at a time. Hostile videos: test_hostile_video.py. Celery's chunks: test_celery_video.py."""

from __future__ import annotations

import io
import json
import re
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
@pytest.mark.slow  # 0.4 s or more of the fast tier's budget (issue 20)
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


# ------------------------------------------------------------------------------------------- the pages' contract
# What the upload page sends for a video, and what the running and finished pages hold for static/js/app.js and
# static/js/player4d.js (tests/test_browser_video.py drives the same pages in Chromium).


def form_post(client, data: bytes, fields: dict):
    """A POST as the upload page sends it (its hidden checkboxes_submitted, boxes as repeated fields): a redirect."""
    from werkzeug.datastructures import MultiDict

    body = MultiDict([("image", (io.BytesIO(data), "clip.mp4")), ("checkboxes_submitted", "1")])
    for name, value in fields.items():
        for one in value if isinstance(value, list) else [value]:
            body.add(name, one)
    return client.post("/convert", content_type="multipart/form-data", data=body)


def test_the_upload_page_takes_videos_and_says_their_limits(make_app):
    app = make_app(MAX_VIDEO_MB=150, MAX_VIDEO_SECONDS=300)
    page = app.test_client().get("/").get_data(as_text=True)
    assert 'accept="image/*,video/*,.zip' in page
    assert "A video works too" in page and "up to 150 MB and 5 min" in page
    assert 'id="video-options"' in page and "<summary>Video options</summary>" in page
    for name in ("max_fps", "start", "end"):
        assert f'name="{name}" type="number"' in page
    assert 'id="stabilise" name="stabilise" type="checkbox" value="1" checked' in page
    from web.intake.forms import DEFAULT_VIDEO_OUTPUTS

    offered = [kind for kind in __import__("converter").VIDEO_OUTPUTS if kind != "json"]
    for kind in offered:  # what the result page plays is ticked at first, the rest offered
        box = f'id="video_format_{kind}" name="video_format" type="checkbox"\n          value="{kind}"'
        assert box + (" checked>" if kind in DEFAULT_VIDEO_OUTPUTS else ">") in page
    assert 'id="video_format_json"' not in page  # the sidecar always comes along
    assert '<video id="video-preview"' in page


def test_the_page_form_sends_an_unticked_stabilise_and_the_ticked_formats(client, tmp_path):
    created = form_post(client, clip_bytes(tmp_path, count=4), {"video_format": ["depth_video", "ply_sequence"],
                                                                "max_fps": "", "start": "", "end": ""})
    assert created.status_code == 303, created.get_data(as_text=True)
    page_url = created.headers["Location"]
    view = wait_for_job(client, page_url, timeout=120)
    assert view["status"] == "done", view
    assert set(view["files"]) == {"depth_video", "ply_sequence", "json"}
    assert view["info"]["options"]["stabilise"] is False and view["info"]["stabilisation"]["enabled"] is False
    page = client.get(page_url).get_data(as_text=True)
    assert "off: every frame's depth on its own" in page


@pytest.mark.parametrize("fields, words", [
    ({}, "Tick at least one video output"),
    ({"video_format": "anaglyph", "video_formats": "tb"}, "Give the video formats once"),
    ({"video_format": "hologram"}, "Unknown video format(s): hologram"),
])
def test_the_page_form_refuses_formats_it_cannot_read(client, tmp_path, fields, words):
    refused = form_post(client, clip_bytes(tmp_path, count=2), fields)
    assert refused.status_code == 400 and words in refused.get_data(as_text=True)


def test_the_running_video_page_has_what_its_script_reads_and_a_cancel_for_its_creator(make_app, tmp_path):
    app = make_app(VIDEO_CHUNK_WORKERS=1)
    client = app.test_client()
    release = hold_after(app, 3)
    try:
        created = form_post(client, clip_bytes(tmp_path, count=30, fps=24), {"video_format": "depth_video",
                                                                             "max_fps": "24"})
        page_url = created.headers["Location"]
        job_id = page_url.rsplit("/", 1)[1]
        wait_until(lambda: ((client.get(page_url + "/status").get_json().get("video") or {}).get("frames") or 0) >= 3,
                   timeout=120)
        page = client.get(page_url).get_data(as_text=True)
        assert "<h1>Converting your video</h1>" in page and "Converting your image" not in page
        assert f'data-status-url="/api/v1/conversions/{job_id}"' in page
        assert 'data-kind="video"' in page and 'data-expected="30"' in page and "3 of 30</dd>" in page
        assert 'id="frames-per-second"' in page and "frames per second</dd>" in page
        assert 'id="time-left">about ' in page
        assert f'<form id="cancel-form" class="cancel-form" method="post" action="/jobs/{job_id}/cancel"' in page
        assert '<p id="cancelling" class="cancelling" role="status" hidden>' in page
        stranger = app.test_client().get(page_url).get_data(as_text=True)  # no delete token: no Cancel to press
        assert "Converting your video" in stranger and 'id="cancel-form"' not in stranger
        # The form's POST (the cookie is its authority) sends the browser back to the page, now cancelling.
        cancelled = client.post(f"/jobs/{job_id}/cancel")
        assert cancelled.status_code == 303 and cancelled.headers["Location"].endswith(page_url)
        assert client.get(page_url + "/status").get_json()["cancel_requested"] is True
        page = client.get(page_url).get_data(as_text=True)
        assert '<p id="cancelling" class="cancelling" role="status">' in page
        assert re.search(r'<form id="cancel-form"[^>]*\shidden>', page)
    finally:
        release.set()
    final = wait_for_job(client, page_url, timeout=120)
    assert final["status"] == "cancelled" and final["cancel_requested"] is False
    page = client.get(page_url).get_data(as_text=True)
    assert "The conversion was cancelled" in page and "stopped on request" in page and "<video" not in page


@pytest.mark.slow  # 0.4 s or more of the fast tier's budget (issue 20)
def test_the_finished_video_page_has_the_players_downloads_facts_and_the_4d_player(client, tmp_path):
    from web.jobs.video import VIDEO_DOWNLOAD_GROUPS

    every = ",".join(kind for kind in __import__("converter").VIDEO_OUTPUTS)
    created = post_video(client, clip_bytes(tmp_path, count=6, audio_seconds=0.5), video_formats=every)
    job_id = created.get_json()["id"]
    view = wait_for_job(client, f"/jobs/{job_id}", timeout=120)
    assert view["status"] == "done", view
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    for kind in ("sbs_full", "anaglyph", "depth_video"):
        assert f'src="/jobs/{job_id}/files/{kind}?play=1" data-kind="{kind}"' in page
    assert page.count("<video") == 3  # half SBS and top-bottom are downloads, not players
    assert f'data-frames-url="/jobs/{job_id}/frames/"' in page and 'data-frame-count="6"' in page
    times = page.split('data-frame-times="', 1)[1].split('"', 1)[0].split()
    assert [float(t) for t in times] == pytest.approx(view["info"]["frame_times_s"], abs=1e-4) and len(times) == 6
    assert f'data-fps="{view["info"]["fps"]}"' in page and 'data-duration="' in page
    grouped = [kind for _, kinds in VIDEO_DOWNLOAD_GROUPS for kind in kinds]
    assert sorted(grouped) == sorted(__import__("converter").VIDEO_OUTPUTS)  # each kind in one group
    for group, kinds in VIDEO_DOWNLOAD_GROUPS:
        assert f'<h3>{group}</h3>' in page
        for kind in kinds:
            assert f'href="/jobs/{job_id}/files/{kind}" data-kind="{kind}"' in page
            assert f'data-size="{view["sizes"][kind]}"' in page
    text = " ".join(page.split())
    assert "1 shot (a cut starts a new one)" in text and 'id="video-sound">aac, stream-copied' in text
    assert "6 at 12 frames per second (0.5 s)" in text and "48 × 32, h264" in text
    # What the player fetches: frame n at data-frames-url + n, a 404 past the last.
    assert client.get(f"/jobs/{job_id}/frames/5").data.startswith(b"ply\n")
    assert client.get(f"/jobs/{job_id}/frames/6").status_code == 404
    fragment = client.get(f"/jobs/{job_id}/result").get_data(as_text=True)
    assert "data-player4d" in fragment and "<script" not in fragment  # swapped in by app.js, which loads player4d.js


def test_page_scripts_import_only_files_of_this_site():
    """No CDN at run time: every module import of static/js resolves to a file under static/ (the vendored
    three.js included), and app.js loads the 4D player where the page has one."""
    static = Path(__file__).resolve().parent.parent / "static"
    scripts = sorted((static / "js").glob("*.js"))
    assert static / "js" / "player4d.js" in scripts
    # import ... from '...'; (over lines), import '...'; and import('...')
    pattern = re.compile(r"""^\s*(?:import|export)\b[^;'"]*?\bfrom\s*['"]([^'"]+)['"]|^\s*import\s*['"]([^'"]+)['"]"""
                         r"""|\bimport\(\s*['"]([^'"]+)['"]""", re.M)
    for script in scripts:
        for target in ("".join(groups) for groups in pattern.findall(script.read_text())):
            assert target.startswith("./") or target.startswith("../"), f"{script.name} imports {target}"
            resolved = (script.parent / target).resolve()
            assert resolved.is_file() and static in resolved.parents, f"{script.name}: {target} is not here"
    assert 'import("./player4d.js")' in (static / "js" / "app.js").read_text()


def test_an_image_sent_from_the_page_with_every_video_box_unticked_converts(client):
    """The page always sends its video boxes: for an image they mean nothing, even all unticked."""
    from test_deletion import picture

    response = client.post("/api/v1/conversions", content_type="multipart/form-data", data={
        "image": (io.BytesIO(picture()), "photo.png"), "detail": "low", "checkboxes_submitted": "1"})
    assert response.status_code == 202, response.get_json()
