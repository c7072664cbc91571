"""The in-browser viewer (static/js/viewer.js) in a real headless Chromium, served as static files under a strict CSP.

A synthetic photo-like scene is written as a binary PLY (OpenGL frame: y up, camera at the origin looking down -z):
a blue 4:3 wall 3 units away with a green patch in its top-left corner and a very dark one bottom-right, and a red
square 2 units away in the middle.
Seen from where the "photographer" stood the picture must show red in the middle, green top-left, blue elsewhere,
with the stored colours unchanged. No build step, no inline script and no eval: the page sends
``script-src 'self'`` and the console must stay free of errors.

The 4D player (static/js/player4d.js) plays 40 such frames, the red square moving left to right: the frames it asks
the server for are counted (a few ahead, never the clip), and a frame that is not there is explained.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import shutil
import tempfile
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import click_pixel

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip("needs Debian's chromium and chromium-driver", allow_module_level=True)
from PIL import Image  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; worker-src 'self' blob:")
SCREENSHOT = Path(tempfile.gettempdir()) / "viewer.png"

RED = (230, 30, 30)
BLUE = (30, 60, 220)
GREEN = (20, 200, 60)
DARK = (6, 9, 45)  # shadows: 8-bit *linear* storage would turn this into about (0, 13, 45)
BACKGROUND = (0x1F, 0x22, 0x26)  # the viewer's clear colour
TEXTURE_TOP = (0, 200, 0)
TEXTURE_BOTTOM = (200, 0, 200)

# --------------------------------------------------------------------------------------------- test files


def write_ply(path: Path, square_x: float = 0.0) -> int:
    """The red-square-in-front-of-a-blue-wall scene as binary little-endian PLY (float xyz, uchar rgb); the square's
    centre at ``square_x``."""
    xs, ys = np.meshgrid(np.linspace(-1.5, 1.5, 60), np.linspace(-1.125, 1.125, 45))
    wall = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, -3.0)], axis=1)
    wall_colours = np.tile(BLUE, (len(wall), 1))
    top_left = (wall[:, 0] < -0.9) & (wall[:, 1] > 0.6)
    wall_colours[top_left] = GREEN
    wall_colours[(wall[:, 0] > 0.9) & (wall[:, 1] < -0.6)] = DARK  # bottom-right
    xs, ys = np.meshgrid(np.linspace(-0.4, 0.4, 20), np.linspace(-0.4, 0.4, 20))
    square = np.stack([xs.ravel() + square_x, ys.ravel(), np.full(xs.size, -2.0)], axis=1)
    points = np.concatenate([wall, square])
    colours = np.concatenate([wall_colours, np.tile(RED, (len(square), 1))])

    vertices = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                            ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertices["x"], vertices["y"], vertices["z"] = points.T
    vertices["red"], vertices["green"], vertices["blue"] = colours.T
    header = "\n".join([
        "ply", "format binary_little_endian 1.0", f"element vertex {len(vertices)}",
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue", "end_header", "",
    ])
    path.write_bytes(header.encode("ascii") + vertices.tobytes())
    return len(vertices)


def write_glb(path: Path) -> None:
    """A textured quad filling the same view (PNG embedded in the GLB: the texture arrives as a blob: URL)."""
    import trimesh

    texture = np.zeros((64, 64, 3), dtype=np.uint8)
    texture[:32] = TEXTURE_TOP  # image row 0 is the top of the picture
    texture[32:] = TEXTURE_BOTTOM
    vertices = np.array([[-1.5, -1.125, -3], [1.5, -1.125, -3], [1.5, 1.125, -3], [-1.5, 1.125, -3]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)  # OpenGL convention: v = 1 is the image top
    # A white factor: trimesh's default material would multiply the texture by 0.4 (darker, as glTF says).
    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture), diffuse=[255, 255, 255, 255])
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, visual=visual, process=False)
    path.write_bytes(mesh.export(file_type="glb"))


def write_splat_ply(path: Path) -> None:
    """A 3D Gaussian Splatting PLY of the same red square (one flat, round, opaque Gaussian per point)."""
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    xs, ys = np.meshgrid(np.linspace(-0.4, 0.4, 20), np.linspace(-0.4, 0.4, 20))
    splats = np.zeros(xs.size, dtype=[(name, "<f4") for name in names])
    splats["x"], splats["y"], splats["z"], splats["nz"] = xs.ravel(), ys.ravel(), -2.0, 1.0
    for channel, value in zip(("f_dc_0", "f_dc_1", "f_dc_2"), RED):
        splats[channel] = (value / 255 - 0.5) / 0.28209479
    splats["opacity"] = 4.0  # logit: about 0.98
    splats["scale_0"] = splats["scale_1"] = np.log(0.03)
    splats["scale_2"] = np.log(0.0003)
    splats["rot_0"] = 1.0
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {len(splats)}",
                        *[f"property float {name}" for name in names], "end_header", ""])
    path.write_bytes(header.encode("ascii") + splats.tobytes())


def page(body: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Viewer test</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="/static/css/viewer.css">
  <script src="/events.js"></script>
</head>
<body>
  <main>{body}</main>
  <script type="module" src="/static/js/viewer.js"></script>
</body>
</html>
"""


