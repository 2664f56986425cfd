"""The CLI's multidiffusion/syncdiffusion knobs and presets: options reach the method, bad values fail
before any model is loaded."""

import json

import pytest

from pano360.cli.main import main
from pano360.io import sidecar_path

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture
def no_model_loading(monkeypatch):
    from pano360.generator import PanoramaGenerator

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(PanoramaGenerator, "from_pretrained", classmethod(forbidden))


@pytest.mark.parametrize("extra, fix", [
    (["--method", "multidiffusion", "--stride", "0"], ">= 1"),
    (["--method", "multidiffusion", "--stride", "12"], "does not divide"),
    (["--method", "multidiffusion", "--window", "128"], "larger than the panorama"),
    (["--method", "syncdiffusion", "--sync-weight", "-1"], "sync_weight"),
    (["--method", "syncdiffusion", "--sync-threshold", "60"], "beyond the number of steps"),
    (["--method", "multidiffusion", "--sync-weight", "5"], "syncdiffusion only"),
    (["--stride", "8"], "not circular"),
    (["--method", "syncdiffusion", "--sync-batch-size", "lots"], "'auto' or a whole number"),
    # issue 24: a preset's own sync_threshold follows --steps; a threshold the user gives is still checked
    (["--preset", "syncdiffusion-script", "--steps", "5", "--sync-threshold", "10"], "beyond the number of steps"),
])
def test_bad_window_options_fail_before_loading(no_model_loading, capsys, tmp_path, monkeypatch, extra, fix):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "a room", "--model", "tiny", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fix in err, err


def test_preset_and_knobs_reach_the_sidecar(tmp_path):
    out = tmp_path / "pano.png"
    args = ["generate", "a room", "--model", "tiny", "--method", "syncdiffusion", "--steps", "1", "--height", "64",
            "--width", "256", "--stride", "8", "--sync-weight", "0", "--sync-threshold", "1", "--loop-closure", "on",
            "--view-batch-size", "2", "--sync-batch-size", "auto", "--channels-last", "off", "--seed", "1", "-o", str(out), "--quiet"]
    assert main(args) == 0
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["method"] == "syncdiffusion"
    options = sidecar["method_options"]
    assert options["stride"] == 8 and options["sync_threshold"] == 1 and options["loop_closure"] is True
    assert options["view_batch_size"] == 2 and options["sync_weight"] == 0
    assert options["sync_batch_size"] == "auto"
    assert sidecar["channels_last"] is False


def test_preset_fills_size_and_options():
    from pano360.cli.generate import apply_preset, method_options
    from pano360.cli.main import build_parser

    args = build_parser().parse_args(["generate", "a room", "--preset", "syncdiffusion-script", "--loop-closure", "on"])
    apply_preset(args)
    assert (args.method, args.height, args.width, args.steps) == ("syncdiffusion", 512, 3072, 50)
    options = {**args.preset_options, **method_options(args)}
    assert options["sync_threshold"] == 10 and options["stride"] == 16 and options["sync_weight"] == 20.0
    assert options["loop_closure"] is True  # explicit arguments win over the preset


def _write_random_lpips_vgg_files(folder):
    """Random tensors in the official files' key layout (torchvision VGG16 features, lpips v0.1 heads)."""
    from pathlib import Path

    import torch

    data = Path(__file__).parent / "data"
    generator = torch.Generator().manual_seed(0)
    for key_list, filename in (("keys_vgg16-397923af.json", "vgg16-397923af.pth"),
                               ("keys_lpips-v0.1-vgg.json", "vgg.pth")):
        keys = json.loads((data / key_list).read_text())["keys"]
        torch.save({k: torch.rand(shape, generator=generator) * 0.01 for k, shape in keys.items()
                    if not k.startswith("classifier.")}, folder / filename)


def test_syncdiffusion_lpips_weights_are_checked_before_the_model_loads(no_model_loading, capsys, tmp_path,
                                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "weights"
    empty.mkdir()
    args = ["generate", "a room", "--model", "tiny", "--method", "syncdiffusion", "--height", "64", "--width", "256",
            "--stride", "8", "--steps", "1", "--weights-dir", str(empty), "--perceptual-net", "lpips-vgg"]
    assert main(args) == 2  # tiny models default to the built-in tiny-random net; LPIPS asked for explicitly
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vgg16-397923af.pth" in err and "--weights-dir" in err, err
    assert main(["generate", "a room", "--method", "multidiffusion", "--weights-dir", str(empty)]) == 2
    assert "syncdiffusion only" in capsys.readouterr().err


def test_syncdiffusion_without_a_synchronised_step_needs_no_lpips_weights(tmp_path):
    empty = tmp_path / "weights"
    empty.mkdir()
    out = tmp_path / "pano.png"
    args = ["generate", "a room", "--model", "tiny", "--method", "syncdiffusion", "--height", "64", "--width", "256",
            "--stride", "8", "--steps", "1", "--sync-weight", "0", "--weights-dir", str(empty), "-o", str(out),
            "--quiet"]
    assert main(args) == 0 and out.exists()


def test_syncdiffusion_runs_with_lpips_files_from_weights_dir(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    _write_random_lpips_vgg_files(weights)
    out = tmp_path / "sync.png"
    args = ["generate", "a room", "--model", "tiny", "--method", "syncdiffusion", "--height", "64", "--width", "256",
            "--stride", "8", "--steps", "1", "--weights-dir", str(weights), "--seed", "3", "-o", str(out), "--quiet"]
    assert main(args) == 0
    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["method_options"]["weights_dir"] == str(weights)
