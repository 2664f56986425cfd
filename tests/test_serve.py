"""``pano360 serve``: the request service (files only inside the output folder, uploads checked, same
request = same file), and the real app: ``python -m pano360 serve --model tiny`` driven by headless
Chromium and by ``gradio_client``.

The app tests need Gradio (``pano360[web]``), Chromium, chromedriver and selenium (``.ci/run`` installs
them); they are skipped without them only outside CI.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from test_viewer import browser  # noqa: F401  (the headless Chromium fixture)

from pano360.errors import InvalidInputError
from pano360.io.images import read_panorama_metadata
from pano360.web import service as service_module
from pano360.web.service import PanoramaService

SMALL = {"height": 32, "width": 64, "steps": 2}


@pytest.fixture()
def service(tmp_path, tiny_generators, single_torch_thread):
    return PanoramaService(tiny_generators("tiny"), tmp_path / "results", model_name="tiny",
                           max_upload_bytes=4096)


def test_same_request_same_file_and_every_download(service):
    steps_seen = []
    result = service.generate("a red room", seed=3, on_step=lambda done, total: steps_seen.append((done, total)),
                              **SMALL)
    assert steps_seen == [(1, 2), (2, 2)]
    assert result.image.parent == service.out_dir and result.parameters["seed"] == 3
    assert read_panorama_metadata(result.image)["ProjectionType"] == "equirectangular"
    with zipfile.ZipFile(result.cubemap_zip) as archive:
        names = sorted(archive.namelist())
        assert len(names) == 6 and all(name.endswith(".png") for name in names)
        assert Image.open(io.BytesIO(archive.read(names[0]))).size == (16, 16)  # width / 4
    stamp = result.image.stat().st_mtime_ns
    again = service.generate("a red room", seed=3, on_step=lambda *a: steps_seen.append(a), **SMALL)
    assert again.image == result.image and again.image.stat().st_mtime_ns == stamp and len(steps_seen) == 2
    assert [image.name for image, _ in service.gallery()] == [result.image.name]
    assert service.gallery()[0][1] == "a red room (seed 3)"
    with pytest.raises(InvalidInputError, match="multiple of 8"):
        service.generate("x", height=36, width=64, steps=2)
    with pytest.raises(InvalidInputError, match="no ControlNet"):
        service.generate("x", depth=result.image, **SMALL)


def test_results_are_read_only_by_bare_name_inside_the_output_folder(service, tmp_path):
    result = service.generate("a blue sky", seed=1, **SMALL)
    assert service.resolve(result.image.name) == result.image
    secret = tmp_path / "secret.png"
    secret.write_bytes(result.image.read_bytes())
    secret.with_name(secret.name + ".json").write_text("{}")  # its sidecar
    (service.out_dir / "link.png").symlink_to(secret)
    (service.out_dir / "link.json").write_text("{}")
    for name in ("../secret.png", str(secret), "sub/x.png", "..", "", "a\x00.png", "link.png",
                 result.sidecar.name, "missing.png", "..\\secret.png"):
        with pytest.raises(InvalidInputError, match="not the name of a result"):
            service.result(name)


def test_uploads_are_size_limited_and_validated(service, tmp_path, monkeypatch):
    good = tmp_path / "depth.png"
    Image.new("L", (64, 32), 128).save(good)
    assert service.check_upload(good).mode == "RGB"
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + os.urandom(5000))
    with pytest.raises(InvalidInputError, match="limit is"):
        service.check_upload(big)
    text = tmp_path / "notes.png"
    text.write_text("hello")
    with pytest.raises(InvalidInputError, match="not an image"):
        service.check_upload(text)
    monkeypatch.setattr(service_module, "MAX_UPLOAD_PIXELS", 1000)
    with pytest.raises(InvalidInputError, match="megapixels"):
        service.check_upload(good)


def test_a_depth_map_is_part_of_the_request(tmp_path, tiny_generators, single_torch_thread):
    service = PanoramaService(tiny_generators("tiny", controlnet="tiny"), tmp_path / "r", model_name="tiny")
    assert service.needs_depth
    with pytest.raises(InvalidInputError, match="upload a depth map"):
        service.generate("x", **SMALL)
    ramp, flat = tmp_path / "ramp.png", tmp_path / "flat.png"
    Image.linear_gradient("L").resize((64, 32)).save(ramp)
    Image.new("L", (64, 32), 0).save(flat)
    first = service.generate("x", seed=1, depth=ramp, **SMALL)
    second = service.generate("x", seed=1, depth=flat, **SMALL)
    assert first.image != second.image  # another depth map is another job, another file
    assert first.parameters["batch"]["job"]["depth_sha256"] != second.parameters["batch"]["job"]["depth_sha256"]
    assert service.generate("x", seed=1, depth=ramp, **SMALL).image == first.image


def test_missing_gradio_says_how_to_install(monkeypatch):
    from pano360.web.app import require_gradio

    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio -> ImportError
    with pytest.raises(InvalidInputError, match=r'pip install "pano360\[web\]"'):
        require_gradio()


# --- the real app ------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_generators, single_torch_thread):
    """The app on a free port of 127.0.0.1, in this process (as ``pano360 serve --model tiny`` runs it):
    (url, output folder)."""
    try:
        import gradio  # noqa: F401
        import gradio_client  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail('the web app tests need gradio and gradio_client (pip install ".[test,web]")')
        pytest.skip("gradio is not installed")
    from pano360.web.app import launch

    root = tmp_path_factory.mktemp("serve")
    out = root / "results"
    (root / "secret.txt").write_text("not for the web")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(out / ".gradio"))  # as the CLI does: Gradio's copies stay inside
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        service = PanoramaService(tiny_generators("tiny"), out, model_name="tiny")
        port = _free_port()
        app = launch(service, port=port, block=False)
        try:
            yield f"http://127.0.0.1:{port}/", out, service
        finally:
            app.close()


def test_serve_cli_checks_before_loading(tmp_path, capsys, monkeypatch):
    from pano360.cli.main import main

    assert main(["serve", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "g"))
    assert main(["serve", "--model", "tiny", "--out-dir", str(tmp_path / "o"), "--host", "0.0.0.0", "--auth", "a:b"]) == 2
    assert 'pip install "pano360[web]"' in capsys.readouterr().err


def test_api_errors_then_returns_a_png_with_gpano_xmp_and_refuses_other_files(server):
    from gradio_client import Client

    url, out, _ = server
    client = Client(url, verbose=False)
    with pytest.raises(Exception, match="multiple of 8"):  # shown to the caller; the server goes on
        client.predict("x", "", "circular", "none", 36, 64, 2, 7.5, 1, api_name="/generate")
    viewer, image, sidecar, cubemap, parameters, _ = client.predict(
        "a green field", "", "circular", "none", 32, 64, 2, 7.5, 7, api_name="/generate")
    assert "<iframe" in viewer and "pannellum" in viewer
    local = out / Path(image).name
    assert Path(image).read_bytes() == local.read_bytes()  # served as written: XMP intact
    gpano = read_panorama_metadata(image)
    assert gpano["ProjectionType"] == "equirectangular" and gpano["FullPanoWidthPixels"] == 64
    assert json.loads(Path(sidecar).read_text())["seed"] == 7 and zipfile.is_zipfile(cubemap)
    assert parameters["prompt"] == "a green field"
    # results by name only; nothing outside the output folder through the API or the file route
    assert client.predict(local.name, api_name="/result")[1].endswith(local.name)
    for name in ("../secret.txt", str(out.parent / "secret.txt"), "../results/../secret.txt"):
        with pytest.raises(Exception, match="not the name of a result"):
            client.predict(name, api_name="/result")
    for path in (out.parent / "secret.txt", f"{out}/../secret.txt", "/etc/passwd"):
        assert _status(f"{url}gradio_api/file={path}") in (403, 404)
    assert _status(f"{url}gradio_api/file={local}") == 200
    assert sorted(p.name for p in out.parent.iterdir()) == ["results", "secret.txt"]


def test_browser_types_a_prompt_generates_and_the_viewer_shows_it(server, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    url, out, service = server
    earlier = service.generate("an earlier result", seed=5, **SMALL).image.name
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.set_window_size(1280, 1000)
    browser.get(url)

    def wait_for(find, seconds=60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            found = find()
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError("timed out waiting for the page")

    prompt = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#pano360-prompt textarea"))[0]
    prompt.send_keys("a purple desert")
    for element_id, value in (("pano360-height", "32"), ("pano360-width", "64"), ("pano360-steps", "2")):
        field = browser.find_element(By.CSS_SELECTOR, f"#{element_id} input")
        field.clear()
        field.send_keys(value)
    browser.find_element(By.CSS_SELECTOR, "#pano360-generate").click()
    frame = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#pano360-viewer iframe"))[0]
    assert "a-purple-desert" in frame.get_attribute("title")
    _expect_viewer_loaded(browser, frame, wait_for)
    assert [p.name for p in out.glob("a-purple-desert-*.png")]

    # the gallery (refreshed after the request) holds the earlier result; clicking it shows it
    def thumbnail():
        for button in browser.find_elements(By.CSS_SELECTOR, "#pano360-gallery button"):
            images = button.find_elements(By.TAG_NAME, "img")
            if images and "an earlier result" in (images[0].get_attribute("alt") or "") + button.text:
                return [button]
        return []

    wait_for(thumbnail)[0].click()
    frame = wait_for(lambda: [f for f in browser.find_elements(By.CSS_SELECTOR, "#pano360-viewer iframe")
                              if earlier in f.get_attribute("title")])[0]
    _expect_viewer_loaded(browser, frame, wait_for)


def _expect_viewer_loaded(driver, frame, wait_for):
    driver.switch_to.frame(frame)
    try:
        state = wait_for(lambda: [s for s in [driver.execute_script(
            "return [document.body.getAttribute('data-pano-loaded'), document.body.getAttribute('data-pano-error')]")]
            if s[0] or s[1]])[0]
        assert state == ["1", None], state
        assert driver.execute_script("return window.pano360Viewer.getHfov()") > 0
    finally:
        driver.switch_to.default_content()
