"""The offline viewer page: content, serving, CLI, and a real headless browser rendering it.

The browser tests need Debian's ``chromium`` and ``chromium-driver`` plus ``selenium`` (test extra);
``.ci/run`` installs them. They are skipped only on a machine without them *and* without ``CI`` set:
in CI a missing browser is a failure.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from pano360 import geometry as g
from pano360.cli.main import main
from pano360.errors import InvalidInputError, OutputExistsError
from pano360.io.images import save_panorama_image
from pano360.viewer import ASSETS, build_viewer_html, open_viewer, panorama_extent, write_viewer_html


def feature_panorama(height: int = 256, width: int = 512, seed: int = 0) -> np.ndarray:
    """[H, W, 3] float32: grey background with 60 coloured discs (wrapping across the seam)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 0.3, np.float32)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(int(60 * width / 512)):
        cy, cx, radius = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(4, 20) * height / 256
        dx = np.minimum(np.abs(xx - cx), width - np.abs(xx - cx))
        image[dx**2 + (yy - cy) ** 2 < radius**2] = rng.uniform(0, 1, 3)
    return image


def save(image: np.ndarray, path, metadata: bool = False):
    pil = Image.fromarray((image * 255).round().astype(np.uint8))
    if metadata:
        save_panorama_image(pil, path)
    else:
        pil.save(path)
    return path


# --- page content ----------------------------------------------------------------------------------

def test_assets_are_vendored_with_licence_and_version():
    readme = (ASSETS / "README.md").read_text()
    assert "pannellum" in readme.lower() and "2.5.7" in readme and "MIT" in readme
    assert "Permission is hereby granted" in (ASSETS / "LICENSE-pannellum.txt").read_text()
    assert (ASSETS / "pannellum.js").read_text().startswith("// Pannellum 2.5.7")


def test_page_is_self_contained(tmp_path):
    path = save(feature_panorama(32, 64), tmp_path / "p.png")
    page = build_viewer_html(path, hfov=80)
    assert "pannellum.viewer(" in page and "data-pano-loaded" in page
    # no external resources: no script/stylesheet/image loaded from anywhere but the page itself
    assert not re.search(r"<script[^>]*\ssrc=", page) and not re.search(r"<link[^>]*stylesheet", page)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", page) and not re.search(r"<img[^>]*src=\S*//", page)
    assert "cdn" not in page.lower()
    config = json.loads(re.search(r"var config = (\{.*?\});", page).group(1))
    assert config["haov"] == 360 and config["vaov"] == 180 and config["hfov"] == 80
    assert config["yaw"] == 0 and config["pitch"] == 0
    out = write_viewer_html(path, tmp_path / "v.html", hfov=80)
    assert out.read_text() == page
    with pytest.raises(OutputExistsError):
        write_viewer_html(path, tmp_path / "v.html")
    write_viewer_html(path, tmp_path / "v.html", overwrite=True)


def test_band_extent_from_metadata_and_size(tmp_path):
    assert panorama_extent(1024, 512) == panorama_extent(1024, 512, {})
    band = panorama_extent(2048, 512)
    assert band.haov == 360 and band.vaov == pytest.approx(90) and band.v_offset == 0
    gpano = {"FullPanoWidthPixels": 2048, "FullPanoHeightPixels": 1024, "CroppedAreaImageWidthPixels": 2048,
             "CroppedAreaImageHeightPixels": 256, "CroppedAreaTopPixels": 256}
    shifted = panorama_extent(2048, 256, gpano)
    assert shifted.vaov == pytest.approx(45) and shifted.v_offset == pytest.approx(22.5)
    with pytest.raises(InvalidInputError, match="taller than 2:1"):
        panorama_extent(100, 100)
    tagged = save(feature_panorama(64, 512), tmp_path / "band.png", metadata=True)  # GPano cropped area
    config = json.loads(re.search(r"var config = (\{.*?\});", build_viewer_html(tagged)).group(1))
    assert config["vaov"] == pytest.approx(45) and config["vOffset"] == 0 and config["avoidShowingBackground"]


