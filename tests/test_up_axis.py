"""The ``up`` option (PLY and PCD y up by default, z up for Blender and other z-up tools) through every way in: the
web form and API, rebuilds (which keep it), later downloads, batch zips, the CLI and the one-call Python API; an
unknown value is a 400 / a usage error with a sentence. Files are read back with plyfile and Open3D.
Slow tier: real conversions through the Flask test client, and the CLI as a subprocess."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import numpy as np
import open3d as o3d
import pytest
from conftest import ROOT, download, png_bytes
from plyfile import PlyData
from test_lazy_downloads import H, W, submit, wait_done

pytestmark = pytest.mark.slow


def vertices(data: bytes) -> np.ndarray:
    vertex = PlyData.read(io.BytesIO(data))["vertex"]
    return np.column_stack([vertex["x"], vertex["y"], vertex["z"]]).astype(np.float64)


def is_z_up(points: np.ndarray) -> bool:
    """The test scene (a tilted plane 2 m ahead, every pixel kept, rows from the top) in the z-up frame: in front
    is +y, and the first row (the picture's top) is higher than the last."""
    return bool((points[:, 1] > 1).all() and points[:W, 2].mean() > points[-W:, 2].mean())


def is_y_up(points: np.ndarray) -> bool:
    return bool((points[:, 2] < -1).all() and points[:W, 1].mean() > points[-W:, 1].mean())


def fetch(client, url: str) -> bytes:
    response = download(client, url)
    assert response.status_code == 200, (url, response.status_code)
    return response.data


def test_up_travels_through_jobs_rebuilds_later_downloads_and_batches(client, tmp_path):
    job = submit(client, up="z")
    view = wait_done(client, job)
    assert view["info"]["job"]["options"]["up"] == "z"
    assert is_z_up(vertices(fetch(client, view["files"]["ply"])))  # written with the job
    assert is_z_up(vertices(fetch(client, view["files"]["mesh_ply"])))  # a later download
    pcd = tmp_path / "cloud.pcd"
    pcd.write_bytes(fetch(client, view["files"]["pcd"]))
    assert is_z_up(np.asarray(o3d.io.read_point_cloud(str(pcd)).points))
    page = client.get(f"/jobs/{job}").get_data(as_text=True)
    assert 'data-up="z"' in page and '<option value="z" selected>' in page  # the viewer turns it back

    kept = client.post(f"/api/v1/conversions/{job}/rebuild", data={"relief": "2"}).get_json()["id"]
    kept_view = wait_done(client, kept)
    assert kept_view["info"]["job"]["options"]["up"] == "z"
    assert is_z_up(vertices(fetch(client, kept_view["files"]["ply"])))
    back = client.post(f"/api/v1/conversions/{job}/rebuild", data={"up": "y"}).get_json()["id"]
    assert is_y_up(vertices(fetch(client, wait_done(client, back)["files"]["ply"])))

    picture = png_bytes(np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8))
    batch = client.post("/api/v1/batches", data={"images": [(io.BytesIO(picture), "a.png"), (io.BytesIO(picture),
                                                                                            "b.png")],
                                                 "up": "z", "max_points": "0", "clean": "false"}).get_json()
    for job_id in batch["job_ids"]:
        wait_done(client, job_id)
    bundle = zipfile.ZipFile(io.BytesIO(fetch(client, batch["download_url"] + "?formats=ply,pcd")))
    assert sorted(bundle.namelist()) == ["01/cloud.pcd", "01/cloud.ply", "02/cloud.pcd", "02/cloud.ply"]
    for name in ("01/cloud.ply", "02/cloud.ply"):
        points = vertices(bundle.read(name))
        assert (points[:, 1] > 0).all()  # the model's depth in front of the camera: forward is +y


