"""The whole product in a real browser: headless Chromium against gunicorn on 127.0.0.1.

Choose a file, submit, watch the progress, see the 3D viewer draw points (its pixels are read), open the mesh, and
click every download link, reading each file back with an independent reader.
"""

from __future__ import annotations

import zipfile

import laspy
import numpy as np
import open3d as o3d
import pytest
from conftest import canvas_pixels, http_download, png_bytes, wait_until
from PIL import Image
from plyfile import PlyData

from web.jobs.store import DOWNLOADS

pytestmark = pytest.mark.browser
BROWSER_CLICKS = ("ply", "glb", "obj", "mesh_ply", "depth_png", "depth_npy", "json", "stl")


def test_drop_a_photo_see_it_in_3d_and_download_everything(chrome, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    # A picture with two strong colours, so rendered points are recognisable among the viewer's background.
    picture = np.zeros((90, 120, 3), np.uint8)
    picture[:, :60] = (230, 40, 40)
    picture[:, 60:] = (40, 80, 230)
    upload = tmp_path / "two colours.png"
    upload.write_bytes(png_bytes(picture))

    chrome.get(live_server.url + "/")
    assert "Turn an image into 3D" in chrome.title + chrome.page_source
    chrome.find_element(By.ID, "image").send_keys(str(upload))
    preview = chrome.find_element(By.ID, "preview")
    wait_until(lambda: preview.is_displayed() and chrome.execute_script("return arguments[0].naturalWidth", preview))
    chrome.find_element(By.ID, "submit").click()

    # The job page follows the stages, then becomes the result without a reload.
    wait_until(lambda: "/jobs/" in chrome.current_url)
    chrome.execute_script("window.__sameDocument = true;")
    wait_until(lambda: chrome.find_elements(By.CSS_SELECTOR, "[data-viewer][data-viewer-state='ready']"), 90)
    assert chrome.execute_script("return window.__sameDocument === true;")  # no reload happened
    viewer = chrome.find_element(By.CSS_SELECTOR, "[data-viewer]")
    assert int(viewer.get_attribute("data-point-count")) > 0
    canvas = viewer.find_element(By.TAG_NAME, "canvas")
    pixels = canvas_pixels(chrome, canvas).reshape(-1, 3).astype(int)
    reddish = (pixels[:, 0] > 150) & (pixels[:, 2] < 100)
    bluish = (pixels[:, 2] > 150) & (pixels[:, 0] < 100)
    assert reddish.sum() > 100 and bluish.sum() > 100, "the viewer drew no coloured points"

    # The mesh toggle loads the GLB into the same viewer.
    toggle = viewer.find_element(By.CSS_SELECTOR, "input[type=checkbox]")
    toggle.click()
    wait_until(lambda: viewer.get_attribute("data-mesh-state") in ("ready", "error"), 60)
    assert viewer.get_attribute("data-mesh-state") == "ready"

    # Input and depth pictures are shown; every download link gives a file a reader accepts.
    for image in chrome.find_elements(By.CSS_SELECTOR, ".pictures img"):
        assert chrome.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", image)
    links = chrome.find_elements(By.CSS_SELECTOR, "#downloads a[data-kind]")
    kinds = [link.get_attribute("data-kind") for link in links]
    assert set(kinds) == set(DOWNLOADS) - {"disagreement"}  # every kind but that of an aligned job, meshes included
    # A download not written yet: its link shows "Preparing the …", reloads itself (no script) and the file comes
    # when it is whole; then back to the result.
    result_url, point_count = chrome.current_url, int(viewer.get_attribute("data-point-count"))
    chrome.find_element(By.CSS_SELECTOR, "#downloads a[data-kind=stl]").click()
    wait_until(lambda: "Preparing the" in chrome.find_element(By.TAG_NAME, "h1").text, 60)
    wait_until(lambda: any(p.name.endswith("relief.stl") for p in chrome.download_dir.iterdir()), 60)
    chrome.get(result_url)
    wait_until(lambda: chrome.find_elements(By.CSS_SELECTOR, "#downloads a[data-kind]"), 60)
    links = chrome.find_elements(By.CSS_SELECTOR, "#downloads a[data-kind]")
    # The rest are prepared first (following the 202 answers), then clicked: each is then a plain download.
    # Chromium lets a page start about ten downloads at once; the others are fetched from the same links.
    clicked = [link for link in links if link.get_attribute("data-kind") in BROWSER_CLICKS
               and link.get_attribute("data-kind") != "stl"]
    for link in clicked:
        assert http_download(link.get_attribute("href")).status_code == 200
        link.click()
    expected = {DOWNLOADS[kind].file_name for kind in BROWSER_CLICKS}
    for link in links:
        if link not in clicked and link.get_attribute("data-kind") != "stl":
            fetched = http_download(link.get_attribute("href"))
            assert fetched.status_code == 200 and fetched.content
            (chrome.download_dir / f"fetched-{DOWNLOADS[link.get_attribute('data-kind')].file_name}").write_bytes(
                fetched.content)

    def downloaded():
        names = {path.name.split("-", 1)[1] for path in chrome.download_dir.iterdir()
                 if not path.name.endswith(".crdownload")}
        return names if names >= expected else None

    wait_until(downloaded, 60)
    files = {path.name.split("-", 1)[1]: path for path in chrome.download_dir.iterdir()}
    cloud = PlyData.read(str(files["cloud.ply"]))["vertex"]
    assert cloud.count == point_count
    import trimesh

    glb = trimesh.load(files["mesh.glb"], force="mesh", process=False)
    assert len(glb.vertices) == cloud.count and len(glb.faces) > 0
    with zipfile.ZipFile(files["mesh-obj.zip"]) as bundle:
        assert {"mesh.obj", "mesh.mtl", "mesh_texture.png"} == set(bundle.namelist())
    assert PlyData.read(str(files["mesh.ply"]))["face"].count == len(glb.faces)
    depth_png = np.asarray(Image.open(files["depth.png"]))
    assert depth_png.dtype == np.uint16 and depth_png.shape == picture.shape[:2]
    assert np.load(files["depth.npy"]).shape == picture.shape[:2]
    simplified = trimesh.load(files["mesh-simplified.glb"], force="mesh", process=False)
    assert 0 < len(simplified.faces) < len(glb.faces)
    assert laspy.read(files["cloud.las"]).header.point_count == cloud.count
    assert len(o3d.io.read_point_cloud(str(files["cloud.pcd"])).points) == cloud.count
    with zipfile.ZipFile(files["mesh.usdz"]) as package:
        assert package.namelist()[0].endswith(".usdc")

    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


def test_page_works_at_phone_width_and_shows_clear_errors(chrome, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    chrome.set_window_size(390, 844)
    chrome.get(live_server.url + "/")
    width = chrome.execute_script("return document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways on a phone"
    for control in chrome.find_elements(By.CSS_SELECTOR, "input:not([type=hidden]), select"):
        control_id = control.get_attribute("id")
        assert chrome.find_elements(By.CSS_SELECTOR, f"label[for='{control_id}']"), f"#{control_id} has no label"
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is text")
    chrome.find_element(By.ID, "image").send_keys(str(not_an_image))
    chrome.find_element(By.ID, "submit").click()
    wait_until(lambda: "not a supported image format" in chrome.page_source)
    assert "Traceback" not in chrome.page_source
