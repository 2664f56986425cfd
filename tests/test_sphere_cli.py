"""``pano360 poles / outpaint / upscale``: files, metadata, and one-line errors before any model loads."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from pano360.errors import Pano360Error

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def run_cli(argv: list[str]) -> int:
    """Run a sphere sub-command through the CLI's own parser (SUBCOMMANDS once merged; the modules'
    register() otherwise)."""
    from pano360.cli import main as cli_main

    name = argv[0]
    if name in cli_main.SUBCOMMANDS:
        parser = cli_main.build_parser()
    else:
        import importlib

        parser = argparse.ArgumentParser(prog="pano360")
        importlib.import_module(f"pano360.cli.{name}").register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def save_rgb(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


def smooth_image(height, width):
    y, x = np.mgrid[0:height, 0:width]
    lon = (x + 0.5) / width * 2 * np.pi
    return np.stack([127 + 80 * np.sin(lon), 127 + 60 * np.cos(np.pi * y / height), 127 + 40 * np.cos(2 * lon)], -1)


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail loudly if a command gets as far as loading a model."""
    from pano360.cli import sphere_common

    def refuse(args):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(sphere_common, "load_pipe", refuse)


def test_upscale_cli_writes_gpano_for_the_new_size_and_keeps_strips_strips(tmp_path):
    from pano360.io import read_panorama_metadata, read_sidecar

    source = save_rgb(tmp_path / "strip.png", smooth_image(32, 128))  # a 4:1 cylindrical strip
    out = tmp_path / "strip_2x.png"
    assert run_cli(["upscale", source, "--scale", "2", "--model", "tiny", "--steps", "2", "--strength", "0.5",
                    "--tile", "16", "--vae-tile", "16", "--quiet", "-o", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (256, 64)
    meta = read_panorama_metadata(out)
    assert meta["FullPanoWidthPixels"] == 256 and meta["CroppedAreaImageHeightPixels"] == 64
    assert meta["FullPanoHeightPixels"] == 128 and meta["CroppedAreaTopPixels"] == 32
    assert read_sidecar(out)["operation"] == "upscale"


def test_poles_and_outpaint_cli_offline(tmp_path):
    from pano360.io import read_panorama_metadata

    pano = save_rgb(tmp_path / "pano.png", smooth_image(64, 128))
    out = tmp_path / "poles.png"
    assert run_cli(["poles", pano, "sky", "--model", "tiny", "--steps", "2", "--view-size", "64", "--quiet",
                    "-o", str(out)]) == 0
    assert Image.open(out).size == (128, 64)
    photo = save_rgb(tmp_path / "photo.png", smooth_image(96, 128))
    out2 = tmp_path / "360.png"
    assert run_cli(["outpaint", photo, "a park", "--fov", "60", "--yaw", "45", "--height", "64", "--model",
                    "tiny-sd2", "--steps", "2", "--pole-view-size", "64", "--quiet", "-o", str(out2)]) == 0
    assert read_panorama_metadata(out2)["FullPanoWidthPixels"] == 128


def test_outpaint_with_an_inpainting_checkpoint_of_the_same_family(tmp_path):
    photo = save_rgb(tmp_path / "photo.png", smooth_image(96, 128))
    out = tmp_path / "360.png"
    assert run_cli(["outpaint", photo, "a park", "--fov", "60", "--height", "64", "--model", "tiny-sdxl",
                    "--inpaint-model", "tiny-sdxl-inpaint", "--steps", "1", "--no-poles", "--quiet", "-o", str(out)]) == 0


@pytest.mark.parametrize("argv_tail,message", [
    (["--scale", "3"], "unsupported scale"),
    (["--to", "1000"], "use --to 1008"),
])
def test_upscale_bad_scale_is_one_line_before_loading(tmp_path, no_model_loading, argv_tail, message):
    source = save_rgb(tmp_path / "pano.png", smooth_image(64, 128))
    with pytest.raises(Pano360Error, match=message):
        run_cli(["upscale", source, *argv_tail, "--model", "tiny", "-o", str(tmp_path / "o.png")])


@pytest.mark.parametrize("command", ["upscale", "poles"])
def test_non_panorama_is_refused_before_loading(tmp_path, no_model_loading, command):
    square = save_rgb(tmp_path / "square.png", smooth_image(100, 100))
    argv = [command, square] + (["--scale", "2"] if command == "upscale" else ["sky"])
    with pytest.raises(Pano360Error, match="not an equirectangular panorama"):
        run_cli([*argv, "--model", "tiny", "-o", str(tmp_path / "o.png")])


@pytest.mark.parametrize("extra,size,message", [
    (["--fov", "180"], (96, 128), "between 0 and 180"),
    (["--fov", "0"], (96, 128), "between 0 and 180"),
    ([], (96, 128), "EXIF has no focal length"),
    (["--fov", "60"], (40, 128), "too small"),
    (["--fov", "60", "--inpaint-model", "tiny-sdxl-inpaint"], (96, 128), "is sdxl, but the panorama model is sd1"),
    (["--fov", "60", "--inpaint-model", "tiny-sd2"], (96, 128), "not an inpainting checkpoint"),
])
def test_outpaint_bad_input_is_one_line_before_loading(tmp_path, no_model_loading, extra, size, message):
    photo = save_rgb(tmp_path / "photo.png", smooth_image(*size))
    with pytest.raises(Pano360Error, match=message):
        run_cli(["outpaint", photo, "a park", "--model", "tiny", *extra, "-o", str(tmp_path / "o.png")])


def test_wrong_family_inpainting_folder_is_caught_from_its_configs(tmp_path):
    from pano360.backbones.loading import check_inpainting_checkpoint, peek_checkpoint
    from pano360.backbones.tiny import tiny_inpainting_pipeline
    from pano360.errors import InvalidInputError

    folder = tmp_path / "sd2-inpaint"
    tiny_inpainting_pipeline("sd2").save_pretrained(folder)
    assert peek_checkpoint(str(folder)).family == "sd2" and peek_checkpoint(str(folder)).in_channels == 9
    check_inpainting_checkpoint(str(folder), "sd2")
    with pytest.raises(InvalidInputError, match="is sd2, but the panorama model is sdxl"):
        check_inpainting_checkpoint(str(folder), "sdxl")


def test_generate_refine_poles_and_upscale_chain(tmp_path):
    from pano360.io import read_panorama_metadata, read_sidecar

    out = tmp_path / "chain.png"
    assert run_cli(["generate", "a room", "--model", "tiny", "--steps", "2", "--height", "64", "--width", "128",
                    "--refine-poles", "--upscale", "2", "--seed", "1", "--quiet", "-o", str(out)]) == 0
    assert Image.open(out).size == (256, 128)
    record = read_sidecar(out)
    assert record["upscale"]["scale"] == 2 and "refine_poles" in record and record["width"] == 256
    assert read_panorama_metadata(out)["FullPanoWidthPixels"] == 256


def test_sdxl_360_preset_chooses_its_model():
    from pano360.cli import main as cli_main
    from pano360.cli.generate import apply_preset
    from pano360.presets import get_preset

    args = cli_main.build_parser().parse_args(["generate", "equirectangular 360 view, a forest", "--preset", "sdxl-360"])
    apply_preset(args)
    # the repository holds the fine-tuned UNet (unet/), not a diffusers pipeline: SDXL base with that UNet
    assert (args.model, args.unet, args.method, args.height, args.width) == (
        "stabilityai/stable-diffusion-xl-base-1.0", "ProGamerGov/sdxl-360-diffusion", "circular", 1024, 2048)
    args = cli_main.build_parser().parse_args(["generate", "x", "--preset", "sdxl-360", "--model", "tiny-sdxl"])
    apply_preset(args)
    assert args.model == "tiny-sdxl"  # an explicit --model wins
    preset = get_preset("sdxl-360")
    assert preset.generation["model"] == "stabilityai/stable-diffusion-xl-base-1.0"
    assert preset.unet == "ProGamerGov/sdxl-360-diffusion" and preset.trigger == "equirectangular 360 view"
    assert (preset.generation["width"], preset.generation["height"]) == (2048, 1024) and preset.options["wrap"]
