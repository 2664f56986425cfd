"""``pano360 eval`` end to end on random weights, its bad-input messages, and the HTML report in Chromium."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pano360.cli.main import main
from pano360.metrics import METRICS


def _panorama(height: int, width: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    x = np.arange(width) / width * 2 * math.pi
    y = np.arange(height)[:, None] / height * math.pi
    channels = [128 + 70 * np.sin(x + rng.uniform(0, 6)) * np.cos(y + rng.uniform(0, 3)) + rng.normal(0, 8, (height, width))
                for _ in range(3)]
    return Image.fromarray(np.stack(channels, -1).clip(0, 255).astype(np.uint8))


def _folder(path: Path, count: int, height: int = 64, width: int = 128, seed: int = 0) -> Path:
    path.mkdir(parents=True)
    for i in range(count):
        _panorama(height, width, seed + i).save(path / f"pano_{i:02d}.png")
    return path


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These runs are many tiny network calls: one thread avoids OpenMP barrier waits, which dominate (up to
    10x) when the 2-core machine is shared with other jobs."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, _one_thread):
    """One complete evaluation with every metric (random networks), shared by the tests below."""
    root = tmp_path_factory.mktemp("eval")
    generated = _folder(root / "generated", 2, seed=0)
    reference = _folder(root / "reference", 2, seed=10)
    prompts = root / "prompts.json"
    prompts.write_text(json.dumps({
        "pano_00.png": "a living room",
        "pano_01": {"prompt": "a forest", "views": [f"trees, view {i}" for i in range(8)]},
    }))
    output = root / "out"
    code = main(["eval", str(generated), "--reference", str(reference), "--prompts", str(prompts),
                 "--metrics", "all", "--random-weights", "--num-views", "2", "--num-seam-views", "1",
                 "--giqa-k", "2", "--kid-subsets", "10", "--batch-size", "4", "--quiet", "-o", str(output)])
    return code, output


def test_eval_end_to_end_writes_every_metric(full_run):
    code, output = full_run
    assert code == 0
    data = json.loads((output / "metrics.json").read_text())
    assert set(data["metrics"]) == set(METRICS)
    assert data["skipped"] == {}
    assert data["info"]["random_weights"] is True and data["info"]["weights"]["inception"] == "random"
    for name, entry in data["metrics"].items():
        assert entry["value"] is not None and math.isfinite(entry["value"]), name
        assert entry["protocol"] in ("PanFusion", "SyncDiffusion", "geometry")
    assert data["metrics"]["crop_fid"]["n"] == 2 * 2 and data["metrics"]["mv_is"]["n"] == 2 * 8
    assert data["metrics"]["mv_clip"]["view_prompts"] is True
    assert set(data["metrics"]["omnifid"]["groups"]) == {"sides", "up", "down", "faces"}
    per_image = data["per_image"]
    assert per_image["names"] == ["pano_00.png", "pano_01.png"]
    for name in ("ds", "intra_lpips", "intra_style", "clip", "sync_clip", "giqa"):
        assert len(per_image[name]) == 2
    page = (output / "report.html").read_text()
    assert "data-report-ready" in page and "Random network weights" in page
    assert page.count("data:image/jpeg;base64,") == 4  # thumbnail + seam view per panorama
    assert "<svg" in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_existing_output_is_not_overwritten(full_run, capsys):
    _, output = full_run
    before = (output / "metrics.json").read_bytes()
    code = main(["eval", str(output.parent / "generated"), "--metrics", "ds", "--quiet", "-o", str(output)])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert (output / "metrics.json").read_bytes() == before


def _run_error(argv: list[str], capsys) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("pano360 eval: error: ") and len(err.strip().splitlines()) == 1
    return err


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    err = _run_error(["eval", str(tmp_path / "empty"), "-o", str(tmp_path / "out")], capsys)
    assert "has no images" in err
    assert not (tmp_path / "out").exists()


def test_mixed_sizes(tmp_path, capsys):
    folder = _folder(tmp_path / "mixed", 1)
    _panorama(32, 64, 5).save(folder / "small.png")
    err = _run_error(["eval", str(folder), "--metrics", "ds", "-o", str(tmp_path / "out")], capsys)
    assert "different sizes" in err and "--size" in err
    assert not (tmp_path / "out").exists()


def test_non_equirectangular_images_for_360_metrics(tmp_path, capsys):
    strips = _folder(tmp_path / "strips", 2, height=32, width=128)
    reference = _folder(tmp_path / "reference", 2, height=32, width=128, seed=5)
    err = _run_error(["eval", str(strips), "--reference", str(reference), "--metrics", "faed", "-o",
                      str(tmp_path / "out")], capsys)
    assert "2:1" in err and "32x128" in err
    assert not (tmp_path / "out").exists()


def test_missing_reference_for_fid(tmp_path, capsys):
    folder = _folder(tmp_path / "gen", 2)
    err = _run_error(["eval", str(folder), "--metrics", "fid", "-o", str(tmp_path / "out")], capsys)
    assert "reference" in err and "--reference" in err
    assert not (tmp_path / "out").exists()


def test_unknown_metric_and_bad_numbers(tmp_path, capsys):
    folder = _folder(tmp_path / "gen", 2)
    assert "unknown metric" in _run_error(["eval", str(folder), "--metrics", "fdi", "-o", str(tmp_path / "o")], capsys)
    assert "at least 1" in _run_error(["eval", str(folder), "--num-views", "0", "-o", str(tmp_path / "o")], capsys)
    assert "HEIGHTxWIDTH" in _run_error(["eval", str(folder), "--size", "big", "-o", str(tmp_path / "o")], capsys)


def test_auto_mode_skips_what_the_inputs_cannot_support(tmp_path, capsys):
    strips = _folder(tmp_path / "strips", 2, height=32, width=128)
    code = main(["eval", str(strips), "--random-weights", "--batch-size", "2", "--quiet", "--no-report", "-o",
                 str(tmp_path / "out")])
    assert code == 0
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert {"ds", "intra_lpips", "intra_style", "is", "rot_is"} <= set(data["metrics"])
    assert "reference" in data["skipped"]["fid"] and "prompt" in data["skipped"]["clip"]
    assert "2:1" in data["skipped"]["crop_is"]
    assert not (tmp_path / "out" / "report.html").exists()


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if path:
            return path
    return None


def test_report_opens_in_headless_chromium_without_errors(full_run, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("chromium is required in CI for the report screenshot test (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    _, output = full_run
    url = (output / "report.html").resolve().as_uri()
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--enable-logging=stderr", "--v=0"]
    shot = tmp_path / "report.png"
    result = subprocess.run(common + [f"--user-data-dir={tmp_path / 'profile1'}", f"--screenshot={shot}",
                                      "--window-size=1200,900", url], check=False, capture_output=True, text=True,
                            timeout=120)
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console  # the page logs nothing: any console line is an error or a warning
    with Image.open(shot) as image:
        assert image.size == (1200, 900)
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # not a blank page
    dom = subprocess.run(common + [f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", url],
                         check=False, capture_output=True, text=True, timeout=120)
    assert 'data-report-ready="1"' in dom.stdout  # the page's script ran to its end
    assert not [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
