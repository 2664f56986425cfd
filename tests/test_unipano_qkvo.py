"""pano360 qkvo end to end on the tiny model: LoRAs per subset, switching, metrics, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pano360.cli.main import main

CAPTIONS = ("a red room", "a blue hall", "a green garden", "a white kitchen")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qkvo-data")
    rng = np.random.default_rng(0)
    x = np.linspace(0, 2 * np.pi, 128, endpoint=False)[None, :, None]
    y = np.linspace(0, np.pi, 64)[:, None, None]
    for index, caption in enumerate(CAPTIONS):
        image = 0.5 + 0.5 * np.sin(x * (index + 1) + y * rng.uniform(1, 3, 3) + rng.uniform(0, 6, 3))
        Image.fromarray((image * 255).astype("uint8")).save(folder / f"p{index}.png")
        (folder / f"p{index}.txt").write_text(caption)
    return folder


@pytest.fixture(scope="module")
def run(data, tmp_path_factory, single_torch_thread):
    output = tmp_path_factory.mktemp("qkvo") / "out"
    code = main(["qkvo", str(data), "-o", str(output), "--model", "tiny", "--steps", "2", "--rank", "2",
                 "--subsets", "v", "qkvo", "--switches", "vo", "none", "--resolution", "64", "--eval-count", "2",
                 "--eval-steps", "2", "--random-metric-weights", "--device", "cpu", "--quiet"])
    assert code == 0
    return output


def test_qkvo_end_to_end(run):
    record = json.loads((run / "results.json").read_text())
    assert set(record["isolation"]) == {"v", "qkvo"} and set(record["switching"]) == {"vo", "none"}
    assert set(record["training"]) == {"v", "qkvo"}
    assert record["data"] == {"panoramas": 4, "trained_on": 2, "held_out": 2}
    assert record["held_out_prompts"] == list(CAPTIONS[2:])
    for experiment in ("isolation", "switching"):
        for scores in record[experiment].values():
            assert set(scores["metrics"]) == {"faed", "fid", "clip", "perspective_lpips"}
    # With every LoRA switched off the model is the base model: its perspective images are the base's.
    assert record["switching"]["none"]["metrics"]["perspective_lpips"] == 0.0
    assert (run / "variants" / "switching-vo" / "panoramas" / "001.png").is_file()
    assert (run / "loras" / "qkvo" / "adapter_config.json").is_file()
    page = (run / "report.html").read_text()
    assert "<svg" in page and "data:image/jpeg;base64," in page and "Switching" in page


def test_qkvo_report_opens_in_headless_chromium_without_errors(run, tmp_path):
    import os
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is required in CI for the report test (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    url = (run / "report.html").resolve().as_uri()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(common + ["--dump-dom", url], check=False, capture_output=True, text=True, timeout=120)
    assert 'data-report-ready="1"' in dom.stdout  # the page's script ran to its end
    assert [line for line in dom.stderr.splitlines() if "CONSOLE" in line] == []


@pytest.mark.parametrize("extra, message", [
    (["--subsets", "qx"], "letters from q, k, v, o"),
    (["--subsets", "none"], "only a --switches entry"),
    (["--eval-count", "4"], "nothing would be left to train on"),
    (["--steps", "0"], "--steps must be at least 1"),
])
def test_bad_arguments_fail_before_any_model_loads(data, tmp_path, capsys, monkeypatch, extra, message):
    import pano360.generator

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pano360.generator.PanoramaGenerator, "from_pretrained", refuse)
    monkeypatch.setattr("pano360.training.trainer.train", refuse)
    assert main(["qkvo", str(data), "-o", str(tmp_path / "out"), "--model", "tiny", *extra]) == 2
    assert message in capsys.readouterr().err
