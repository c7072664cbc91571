"""A video through the whole product in a real browser: headless Chromium against gunicorn on 127.0.0.1.

Choose a clip on the upload page, see the job convert it (frames done of expected, speed, time left: the conversion is
held after its third frame, so the running state is seen for certain, tests/holds.py), then the result: the 3D videos
load, the 4D player draws the point cloud, plays it frame by frame and jumps with its slider, fetching only a few
frames ahead. And Cancel, pressed on the page while the conversion is held, ends it cancelled.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
import video_scenes as scenes
from conftest import canvas_pixels, holding, serve, wait_until

pytestmark = pytest.mark.browser
BACKGROUND = (0x1F, 0x22, 0x26)  # the player's clear colour (static/js/player4d.js)
PREFETCH_FRAMES, CACHE_FRAMES = 6, 16  # static/js/player4d.js


@pytest.fixture(scope="module")
def video_server(tiny_models, tmp_path_factory):
    """The real app under gunicorn whose video jobs wait after their third frame while ``hold`` exists; one chunk
    worker, so the frames counted are the clip's frames in order."""
    folder = tmp_path_factory.mktemp("video-server")
    hold = folder / "hold-video"
    with serve(tiny_models["dpt_hybrid"], folder, **holding(folder), HOLD_VIDEO_WHILE=hold,
               HOLD_VIDEO_AFTER_FRAMES=3, VIDEO_CHUNK_WORKERS=1) as server:
        server.hold = hold
        yield server


def write_clip(folder, count: int):
    frames, _, _ = scenes.clip(64, 48, count)
    path = folder / f"holiday-{count}.mp4"
    scenes.write_clip(path, frames, fps=12)
    return path


def upload(chrome, server, clip):
    """The upload page with a clip chosen: its preview plays and the video options open; then Convert."""
    from selenium.webdriver.common.by import By

    chrome.get(server.url + "/")
    assert "A video works too" in chrome.find_element(By.ID, "video-lead").text
    chrome.find_element(By.ID, "image").send_keys(str(clip))
    wait_until(lambda: chrome.execute_script("return document.getElementById('video-preview').readyState >= 1"))
    assert chrome.find_element(By.ID, "video-preview").is_displayed()
    assert chrome.find_element(By.ID, "video-options").get_attribute("open") is not None
    assert not chrome.find_element(By.ID, "preview").is_displayed()
    chrome.find_element(By.ID, "submit").click()
    wait_until(lambda: "/jobs/" in chrome.current_url)


def see_it_running(chrome, expected: int):
    """The running page: "Converting your video", 3 of ``expected`` frames (held there), speed and time left."""
    from selenium.webdriver.common.by import By

    wait_until(lambda: chrome.find_element(By.ID, "frames-done").text == f"3 of {expected}", 90)
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Converting your video"
    assert chrome.find_element(By.ID, "frames-per-second").text.endswith("frames per second")
    assert chrome.find_element(By.ID, "time-left").text.startswith("about ")
    assert float(chrome.find_element(By.ID, "progress").get_attribute("value")) > 0
    assert chrome.find_element(By.ID, "cancel").is_displayed()
    assert not chrome.find_element(By.ID, "cancelling").is_displayed()


