"""Measuring in the viewer through the real app: upload a photo with its metric depth map, measure between two
clicked points on the job page, and check the result against the downloaded point cloud (read with plyfile)."""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
from conftest import TWO_HALVES, canvas_pixels, click_pixel, two_halves_png, wait_until
from plyfile import PlyData

pytestmark = pytest.mark.browser

LEFT, RIGHT = TWO_HALVES  # the photo's two halves
PLANE_DEPTH = 2.0  # metres


def solid_pixel(pixels: np.ndarray, colour, radius: int = 2) -> tuple[int, int]:
    """A pixel of that colour well inside a drawn point (its whole neighbourhood has the colour), near the middle."""
    mask = np.all(np.abs(pixels - np.array(colour)) <= 12, axis=-1)
    inner = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            inner &= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    assert inner.any(), f"no solid {colour} pixels on the canvas"
    rows, columns = np.nonzero(mask)
    inner_rows, inner_columns = np.nonzero(inner)
    best = np.argmin((inner_rows - rows.mean()) ** 2 + (inner_columns - columns.mean()) ** 2)
    return int(inner_rows[best]), int(inner_columns[best])


def coordinates(value: str) -> np.ndarray:
    return np.array([float(part) for part in value.split(",")])


def measure_left_to_right(chrome, viewer) -> None:
    """Big points (easy targets), Measure on, click the left half's colour then the right half's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    canvas = viewer.find_element(By.TAG_NAME, "canvas")
    chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
    viewer.find_element(By.CSS_SELECTOR, "input[type=range]").send_keys(Keys.END)
    wait_until(lambda: viewer.find_element(By.CSS_SELECTOR, "output").text == "10 px")
    # The size change requested a frame; animation-frame callbacks run in the order asked for, so once one asked
    # for now has run (and the one after it), the viewer has drawn the bigger points: wait for that, not 0.3 s.
    chrome.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "requestAnimationFrame(() => requestAnimationFrame(() => done()));")
    pixels = canvas_pixels(chrome, canvas)
    viewer.find_element(By.XPATH, ".//button[normalize-space()='Measure']").click()
    click_pixel(chrome, canvas, *solid_pixel(pixels, LEFT))
    wait_until(lambda: viewer.get_attribute("data-measure-a"), 60)
    click_pixel(chrome, canvas, *solid_pixel(pixels, RIGHT))
    wait_until(lambda: viewer.get_attribute("data-measure-distance"), 60)


def test_measure_on_a_metric_depth_map_matches_the_downloaded_cloud(chrome, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    image = two_halves_png(tmp_path, 30, 40)
    depth = tmp_path / "plane.npy"
    np.save(depth, np.full((30, 40), PLANE_DEPTH, np.float32))

    chrome.get(live_server.url + "/")
    chrome.find_element(By.ID, "image").send_keys(str(image))
    chrome.find_element(By.CSS_SELECTOR, "details.options > summary").click()
    chrome.find_element(By.ID, "depth").send_keys(str(depth))
    assert chrome.find_element(By.ID, "depth_kind").get_attribute("value") == "metric"
    chrome.find_element(By.ID, "submit").click()

    wait_until(lambda: "/jobs/" in chrome.current_url)
    wait_until(lambda: chrome.find_elements(By.CSS_SELECTOR, "[data-viewer][data-viewer-state='ready']"), 90)
    viewer = chrome.find_element(By.CSS_SELECTOR, "[data-viewer]")
    assert viewer.get_attribute("data-units") == "metres"
    chrome.execute_script("window.measureEvents = [];"
                          "document.addEventListener('viewer:measure', (e) => window.measureEvents.push(e.detail));")
    measure_left_to_right(chrome, viewer)
    readout = viewer.find_element(By.CSS_SELECTOR, ".viewer-measure-readout").text

    # The point cloud the page offers, read by an independent reader.
    ply_url = viewer.get_attribute("data-ply-url")
    link = chrome.find_element(By.CSS_SELECTOR, "#downloads a[data-kind=ply]")
    assert link.get_attribute("href").endswith(ply_url)
    with urllib.request.urlopen(live_server.url + ply_url, timeout=30) as response:
        (tmp_path / "cloud.ply").write_bytes(response.read())
    vertex = PlyData.read(str(tmp_path / "cloud.ply"))["vertex"]
    assert vertex.count == int(viewer.get_attribute("data-point-count"))
    points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
    colours = np.stack([vertex["red"], vertex["green"], vertex["blue"]], axis=1).astype(int)

    found = []
    for name in ("data-measure-a", "data-measure-b"):
        error = np.abs(points - coordinates(viewer.get_attribute(name))).max(axis=1)
        assert error.min() < 1e-5, f"{name} is not a point of the downloaded cloud"
        found.append(error.argmin())
    a, b = points[found]
    assert np.allclose([a[2], b[2]], -PLANE_DEPTH, atol=1e-4)  # on the plane, 2 m in front of the camera
    assert np.abs(colours[found[0]] - LEFT).max() <= 2 and np.abs(colours[found[1]] - RIGHT).max() <= 2
    expected = float(np.linalg.norm(a - b))
    assert expected > 0.1
    assert abs(float(viewer.get_attribute("data-measure-distance")) - expected) < 1e-5
    assert readout == f"Distance: {expected:.3f} metres"
    [event] = chrome.execute_script("return window.measureEvents")
    assert event["units"] == "metres" and abs(event["distance"] - expected) < 1e-5

    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors


def test_a_known_length_rescales_the_result_to_metres(chrome, live_server, tmp_path):
    """Relative depth (a disparity map): measure two points, type their real distance, and the rebuilt result is in
    metres with exactly that distance between the same two points of the new cloud."""
    from selenium.webdriver.common.by import By

    image = two_halves_png(tmp_path, 30, 40)
    columns = np.tile(np.arange(40, dtype=np.float32), (30, 1))
    np.save(tmp_path / "disparity.npy", 1.0 / (2.0 + 0.05 * columns))  # a slanted plane, relative units

    chrome.get(live_server.url + "/")
    chrome.find_element(By.ID, "image").send_keys(str(image))
    chrome.find_element(By.CSS_SELECTOR, "details.options > summary").click()
    chrome.find_element(By.ID, "depth").send_keys(str(tmp_path / "disparity.npy"))
    chrome.find_element(By.CSS_SELECTOR, "#depth_kind option[value=disparity]").click()
    chrome.find_element(By.ID, "submit").click()
    wait_until(lambda: "/jobs/" in chrome.current_url)
    first_page = chrome.current_url
    wait_until(lambda: chrome.find_elements(By.CSS_SELECTOR, "[data-viewer][data-viewer-state='ready']"), 90)
    viewer = chrome.find_element(By.CSS_SELECTOR, "[data-viewer]")
    assert viewer.get_attribute("data-units") == "relative units"
    assert chrome.find_element(By.ID, "set-scale").get_attribute("disabled")  # nothing measured yet
    measure_left_to_right(chrome, viewer)
    a, b = (coordinates(viewer.get_attribute(name)) for name in ("data-measure-a", "data-measure-b"))

    chrome.find_element(By.ID, "scale-metres").send_keys("0.5")
    chrome.find_element(By.ID, "set-scale").click()
    wait_until(lambda: chrome.current_url != first_page and "/jobs/" in chrome.current_url)
    wait_until(lambda: chrome.find_elements(By.CSS_SELECTOR, "[data-viewer][data-viewer-state='ready']"), 90)
    rebuilt = chrome.find_element(By.CSS_SELECTOR, "[data-viewer]")
    assert rebuilt.get_attribute("data-units") == "metres"
    with urllib.request.urlopen(live_server.url + rebuilt.get_attribute("data-ply-url"), timeout=30) as response:
        (tmp_path / "scaled.ply").write_bytes(response.read())
    vertex = PlyData.read(str(tmp_path / "scaled.ply"))["vertex"]
    points = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
    # The same two surface points, scaled: the new cloud is the old one times one factor.
    factor = 0.5 / np.linalg.norm(a - b)
    ends = [np.abs(points - end * factor).max(axis=1).argmin() for end in (a, b)]
    assert np.abs(points[ends[0]] - a * factor).max() < 1e-4 and np.abs(points[ends[1]] - b * factor).max() < 1e-4
    assert np.linalg.norm(points[ends[0]] - points[ends[1]]) == pytest.approx(0.5, rel=1e-4)
    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