PLAYER_FRAMES = 40


def player_page(count: int) -> str:
    """The 4D player (static/js/player4d.js) on ``count`` frames at 10 fps: frame n is /frames/n."""
    return page(f'<div id="p" data-player4d data-frames-url="/frames/" data-frame-count="{count}" data-fps="10" '
                f'data-duration="{count / 10}" data-units="metres"></div>').replace("js/viewer.js", "js/player4d.js")


# A classic script runs before the module, so no event can be missed; it is a file because inline script is banned.
EVENTS_JS = """window.viewerEvents = [];
for (const type of ['viewer:ready', 'viewer:error', 'viewer:mesh', 'viewer:splats']) {
  document.addEventListener(type, (event) => {
    window.viewerEvents.push({ type, target: event.target.id, detail: event.detail });
  });
}
"""


class StrictHandler(SimpleHTTPRequestHandler):
    """Static files with the strict Content-Security-Policy the app is meant to use; the paths asked for are kept in
    ``requested`` (the 4D player's frames are counted there)."""

    requested: list[str] = []

    def do_GET(self):
        StrictHandler.requested.append(self.path)
        super().do_GET()

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                      ".ply": "application/octet-stream", ".glb": "model/gltf-binary"}

    def end_headers(self):
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # keep the test output clean
        pass


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "static").symlink_to(ROOT / "static", target_is_directory=True)
    points = write_ply(root / "cloud.ply")
    write_glb(root / "mesh.glb")
    (root / "events.js").write_text(EVENTS_JS)
    (root / "index.html").write_text(page(
        '<div id="v" data-viewer data-ply-url="/cloud.ply" data-mesh-url="/mesh.glb" data-units="metres" '
        'aria-label="Interactive 3D view of the point cloud"></div>'))
    write_splat_ply(root / "splats.ply")
    (root / "splats.html").write_text(page(
        '<div id="v" data-viewer data-ply-url="/cloud.ply" data-splat-url="/splats.ply"></div>'))
    (root / "missing.html").write_text(page('<div id="v" data-viewer data-ply-url="/no-such-file.ply"></div>'))
    (root / "broken.html").write_text(page('<div id="v" data-viewer data-ply-url="/events.js"></div>'))

    (root / "frames").mkdir()
    for index in range(PLAYER_FRAMES):  # the red square moves from left to right, frame by frame
        write_ply(root / "frames" / str(index), square_x=-0.8 + 1.6 * index / (PLAYER_FRAMES - 1))
    for name, count in (("player.html", PLAYER_FRAMES), ("player-missing.html", PLAYER_FRAMES + 10)):
        (root / name).write_text(player_page(count))

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(StrictHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "points": points}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--window-size=800,1000", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield browser
    finally:
        browser.quit()


# --------------------------------------------------------------------------------------------- helpers


def open_viewer(driver, url: str, timeout: float = 60) -> str:
    """Load a page, wait until the viewer has finished (ready or error) and return that state."""
    driver.get_log("browser")  # start each page with an empty console
    driver.get(url)
    try:
        WebDriverWait(driver, timeout).until(
            lambda d: d.execute_script("return document.querySelector('#v').dataset.viewerState") in ("ready", "error"))
    except TimeoutException:
        status = driver.execute_script("return document.querySelector('#v')?.textContent")
        pytest.fail(f"viewer did not finish in {timeout}s; it says: {status!r}; console: {driver.get_log('browser')}")
    return driver.execute_script("return document.querySelector('#v').dataset.viewerState")


