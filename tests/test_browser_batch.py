"""A batch in a real browser: choose several images at once, follow every job on the batch page, download the zip."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from conftest import http_download, png_bytes, wait_until
from plyfile import PlyData

pytestmark = pytest.mark.browser


def test_several_images_become_a_batch_with_one_zip(chrome, live_server, tmp_path):
    from selenium.webdriver.common.by import By

    paths = []
    for number in range(3):
        rows, columns = np.mgrid[0:24, 0:32]
        picture = np.dstack([columns * 7, rows * 9, np.full((24, 32), 60 * number)]).astype(np.uint8)
        path = tmp_path / f"photo {number}.png"
        path.write_bytes(png_bytes(picture))
        paths.append(path)

    chrome.get(live_server.url + "/")
    chrome.find_element(By.ID, "image").send_keys("\n".join(str(path) for path in paths))
    wait_until(lambda: "3 files" in chrome.find_element(By.ID, "chosen-name").text)
    chrome.find_element(By.ID, "submit").click()
    wait_until(lambda: "/batches/" in chrome.current_url)
    rows = chrome.find_elements(By.CSS_SELECTOR, ".batch-job")
    assert len(rows) == 3
    # The page follows the jobs without a reload and opens the download when all are done.
    chrome.execute_script("window.__sameDocument = true;")
    wait_until(lambda: chrome.find_element(By.ID, "batch").get_attribute("data-status") == "done", 90)
    assert chrome.execute_script("return window.__sameDocument === true;")
    assert [row.get_attribute("data-status") for row in chrome.find_elements(By.CSS_SELECTOR, ".batch-job")] == \
        ["done"] * 3
    wait_until(lambda: len(chrome.find_elements(By.CSS_SELECTOR, ".batch-job img.batch-thumb")) == 3)
    link = chrome.find_element(By.ID, "batch-download")
    assert link.get_attribute("aria-disabled") is None
    archive = http_download(link.get_attribute("href"))  # the zip is prepared by an export task (202 until whole)
    assert archive.status_code == 200 and archive.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as bundle:
        assert {name.split("/")[0] for name in bundle.namelist()} == {"01", "02", "03"}
        for number in ("01", "02", "03"):
            cloud = PlyData.read(io.BytesIO(bundle.read(f"{number}/cloud.ply")))["vertex"]
            assert cloud.count > 0
    errors = [entry for entry in chrome.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == [], errors