@pytest.mark.parametrize("url", ["/api/v1/conversions", "rebuild", "/api/v1/batches"])
def test_an_unknown_up_is_a_400_with_a_sentence(client, url):
    if url == "rebuild":
        url = f"/api/v1/conversions/{submit(client)}/rebuild"
        wait_done(client, url.split("/")[-2])
    picture = png_bytes(np.zeros((H, W, 3), np.uint8))
    response = client.post(url, data={"up": "x", "image": (io.BytesIO(picture), "a.png"),
                                      "images": [(io.BytesIO(picture), "b.png"), (io.BytesIO(picture), "c.png")]})
    assert response.status_code == 400
    assert response.get_json()["error"].startswith("up must be one of: y (") and "z (" in response.get_json()["error"]


def test_the_cli_and_the_one_call_api_take_up(tmp_path):
    from converter import convert

    picture = tmp_path / "photo.png"
    picture.write_bytes(png_bytes(np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)))
    depth = tmp_path / "depth.npy"
    rows, columns = np.mgrid[0:H, 0:W]
    np.save(depth, (2.0 + 0.02 * columns + 0.004 * rows).astype(np.float32))
    command = [sys.executable, "-m", "converter", str(picture), "--depth", str(depth), "--max-points", "0",
               "--no-clean", "--format", "ply,pcd,las", "-o", str(tmp_path / "out"), "-q"]
    done = subprocess.run(command + ["--up", "z"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert is_z_up(vertices((tmp_path / "out.ply").read_bytes()))
    assert is_z_up(np.asarray(o3d.io.read_point_cloud(str(tmp_path / "out.pcd")).points))
    refused = subprocess.run(command + ["--up", "x"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.startswith("error: up must be one of: y (")
    assert "Traceback" not in refused.stderr

    convert(picture.read_bytes(), tmp_path / "api.ply", depth=depth.read_bytes(), up="z", max_points=0, clean=False)
    assert is_z_up(vertices((tmp_path / "api.ply").read_bytes()))
    with pytest.raises(Exception, match="up must be one of"):
        convert(picture.read_bytes(), tmp_path / "never.ply", depth=depth.read_bytes(), up="sideways")
    assert not (tmp_path / "never.ply").exists()


@pytest.mark.browser
def test_the_viewer_shows_a_z_up_cloud_as_it_shows_the_y_up_one(chrome, live_server):
    """The job page's viewer turns a z-up cloud back (data-up="z"): the same picture converted with up=y and with
    up=z draws the same (a red top half above a blue bottom half), pixel for pixel within rendering noise."""
    import requests
    from conftest import canvas_pixels, wait_for_server_job, wait_until
    from selenium.webdriver.common.by import By

    picture = np.zeros((40, 60, 3), np.uint8)
    picture[:20], picture[20:] = (230, 40, 40), (40, 80, 230)
    drawn = {}
    for up in ("y", "z"):
        created = requests.post(live_server.url + "/api/v1/conversions", files={"image": ("p.png", png_bytes(picture))},
                                data={"up": up, "mesh": "false"}, timeout=60).json()
        assert wait_for_server_job(live_server, created["status_url"])["status"] == "done"
        chrome.get(f"{live_server.url}/jobs/{created['id']}")
        wait_until(lambda: chrome.find_elements(By.CSS_SELECTOR, "[data-viewer][data-viewer-state='ready']"), 90)
        viewer = chrome.find_element(By.CSS_SELECTOR, "[data-viewer]")
        assert viewer.get_attribute("data-up") == up
        drawn[up] = canvas_pixels(chrome, viewer.find_element(By.TAG_NAME, "canvas"))
    for pixels in drawn.values():
        rows = np.arange(pixels.shape[0])
        red = (pixels[:, :, 0] > 150) & (pixels[:, :, 2] < 100)
        blue = (pixels[:, :, 2] > 150) & (pixels[:, :, 0] < 100)
        assert red.sum() > 100 and blue.sum() > 100
        assert rows[red.any(axis=1)].mean() < rows[blue.any(axis=1)].mean()  # red above blue: upright
    differs = np.abs(drawn["y"] - drawn["z"]).max(axis=2) > 40
    assert differs.mean() < 0.01, differs.mean()