def console_problems(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" or "Content Security Policy" in entry["message"]]


def canvas_pixels(driver) -> np.ndarray:
    data_url = driver.execute_script("return document.querySelector('#v canvas').toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def near(pixels: np.ndarray, colour, tolerance: int = 40) -> np.ndarray:
    return np.all(np.abs(pixels - np.array(colour)) <= tolerance, axis=-1)


def status_text(driver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "#v .viewer-status").text


def wait_for_pixels(driver, condition, timeout: float = 60) -> np.ndarray:
    """Poll the canvas until condition(pixels) holds (renders after input happen on the next animation frame)."""
    found = {}

    def check(d):
        found["pixels"] = canvas_pixels(d)
        return condition(found["pixels"])

    try:
        WebDriverWait(driver, timeout, poll_frequency=0.2).until(check)
    except TimeoutException:
        pytest.fail("the canvas never showed the expected picture")
    return found["pixels"]


# --------------------------------------------------------------------------------------------- tests


def test_point_cloud_renders_like_the_photo(site, driver):
    assert open_viewer(driver, site["url"] + "/index.html") == "ready", status_text(driver)
    viewer = driver.find_element(By.ID, "v")
    assert viewer.get_attribute("data-point-count") == str(site["points"])
    assert driver.execute_script("return window.viewerEvents") == [
        {"type": "viewer:ready", "target": "v", "detail": {"points": site["points"]}}]
    status = status_text(driver)
    assert f"{site['points']:,} points" in status and "metres" in status

    pixels = canvas_pixels(driver)
    height, width, _ = pixels.shape
    assert width > 300 and abs(height / width - 0.75) < 0.02
    red, blue, green = near(pixels, RED), near(pixels, BLUE), near(pixels, GREEN)
    background = near(pixels, BACKGROUND, tolerance=6)
    total = pixels.shape[0] * pixels.shape[1]
    assert red.sum() > 0.01 * total, "no red square"
    assert blue.sum() > 0.05 * total, "no blue wall"
    assert background.sum() < 0.95 * total, "nothing but background"

    # The first view is the photographer's: red in the middle, green top-left (not mirrored or upside down).
    rows, columns = np.nonzero(red)
    assert abs(rows.mean() / height - 0.5) < 0.03 and abs(columns.mean() / width - 0.5) < 0.03
    assert 0.2 * height < rows.min() and rows.max() < 0.8 * height
    assert 0.2 * width < columns.min() and columns.max() < 0.8 * width
    assert green[: height // 2, : width // 2].sum() > 50
    assert green[: height // 2, width // 2:].sum() == 0 and green[height // 2:].sum() == 0
    # And the whole wall is in view: blue reaches all four edge bands, but no further than the canvas.
    for band in (blue[: height // 10], blue[-height // 10:], blue[:, : width // 10], blue[:, -width // 10:]):
        assert band.any()

    # Colours are shown exactly as stored (sRGB in, sRGB out): the commonest reddish colour is the file's red.
    reds, counts = np.unique(pixels[red], axis=0, return_counts=True)
    assert np.abs(reds[counts.argmax()] - np.array(RED)).max() <= 2, reds[counts.argmax()]
    blues, counts = np.unique(pixels[blue], axis=0, return_counts=True)
    assert np.abs(blues[counts.argmax()] - np.array(BLUE)).max() <= 2, blues[counts.argmax()]
    dark = near(pixels[height // 2:, width // 2:], DARK, tolerance=12)
    darks, counts = np.unique(pixels[height // 2:, width // 2:][dark], axis=0, return_counts=True)
    assert np.abs(darks[counts.argmax()] - np.array(DARK)).max() <= 2, darks[counts.argmax()]

    viewer.screenshot(str(SCREENSHOT))
    assert console_problems(driver) == []


def test_toolbar_is_labelled_and_works(site, driver):
    assert open_viewer(driver, site["url"] + "/index.html") == "ready"
    reset = driver.find_element(By.XPATH, "//div[@id='v']//button[normalize-space()='Reset view']")
    slider = driver.find_element(By.CSS_SELECTOR, "#v input[type=range]")
    label = driver.find_element(By.CSS_SELECTOR, f"#v label[for='{slider.get_attribute('id')}']")
    assert label.text == "Point size"
    toggle = driver.find_element(By.CSS_SELECTOR, "#v input[type=checkbox]")
    assert driver.find_element(By.CSS_SELECTOR, f"#v label[for='{toggle.get_attribute('id')}']").text == "Show mesh"
    assert reset.is_enabled() and slider.is_enabled() and toggle.is_enabled() and not toggle.is_selected()
    # The mesh is loaded lazily: nothing was asked for yet.
    assert driver.find_element(By.ID, "v").get_attribute("data-mesh-state") is None

    home = canvas_pixels(driver)
    home_background = near(home, BACKGROUND, tolerance=6).mean()
    home_size = slider.get_attribute("value")
    assert driver.find_element(By.CSS_SELECTOR, "#v output").text == f"{float(home_size):g} px"

    # Bigger points cover more of the background, smaller ones less.
    slider.send_keys(Keys.END)
    assert float(slider.get_attribute("value")) == 10
    wait_for_pixels(driver, lambda p: near(p, BACKGROUND, tolerance=6).mean() < home_background - 0.05)
    slider.send_keys(Keys.HOME)
    wait_for_pixels(driver, lambda p: near(p, BACKGROUND, tolerance=6).mean() > home_background + 0.05)
    driver.execute_script("arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input'))",
                          slider, home_size)
    wait_for_pixels(driver, lambda p: np.array_equal(p, home))

    # Orbit with the mouse, then "Reset view" brings back the first picture.
    canvas = driver.find_element(By.CSS_SELECTOR, "#v canvas")
    ActionChains(driver).move_to_element(canvas).click_and_hold().move_by_offset(120, 40).release().perform()
    wait_for_pixels(driver, lambda p: np.mean(np.any(p != home, axis=-1)) > 0.05)
    reset.click()
    wait_for_pixels(driver, lambda p: np.mean(np.any(p != home, axis=-1)) < 0.002)
    assert console_problems(driver) == []


def test_show_mesh_loads_the_textured_glb_lazily(site, driver):
    assert open_viewer(driver, site["url"] + "/index.html") == "ready"
    driver.find_element(By.XPATH, "//div[@id='v']//label[normalize-space()='Show mesh']").click()
    WebDriverWait(driver, 60).until(
        lambda d: d.find_element(By.ID, "v").get_attribute("data-mesh-state") in ("ready", "error"))
    assert driver.find_element(By.ID, "v").get_attribute("data-mesh-state") == "ready", status_text(driver)
    assert status_text(driver) == "Mesh: 2 triangles"
    events = driver.execute_script("return window.viewerEvents")
    assert events[-1] == {"type": "viewer:mesh", "target": "v", "detail": {"state": "ready", "triangles": 2}}

    # Unlit texture, upright: green top half, magenta bottom half, and the points are hidden.
    pixels = wait_for_pixels(driver, lambda p: near(p, TEXTURE_TOP, 10).mean() > 0.3)
    height = pixels.shape[0]
    assert near(pixels[: height // 2], TEXTURE_TOP, 10).mean() > 0.6
    assert near(pixels[height // 2:], TEXTURE_BOTTOM, 10).mean() > 0.6
    assert not near(pixels, RED).any()
    assert not driver.find_element(By.CSS_SELECTOR, "#v input[type=range]").is_enabled()

    # Unticking brings the point cloud back (no second download needed).
    driver.find_element(By.CSS_SELECTOR, "#v input[type=checkbox]").click()
    wait_for_pixels(driver, lambda p: near(p, RED).mean() > 0.01 and not near(p, TEXTURE_TOP, 10).any())
    assert "points" in status_text(driver)
    assert console_problems(driver) == []  # includes: no CSP violation for the blob: texture


def test_phone_width_layout(site, driver):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": True})
    try:
        assert open_viewer(driver, site["url"] + "/index.html") == "ready"
        layout = driver.execute_script("""
            const viewer = document.querySelector('#v'), canvas = viewer.querySelector('canvas');
            const box = viewer.getBoundingClientRect(), c = canvas.getBoundingClientRect();
            const controls = [...viewer.querySelectorAll('button, input, label')].map(e => e.getBoundingClientRect());
            return {page: document.documentElement.scrollWidth, viewport: window.innerWidth,
                    viewer: box.width, canvas: [c.width, c.height], buffer: [canvas.width, canvas.height],
                    rightmost: Math.max(...controls.map(r => r.right))};""")
        assert layout["page"] <= layout["viewport"] == 360, layout
        assert abs(layout["canvas"][0] - layout["viewer"]) < 1, layout
        assert abs(layout["canvas"][1] / layout["canvas"][0] - 0.75) < 0.02, layout
        assert layout["buffer"][0] == round(layout["canvas"][0] * 2), layout  # sharp on a 2x screen
        assert layout["rightmost"] <= 360, layout
        pixels = canvas_pixels(driver)
        assert near(pixels, RED).any() and near(pixels, BLUE).any()
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.mark.parametrize(("page_name", "words"), [
    ("missing.html", "was not found"),
    ("broken.html", "could not be read"),
])
def test_load_failure_is_explained(site, driver, page_name, words):
    assert open_viewer(driver, f"{site['url']}/{page_name}") == "error"
    viewer = driver.find_element(By.ID, "v")
    assert viewer.get_attribute("data-point-count") is None
    status = driver.find_element(By.CSS_SELECTOR, "#v .viewer-status")
    assert words in status.text and status.get_attribute("role") == "status"
    events = driver.execute_script("return window.viewerEvents")
    assert [event["type"] for event in events] == ["viewer:error"]
    assert events[0]["detail"]["message"] == status.text
    assert not driver.find_element(By.CSS_SELECTOR, "#v button").is_enabled()


def test_viewer_added_later_is_set_up(site, driver):
    """Result fragments swapped in by script (the job page does that) need no extra call."""
    assert open_viewer(driver, site["url"] + "/index.html") == "ready"
    driver.execute_script("""
        document.querySelector('#v').remove();  // releases its WebGL context
        const late = document.createElement('div');
        late.id = 'late';
        late.dataset.viewer = '';
        late.dataset.plyUrl = '/cloud.ply';
        document.querySelector('main').append(late);""")
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.querySelector('#late').dataset.viewerState") == "ready")
    assert driver.find_element(By.ID, "late").get_attribute("data-point-count") == str(site["points"])
    assert driver.find_elements(By.CSS_SELECTOR, "#late input[type=checkbox]") == []  # no mesh URL, no toggle
    assert [event["target"] for event in driver.execute_script("return window.viewerEvents")] == ["v", "late"]
    assert console_problems(driver) == []


# --------------------------------------------------------------------------------------------- measuring

MEASURE_EVENTS_JS = """window.measureEvents = [];
document.addEventListener('viewer:measure', (event) => window.measureEvents.push(event.detail));"""
MARKER_A = (255, 212, 0)  # the viewer's colour for point A


def file_points(tmp_path) -> np.ndarray:
    """The scene's points exactly as the PLY file stores them, read back by an independent reader."""
    from plyfile import PlyData

    write_ply(tmp_path / "cloud.ply")  # deterministic: the same bytes the site serves
    vertex = PlyData.read(str(tmp_path / "cloud.ply"))["vertex"]
    return np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)


def solid(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels whose whole (2r+1)² neighbourhood is in the mask: well inside a drawn point, not on its edge."""
    out = mask.copy()
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out &= np.roll(np.roll(mask, dy, axis=0), dx, axis=1)
    return out


def pixel_near_middle_of(mask: np.ndarray) -> tuple[int, int]:
    """The solid pixel of a colour region nearest to the region's centre, as (row, column)."""
    inner = solid(mask)
    assert inner.any(), "no solid pixels of that colour"
    rows, columns = np.nonzero(mask)
    inner_rows, inner_columns = np.nonzero(inner)
    best = np.argmin((inner_rows - rows.mean()) ** 2 + (inner_columns - columns.mean()) ** 2)
    return int(inner_rows[best]), int(inner_columns[best])


def coordinates(value: str) -> np.ndarray:
    parts = value.split(",")
    assert len(parts) == 3 and all(len(part.split(".")[1]) == 6 for part in parts), value
    return np.array([float(part) for part in parts])


def match_in_file(points: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """The file's point the viewer reported (to 1e-5, i.e. the 6-decimal rounding), or fail."""
    error = np.abs(points - picked).max(axis=1)
    assert error.min() < 1e-5, f"{picked} is not a point of the file (nearest is {error.min():.2e} away)"
    return points[error.argmin()]


def test_measure_between_two_picked_points(site, driver, tmp_path):
    points = file_points(tmp_path)
    assert open_viewer(driver, site["url"] + "/index.html") == "ready"
    driver.execute_script(MEASURE_EVENTS_JS)
    viewer = driver.find_element(By.ID, "v")
    canvas = viewer.find_element(By.TAG_NAME, "canvas")
    measure = viewer.find_element(By.XPATH, ".//button[normalize-space()='Measure']")
    readout = viewer.find_element(By.CSS_SELECTOR, ".viewer-measure-readout")
    assert measure.get_attribute("aria-pressed") == "false" and not readout.is_displayed()

    # Big points, so that every click lands well inside one.
    home_background = near(canvas_pixels(driver), BACKGROUND, tolerance=6).mean()
    viewer.find_element(By.CSS_SELECTOR, "input[type=range]").send_keys(Keys.END)
    picture = wait_for_pixels(driver, lambda p: near(p, BACKGROUND, tolerance=6).mean() < home_background - 0.05)

    # The toggle works from the keyboard.
    measure.send_keys(Keys.ENTER)
    assert measure.get_attribute("aria-pressed") == "true"
    assert readout.is_displayed() and "point A" in readout.text

    # An orbit drag is not a click: no point is picked, and the view turns.
    ActionChains(driver).move_to_element(canvas).click_and_hold().move_by_offset(80, 30).release().perform()
    wait_for_pixels(driver, lambda p: np.mean(np.any(p != picture, axis=-1)) > 0.05)
    assert viewer.get_attribute("data-measure-a") is None
    viewer.find_element(By.XPATH, ".//button[normalize-space()='Reset view']").click()
    picture = wait_for_pixels(driver, lambda p: np.mean(np.any(p != picture, axis=-1)) < 0.002)

    # A: inside a red point (the square, 2 units away); B: inside a dark point (the wall's bottom-right corner).
    red_pixel = pixel_near_middle_of(near(picture, RED, 12))
    dark_pixel = pixel_near_middle_of(near(picture, DARK, 12))
    click_pixel(driver, canvas, *red_pixel)
    WebDriverWait(driver, 60).until(lambda d: viewer.get_attribute("data-measure-a"))
    assert viewer.get_attribute("data-measure-b") is None and "point B" in readout.text
    click_pixel(driver, canvas, *dark_pixel)
    WebDriverWait(driver, 60).until(lambda d: viewer.get_attribute("data-measure-distance"))

    a = match_in_file(points, coordinates(viewer.get_attribute("data-measure-a")))
    b = match_in_file(points, coordinates(viewer.get_attribute("data-measure-b")))
    assert a[2] == -2.0 and abs(a[0]) <= 0.4 and abs(a[1]) <= 0.4, a  # on the red square
    assert b[2] == -3.0 and b[0] > 0.9 and b[1] < -0.6, b  # on the dark patch of the wall
    expected = float(np.linalg.norm(a - b))
    distance = float(viewer.get_attribute("data-measure-distance"))
    assert abs(distance - expected) < 1e-5
    assert readout.text == f"Distance: {expected:.3f} metres"
    [event] = driver.execute_script("return window.measureEvents")
    assert event["units"] == "metres" and abs(event["distance"] - expected) < 1e-5
    assert np.abs(np.array(event["a"]) - a).max() < 1e-6 and np.abs(np.array(event["b"]) - b).max() < 1e-6
    wait_for_pixels(driver, lambda p: near(p, MARKER_A, 20).any())  # the markers and the line are drawn

    # A third click starts a new measurement.
    click_pixel(driver, canvas, *dark_pixel)
    WebDriverWait(driver, 60).until(lambda d: viewer.get_attribute("data-measure-b") is None)
    assert np.abs(coordinates(viewer.get_attribute("data-measure-a")) - b).max() < 1e-5
    assert viewer.get_attribute("data-measure-distance") is None and "point B" in readout.text

    # Escape clears the measurement (measuring stays on); a second Escape ends measuring.
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    assert viewer.get_attribute("data-measure-a") is None and measure.get_attribute("aria-pressed") == "true"
    wait_for_pixels(driver, lambda p: np.mean(np.any(p != picture, axis=-1)) < 0.002)  # markers gone
    ActionChains(driver).send_keys(Keys.ESCAPE).perform()
    assert measure.get_attribute("aria-pressed") == "false" and not readout.is_displayed()

    # Turning measuring off clears it too; while off, clicks pick nothing.
    measure.click()
    click_pixel(driver, canvas, *red_pixel)
    WebDriverWait(driver, 60).until(lambda d: viewer.get_attribute("data-measure-a"))
    measure.click()
    assert viewer.get_attribute("data-measure-a") is None and measure.get_attribute("aria-pressed") == "false"
    click_pixel(driver, canvas, *red_pixel)
    assert viewer.get_attribute("data-measure-a") is None
    assert len(driver.execute_script("return window.measureEvents")) == 1
    assert console_problems(driver) == []


def test_measure_says_relative_units_without_a_real_scale(site, driver, tmp_path):
    points = file_points(tmp_path)
    assert open_viewer(driver, site["url"] + "/index.html") == "ready"
    driver.execute_script(MEASURE_EVENTS_JS + """
        document.querySelector('#v').remove();
        const late = document.createElement('div');
        late.id = 'rel';
        late.dataset.viewer = '';
        late.dataset.plyUrl = '/cloud.ply';
        late.dataset.units = 'relative units';
        document.querySelector('main').append(late);""")
    WebDriverWait(driver, 60).until(
        lambda d: d.execute_script("return document.querySelector('#rel').dataset.viewerState") == "ready")
    viewer = driver.find_element(By.ID, "rel")
    canvas = viewer.find_element(By.TAG_NAME, "canvas")
    viewer.find_element(By.CSS_SELECTOR, "input[type=range]").send_keys(Keys.END)

    def pixels_of_rel():
        data_url = driver.execute_script("return arguments[0].toDataURL('image/png')", canvas)
        with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as image:
            return np.asarray(image.convert("RGB")).astype(int)

    WebDriverWait(driver, 60, poll_frequency=0.2).until(
        lambda d: solid(near(pixels_of_rel(), GREEN, 12)).any() and solid(near(pixels_of_rel(), RED, 12)).any())
    picture = pixels_of_rel()
    viewer.find_element(By.XPATH, ".//button[normalize-space()='Measure']").click()
    click_pixel(driver, canvas, *pixel_near_middle_of(near(picture, GREEN, 12)))
    WebDriverWait(driver, 60).until(lambda d: viewer.get_attribute("data-measure-a"))
    click_pixel(driver, canvas, *pixel_near_middle_of(near(picture, RED, 12)))
    WebDriverWait(driver, 60).until(lambda d: viewer.get_attribute("data-measure-distance"))
    a = match_in_file(points, coordinates(viewer.get_attribute("data-measure-a")))
    b = match_in_file(points, coordinates(viewer.get_attribute("data-measure-b")))
    assert a[2] == -3.0 and a[0] < -0.9 and a[1] > 0.6 and b[2] == -2.0  # green corner of the wall, red square
    expected = float(np.linalg.norm(a - b))
    assert abs(float(viewer.get_attribute("data-measure-distance")) - expected) < 1e-5
    readout = viewer.find_element(By.CSS_SELECTOR, ".viewer-measure-readout").text
    assert readout.startswith(f"Distance: {expected:.3f} relative units") and "metres" not in readout
    [event] = driver.execute_script("return window.measureEvents")
    assert event["units"] == "relative units" and abs(event["distance"] - expected) < 1e-5
    assert console_problems(driver) == []


def test_splats_refused_by_a_strict_csp_leave_the_points(site, driver):
    """The splat renderer compiles WebAssembly, which this server's CSP (no 'wasm-unsafe-eval', like every page of
    the app but the job page) refuses: the viewer says so and keeps drawing the points instead of going blank."""
    assert open_viewer(driver, site["url"] + "/splats.html") == "ready"
    before = canvas_pixels(driver)
    assert near(before, RED).any()
    driver.execute_script("""window.refused = [];
        document.addEventListener('securitypolicyviolation', (e) => window.refused.push([e.effectiveDirective, e.blockedURI]));""")
    driver.find_element(By.XPATH, "//div[@id='v']//label[normalize-space()='Show splats']").click()
    WebDriverWait(driver, 60).until(
        lambda d: d.find_element(By.ID, "v").get_attribute("data-splat-state") in ("ready", "error"))
    assert driver.find_element(By.ID, "v").get_attribute("data-splat-state") == "error", status_text(driver)
    assert status_text(driver).startswith("The splats cannot be shown here: this page does not allow the WebAssembly")
    assert status_text(driver).endswith("The point cloud is still shown.")
    events = driver.execute_script("return window.viewerEvents")
    assert events[-1]["type"] == "viewer:splats" and events[-1]["detail"]["state"] == "error"
    assert not driver.find_element(By.CSS_SELECTOR, "#v input[type=checkbox]").is_selected()
    assert driver.find_element(By.CSS_SELECTOR, "#v input[type=range]").is_enabled()
    wait_for_pixels(driver, lambda p: np.array_equal(p, before))
    assert driver.execute_script("return window.refused") == [["script-src", "wasm-eval"]]  # the CSP said no


def open_player(driver, url: str) -> str:
    """Load a 4D player page; wait until its first frame is drawn (or it failed) and return that state."""
    driver.get_log("browser")
    driver.get(url)
    WebDriverWait(driver, 60).until(lambda d: d.execute_script(
        "return document.querySelector('#p').dataset.playerState") in ("ready", "error"))
    return driver.execute_script("return document.querySelector('#p').dataset.playerState")


def red_columns(driver) -> float | None:
    """The mean column of the player's red pixels (None: no red drawn)."""
    data_url = driver.execute_script("return document.querySelector('#p canvas').toDataURL('image/png')")
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    columns = np.nonzero(near(pixels, RED))[1]
    return float(columns.mean()) if columns.size else None


def frames_asked(since: int = 0) -> list[int]:
    return [int(path.rsplit("/", 1)[1]) for path in StrictHandler.requested[since:] if path.startswith("/frames/")]


def test_4d_player_fetches_only_a_few_frames_ahead_and_draws_each(site, driver):
    """Paused on frame 0 it holds that frame and the six after it, each asked for once, never the 40; a jump to the
    last frame asks for that one only (the frames after it, round the loop, are there); each frame is drawn as it
    is: the red square moves right."""
    StrictHandler.requested.clear()
    assert open_player(driver, site["url"] + "/player.html") == "ready"
    player = driver.find_element(By.ID, "p")
    WebDriverWait(driver, 60).until(lambda d: player.get_attribute("data-cached-frames") == "7")
    assert sorted(frames_asked()) == list(range(7))
    assert player.get_attribute("data-requests") == "7" and player.get_attribute("data-frame") == "0"
    first = WebDriverWait(driver, 60).until(red_columns)
    asked = len(StrictHandler.requested)
    slider = player.find_element(By.CSS_SELECTOR, "input[type=range]")
    assert driver.find_element(By.CSS_SELECTOR, f"#p label[for='{slider.get_attribute('id')}']").text == "Frame"
    slider.send_keys(Keys.END)
    WebDriverWait(driver, 60).until(lambda d: player.get_attribute("data-frame") == str(PLAYER_FRAMES - 1))
    assert frames_asked(asked) == [PLAYER_FRAMES - 1]
    WebDriverWait(driver, 60).until(lambda d: (red_columns(d) or 0) > first + 100)  # the square crossed the view
    assert player.find_element(By.CSS_SELECTOR, ".player4d-counter").text == "Frame 40 of 40 · 3.90 s of 4.00 s"
    assert console_problems(driver) == []


def test_4d_player_explains_a_frame_it_cannot_load(site, driver):
    assert open_player(driver, site["url"] + "/player-missing.html") == "ready"
    player = driver.find_element(By.ID, "p")
    player.find_element(By.CSS_SELECTOR, "input[type=range]").send_keys(Keys.END)
    WebDriverWait(driver, 60).until(lambda d: player.get_attribute("data-player-state") == "error")
    status = player.find_element(By.CSS_SELECTOR, ".viewer-status")
    assert status.text == ("Frame 50 could not be loaded: it is not on the server (the result may have been deleted "
                           "or expired).")
    assert player.get_attribute("data-playing") == "false"
    problems = [entry for entry in console_problems(driver) if "404" not in entry["message"]]
    assert problems == []
