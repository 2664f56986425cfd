"""The studio (issue 23) and a server a stranger cannot hold (issue 24, item 5).

* ``inpaint_panorama`` / ``pano360 inpaint``: unpainted pixels bit-exact, a mask across the seam.
* The service: request limits, rate limit, cancellation, outpaint keeps the photo, re-run from the
  sidecar gives the same image, vary seed, delete to trash, inputs only by their kept names.
* ``pano360 serve``: a public ``--host`` needs a login; with one, unauthenticated requests get 401.
* One server per module (tiny model, 64x128, 2 steps, two model copies): 40 concurrent API requests
  within the concurrency limit, in order; over-limit requests and uploads refused; the browser paints
  a mask in the viewer and inpaints, outpaints an uploaded photo, and re-runs from the gallery.

Browser tests need chromium, chromedriver and selenium (``.ci/run`` installs them).
"""

from __future__ import annotations

import io
import json
import math
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_viewer import browser  # noqa: F401  (the headless Chromium fixture)

from pano360.errors import InvalidInputError
from pano360.web.limits import (
    JobCancelled,
    RateLimiter,
    RequestLimits,
    check_exposure,
    login_check,
    parse_auth,
)
from pano360.web.service import PanoramaService

SMALL = {"height": 64, "width": 128, "steps": 2}