def test_upload_a_clip_watch_it_convert_and_play_it_in_3d(chrome, video_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    clip = write_clip(tmp_path, 24)
    video_server.hold.touch()
    try:
        upload(chrome, video_server, clip)
        chrome.execute_script("window.__sameDocument = true;")
        see_it_running(chrome, 24)
    finally:
        video_server.hold.unlink(missing_ok=True)

    # The page becomes the result without a reload.
    wait_until(lambda: chrome.find_elements(By.CSS_SELECTOR, "[data-player4d][data-player-state]"), 90)
    assert chrome.execute_script("return window.__sameDocument === true;")
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Your 3D video"

    # The 3D videos: each loads its metadata at least (the server answers their range requests).
    videos = chrome.find_elements(By.CSS_SELECTOR, ".players video")
    assert {video.get_attribute("data-kind") for video in videos} == {"sbs_full", "anaglyph", "depth_video"}
    for video in videos:
        wait_until(lambda: chrome.execute_script("return arguments[0].readyState >= 1 || !!arguments[0].error",
                                                 video), 60)
        assert chrome.execute_script("return arguments[0].error && arguments[0].error.message", video) is None
        assert chrome.execute_script("return arguments[0].duration", video) > 1.5  # 24 frames at 12 fps

    # The 4D player draws the first frame's points over its background.
    player = chrome.find_element(By.CSS_SELECTOR, "[data-player4d]")
    wait_until(lambda: player.get_attribute("data-player-state") in ("ready", "error"), 60)
    assert player.get_attribute("data-player-state") == "ready", player.text
    assert player.get_attribute("data-frame") == "0"
    counter = player.find_element(By.CSS_SELECTOR, ".player4d-counter")
    assert counter.text.startswith("Frame 1 of 24 · 0.00 s of 2.00 s")
    canvas = player.find_element(By.TAG_NAME, "canvas")

    def drawn():
        pixels = canvas_pixels(chrome, canvas).reshape(-1, 3)
        return int((np.abs(pixels - np.array(BACKGROUND)).max(axis=1) > 40).sum())

    wait_until(lambda: drawn() > 200, 30)

    # Paused at frame 0 it holds that frame and the few after it, never the whole clip.
    wait_until(lambda: player.get_attribute("data-cached-frames") == str(PREFETCH_FRAMES + 1), 60)
    assert player.get_attribute("data-requests") == str(PREFETCH_FRAMES + 1)

    # Play without Loop: the frames follow one another to the last, where it stops (no clock is read here: the
    # frames drawn are recorded as they come, whatever the machine's speed).
    chrome.execute_script("window.__shown = []; arguments[0].addEventListener('player4d:frame',"
                          " (event) => window.__shown.push(event.detail.index));", player)
    loop = player.find_element(By.CSS_SELECTOR, ".player4d-loop input")
    loop.click()
    assert player.get_attribute("data-loop") == "false"
    play = player.find_element(By.CSS_SELECTOR, ".player4d-play")
    assert play.text == "Play"
    play.click()
    wait_until(lambda: player.get_attribute("data-playing") == "false", 60)
    shown = chrome.execute_script("return window.__shown")
    assert len(shown) >= 2 and shown == sorted(set(shown)) and shown[-1] == 23, shown
    assert player.get_attribute("data-frame") == "23" and counter.text.startswith("Frame 24 of 24 · 1.92 s")
    assert play.text == "Play"
    assert int(player.get_attribute("data-cached-frames")) <= CACHE_FRAMES
    assert int(player.get_attribute("data-requests")) > PREFETCH_FRAMES + 1  # fetched as it played

    # Pause stops it where it is.
    loop.click()
    play.click()
    assert play.text == "Pause" and player.get_attribute("data-playing") == "true"
    play.click()
    assert play.text == "Play" and player.get_attribute("data-playing") == "false"

    # The slider jumps: Home to the first frame, an arrow one on, End to the last.
    slider = player.find_element(By.CSS_SELECTOR, ".player4d-slider")
    slider.send_keys(Keys.HOME)
    wait_until(lambda: player.get_attribute("data-frame") == "0", 30)
    assert counter.text.startswith("Frame 1 of 24") and slider.get_attribute("value") == "0"
    slider.send_keys(Keys.ARROW_RIGHT)
    wait_until(lambda: player.get_attribute("data-frame") == "1", 30)
    slider.send_keys(Keys.END)
    wait_until(lambda: player.get_attribute("data-frame") == "23", 30)
    assert counter.text.startswith("Frame 24 of 24") and slider.get_attribute("value") == "23"
    wait_until(lambda: drawn() > 200, 30)
    assert int(player.get_attribute("data-cached-frames")) <= CACHE_FRAMES

    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


def test_cancel_on_the_page_stops_the_conversion(chrome, video_server, tmp_path):
    from selenium.webdriver.common.by import By

    clip = write_clip(tmp_path, 40)
    video_server.hold.touch()
    try:
        upload(chrome, video_server, clip)
        page = chrome.current_url
        see_it_running(chrome, 40)
        chrome.find_element(By.ID, "cancel").click()
        # The form's POST (the browser's delete-token cookie goes with it) brings the page back, cancelling.
        wait_until(lambda: chrome.find_elements(By.ID, "cancelling")
                   and chrome.find_element(By.ID, "cancelling").is_displayed(), 30)
        assert chrome.current_url == page and not chrome.find_element(By.ID, "cancel-form").is_displayed()
    finally:
        video_server.hold.unlink(missing_ok=True)
    wait_until(lambda: chrome.find_element(By.TAG_NAME, "h1").text == "The conversion was cancelled", 60)
    assert "stopped on request" in chrome.find_element(By.CSS_SELECTOR, ".error-message").text
    job_id = page.rstrip("/").rsplit("/", 1)[1]
    view = requests.get(f"{video_server.url}/api/v1/conversions/{job_id}", timeout=10).json()
    assert view["status"] == "cancelled" and view["code"] == "cancelled"
    assert sorted(path.name for path in (video_server.outputs / job_id).iterdir()) == ["job.json"]
    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
