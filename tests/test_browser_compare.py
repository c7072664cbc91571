"""Model comparison in a real browser: headless Chromium against gunicorn on 127.0.0.1.

The live server's MODELS list holds the tiny DPT-Hybrid (its default) and the Hub ids, which cannot be fetched
offline here, so both sides use the tiny model: what is tested is the page (two jobs followed, two viewers drawn).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import canvas_pixels, png_bytes, wait_until

pytestmark = pytest.mark.browser


def test_compare_two_models_draws_two_viewers(chrome, live_server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    picture = np.zeros((90, 120, 3), np.uint8)
    picture[:, :60] = (230, 40, 40)
    picture[:, 60:] = (40, 80, 230)
    upload = tmp_path / "two colours.png"
    upload.write_bytes(png_bytes(picture))

    chrome.set_window_size(390, 844)  # the new controls fit a phone
    chrome.get(live_server.url + "/")
    assert chrome.execute_script("return document.documentElement.scrollWidth") <= 390
    chrome.set_window_size(1280, 1000)
    for control_id in ("mode", "paper_background", "stl_width_mm", "model_b"):  # the new controls are labelled
        assert chrome.find_elements(By.CSS_SELECTOR, f"label[for='{control_id}']"), control_id
    chrome.find_element(By.ID, "image").send_keys(str(upload))
    default_model = Select(chrome.find_element(By.ID, "model")).first_selected_option.get_attribute("value")
    second = Select(chrome.find_element(By.ID, "model_b"))
    second.select_by_value(default_model)  # the only model available offline here
    button = chrome.find_element(By.ID, "compare-submit")
    chrome.execute_script("arguments[0].scrollIntoView()", button)
    button.click()

    wait_until(lambda: "/compare/" in chrome.current_url)
    assert len(chrome.find_elements(By.CSS_SELECTOR, "[data-compare-side]")) == 2
    wait_until(lambda: len(chrome.find_elements(By.CSS_SELECTOR, "[data-viewer][data-viewer-state='ready']")) == 2,
               120)
    viewers = chrome.find_elements(By.CSS_SELECTOR, "[data-compare-side] [data-viewer]")
    assert len(viewers) == 2
    for viewer in viewers:
        assert int(viewer.get_attribute("data-point-count")) > 0
        canvas = viewer.find_element(By.TAG_NAME, "canvas")
        pixels = canvas_pixels(chrome, canvas).reshape(-1, 3).astype(int)
        reddish = (pixels[:, 0] > 150) & (pixels[:, 2] < 100)
        bluish = (pixels[:, 2] > 150) & (pixels[:, 0] < 100)
        assert reddish.sum() > 100 and bluish.sum() > 100, "a viewer drew no coloured points"
    chrome.set_window_size(390, 844)  # side by side becomes one above the other
    assert chrome.execute_script("return document.documentElement.scrollWidth") <= 390
    names = [element.text for element in chrome.find_elements(By.CSS_SELECTOR, "[data-compare-side] .model-name")]
    assert len(names) == 2 and all(names)

    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
