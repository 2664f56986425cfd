"""The command line: a real tiny run, and bad input rejected before any model is loaded."""

import json
import subprocess
import sys

import pytest

from pano360.cli.main import main
from pano360.io import read_panorama_metadata, sidecar_path

# tiny models gain nothing from threads; on a busy 2-core machine OpenMP barriers slow them down many times
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_generate_tiny_writes_image_and_sidecar(tmp_path):
    out = tmp_path / "room.png"
    result = subprocess.run(
        [sys.executable, "-m", "pano360.cli.main", "generate", "a room", "--model", "tiny", "--steps", "2",
         "--height", "64", "--width", "128", "--seed", "5", "-o", str(out), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["seed"] == 5 and sidecar["prompt"] == "a room" and sidecar["model"]["name"] == "tiny"
    assert sidecar["width"] == 128 and sidecar["num_inference_steps"] == 2 and "torch" in sidecar["versions"]
    metadata = read_panorama_metadata(out)
    assert metadata["ProjectionType"] == "equirectangular" and metadata["FullPanoWidthPixels"] == 128


def test_generate_is_reproducible_from_its_sidecar(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    for path in (first, second):
        assert main(["generate", "a room", "--model", "tiny", "--steps", "2", "--height", "64", "--width", "128",
                     "--seed", "9", "-o", str(path), "--quiet"]) == 0
    import numpy as np
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(second)))


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "keep.png"
    out.write_bytes(b"precious")
    assert main(["generate", "a room", "--model", "tiny", "-o", str(out)]) == 2
    assert out.read_bytes() == b"precious"
    assert "--overwrite" in capsys.readouterr().err


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if any model loading starts."""
    from pano360.generator import PanoramaGenerator

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(PanoramaGenerator, "from_pretrained", classmethod(forbidden))


@pytest.mark.parametrize(
    "extra, fix",
    [
        (["--width", "1001"], "multiple of 8"),
        (["--height", "500"], "multiple of 8"),
        (["--height", "1024", "--width", "512"], "width >= height"),
        (["--steps", "0"], ">= 1"),
        (["--guidance", "-2"], ">= 0"),
        (["--depth", "no-such-depth.png"], "check the path"),
        (["--scheduler", "warp"], "choose one of"),
        (["--model", "./no/such/model.safetensors"], "check the path"),
        (["--lora", "missing_lora.safetensors"], "check the path"),
        (["--embedding", "missing.pt"], "check the path"),
        (["-o", "out.webp"], ".png, .jpg"),
    ],
)
def test_bad_input_fails_fast_with_one_line(no_model_loading, capsys, tmp_path, monkeypatch, extra, fix):
    monkeypatch.chdir(tmp_path)
    args = ["generate", "a room", "--model", "tiny", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("pano360 generate: error:") and fix in err


def test_help_lists_options_with_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--model", "--steps", "--guidance", "--seed", "--scheduler", "--lora", "--lora-scale",
                   "--embedding", "--depth", "--controlnet", "--controlnet-scale", "--dtype", "--device", "-o"):
        assert option in text
    assert "default: 50" in text and "stabilityai/stable-diffusion-2-base" in text


def test_info_reports_versions_and_image_metadata(tmp_path, capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert "torch" in text and "device:" in text
    from PIL import Image

    from pano360.io import save_panorama_image

    path = save_panorama_image(Image.new("RGB", (256, 64)), tmp_path / "strip.jpg")
    assert main(["info", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["gpano"]["CroppedAreaTopPixels"] == 32 and report["projection"] == "equirectangular"


def test_generate_view_opens_the_viewer_on_the_result(tmp_path, monkeypatch):
    import pano360.viewer

    opened = []
    monkeypatch.setattr(pano360.viewer, "open_viewer", lambda path, **kw: opened.append(path))
    out = tmp_path / "v.png"
    assert main(["generate", "a room", "--model", "tiny", "--steps", "1", "--height", "64", "--width", "128",
                 "--seed", "1", "-o", str(out), "--quiet", "--view"]) == 0
    assert opened == [out]