def test_bad_inputs(tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("hello")
    with pytest.raises(InvalidInputError, match="not an image"):
        build_viewer_html(not_image)
    with pytest.raises(InvalidInputError, match="does not exist"):
        build_viewer_html(tmp_path / "missing.png")
    square = save(np.zeros((16, 16, 3), np.float32), tmp_path / "square.png")
    with pytest.raises(InvalidInputError, match="taller than 2:1"):
        build_viewer_html(square)
    assert main(["view", str(square), "--html", str(tmp_path / "x.html")]) == 2
    assert not (tmp_path / "x.html").exists()


def test_view_cli_writes_page_and_server_serves_it(tmp_path, capsys):
    path = save(feature_panorama(32, 64), tmp_path / "p.png")
    assert main(["view", str(path), "--html", str(tmp_path / "v.html"), "--hfov", "75"]) == 0
    assert '"hfov": 75.0' in (tmp_path / "v.html").read_text()
    assert main(["view", str(path), "--html", str(tmp_path / "v.html")]) == 2  # no clobber
    assert "already exists" in capsys.readouterr().err
    server = open_viewer(path, open_browser=False, block=False)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert response.status == 200 and b"pannellum.viewer(" in response.read()
    finally:
        server.shutdown()
        server.server_close()


# --- a real browser --------------------------------------------------------------------------------

def _find(*names):
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    chromium = os.environ.get("PANO360_CHROMIUM") or _find("chromium", "chromium-browser", "google-chrome")
    driver_path = os.environ.get("PANO360_CHROMEDRIVER") or _find("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    if not (chromium and driver_path and webdriver):
        message = "the viewer browser test needs chromium, chromedriver and selenium (see .ci/run)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="pano360-chromium-")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
                     "--use-angle=swiftshader", "--enable-unsafe-swiftshader", f"--user-data-dir={profile}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 640, "height": 400, "deviceScaleFactor": 1, "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _load(driver, page: str):
    from pano360.viewer import serve_page

    server = serve_page(page)
    driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
    deadline = time.time() + 30
    state = None
    while time.time() < deadline:
        state = driver.execute_script(
            "return [document.body.getAttribute('data-pano-loaded'), document.body.getAttribute('data-pano-error')]"
        )
        if state[0] or state[1]:
            break
        time.sleep(0.1)
    assert state and state[0] == "1", f"viewer did not load: {state}"
    time.sleep(0.3)  # let the first frame render
    return server


def _pose(driver):
    """Wait until the view stops moving (Pannellum glides after a drag); returns (yaw, pitch, hfov)."""
    previous = None
    for _ in range(60):
        pose = driver.execute_script("var v = window.pano360Viewer; return [v.getYaw(), v.getPitch(), v.getHfov()]")
        if pose == previous:
            return pose
        previous = pose
        time.sleep(0.1)
    return previous


def _screenshot(driver) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"), np.float64) / 255


def _centre_correlation(shot: np.ndarray, pano: np.ndarray, yaw: float, pitch: float, hfov: float) -> float:
    """Correlation of the central half of the screenshot with our own e2p render of the same view."""
    height, width = shot.shape[:2]
    tensor = torch.from_numpy(pano).permute(2, 0, 1)[None]
    ours = g.equirect_to_perspective(tensor, yaw, pitch, hfov, (height, width))[0, 0].permute(1, 2, 0).numpy()
    rows, cols = slice(height // 4, 3 * height // 4), slice(width // 4, 3 * width // 4)
    weights = np.array([0.299, 0.587, 0.114])
    a = shot[rows, cols] @ weights
    b = ours[rows, cols].astype(np.float64) @ weights
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_browser_renders_initial_view_like_e2p_and_drag_turns_it(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    pano = feature_panorama()
    path = save(pano, tmp_path / "features.png")
    server = _load(browser, build_viewer_html(path, hfov=90))
    try:
        yaw, pitch, hfov = _pose(browser)
        assert (yaw, pitch, hfov) == (0, 0, 90)
        shot = _screenshot(browser)
        assert shot.shape[:2] == (400, 640)
        Image.fromarray((shot * 255).astype(np.uint8)).save(tmp_path / "initial.png")
        initial = _centre_correlation(shot, pano, 0.0, 0.0, 90.0)
        assert initial > 0.9, initial
        assert _centre_correlation(shot, pano, 30.0, 0.0, 90.0) < 0.5  # the check can tell views apart

        canvas = browser.find_element("id", "panorama")
        ActionChains(browser).move_to_element(canvas).click_and_hold().move_by_offset(-120, 0) \
            .move_by_offset(-40, 30).release().perform()
        yaw, pitch, hfov = _pose(browser)
        assert yaw > 10 and pitch > 1  # dragging left/down looks right/up
        moved = _screenshot(browser)
        assert np.abs(moved - shot).mean() > 0.02
        assert _centre_correlation(moved, pano, yaw, pitch, hfov) > 0.9
        assert _centre_correlation(moved, pano, 0.0, 0.0, 90.0) < 0.5
    finally:
        server.shutdown()
        server.server_close()


def test_browser_shows_a_strip_as_a_band(browser, tmp_path):
    pano = feature_panorama(128, 1024, seed=1)  # 360° × 45°
    path = save(pano, tmp_path / "strip.png", metadata=True)
    page = build_viewer_html(path, yaw=40.0, hfov=100)
    server = _load(browser, page)
    try:
        yaw, pitch, hfov = _pose(browser)
        # 100° across would show 74° vertically: the page zooms in until the 45° band fills the height
        expected = 2 * np.degrees(np.arctan(np.tan(np.radians(22.5)) * 640 / 400))
        assert abs(yaw - 40) < 1e-6 and pitch == 0 and abs(hfov - expected) < 0.01, (yaw, pitch, hfov)
        shot = _screenshot(browser)
        Image.fromarray((shot * 255).astype(np.uint8)).save(tmp_path / "band.png")
        correlation = _centre_correlation(shot, pano, yaw, pitch, hfov)
        assert correlation > 0.9, correlation
        # the viewer keeps the view inside the band: looking up is clamped
        browser.execute_script("window.pano360Viewer.setPitch(60, false)")
        _, pitch, _ = _pose(browser)
        assert pitch < 5
    finally:
        server.shutdown()
        server.server_close()