def _noise(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture()
def service(tmp_path, tiny_generators, single_torch_thread):
    return PanoramaService(tiny_generators("tiny"), tmp_path / "out", model_name="tiny")


# --- the API and the CLI ---------------------------------------------------------------------------
def test_inpaint_panorama_keeps_unpainted_pixels_bit_exact_across_the_seam(tiny_generators, single_torch_thread,
                                                                           tmp_path, capsys):
    import pano360
    from pano360.cli.main import main

    pano = Image.fromarray(_noise(64, 128))
    mask = np.zeros((64, 128), bool)
    mask[16:40, :12] = mask[16:40, 116:] = True  # one region across the left/right seam
    out = pano360.inpaint_panorama(tiny_generators("tiny"), pano, mask, "a red door", num_inference_steps=2, seed=1)
    before, after = np.asarray(pano), np.asarray(out)
    assert (after[~mask] == before[~mask]).all()  # bit-exact outside
    assert (after[mask] != before[mask]).any(axis=-1).mean() > 0.9  # regenerated inside
    # the CLI: same edit from files; a mask of the wrong shape or an empty mask is one line before any model
    pano.save(tmp_path / "p.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    assert main(["inpaint", str(tmp_path / "p.png"), str(tmp_path / "m.png"), "a red door", "--model", "tiny",
                 "--steps", "2", "--quiet", "-o", str(tmp_path / "o.png")]) == 0
    result = _pixels(tmp_path / "o.png")
    assert (result[~mask] == before[~mask]).all() and json.loads((tmp_path / "o.png.json").read_text())[
        "operation"] == "inpaint"
    Image.new("L", (100, 64)).save(tmp_path / "bad.png")
    Image.new("L", (128, 64)).save(tmp_path / "empty.png")
    for bad, message in (("bad.png", "64x100 (HxW) but the panorama is 64x128"), ("empty.png", "the mask is empty")):
        assert main(["inpaint", str(tmp_path / "p.png"), str(tmp_path / bad), "x", "--model", "tiny",
                     "-o", str(tmp_path / "x.png")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_limits_rate_limit_and_login_checks():
    limits = RequestLimits(max_height=256, max_width=512, max_steps=8, max_prompt_chars=100)
    for kwargs, message in (({"height": 16384, "width": 32768}, "at most 256x512"),
                            ({"steps": 1000}, "at most 8"), ({"prompt": "x" * 2**20}, "at most 100")):
        with pytest.raises(InvalidInputError, match=message):
            limits.check(**kwargs)
    limits.check(height=256, width=512, steps=8, prompt="x" * 100)
    now = [0.0]
    rate = RateLimiter(3, clock=lambda: now[0])
    for _ in range(3):
        rate.check("ip:a")
    with pytest.raises(InvalidInputError, match="3 per minute.*try again in 60 s"):
        rate.check("ip:a")
    rate.check("ip:b")  # per client
    now[0] = 60.0
    rate.check("ip:a")  # the window moved on
    with pytest.raises(InvalidInputError, match="needs a login"):
        check_exposure("0.0.0.0", None, None)
    check_exposure("127.0.0.1", None, None)
    check_exposure("0.0.0.0", "a:b", None)
    with pytest.raises(InvalidInputError, match="USER:PASS"):
        parse_auth("nopassword")
    check = login_check({"ana": "pw"}, "t" * 20)
    assert check("ana", "pw") and check("anyone", "t" * 20) and not check("ana", "no") and not check("bob", "pw")


def test_job_gate_lets_a_short_job_through_keeps_order_and_cancels_waiting_jobs():
    from pano360.web.limits import JobGate

    now = [0.0]
    gate = JobGate(1, max_wait_s=100, clock=lambda: now[0])
    release, started = threading.Event(), []

    def job(name, cost, hold=False, client=None):
        def work(check):
            started.append(name)
            if hold:
                release.wait(10)

        def run():
            try:
                gate.run(client or name, work, cost=cost)
            except JobCancelled:
                started.append(f"{name} cancelled")

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    threads = [job("long running", 100, hold=True)]
    _wait(lambda: started, 10)
    for waiting, (name, cost) in enumerate((("long 1", 100), ("long 2", 100), ("short", 1), ("doomed", 1)), 1):
        threads.append(job(name, cost))
        _wait(lambda waiting=waiting: len(gate._waiting) == waiting, 10)
    assert gate.cancel("doomed")  # a waiting job can be cancelled too
    _wait(lambda: "doomed cancelled" in started, 10)
    release.set()
    for thread in threads:
        thread.join(10)
    # the short job went first; equal jobs kept their order; never more than one at once
    assert started == ["long running", "doomed cancelled", "short", "long 1", "long 2"] and gate.peak == 1
    # a long job that waited max_wait_s is not overtaken any more
    started.clear()
    release.clear()
    threads = [job("long running", 100, hold=True)]
    _wait(lambda: started, 10)
    threads.append(job("old long", 100))
    _wait(lambda: len(gate._waiting) == 1, 10)
    now[0] = 150.0
    threads.append(job("new short", 1))
    _wait(lambda: len(gate._waiting) == 2, 10)
    release.set()
    for thread in threads:
        thread.join(10)
    assert started == ["long running", "old long", "new short"]


def test_serve_cli_refuses_a_public_host_without_a_login(tmp_path, capsys):
    from pano360.cli.main import main

    for argv, message in ((["--host", "0.0.0.0"], "needs a login: add --auth USER:PASS or --token-file"),
                          (["--host", "0.0.0.0", "--auth", "x"], "--auth must be USER:PASS"),
                          (["--token-file", str(tmp_path / "none")], "--token-file"),
                          (["--max-size", "big"], "--max-size must be HEIGHTxWIDTH"),
                          (["--rate-limit", "-1"], "--rate-limit"), (["--concurrency", "0"], "--concurrency"),
                          (["--lora-scale", "0.5"], "--lora-scale needs --lora")):
        assert main(["serve", "--model", "tiny", "--out-dir", str(tmp_path / "o"), *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    (tmp_path / "short").write_text("abc\n")
    assert main(["serve", "--model", "tiny", "--token-file", str(tmp_path / "short")]) == 2
    assert "at least 16 characters" in capsys.readouterr().err


def test_service_outpaint_rerun_vary_delete_and_cancel(service, tmp_path):
    from pano360.sphere.placement import Placement, place_photo

    photo = tmp_path / "photo.png"
    Image.fromarray(_noise(80, 96, seed=3)).save(photo)
    result = service.outpaint(photo, "a park", fov=60, height=64, steps=2, seed=2, refine_poles=True)
    import torch

    canvas, _, alpha = place_photo(torch.from_numpy(_noise(80, 96, seed=3).astype(np.float32) / 127.5 - 1)
                                   .permute(2, 0, 1)[None], (64, 128), Placement(0.0, 0.0, 60.0))
    inside = alpha[0, 0].numpy() > 0.999
    expected = ((canvas[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    assert inside.sum() > 100 and _psnr(_pixels(result.image)[inside], expected[inside]) >= 40
    again = service.rerun(result.image.name)
    assert again.image.name.endswith("-rerun1.png") and (_pixels(again.image) == _pixels(result.image)).all()
    other = service.vary_seed(result.image.name)
    assert other.parameters["seed"] != 2 and other.image != result.image
    generated = service.generate("a field", seed=4, **SMALL)
    assert (_pixels(service.rerun(generated.image.name).image) == _pixels(generated.image)).all()
    # poles and upscale on a result; the placement preview (no model) puts the photo where outpaint will
    poles = service.refine(generated.image.name, "poles", steps=2, seed=1)
    assert poles.parameters["operation"] == "poles" and _pixels(poles.image).shape == (64, 128, 3)
    assert _pixels(service.refine(generated.image.name, "upscale", steps=2, seed=1).image).shape == (128, 256, 3)
    preview = service.placement_preview(photo, 0, 0, 60, 64)
    assert preview.parent == service.out_dir / "inputs"
    shown = _pixels(preview)
    assert _psnr(shown[inside], expected[inside]) >= 40 and (shown[0] == shown[0, 0]).all()  # grey elsewhere
    with pytest.raises(InvalidInputError, match="larger than this server allows"):
        PanoramaService(service.generator, service.out_dir, limits=RequestLimits(64, 128)).refine(
            generated.image.name, "upscale", steps=2)
    elsewhere = PanoramaService(service.generator, service.out_dir, model_name="another-model")
    for name in (generated.image.name, result.image.name):  # a re-run on another model would differ: refused
        with pytest.raises(InvalidInputError, match="this server runs"):
            elsewhere.rerun(name)
    trashed = service.delete(other.image.name)
    assert trashed.parent == service.out_dir / "trash" and trashed.is_file() and not other.image.exists()
    captions = [caption for _, caption in service.gallery()]
    assert any("(outpaint, seed 2)" in c for c in captions) and len(captions) == 6
    # inputs only by the names the studio gave them
    for bad in ("../secret.png", "inputs/../../x.png", "/etc/passwd"):
        with pytest.raises(InvalidInputError):
            service._input(bad)

    # cancellation: the step callback raises, nothing is written
    def cancel_at_first_step(done, total):
        service.cancel("me")

    files = set(service.out_dir.iterdir())
    with pytest.raises(JobCancelled, match="cancelled"):
        service.generate("never saved", seed=9, on_step=cancel_at_first_step, session="me", height=64, width=128,
                         steps=3)
    assert set(service.out_dir.iterdir()) == files and not service.cancel("me")


# --- one server for the rest ------------------------------------------------------------------------
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


UPLOAD_LIMIT = 200 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_generators, single_torch_thread):
    """The studio on 127.0.0.1 with two model copies (concurrency 2), no rate limit, a 200 KiB upload
    limit: (url, output folder, service)."""
    try:
        import gradio  # noqa: F401
        import gradio_client  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail('the web app tests need gradio and gradio_client (pip install ".[test,web]")')
        pytest.skip("gradio is not installed")
    from pano360 import PanoramaGenerator
    from pano360.web.app import launch

    root = tmp_path_factory.mktemp("studio")
    out = root / "results"
    (root / "secret.png").write_bytes(b"not for the web")
    second = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(out / ".gradio"))
        patch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
        service = PanoramaService([tiny_generators("tiny"), second], out, model_name="tiny",
                                  max_upload_bytes=UPLOAD_LIMIT,
                                  limits=RequestLimits(max_height=256, max_width=512, max_steps=8,
                                                       max_prompt_chars=200))
        port = _free_port()
        app = launch(service, port=port, block=False, max_upload_bytes=UPLOAD_LIMIT)
        try:
            yield f"http://127.0.0.1:{port}/", out, service
        finally:
            app.close()


def test_40_concurrent_api_requests_in_order_within_the_limit(server):
    from gradio_client import Client
    from gradio_client.utils import Status

    url, _, service = server
    started, lock = [], threading.Lock()
    original = service.generate

    def recording(*args, **kwargs):
        with lock:
            started.append(args[8])  # the seed
        return original(*args, **kwargs)

    service.generate = recording
    try:
        client = Client(url, verbose=False, download_files=False)  # the answers, not 40 x 60 gallery images
        t0 = time.monotonic()
        jobs, ranks = [], []
        for seed in range(40):
            job = client.submit(f"job {seed}", "", "circular", "none", 64, 128, 2, 7.5, seed, api_name="/generate")
            jobs.append(job)
            # each job has joined the queue before the next is sent: the queue's order is the submission order
            _wait(lambda job=job: job.status().code not in (Status.STARTING, Status.JOINING_QUEUE), 30)
            ranks.append(job.status().rank or 0)
        answers = [job.result(timeout=240) for job in jobs]
        elapsed = time.monotonic() - t0
    finally:
        service.generate = original
    assert [a[4]["seed"] for a in answers] == list(range(40))
    assert service.gate.peak <= service.gate.limit == 2
    assert max(ranks) > 0 or service.gate.max_waiting > 0  # jobs waited (in Gradio's queue or the gate's line)
    assert all(abs(started.index(seed) - seed) <= service.gate.limit for seed in range(40)), started
    assert _status(f"{url}config") == 200  # still up
    print(f"40 requests answered in {elapsed:.1f} s (peak {service.gate.peak} at once)")


def test_over_limit_requests_uploads_and_names_are_refused(server, tmp_path):
    from gradio_client import Client, handle_file

    url, out, service = server
    client = Client(url, verbose=False)
    for args, message in ((("x", "", "circular", "none", 16384, 32768, 2, 7.5, 1), "larger than this server allows"),
                          (("x", "", "circular", "none", 64, 128, 1000, 7.5, 1), "1000 steps are more than"),
                          (("x" * 2**20, "", "circular", "none", 64, 128, 2, 7.5, 1), "at most 200")):
        with pytest.raises(Exception, match=message):
            client.predict(*args, api_name="/generate")
    big = tmp_path / "big.png"
    Image.fromarray(_noise(400, 400)).save(big)  # ~470 KiB of noise
    assert big.stat().st_size > UPLOAD_LIMIT
    with pytest.raises(Exception):  # noqa: B017 - Gradio refuses it (413) before our code runs
        client.predict(handle_file(str(big)), "x", "", 0, 0, 60, 64, 2, 7.5, 1, False, api_name="/outpaint")
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(Exception, match="not an image Pillow can read"):
        client.predict(handle_file(str(fake)), "x", "", 0, 0, 60, 64, 2, 7.5, 1, False, api_name="/outpaint")
    for name in ("../secret.png", str(out.parent / "secret.png"), "../results/../secret.png"):
        for endpoint in ("/result", "/rerun", "/delete"):
            with pytest.raises(Exception, match="not the name of a result"):
                client.predict(name, api_name=endpoint)
    assert _status(f"{url}gradio_api/file={out.parent / 'secret.png'}") in (403, 404)
    # the rate limit, per client
    service.rate = RateLimiter(2)
    try:
        client.predict("r", "", "circular", "none", 64, 128, 2, 7.5, 1, api_name="/generate")
        client.predict("r", "", "circular", "none", 64, 128, 2, 7.5, 1, api_name="/generate")
        with pytest.raises(Exception, match="too many requests"):
            client.predict("r", "", "circular", "none", 64, 128, 2, 7.5, 1, api_name="/generate")
    finally:
        service.rate = RateLimiter(0)


def test_cancel_stops_the_callers_running_job(server):
    from gradio_client import Client

    url, out, service = server
    client = Client(url, verbose=False, download_files=False)
    other = Client(url, verbose=False, download_files=False)
    original = service.generate

    def slow(*args, on_step=None, **kwargs):  # a job long enough to be cancelled while it runs
        def step(done, total):
            time.sleep(0.5)
            if on_step:
                on_step(done, total)

        return original(*args, on_step=step, **kwargs)

    service.generate = slow
    try:
        job = client.submit("to be cancelled", "", "circular", "none", 64, 128, 8, 7.5, 11, api_name="/generate")
        _wait(lambda: service.gate.active, 30)
        # the caller sees step k/n and an ETA while it runs
        progress = _wait(lambda: [p for p in job.status().progress_data or [] if (p.desc or "").startswith("step ")],
                         30)[-1]
        assert "/8 · ETA" in progress.desc, progress
        assert "No job of yours" in other.predict(api_name="/cancel")  # another client cannot cancel it
        assert "Cancelling" in client.predict(api_name="/cancel")
        with pytest.raises(Exception, match="cancelled"):
            job.result(timeout=60)
    finally:
        service.generate = original
    assert not list(out.glob("to-be-cancelled*"))


def test_a_login_is_enforced_for_every_route(tiny_generators, single_torch_thread, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from gradio_client import Client

    from pano360.web.app import launch

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "out" / ".gradio"))
    service = PanoramaService(tiny_generators("tiny"), tmp_path / "out", model_name="tiny")
    port = _free_port()
    app = launch(service, port=port, block=False, auth=login_check({"ana": "pw"}, None))
    try:
        url = f"http://127.0.0.1:{port}/"
        for route in ("config", "gradio_api/info", f"gradio_api/file={tmp_path}/out/x.png", "gradio_api/queue/status"):
            assert _status(url + route) in (401, 403), route
        request = urllib.request.Request(url + "gradio_api/call/generate", method="POST",
                                         data=json.dumps({"data": ["x", "", "circular", "none", 64, 128, 2, 7.5, 1]})
                                         .encode(), headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code in (401, 403)
        with pytest.raises(Exception):  # noqa: B017 - a wrong password: the login fails
            Client(url, auth=("ana", "wrong"), verbose=False)
        client = Client(url, auth=("ana", "pw"), verbose=False)
        assert client.predict("ok", "", "circular", "none", 64, 128, 2, 7.5, 1, api_name="/generate")[4]["seed"] == 1
    finally:
        app.close()


# --- the browser ------------------------------------------------------------------------------------
def _wait(find, seconds=90):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = find()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the page")


def _in_frame(driver, script):
    from selenium.webdriver.common.by import By

    frame = driver.find_element(By.CSS_SELECTOR, "#pano360-viewer iframe")
    driver.switch_to.frame(frame)
    try:
        return driver.execute_script(script)
    finally:
        driver.switch_to.default_content()


def test_browser_paint_mask_follows_the_sphere(browser, tmp_path):  # noqa: F811
    """Paint mode alone (no server): a dab at the seam marks both edges, a dab at the zenith whole rows."""
    from pano360.viewer import build_viewer_html, serve_page

    Image.fromarray(_noise(64, 128)).save(tmp_path / "p.png")
    page = serve_page(build_viewer_html(tmp_path / "p.png", paint=True, yaw=180, hfov=90))
    try:
        browser.get(f"http://127.0.0.1:{page.server_address[1]}/")
        _wait(lambda: browser.execute_script("return document.body.getAttribute('data-pano-loaded')"))
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        browser.find_element(By.CSS_SELECTOR, "#pano360-paintbar button[data-mode=paint]").click()
        overlay = browser.find_element(By.ID, "pano360-paint")
        ActionChains(browser).move_to_element(overlay).click_and_hold().move_by_offset(0, 5).release().perform()
        browser.execute_script("window.pano360Viewer.setPitch(90, false)")
        time.sleep(0.2)
        ActionChains(browser).move_to_element(overlay).click_and_hold().move_by_offset(0, 5).release().perform()
        url = browser.execute_script("return window.pano360Mask()")
    finally:
        page.shutdown()
    import base64

    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L")) > 127
    assert mask.shape == (64, 128)
    assert mask[28:36, 0].any() and mask[28:36, -1].any()  # the seam: both edges
    assert mask[0].all() and not mask[32, 40:88].any()  # the zenith: the whole top row; not the far side


def test_browser_studio_generate_paint_inpaint_outpaint_gallery_rerun(server, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url, out, _ = server
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    browser.set_window_size(1280, 1400)
    browser.get(url)

    def field(element_id, value):
        element = browser.find_element(By.CSS_SELECTOR, f"#{element_id} input, #{element_id} textarea")
        element.clear()
        element.send_keys(value)

    def tab(label):
        browser.find_element(By.XPATH, f"//button[@role='tab' and contains(., '{label}')]").click()

    def current():
        return browser.find_element(By.CSS_SELECTOR, "#pano360-current input, #pano360-current textarea") \
            .get_attribute("value")

    def loaded():
        return _in_frame(browser, "return document.body.getAttribute('data-pano-loaded') && "
                                  "typeof window.pano360Mask === 'function'")

    # prompt -> panorama in the viewer
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#pano360-prompt textarea"))[0].send_keys("a purple desert")
    for element_id, value in (("pano360-height", "64"), ("pano360-width", "128"), ("pano360-steps", "2")):
        field(element_id, value)
    browser.find_element(By.CSS_SELECTOR, "#pano360-generate").click()
    _wait(lambda: current().startswith("a-purple-desert"))
    source = current()
    _wait(loaded)

    # paint by dragging in the viewer -> inpaint: outside unchanged, inside changed
    frame = browser.find_element(By.CSS_SELECTOR, "#pano360-viewer iframe")
    browser.switch_to.frame(frame)
    browser.find_element(By.CSS_SELECTOR, "#pano360-paintbar button[data-mode=paint]").click()
    browser.execute_script("var b = document.getElementById('pano360-brush'); b.value = 60; "
                           "b.dispatchEvent(new Event('input'));")  # a wide brush for a 64x128 panorama
    overlay = browser.find_element(By.ID, "pano360-paint")
    ActionChains(browser).move_to_element_with_offset(overlay, -120, 0).click_and_hold() \
        .move_by_offset(80, 20).move_by_offset(80, -20).release().perform()
    painted = int(browser.execute_script("return window.pano360PaintedPixels()"))
    browser.switch_to.default_content()
    assert painted > 50
    tab("Edit")
    field("pano360-edit-prompt", "a blue lake")
    field("pano360-edit-steps", "2")
    browser.find_element(By.CSS_SELECTOR, "#pano360-inpaint").click()
    _wait(lambda: current().startswith("inpaint-a-blue-lake"))
    edited = current()
    spec = json.loads((out / f"{edited}.json").read_text())["studio"]["spec"]
    mask = _pixels(out / spec["mask"])[..., 0] > 127
    assert mask.sum() == painted
    before, after = _pixels(out / source), _pixels(out / edited)
    assert (after[~mask] == before[~mask]).all() and (after[mask] != before[mask]).any(axis=-1).mean() > 0.9

    # upload a photo -> outpaint: the photo's pixels kept
    photo = tmp_path / "photo.png"
    Image.fromarray(_noise(80, 96, seed=5)).save(photo)
    tab("Photo")
    browser.find_element(By.CSS_SELECTOR, "#pano360-photo input[type=file]").send_keys(str(photo))
    field("pano360-photo-prompt", "a garden")
    for element_id, value in (("pano360-fov", "60"), ("pano360-photo-height", "64"), ("pano360-photo-steps", "2")):
        field(element_id, value)
    _wait(lambda: ".png" in browser.find_element(By.CSS_SELECTOR, "#pano360-photo").text)
    browser.find_element(By.CSS_SELECTOR, "#pano360-outpaint").click()
    _wait(lambda: current().startswith("outpaint-a-garden"))
    import torch

    from pano360.sphere.placement import Placement, place_photo

    canvas, _, alpha = place_photo(torch.from_numpy(_noise(80, 96, seed=5).astype(np.float32) / 127.5 - 1)
                                   .permute(2, 0, 1)[None], (64, 128), Placement(0.0, 0.0, 60.0))
    inside = alpha[0, 0].numpy() > 0.999
    expected = ((canvas[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    psnr = _psnr(_pixels(out / current())[inside], expected[inside])
    assert psnr >= 40, psnr

    # the gallery shows both; re-run the inpainting from the gallery: the same image
    def thumbnail(text):
        return [b for b in browser.find_elements(By.CSS_SELECTOR, "#pano360-gallery button.thumbnail-item")
                if text in b.text]

    _wait(lambda: thumbnail("(outpaint,"))
    _wait(lambda: thumbnail("a blue lake (inpaint,"))[0].click()
    _wait(lambda: current() == edited)
    browser.find_element(By.CSS_SELECTOR, "#pano360-rerun").click()
    _wait(lambda: current() == edited.replace(".png", "-rerun1.png"))
    assert (_pixels(out / current()) == after).all()
    browser.save_screenshot(str(tmp_path / "studio.png"))


def test_3d_exports_call_pano360_spatial_when_it_is_there(service, monkeypatch):
    import importlib.machinery
    import importlib.util
    import sys
    import types

    result = service.generate("a field", seed=4, **SMALL)
    if importlib.util.find_spec("pano360.spatial") is None:
        with pytest.raises(InvalidInputError, match="need pano360.spatial"):
            service.export_3d(result.image.name, "depth")
    calls = []

    def convert_panorama(image_path, to, output, **options):
        calls.append((Path(image_path).name, to))
        Path(output).write_bytes(b"3d")
        return Path(output)

    fake = types.ModuleType("pano360.spatial")
    fake.__spec__ = importlib.machinery.ModuleSpec("pano360.spatial", None)
    fake.convert_panorama = convert_panorama
    monkeypatch.setitem(sys.modules, "pano360.spatial", fake)
    import pano360

    monkeypatch.setattr(pano360, "spatial", fake, raising=False)
    path = service.export_3d(result.image.name, "mesh")
    assert calls == [(result.image.name, "mesh")] and path.parent == service.out_dir and path.suffix == ".glb"
    with pytest.raises(InvalidInputError, match="unknown export"):
        service.export_3d(result.image.name, "../x")
