"""The viewer's depth mode (issue 21): a self-contained page, and a real headless Chromium showing that
moving the camera changes the picture the way the depth says (compared with exact ray casting of the
synthetic room from the new position). Browser requirements as in tests/test_viewer.py."""

from __future__ import annotations

import json
import re

import numpy as np
from support.scenes import BOX_ROOM
from test_viewer import _load, _screenshot, browser  # noqa: F401 (the browser fixture)

from pano360.cli.main import main
from pano360.io.export import tensor_to_image
from pano360.spatial.files import write_depth
from pano360.viewer.depth import build_depth_viewer_html


def _room(tmp_path, height=64, width=128):
    pano, truth = BOX_ROOM.render(height, width)
    path = tmp_path / "room.png"
    tensor_to_image(pano[0]).save(path)
    return path, truth


def test_depth_page_is_self_contained_and_cli_writes_it(tmp_path, capsys):
    path, truth = _room(tmp_path)
    page = build_depth_viewer_html(path, truth, rows=32)
    assert "getContext('webgl2'" in page and "PANO360_DEPTH" in page
    code = re.sub(r"window.PANO360_DEPTH = .*?;\n", "", page)  # the page without its base64 data
    assert not re.search(r"<script[^>]*\ssrc=", code) and "cdn" not in code.lower()
    assert not re.search(r"https?://", code) and "<link" not in code
    config = json.loads(re.search(r"window.PANO360_DEPTH = (\{.*?\});\n", page).group(1))
    assert config["faces"] > 0 and config["free"]["rows"] == 32
    write_depth(truth, tmp_path / "room_depth.exr")  # found beside the image by --depth
    assert main(["view", str(path), "--depth", "--html", str(tmp_path / "v.html"), "--mesh-rows", "32"]) == 0
    assert "PANO360_DEPTH" in (tmp_path / "v.html").read_text()
    assert main(["view", str(path), "--depth", str(tmp_path / "nope.exr"), "--html", str(tmp_path / "w.html")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "w.html").exists()


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    weights = np.array([0.299, 0.587, 0.114])
    a, b = a @ weights, b @ weights
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_browser_moving_the_camera_follows_the_depth(browser, tmp_path):  # noqa: F811
    path, truth = _room(tmp_path, 256, 512)
    server = _load(browser, build_depth_viewer_html(path, truth, rows=128, hfov=90))
    try:
        poses = [(0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (0.8, -0.3, 0.5, 35.0)]  # x, y, z (pano360), yaw
        shots, expected = [], []
        for x, y, z, yaw in poses:
            # the page's world is the glTF frame: -Z forward
            assert browser.execute_script(
                f"return window.pano360Depth.setPose({{x: {x}, y: {y}, z: {-z}, yaw: {yaw}, pitch: 0, hfov: 90}})")
            shot = _screenshot(browser)
            shots.append(shot)
            expected.append(BOX_ROOM.camera_image((x, y, z), yaw, 0.0, 90.0, shot.shape[:2]).numpy())
        for k in range(len(poses)):
            assert _correlation(shots[k], expected[k]) > 0.8, k
        # the moved views match their own pose, not the start: the picture changed the way the depth says
        assert _correlation(shots[1], expected[1]) > _correlation(shots[1], expected[0]) + 0.1
        assert _correlation(shots[2], expected[2]) > _correlation(shots[2], expected[0]) + 0.1
        # the camera cannot leave the free space (through a wall)
        assert not browser.execute_script("return window.pano360Depth.setPose({x: 0, y: 0, z: -10})")
    finally:
        server.shutdown()
