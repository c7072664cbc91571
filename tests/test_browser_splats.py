"""The viewer's "Show splats" toggle through the real app in headless Chromium: the job's .splat.ply is drawn by the
vendored Spark renderer (WebAssembly, allowed on the job page only), in place of the points, and unticking brings
the points back.

The photo is two flat colours on a plane 2 m in front of the camera (a metric depth map), so what each view must
draw is known: small round points with the background showing between them, or splats closing into one surface.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import requests
from conftest import TWO_HALVES, canvas_pixels, two_halves_png, wait_until
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LEFT, RIGHT = TWO_HALVES  # the photo's two halves
SCREENSHOT = Path(tempfile.gettempdir()) / "viewer-splats.png"
BACKGROUND = (0x1F, 0x22, 0x26)  # the viewer's clear colour
# The page records CSP violations itself too: Chromium logs them, but a test should not depend on log wording.
VIOLATIONS_JS = """window.cspViolations = [];
document.addEventListener('securitypolicyviolation',
    (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"""


def coverage(pixels: np.ndarray) -> float:
    """Fraction of the canvas that is not the empty background."""
    return float(np.mean(np.any(np.abs(pixels - np.array(BACKGROUND)) > 8, axis=-1)))


def halves(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the pixels the photo's left (reddish) and right (bluish) colours were drawn as."""
    red, blue = pixels[..., 0], pixels[..., 2]
    return (red > 120) & (blue < 100), (blue > 120) & (red < 100)


def wait_for_canvas(chrome, canvas, condition, timeout: float = 60) -> np.ndarray:
    """The canvas's pixels once ``condition(pixels)`` holds (fails after ``timeout`` seconds)."""
    found = []
    wait_until(lambda: condition(found.append(canvas_pixels(chrome, canvas)) or found[-1]), timeout)
    return found[-1]


def test_splats_toggle_draws_the_splat_file_in_place_of_the_points(chrome, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    image = two_halves_png(tmp_path, 48, 64)
    depth = tmp_path / "plane.npy"
    np.save(depth, np.full((48, 64), 2.0, np.float32))

    chrome.get(live_server.url + "/")
    chrome.find_element(By.ID, "image").send_keys(str(image))
    chrome.find_element(By.CSS_SELECTOR, "details.options > summary").click()
    chrome.find_element(By.ID, "depth").send_keys(str(depth))
    chrome.find_element(By.ID, "submit").click()
    wait_until(lambda: "/jobs/" in chrome.current_url)
    chrome.execute_script(VIOLATIONS_JS)
    wait_until(lambda: chrome.find_elements(By.CSS_SELECTOR, "[data-viewer][data-viewer-state='ready']"), 90)
    viewer = chrome.find_element(By.CSS_SELECTOR, "[data-viewer]")
    canvas = viewer.find_element(By.TAG_NAME, "canvas")
    chrome.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)

    # Only the job page may compile WebAssembly; the page it came from keeps the strict policy.
    job_csp = requests.get(chrome.current_url, timeout=60).headers["Content-Security-Policy"]
    assert "script-src 'self' 'wasm-unsafe-eval';" in job_csp
    assert "'wasm-unsafe-eval'" not in requests.get(live_server.url + "/", timeout=60).headers[
        "Content-Security-Policy"]

    points = canvas_pixels(chrome, canvas)
    points_coverage = coverage(points)
    assert 0.02 < points_coverage < 0.5, points_coverage  # 2 px points, background between them

    splat_url = viewer.get_attribute("data-splat-url")
    assert splat_url.endswith("/files/splat_ply")
    toggle = viewer.find_element(By.XPATH, ".//label[normalize-space()='Show splats']")
    toggle.click()
    wait_until(lambda: viewer.get_attribute("data-splat-state") in ("ready", "error"), 60)
    status = viewer.find_element(By.CSS_SELECTOR, ".viewer-status").text
    assert viewer.get_attribute("data-splat-state") == "ready", status
    count = int(viewer.get_attribute("data-point-count"))
    assert status == f"Splats: {count:,} Gaussians"  # splat i is point i
    assert not viewer.find_element(By.CSS_SELECTOR, "input[type=range]").is_enabled()

    # The splats close the surface: far more of the canvas is covered than by the points, red left of blue.
    splats = wait_for_canvas(chrome, canvas, lambda p: coverage(p) > 2 * points_coverage)
    Image.fromarray(splats.astype(np.uint8)).save(SCREENSHOT)  # to look at when this fails
    left, right = halves(splats)
    assert left.sum() > 1000 and right.sum() > 1000, (left.sum(), right.sum())
    # The photo's colours as they are (sRGB in, sRGB out), not darkened or washed out.
    assert np.abs(np.median(splats[left], axis=0) - LEFT).max() <= 12, np.median(splats[left], axis=0)
    assert np.abs(np.median(splats[right], axis=0) - RIGHT).max() <= 12, np.median(splats[right], axis=0)
    columns = np.arange(splats.shape[1])
    assert (columns * left).sum() / left.sum() < (columns * right).sum() / right.sum()  # not mirrored

    # The mesh and the splats take turns: ticking one unticks the other.
    mesh_box, splat_box = (viewer.find_element(By.CSS_SELECTOR, f"input[id$=-{name}]") for name in ("mesh", "splats"))
    viewer.find_element(By.XPATH, ".//label[normalize-space()='Show mesh']").click()
    wait_until(lambda: viewer.get_attribute("data-mesh-state") in ("ready", "error"), 60)
    assert viewer.get_attribute("data-mesh-state") == "ready"
    assert mesh_box.is_selected() and not splat_box.is_selected()
    assert viewer.find_element(By.CSS_SELECTOR, ".viewer-status").text.startswith("Mesh: ")
    toggle.click()
    assert splat_box.is_selected() and not mesh_box.is_selected()
    assert viewer.find_element(By.CSS_SELECTOR, ".viewer-status").text == f"Splats: {count:,} Gaussians"

    # Unticking brings back the points, exactly as they were drawn before.
    toggle.click()
    wait_for_canvas(chrome, canvas, lambda p: np.mean(np.any(p != points, axis=-1)) < 0.002, 10)
    assert viewer.find_element(By.CSS_SELECTOR, ".viewer-status").text.startswith(f"{count:,} points")
    # ... and ticking again shows the splats again (already loaded).
    toggle.click()
    wait_for_canvas(chrome, canvas, lambda p: coverage(p) > 2 * points_coverage, 10)

    assert chrome.execute_script("return window.cspViolations") == []
    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
