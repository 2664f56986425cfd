"""Hardening below the generator: output checks, rescue writes, one image reader, sidecar names,
the viewer's initial view, size/memory/seed/eta/steps checks, the tiny perceptual net."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image

from pano360.cli.main import main
from pano360.errors import InvalidInputError, OutputExistsError
from pano360.io import check_output_target, read_image, save_with_fallback, sidecar_path, slugify
from pano360.io.sidecar import find_sidecar, read_sidecar


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


@pytest.fixture
def images(tmp_path):
    """A good 2:1 PNG and JPEG, truncated and corrupt copies, a text file named .png."""
    good = tmp_path / "good.png"
    Image.effect_noise((64, 32), 40).convert("RGB").save(good)
    jpeg = tmp_path / "good.jpg"
    Image.open(good).save(jpeg, quality=90)
    data = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "truncated.jpg").write_bytes(jpeg.read_bytes()[:-200])
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF  # one flipped byte inside the compressed pixels
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    (tmp_path / "text.png").write_text("not an image at all")
    return tmp_path


# --- one image reader ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fix", [
    ("truncated.png", "truncated or corrupt"), ("truncated.jpg", "truncated or corrupt"),
    ("corrupt.png", "truncated or corrupt"), ("text.png", "not an image"), ("missing.png", "does not exist"),
    (".", "is a folder"),
])
def test_read_image_refuses_what_is_not_a_whole_image(images, name, fix):
    with pytest.raises(InvalidInputError, match=fix) as info:
        read_image(images / name, "panorama")
    assert "\n" not in str(info.value) and str(info.value).startswith("panorama ")


def test_read_image_keeps_format_and_pixels(images):
    image = read_image(images / "good.png")
    assert image.format == "PNG" and image.size == (64, 32)
    import numpy as np

    assert np.array_equal(np.asarray(image), np.asarray(Image.open(images / "good.png")))


@pytest.mark.parametrize("command", [
    ["info", "{bad}"], ["view", "{bad}", "--html", "{out}/v.html"], ["convert", "{bad}", "--to", "cubemap", "-o", "{out}"],
    ["convert", "{bad}", "--add-metadata", "--metadata-out", "{out}/t.png"],
])
@pytest.mark.parametrize("bad", ["truncated.png", "truncated.jpg", "corrupt.png"])
def test_every_command_that_reads_images_refuses_broken_ones(images, capsys, command, bad):
    out = images / "out"
    argv = [part.format(bad=images / bad, out=out) for part in command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "truncated or corrupt" in err and "Traceback" not in err
    assert not out.exists()


def test_info_on_a_folder_is_one_line(images, capsys):
    assert main(["info", str(images)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a folder" in err


def test_eval_refuses_a_truncated_image_in_the_folder(images, tmp_path, capsys):
    folder = tmp_path / "gen"
    folder.mkdir()
    (folder / "a.png").write_bytes((images / "good.png").read_bytes())
    (folder / "b.png").write_bytes((images / "truncated.png").read_bytes())
    assert main(["eval", str(folder), "--metrics", "ds", "-o", str(tmp_path / "ev"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "b.png is truncated or corrupt" in err


# --- outputs checked before work ------------------------------------------------------------------------

def test_check_output_target_writes_nothing_and_names_the_fix(tmp_path):
    (tmp_path / "file").write_text("x")
    before = _files(tmp_path)
    assert check_output_target(tmp_path / "new" / "deeper" / "out.png") == tmp_path / "new" / "deeper" / "out.png"
    with pytest.raises(OutputExistsError, match="--overwrite"):
        check_output_target(tmp_path / "file")
    check_output_target(tmp_path / "file", overwrite=True)
    with pytest.raises(InvalidInputError, match="is a file, not a folder"):
        check_output_target(tmp_path / "file" / "out.png")
    with pytest.raises(InvalidInputError, match="is a folder"):
        check_output_target(tmp_path)
    with pytest.raises(InvalidInputError, match="shorter name"):
        check_output_target(tmp_path / ("x" * 300 + ".png"))
    assert _files(tmp_path) == before  # nothing created, not even the folders


def test_unwritable_folder_is_found_by_probing(tmp_path, monkeypatch):
    """Root ignores permission bits, so the check probes with a real temporary file; a failing
    probe (read-only mount, ACL) is an error naming the folder."""
    from support.probes import make_folder_unwritable

    make_folder_unwritable(monkeypatch, tmp_path)
    with pytest.raises(InvalidInputError, match="cannot write into the folder of output .*permission denied"):
        check_output_target(tmp_path / "sub" / "out.png")


def test_view_html_and_eval_output_are_checked_before_reading(images, tmp_path, capsys, monkeypatch):
    import pano360.io.images as io_images

    def forbidden(*args, **kwargs):
        raise AssertionError("an input was read before the output was checked")

    monkeypatch.setattr(io_images, "read_image", forbidden)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder is needed")
    started = time.perf_counter()
    for argv in (["view", str(images / "good.png"), "--html", str(blocker / "v.html")],
                 ["eval", str(images), "-o", str(blocker / "ev")],
                 ["convert", str(images / "good.png"), "--to", "cubemap", "-o", str(blocker / "faces")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "is a file, not a folder" in err, err
    assert time.perf_counter() - started < 5


def test_add_metadata_on_a_read_only_file_names_the_copy_option(images, capsys):
    path = images / "good.png"
    os.chmod(path, 0o444)
    try:
        assert main(["convert", str(path), "--add-metadata"]) == 2
    finally:
        os.chmod(path, 0o644)
    err = capsys.readouterr().err.strip()
    assert "read-only" in err and "--metadata-out" in err


def test_options_without_their_target_are_errors(images, capsys):
    good = str(images / "good.png")
    for argv, fix in ((["--to", "cubemap", "--frames", "10"], "--frames only apply with --to video"),
                      (["--to", "video", "--view-size", "64x64"], "--view-size only apply with --to views"),
                      (["--to", "views", "--face-size", "8"], "--face-size only apply with --to cubemap"),
                      (["--add-metadata", "--prefix", "p"], "--prefix apply to --to outputs")):
        assert main(["convert", good, *argv]) == 2
        assert fix in capsys.readouterr().err
    assert main(["view", good, "--html", str(images / "v.html"), "--port", "8080"]) == 2
    assert "--port/--no-browser apply when serving" in capsys.readouterr().err


# --- nothing generated is lost ---------------------------------------------------------------------------

def test_save_with_fallback_rescues_and_says_where(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    messages = []
    calls = []

    def write(path: Path):
        calls.append(path)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        path.write_text("result")
        return [path]

    written, used = save_with_fallback(write, tmp_path / "gone" / "pano.png", warn=messages.append)
    assert used == tmp_path / "pano360-rescued" / "pano.png" and written == [used] and used.read_text() == "result"
    assert "no space left on device" in messages[0] and str(used) in messages[0]


def test_output_save_falls_back_when_the_folder_became_unwritable(tmp_path, monkeypatch, capsys):
    import torch

    from pano360.output import PanoramaOutput

    monkeypatch.setenv("PANO360_FALLBACK_DIR", str(tmp_path / "rescue"))
    out = PanoramaOutput(images=[Image.new("RGB", (32, 16))], latents=torch.zeros(1, 4, 2, 4),
                         parameters={"prompt": "p", "seeds": [3]})
    blocker = tmp_path / "blocker"
    blocker.write_text("x")  # the target folder "blocker" is now a file: the write must fail
    paths = out.save(blocker / "pano.png", fallback=True)
    assert paths == [tmp_path / "rescue" / "pano.png"]
    assert sidecar_path(paths[0]).is_file() and read_sidecar(paths[0])["seed"] == 3
    assert "saved to" in capsys.readouterr().err
    with pytest.raises(InvalidInputError):  # without fallback (the API default) the error is raised
        out.save(blocker / "pano.png")


# --- sidecars, names -------------------------------------------------------------------------------------

def test_png_and_jpg_of_one_name_keep_separate_sidecars(tmp_path):
    import torch

    from pano360.output import PanoramaOutput

    for suffix, seed in ((".png", 1), (".jpg", 2)):
        PanoramaOutput(images=[Image.new("RGB", (32, 16))], latents=torch.zeros(1),
                       parameters={"seeds": [seed]}).save(tmp_path / f"x{suffix}")
    assert {p.name for p in tmp_path.iterdir()} == {"x.png", "x.png.json", "x.jpg", "x.jpg.json"}
    assert read_sidecar(tmp_path / "x.png")["seed"] == 1 and read_sidecar(tmp_path / "x.jpg")["seed"] == 2


def test_old_sidecars_are_still_read_when_they_belong_to_the_image(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "a.json").write_text(json.dumps({"prompt": "old", "image_file": "a.png"}))
    (tmp_path / "b.jpg").write_bytes(b"")
    (tmp_path / "b.json").write_text(json.dumps({"prompt": "other", "image_file": "b.png"}))
    assert find_sidecar(tmp_path / "a.png") == tmp_path / "a.json" and read_sidecar(tmp_path / "a.png")["prompt"] == "old"
    assert find_sidecar(tmp_path / "b.jpg") is None
    with pytest.raises(FileNotFoundError, match="b.jpg.json"):
        read_sidecar(tmp_path / "b.jpg")


def test_directory_fingerprint_depends_on_content_not_location(tmp_path):
    from pano360.io.sidecar import directory_fingerprint

    for name in ("a", "b"):
        (tmp_path / name / "unet").mkdir(parents=True)
        (tmp_path / name / "unet" / "w.bin").write_bytes(b"weights")
        (tmp_path / name / "model_index.json").write_text("{}")
    (tmp_path / "b" / ".cache").mkdir()
    (tmp_path / "b" / ".cache" / "x").write_text("ignored")
    first, second = directory_fingerprint(tmp_path / "a"), directory_fingerprint(tmp_path / "b")
    assert first == second and first["files"] == 2
    (tmp_path / "b" / "unet" / "w.bin").write_bytes(b"weightz")
    assert directory_fingerprint(tmp_path / "b")["sha256"] != first["sha256"]


@pytest.mark.parametrize("prompt, slug", [
    ("A cozy cabin, warm light!", "a-cozy-cabin-warm-light"), ("Tōkyō 夜景", "tōkyō-夜景"),
    ("東京の夜景、雨", "東京の夜景-雨"), ("../../etc/passwd", "etc-passwd"), ("🌅🌊", "panorama"), ("", "panorama"),
    ("Ａｂｃ", "abc"),
])
def test_slugify_keeps_non_ascii_words_readable(prompt, slug):
    assert slugify(prompt) == slug


def test_slugify_bounds_length_in_characters_and_bytes():
    assert len(slugify("word " * 50)) <= 40
    assert len(slugify("夜" * 100, limit=100).encode()) <= 120


# --- viewer initial view ------------------------------------------------------------------------------------

def test_viewer_opens_at_the_gpano_initial_view(tmp_path):
    from pano360.io.images import encode_image
    from pano360.io.xmp import build_gpano_xmp, embed_xmp, pano_geometry_for_size
    from pano360.viewer import viewer_config

    xmp = build_gpano_xmp(pano_geometry_for_size(64, 32), heading_deg=100.0, initial_view_heading_deg=70.0,
                          initial_view_pitch_deg=-12.0, initial_hfov_deg=75.0)
    path = tmp_path / "p.png"
    path.write_bytes(embed_xmp(encode_image(Image.new("RGB", (64, 32)), path), xmp))
    config = viewer_config(path)
    assert (config["yaw"], config["pitch"], config["hfov"]) == (-30.0, -12.0, 75.0)  # 70° heading − 100° pose
    config = viewer_config(path, yaw=5.0, hfov=60.0)  # explicit values win
    assert (config["yaw"], config["pitch"], config["hfov"]) == (5.0, -12.0, 60.0)
    plain = tmp_path / "plain.png"
    Image.new("RGB", (64, 32)).save(plain)
    config = viewer_config(plain)
    assert (config["yaw"], config["pitch"], config["hfov"]) == (0.0, 0.0, 100.0)


# --- validation: sizes, memory, seeds, eta, steps, API types -----------------------------------------------------

def test_size_limits_refuse_at_once_and_name_the_override():
    from pano360.validation import MAX_PIXELS, MAX_SIDE, check_size_limit

    started = time.perf_counter()
    with pytest.raises(InvalidInputError, match=f"{MAX_SIDE} px.*--allow-large"):
        check_size_limit(64, 100000, "circular")
    with pytest.raises(InvalidInputError, match="MP limit of circular.*--method multidiffusion.*--allow-large"):
        check_size_limit(4096, 4096 * 2, "circular")
    assert time.perf_counter() - started < 0.1
    check_size_limit(4096, 8192, "circular", allow_large=True)
    check_size_limit(1024, 16384, "multidiffusion")  # windowed methods allow more
    assert MAX_PIXELS["windows"] > MAX_PIXELS["full"]


def test_memory_estimate_grows_with_size_and_refuses_what_cannot_fit():
    from pano360.validation import check_memory, estimate_memory

    small, large = estimate_memory(512, 1024), estimate_memory(1024, 2048)
    assert large.total > 2 * small.total > 0
    assert estimate_memory(1024, 2048, family="sdxl").total > large.total
    assert estimate_memory(512, 8192, method="multidiffusion").unet < estimate_memory(512, 8192).unet
    check_memory(small, available=small.total + 1)
    with pytest.raises(InvalidInputError, match="GiB.*--allow-large"):
        check_memory(large, available=small.total, device="cuda:0")
    check_memory(large, available=small.total, allow_large=True)
    check_memory(large, available=None)  # unknown device memory: no refusal


@pytest.mark.parametrize("seed, count, fix", [
    (2**64, 1, "2\\*\\*64-1"), (-1, 1, "between 0"), (2**64 - 1, 2, "one seed per image"), (1.5, 1, "whole number"),
    ("7", 1, "whole number"), (True, 1, "whole number"), ([1, 2**70], 2, "between 0"),
])
def test_seed_checks(seed, count, fix):
    from pano360.validation import check_seed

    with pytest.raises(InvalidInputError, match=fix):
        check_seed(seed, count)


def test_valid_seeds_pass():
    import numpy as np

    from pano360.validation import check_seed

    for seed in (None, 0, 2**64 - 1, np.int64(5), [0, 1]):
        check_seed(seed, 1 if not isinstance(seed, list) else 2)


def test_eta_steps_prompts_and_sizes():
    from pano360.validation import check_eta, check_prompts, check_steps_for_scheduler, resolve_size

    check_eta(0.0, "euler")
    check_eta(0.5, "ddim")
    with pytest.raises(InvalidInputError, match="no effect with scheduler euler"):
        check_eta(0.5, "euler")
    with pytest.raises(InvalidInputError, match="between 0"):
        check_eta(1.5, "ddim")
    check_steps_for_scheduler(1000, 1000)
    with pytest.raises(InvalidInputError, match="1000 training steps"):
        check_steps_for_scheduler(1001, 1000)
    assert check_prompts("a") == ["a"] and check_prompts(("a", "b")) == ["a", "b"]
    assert check_prompts([["view 1", "view 2"]]) == [["view 1", "view 2"]]  # per-view prompts (multi-view methods)
    with pytest.raises(InvalidInputError, match=r"prompt\[0\]\[1\] is a int"):
        check_prompts([["view 1", 2]])
    for bad, fix in ((3, "must be a str"), (None, "must be a str"), ([], "empty list"), (["a", 2], r"prompt\[1\]")):
        with pytest.raises(InvalidInputError, match=fix):
            check_prompts(bad)
    assert resolve_size(None, None, 128) == (128, 256) and resolve_size(64, None, 512) == (64, 128)
    with pytest.raises(InvalidInputError, match="--height must be a positive.*128x256"):
        resolve_size(0, None, 128)


# --- torch-free defaults, tiny perceptual net -------------------------------------------------------------------

def test_defaults_and_light_modules_import_without_torch():
    import subprocess
    import sys

    code = ("import sys; import pano360.defaults, pano360.validation, pano360.io.paths, pano360.io.images, "
            "pano360.io.sidecar, pano360.cli.convert, pano360.cli.view, pano360.cli.info; "
            "print('torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert result.stdout.strip() == "False", result.stderr


def test_tiny_perceptual_net_is_lpips_shaped_and_deterministic():
    import torch

    from pano360.nets.lpips import PERCEPTUAL_NETS, TinyPerceptual, build_perceptual_net

    net = build_perceptual_net("tiny-random")
    assert isinstance(net, TinyPerceptual) and "tiny-random" in PERCEPTUAL_NETS
    x = torch.rand(3, 3, 24, 40) * 2 - 1
    y = torch.rand(1, 3, 24, 40) * 2 - 1
    d = net(x, y)
    assert d.shape == (3,) and d.dtype == torch.float32 and (d > 0).all()
    assert torch.equal(net(x, x), torch.zeros(3))
    assert torch.allclose(net.distance(net.features(x), net.features(y)), d)
    assert torch.equal(TinyPerceptual()(x, y), d)  # same weights in every instance
    x.requires_grad_(True)
    net(x, y).sum().backward()
    assert x.grad.abs().sum() > 0 and not any(p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="choose one of"):
        build_perceptual_net("vgg19")
