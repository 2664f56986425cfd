"""Issue 24 acceptance: no code runs from a file, no broken file reported as done, no NaN passed on,
inputs read faithfully, and the UX defects of round 2.

One test (or parametrised family) per class of fault; full disks are simulated by making the write
itself fail with ENOSPC, as a full file system does.
"""

from __future__ import annotations

import ast
import errno
import json
import os
from pathlib import Path
from shutil import _ntuple_diskusage as shutil_usage

import numpy as np
import pytest
import torch
from PIL import Image

from pano360.cli.main import main
from pano360.errors import Pano360Error

SRC = Path(__file__).resolve().parents[1] / "src" / "pano360"


def _run_cli(argv, capsys):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, (captured.err + captured.out).strip()


def _one_line_error(code, text, needle):
    assert code not in (0, None), text
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if "error" in line.lower() or needle in line]
    assert any(needle in line for line in lines), text


# --------------------------------------------------------------------------------------------------
# 1. No code from files


class _Planted:
    """Unpickling this runs ``open(marker, 'w')``: proof of code execution if the marker appears."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(path: Path, marker: Path, legacy: bool = False) -> Path:
    payload = {"state_dict": {"weight": _Planted(str(marker))}, "step": 1}
    if legacy:  # the pre-1.6 (non-zip) format, which cannot be memory-mapped
        torch.save(payload, path, _use_new_zipfile_serialization=False)
    else:
        torch.save(payload, path)
    return path


def _torch_load_sites() -> set[tuple[str, str]]:
    """(module path, enclosing function) of every ``torch.load``/``pickle.load(s)`` call in the package."""
    sites = set()
    for file in SRC.rglob("*.py"):
        tree = ast.parse(file.read_text(encoding="utf-8"))
        parents = {}
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                parents[child] = node
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = node.func.value
            name = f"{owner.id}.{node.func.attr}" if isinstance(owner, ast.Name) else None
            if name not in ("torch.load", "pickle.load", "pickle.loads", "pickle.Unpickler"):
                continue
            assert name == "torch.load", f"{file}: {name} is never safe on a shared file"
            keywords = {k.arg: k.value for k in node.keywords}
            flag = keywords.get("weights_only")
            assert isinstance(flag, ast.Constant) and flag.value is True, f"{file}:{node.lineno} without weights_only=True"
            scope = parents.get(node)
            while scope is not None and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
                scope = parents.get(scope)
            sites.add((file.relative_to(SRC).as_posix(), scope.name if scope else "<module>"))
    return sites


def _read_embedding(path):
    from pano360.backbones.adapters import _read_embedding_file

    return _read_embedding_file(Path(path))


def _read_keys(path):
    from pano360.backbones.loading import read_checkpoint_keys

    return read_checkpoint_keys(path)


def _in_channels(path):
    from pano360.backbones.loading import _single_file_in_channels

    return _single_file_in_channels(Path(path))


def _weights_checkpoint(path):
    from pano360.nets.weights import load_checkpoint

    return load_checkpoint(path)


def _unipano(path):
    from pano360.adapters.unipano import UniPanoAdapter

    return UniPanoAdapter.from_reference_checkpoint(path)


def _mvdiffusion(path):
    from pano360.adapters.mvdiffusion.checkpoint import read_state

    return read_state(path)


def _legacy_state(path):
    from pano360.io.safestate import load_legacy_pickle

    return load_legacy_pickle(path)


# every reader of a pickle in the package, keyed by where its torch.load is
READERS = {
    ("backbones/adapters.py", "_read_embedding_file"): _read_embedding,
    ("backbones/loading.py", "read_checkpoint_keys"): _read_keys,
    ("backbones/loading.py", "_single_file_in_channels"): _in_channels,
    ("nets/weights.py", "load_checkpoint"): _weights_checkpoint,
    ("adapters/unipano.py", "from_reference_checkpoint"): _unipano,
    ("adapters/mvdiffusion/checkpoint.py", "read_state"): _mvdiffusion,
    ("io/safestate.py", "load_legacy_pickle"): _legacy_state,
}


def test_every_torch_load_is_weights_only_and_has_a_planted_pickle_test():
    assert _torch_load_sites() == set(READERS), "a new torch.load needs an entry in READERS (and a planted pickle)"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("site", sorted(READERS), ids=lambda s: f"{s[0]}:{s[1]}")
def test_a_planted_pickle_never_runs(site, legacy, tmp_path):
    marker = tmp_path / "pwned"
    path = _plant(tmp_path / "evil.ckpt", marker, legacy)
    try:
        READERS[site](path)
    except Exception:  # noqa: BLE001, S110 (refusing is the point; only "no code ran" is checked here)
        pass
    assert not marker.exists(), f"{site} ran code from a pickle"


def _tiny_adapter():
    from pano360.adapters.lora import LoRAAdapter
    from pano360.backbones.tiny import tiny_unet

    unet = tiny_unet("sd2")
    return LoRAAdapter.for_training(unet, {"rank": 2}, seed=0)


def test_resume_refuses_a_planted_training_state_with_one_line(tmp_path):
    from pano360.training import checkpoints as ckpt

    adapter = _tiny_adapter()
    folder = ckpt.save_checkpoint(tmp_path, 5, adapter, {"step": 5, "samples_seen": 5, "optimizer": {},
                                                         "lr_scheduler": {}}, {}, None, True, 0, lambda: None)
    assert (folder / "training_state.safetensors").is_file() and (folder / "rng_state_0.safetensors").is_file()
    assert not list(folder.glob("*.pt"))
    # a checkpoint folder from elsewhere, in the old layout, with code in its state files
    (folder / "training_state.safetensors").unlink()
    (folder / "rng_state_0.safetensors").unlink()
    marker = tmp_path / "pwned"
    _plant(folder / "training_state.pt", marker)
    with pytest.raises(Pano360Error, match="refusing .*training_state.pt.*may run code") as raised:
        ckpt.load_checkpoint(folder, adapter, 0)
    assert "\n" not in str(raised.value)
    assert not marker.exists()


def test_old_plain_checkpoints_still_resume(tmp_path):
    """A pre-issue-24 checkpoint (pickled optimizer state and numpy RNG state) loads weights-only."""
    from pano360.training import checkpoints as ckpt

    adapter = _tiny_adapter()
    folder = ckpt.save_checkpoint(tmp_path, 5, adapter, {}, {}, None, True, 0, lambda: None)
    optimizer = torch.optim.AdamW(adapter.trainable_parameters(), lr=1e-3)
    sum(p.sum() for p in adapter.trainable_parameters()).backward()
    optimizer.step()
    state = {"step": 5, "samples_seen": 10, "loss_ema": 0.5, "optimizer": optimizer.state_dict(),
             "lr_scheduler": {"last_epoch": 5}, "scaler": None}
    (folder / "training_state.safetensors").unlink()
    (folder / "rng_state_0.safetensors").unlink()
    torch.save(state, folder / "training_state.pt")
    np.random.seed(3)
    torch.save(ckpt.rng_state(), folder / "rng_state_0.pt")
    expected = np.random.rand()
    loaded = ckpt.load_checkpoint(folder, adapter, 0)
    assert loaded["step"] == 5 and loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert np.random.rand() == expected


def test_state_files_round_trip_exactly_and_refuse_damage(tmp_path):
    import random

    from pano360.io.safestate import dumps_state, load_state_file, loads_state
    from pano360.training.checkpoints import rng_state

    state = {"rng": rng_state(), 3: (1.5, float("inf"), None, "x", [True, 2]), "t": torch.arange(4.0)}
    back = loads_state(dumps_state(state))
    assert back[3] == state[3] and torch.equal(back["t"], state["t"])
    assert back["rng"]["python"] == random.getstate()
    assert (back["rng"]["numpy"][1] == state["rng"]["numpy"][1]).all()
    data = dumps_state(state)
    for bad in (b"", data[: len(data) // 2], b"\x80\x02}q\x00." * 4):
        (tmp_path / "s").write_bytes(bad)
        with pytest.raises(Pano360Error, match="truncated or not a pano360 training state"):
            load_state_file(tmp_path / "s")


def test_adapter_folder_without_weights_is_one_line(tmp_path):
    from pano360.adapters import load_adapter

    adapter = _tiny_adapter()
    adapter.save(tmp_path / "a", {})
    (tmp_path / "a" / "adapter_model.safetensors").unlink()
    with pytest.raises(Pano360Error, match="has no adapter_model.safetensors"):
        load_adapter(tmp_path / "a")
    adapter.save(tmp_path / "b", {})
    weights = tmp_path / "b" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(Pano360Error, match="truncated or not a safetensors file"):
        load_adapter(tmp_path / "b")


# --------------------------------------------------------------------------------------------------
# 2. A result is reported only when it is complete (full disks simulated)


@pytest.fixture
def full_disk(monkeypatch):
    """Every write through ``os.write``/file objects opened for writing fails with ENOSPC after
    ``budget`` bytes, as on a full file system."""
    import builtins
    import io

    real_fdopen = os.fdopen

    class Full(io.RawIOBase):
        def __init__(self, handle):
            self.handle = handle

        def writable(self):
            return True

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def fileno(self):
            return self.handle.fileno()

        def close(self):
            self.handle.close()
            super().close()

    def fdopen(fd, mode="r", *args, **kwargs):
        handle = real_fdopen(fd, mode, *args, **kwargs)
        return Full(handle) if "w" in mode else handle

    monkeypatch.setattr(os, "fdopen", fdopen)
    return builtins


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def test_full_disk_atomic_write_is_one_line_and_leaves_nothing(tmp_path, full_disk):
    from pano360.io.atomic import DiskFullError, atomic_write_bytes

    with pytest.raises(DiskFullError) as raised:
        atomic_write_bytes(tmp_path / "x.png", b"0" * 300_000)
    message = str(raised.value)
    assert "\n" not in message and str(tmp_path / "x.png") in message
    assert "needs 0.3 MB" in message and "free" in message
    assert _leftovers(tmp_path) == []


def test_full_disk_convert_cubemap_and_manifest(tmp_path, full_disk, capsys):
    Image.effect_noise((64, 32), 40).convert("RGB").save(tmp_path / "in.png")  # written before the disk filled
    code, text = _run_cli(["convert", tmp_path / "in.png", "--to", "cubemap", "-o", tmp_path / "out"], capsys)
    _one_line_error(code, text, "no space left on device")
    assert not (tmp_path / "out").exists() or _leftovers(tmp_path / "out") == []
    from pano360.batch.manifest import merge_manifest
    from pano360.io.atomic import DiskFullError

    with pytest.raises(DiskFullError, match="manifest"):
        merge_manifest(tmp_path / "batch", [{"job": "a", "index": 0, "prompt": "p", "seed": 1}])
    assert not (tmp_path / "batch").exists() or _leftovers(tmp_path / "batch") == []


def test_full_disk_checkpoint_keeps_no_staging_folder(tmp_path, full_disk):
    from pano360.io.atomic import DiskFullError
    from pano360.training import checkpoints as ckpt

    adapter = _tiny_adapter()
    with pytest.raises(DiskFullError):
        ckpt.save_checkpoint(tmp_path, 5, adapter, {}, {}, None, True, 0, lambda: None)
    assert _leftovers(tmp_path) == [] and not list((tmp_path / "checkpoints").glob("*"))


def test_full_disk_report_is_one_line(tmp_path, full_disk):
    from pano360.io.atomic import DiskFullError
    from pano360.training.report import write_report

    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5, "lr": 1e-4}) + "\n")
    with pytest.raises(DiskFullError, match="report.html"):
        write_report(tmp_path)
    assert _leftovers(tmp_path) == ["log.jsonl"]


def _fake_ffmpeg(truncate_to: int | None, fail: str | None = None):
    """imageio-ffmpeg's ``write_frames`` as on a full disk: the real ffmpeg writes, then the file is cut
    (ffmpeg could not write its index), or ffmpeg dies with its "No space left" error."""
    import imageio_ffmpeg

    real = imageio_ffmpeg.write_frames

    def cutting(path, *args, **kwargs):
        inner = real(path, *args, **kwargs)

        class Cut:
            def send(self, value):
                if fail is not None and value is not None:
                    raise OSError(f"[Errno 32] Broken pipe\n\nFFMPEG STDERR OUTPUT:\n{fail}")
                return inner.send(value)

            def close(self):
                inner.close()
                if truncate_to is not None:
                    with open(path, "r+b") as handle:
                        handle.truncate(truncate_to)

        return Cut()

    return cutting


@pytest.mark.parametrize("fault", ["truncated", "ffmpeg-error"])
def test_video_on_a_full_disk_is_not_reported_as_done(tmp_path, monkeypatch, capsys, fault):
    pytest.importorskip("imageio_ffmpeg")
    import imageio_ffmpeg

    from pano360.io import video

    if not video.mp4_available():
        pytest.skip("no ffmpeg binary")
    Image.effect_noise((64, 32), 40).convert("RGB").save(tmp_path / "in.png")
    fake = _fake_ffmpeg(600, None) if fault == "truncated" else _fake_ffmpeg(None, "No space left on device")
    monkeypatch.setattr(imageio_ffmpeg, "write_frames", fake)
    monkeypatch.setattr(video.shutil, "disk_usage", lambda p: shutil_usage(10**9, 10**9 - 1000, 1000))
    argv = ["convert", tmp_path / "in.png", "--to", "video", "--frames", "4", "--video-size", "32x64",
            "--video-format", "mp4", "-o", tmp_path]
    code, text = _run_cli(argv, capsys)
    _one_line_error(code, text, "no space left on device")
    assert str(tmp_path / "in_flyaround.mp4") in text
    assert _leftovers(tmp_path) == ["in.png"]


def test_mp4_check_finds_cut_files(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    from pano360.io import video

    if not video.mp4_available():
        pytest.skip("no ffmpeg binary")
    pano = torch.rand(1, 3, 32, 64)
    path = video.write_flyaround(pano, tmp_path / "ok.mp4", frames=4, out_hw=(32, 64))
    assert video.mp4_problem(path) is None
    data = path.read_bytes()
    for cut in (len(data) - 10, len(data) // 2, 5):
        (tmp_path / "cut.mp4").write_bytes(data[:cut])
        assert video.mp4_problem(tmp_path / "cut.mp4") is not None


def test_generate_rescued_to_another_folder_exits_non_zero(tmp_path, monkeypatch, capsys):
    """The image was not written where asked: it is saved elsewhere, and the command says so and fails."""
    from pano360.io import atomic

    monkeypatch.setenv("PANO360_FALLBACK_DIR", str(tmp_path / "rescue"))
    real = atomic._atomic_write

    def fail_in_out(path, data, overwrite):
        if Path(path).parent == tmp_path / "out":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data, overwrite)

    monkeypatch.setattr(atomic, "_atomic_write", fail_in_out)
    code, text = _run_cli(["generate", "a harbour", "--model", "tiny", "--height", "32", "--width", "64",
                           "--steps", "2", "--quiet", "-o", tmp_path / "out" / "p.png"], capsys)
    assert code == 1, text
    assert "saved to" in text and str(tmp_path / "rescue" / "p.png") in text
    assert (tmp_path / "rescue" / "p.png").is_file() and not (tmp_path / "out" / "p.png").exists()


# --------------------------------------------------------------------------------------------------
# 3. Numbers checked where they enter and where they leave


@pytest.fixture(scope="module")
def panoramas(tmp_path_factory):
    from support.panoramas import write_panoramas

    folder = tmp_path_factory.mktemp("panos")
    write_panoramas(folder, 2, height=32)
    return folder


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(panoramas, tmp_path, monkeypatch,
                                                                            single_torch_thread):
    from pano360.numerics import NonFiniteError
    from pano360.training import TrainingConfig, train
    from pano360.training import trainer as trainer_module

    real, calls = trainer_module.training_loss, []

    def exploding(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(trainer_module, "training_loss", exploding)
    output = tmp_path / "run"
    config = TrainingConfig(data=str(panoramas), output=str(output), model="tiny", resolution=32, progress=False,
                            steps=4, checkpoint_every=2)
    with pytest.raises(NonFiniteError) as raised:
        train(config)
    message = str(raised.value)
    assert "\n" not in message and "loss became non-finite at step 3" in message
    assert "checkpoint-000002 is kept" in message and "--learning-rate" in message
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["checkpoint-000002"]
    assert not (output / "adapter_model.safetensors").exists()  # no final adapter of bad weights
    from safetensors.torch import load_file

    kept = load_file(str(output / "checkpoints" / "checkpoint-000002" / "adapter_model.safetensors"))
    assert all(torch.isfinite(v).all() for v in kept.values())


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    from pano360.numerics import NonFiniteError
    from pano360.training import checkpoints as ckpt

    adapter = _tiny_adapter()
    with torch.no_grad():
        adapter.trainable_parameters()[0].fill_(float("inf"))
    with pytest.raises(NonFiniteError, match="not finite at step 7; the checkpoint is not saved"):
        ckpt.save_checkpoint(tmp_path, 7, adapter, {}, {}, None, True, 0, lambda: None)
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").iterdir())


def test_non_finite_generation_stops_with_the_likely_cause(tmp_path, capsys):
    from pano360 import PanoramaGenerator
    from pano360.numerics import NonFiniteError

    generator = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32")
    generator.backbone.loras.append({"source": "damaged.safetensors", "scale": 40.0, "adapter": "x"})
    with torch.no_grad():
        generator.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(NonFiniteError) as raised:
        generator("a harbour", height=32, width=64, num_inference_steps=2, seed=0, progress=False)
    message = str(raised.value)
    assert "latents became non-finite" in message and "nothing is written" in message
    assert "LoRA damaged.safetensors at scale 40.0" in message and "\n" not in message


@pytest.mark.parametrize("argv", [
    ["generate", "p", "--model", "tiny", "--lora", "x.safetensors", "--lora-scale", "nan"],
    ["generate", "p", "--model", "tiny", "--controlnet-scale", "inf"],
    ["train", "--data", ".", "-o", "out", "--model", "tiny", "--learning-rate", "inf"],
    ["train", "--data", ".", "-o", "out", "--model", "tiny", "--noise-offset", "nan"],
    ["outpaint", "photo.png", "--yaw=-inf"],
    ["upscale", "pano.png", "--strength", "nan"],
    ["convert", "pano.png", "--to", "video", "--video-fov", "nan"],
])
def test_options_that_cannot_be_finite_are_refused_up_front(argv, capsys):
    code, text = _run_cli(argv, capsys)
    _one_line_error(code, text, "must be a finite number")


def test_training_numbers_and_sizes_are_checked_before_work():
    from pano360.errors import InvalidInputError
    from pano360.training import TrainingConfig

    for bad, message in (({"resolution": 100000}, "--resolution must be at most 4096"),
                         ({"learning_rate": float("inf")}, "--learning-rate must be a finite number"),
                         ({"adam_beta1": 1.0}, "--adam-beta1 and --adam-beta2 must be in [0, 1)"),
                         ({"steps": 10**9}, "--steps must be at most"),
                         ({"validation_steps": 5000}, "--validation-steps must be at most 1000")):
        with pytest.raises(InvalidInputError, match=message.replace("[", r"\[").replace(")", r"\)")):
            TrainingConfig(data=".", output="o", **bad).check()


@pytest.mark.parametrize("spacing, offset, limit", [("leading", 1, 999), ("leading", 0, 1000), ("trailing", 1, 1000)])
def test_steps_are_bounded_by_what_the_scheduler_can_run(spacing, offset, limit):
    from diffusers import DDIMScheduler

    from pano360.errors import InvalidInputError
    from pano360.validation import check_steps_for_scheduler, max_inference_steps

    config = {"num_train_timesteps": 1000, "timestep_spacing": spacing, "steps_offset": offset}
    assert max_inference_steps(config) == limit
    scheduler = DDIMScheduler(**config)
    scheduler.set_timesteps(limit)
    assert int(scheduler.timesteps.max()) <= 999  # the largest allowed count indexes inside the schedule
    check_steps_for_scheduler(limit, config)
    with pytest.raises(InvalidInputError, match=f"use --steps <= {limit}"):
        check_steps_for_scheduler(limit + 1, config)


def test_generate_steps_1000_is_refused_before_the_model(capsys, monkeypatch):
    import pano360.generator

    monkeypatch.setattr(pano360.generator.PanoramaGenerator, "from_pretrained",
                        classmethod(lambda cls, *a, **k: pytest.fail("model loaded")))
    code, text = _run_cli(["generate", "p", "--model", "tiny", "--steps", "1000"], capsys)
    _one_line_error(code, text, "use --steps <= 999")


# --------------------------------------------------------------------------------------------------
# 4. Inputs read faithfully


def _gradient(width=64, height=32):
    return np.tile(np.linspace(0.0, 1.0, width), (height, 1))


def _mode_images(folder: Path) -> dict[str, tuple[Path, np.ndarray]]:
    """One file per Pillow mode, each with the 8-bit grey values it must read as."""
    g = _gradient()
    expected = np.round(g * 255).astype(np.uint8)
    files = {}
    Image.fromarray(np.round(g * 65535).astype(np.uint16)).save(folder / "i16.png")          # I;16
    files["I;16"] = (folder / "i16.png", expected)
    Image.fromarray(expected).convert("P").save(folder / "p.png")
    files["P"] = (folder / "p.png", expected)
    Image.fromarray(expected).convert("LA").save(folder / "la.png")
    files["LA"] = (folder / "la.png", expected)
    Image.fromarray(expected).convert("RGB").convert("CMYK").save(folder / "cmyk.jpg", quality=100)
    files["CMYK"] = (folder / "cmyk.jpg", expected)
    Image.fromarray(expected).convert("1").save(folder / "bilevel.png")
    dithered = np.asarray(Image.fromarray(expected).convert("1"), dtype=np.uint8) * 255
    files["1"] = (folder / "bilevel.png", dithered)
    return files


def test_high_depth_and_other_modes_are_read_faithfully(tmp_path):
    from pano360.io.export import load_panorama
    from pano360.io.images import read_image, to_8bit

    for mode, (path, expected) in _mode_images(tmp_path).items():
        pixels = load_panorama(path)[0, :3].mean(dim=0).numpy() * 255
        tolerance = 4 if mode == "CMYK" else 1
        assert np.abs(pixels - expected).max() <= tolerance, (mode, np.abs(pixels - expected).max())
        assert read_image(path).mode in ("L", "LA", "RGB", "RGBA")
    for image in (Image.fromarray(_gradient().astype(np.float32), mode="F"),            # floats in [0, 1]
                  Image.fromarray(np.round(_gradient() * 65535).astype(np.int32)),       # I holding 16-bit values
                  Image.fromarray(np.round(_gradient() * 255).astype(np.int32))):        # I holding 8-bit values
        assert np.abs(np.asarray(to_8bit(image), dtype=float) - np.round(_gradient() * 255)).max() <= 1, image.mode


def test_training_data_reads_16_bit_panoramas_faithfully(tmp_path):
    from pano360.training.datasets import open_dataset

    (tmp_path / "data").mkdir()
    Image.fromarray(np.round(_gradient() * 65535).astype(np.uint16)).save(tmp_path / "data" / "a.png")
    (tmp_path / "data" / "a.txt").write_text("a gradient")
    rgb = open_dataset(str(tmp_path / "data")).load_rgb(0)
    assert abs(np.asarray(rgb, dtype=float)[..., 0] - np.round(_gradient() * 255)).max() <= 1


@pytest.mark.parametrize("content, message", [
    ('prompt,seed\n"a red, room,1\nb,2\n', "jobs.csv:2: not valid CSV"),
    ("prompt,seed\na,1\nb,2,3\n", "jobs.csv:3: 3 cells for 2 columns"),
    ('prompt,seed\na "quoted" word,1\n"x"y,2\n', "jobs.csv:3: not valid CSV"),
])
def test_csv_jobs_are_parsed_strictly_with_the_line_number(tmp_path, content, message):
    from pano360.batch.jobs import load_jobs
    from pano360.errors import InvalidInputError

    (tmp_path / "jobs.csv").write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        load_jobs(tmp_path / "jobs.csv")


def test_csv_keeps_quoted_commas_and_newlines_and_jsonl_refuses_nan(tmp_path):
    from pano360.batch.jobs import load_jobs, read_job_lines

    (tmp_path / "jobs.csv").write_text('prompt,seed\n"a red, wide\nroom",1\nb,nan\n')
    assert read_job_lines(tmp_path / "jobs.csv") == [("jobs.csv:2", {"prompt": "a red, wide\nroom", "seed": 1}),
                                                     ("jobs.csv:4", {"prompt": "b", "seed": "nan"})]
    (tmp_path / "jobs.jsonl").write_text('{"prompt": "a", "guidance": NaN}\n{"prompt": "b", "seed": 2}\n')
    jobs, errors = load_jobs(tmp_path / "jobs.jsonl")
    assert [job.prompt for job in jobs] == ["b"]
    assert errors[0].source == "jobs.jsonl:1" and "NaN is not a number JSON allows" in errors[0].reason


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_binary_jobs_file_is_one_line(tmp_path, suffix):
    from pano360.batch.jobs import load_jobs
    from pano360.errors import InvalidInputError

    path = tmp_path / f"jobs{suffix}"
    Image.new("RGB", (8, 8)).save(path, format="PNG")
    with pytest.raises(InvalidInputError, match="is a binary file, not text"):
        load_jobs(path)


def test_view_prompt_count_must_match_the_views_and_binary_files_are_refused(tmp_path):
    from pano360.errors import InvalidInputError
    from pano360.methods import get_method

    path = tmp_path / "views.txt"
    path.write_text("\n".join(f"view {i}" for i in range(8)) + "\n")
    with pytest.raises(InvalidInputError, match="8 prompt lines; give one line per view \\(4\\)"):
        get_method("mvdiffusion", view_prompts=str(path), num_views=4).prompt_units("x")
    Image.new("RGB", (8, 8)).save(path, format="PNG")
    with pytest.raises(InvalidInputError, match="is a binary file, not text"):
        get_method("mvdiffusion", view_prompts=str(path)).prompt_units("x")
    path.write_bytes(b"caf\xe9 view\n" * 8)
    with pytest.raises(InvalidInputError, match="not UTF-8 text \\(line 1\\)"):
        get_method("mvdiffusion", view_prompts=str(path)).prompt_units("x")


# --------------------------------------------------------------------------------------------------
# 6. UX defects


def test_sizes_are_height_by_width_in_messages():
    from pano360.errors import InvalidInputError
    from pano360.methods import GenerationRequest, get_method

    with pytest.raises(InvalidInputError, match=r"got 512x768\b"):
        get_method("mvdiffusion").check(GenerationRequest(height=512, width=768, num_inference_steps=2,
                                                          guidance_scale=1.0, batch_size=1))
    src = "\n".join(p.read_text(encoding="utf-8") for p in SRC.rglob("*.py") if "web" not in p.parts)
    for widthfirst in ("{width}x{height}", "{w}x{h}", "{out_w}x{out_h}", "{result.shape[-1]}x{result.shape[-2]}"):
        assert widthfirst not in src, widthfirst


def test_generation_progress_bar_names_height_by_width(capsys):
    from pano360 import PanoramaGenerator

    generator = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32")
    generator("a harbour", height=32, width=64, num_inference_steps=1, seed=0, progress=True)
    assert "32x64" in capsys.readouterr().err


def test_upscale_shows_progress_when_stderr_is_not_a_terminal(tmp_path, capsys, single_torch_thread):
    Image.effect_noise((64, 32), 40).convert("RGB").save(tmp_path / "in.png")
    code, text = _run_cli(["upscale", tmp_path / "in.png", "--scale", "2", "--model", "tiny", "--steps", "2",
                           "--tile", "8", "-o", tmp_path / "big.png"], capsys)
    assert code == 0, text
    assert "upscale 64x128 refine (tiles)" in text and "100%" in text
    assert "(64x128 HxW)" in text


def test_sidecar_name_in_docs_and_help(capsys):
    readme = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "`cabin.png.json`" in readme and "forest.png.json" in readme and "`cabin.json`" not in readme
    code, text = _run_cli(["upscale", "--help"], capsys)
    assert code == 0 and "pano.png.json" in text and "pano.json " not in text


def test_sidecar_records_the_image_size(tmp_path):
    from pano360.io.sidecar import read_sidecar
    from pano360.output import PanoramaOutput

    band = PanoramaOutput(images=[Image.new("RGB", (64, 16))], latents=torch.zeros(1, 4, 4, 8),
                          parameters={"prompt": "p", "seeds": [3], "height": 32, "width": 64})
    path = band.save(tmp_path / "band.png")[0]
    record = read_sidecar(path)
    assert (record["image_height"], record["image_width"]) == (16, 64)
    assert (record["height"], record["width"]) == (32, 64)  # the canvas, what --from re-runs


def test_output_in_proc_says_the_folder_takes_no_files(capsys):
    code, text = _run_cli(["generate", "p", "--model", "tiny", "-o", "/proc/x.png"], capsys)
    _one_line_error(code, text, "does not accept new files")
    assert "no such file" not in text


def test_caption_does_not_load_blip2_when_every_caption_exists(tmp_path, capsys, monkeypatch):
    import pano360.captioning

    Image.effect_noise((64, 32), 40).convert("RGB").save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a cabin\n")
    monkeypatch.setattr(pano360.captioning, "load_captioner", lambda *a, **k: pytest.fail("BLIP-2 loaded"))
    code, text = _run_cli(["caption", tmp_path, "--offline"], capsys)
    assert code == 0, text
    assert "kept the existing captions of 1" in text


def test_preset_follows_steps_and_errors_name_the_flag():
    from pano360.errors import InvalidInputError
    from pano360.methods import GenerationRequest, get_method
    from pano360.presets import apply_preset

    _, options, settings = apply_preset("syncdiffusion-script", None, {}, {"num_inference_steps": 2})
    assert options["sync_threshold"] == 1 and settings["num_inference_steps"] == 2   # 10 of 50 -> 1 of 2 (20 %)
    _, options, _ = apply_preset("syncdiffusion-paper", None, {}, {"num_inference_steps": 2})
    assert options["sync_threshold"] == 2                                            # 50 of 50 -> every step
    _, options, _ = apply_preset("syncdiffusion-script", None, {"sync_threshold": 7}, {"num_inference_steps": 20})
    assert options["sync_threshold"] == 7                                            # the user's value wins
    _, options, _ = apply_preset("syncdiffusion-script", None, {}, {})
    assert options["sync_threshold"] == 10                                           # the paper's run unchanged
    with pytest.raises(InvalidInputError, match="--sync-threshold 5 .* use --sync-threshold <= 2"):
        get_method("syncdiffusion", sync_threshold=5).check(GenerationRequest(
            height=32, width=128, num_inference_steps=2, guidance_scale=1.0, batch_size=1))


def test_train_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom pano360.cli.main import main\ntry:\n    main(['train', '--help'])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'\n")
    env = dict(os.environ, PYTHONPATH=str(SRC.parent))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--lora-alpha" in result.stdout and "--unipano-experts" in result.stdout


def test_adapter_classes_keep_their_training_flags():
    from pano360.adapters import adapter_class
    from pano360.adapters.flags import ADAPTER_FLAGS, LORA_ATTENTIONS
    from pano360.adapters.lora import ATTENTIONS

    assert sorted(ATTENTIONS) == sorted(LORA_ATTENTIONS)
    for kind, flags in ADAPTER_FLAGS.items():
        cls = adapter_class(kind)
        assert cls.add_training_arguments.__func__ is flags.add_training_arguments.__func__
        assert cls.training_presets is flags.training_presets


def test_training_log_cut_by_a_crash_is_read_and_a_full_disk_is_one_line(tmp_path, full_disk):
    from pano360.io.atomic import DiskFullError
    from pano360.training import trainer as trainer_module

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')  # written before the disk filled
    assert [r["step"] for r in trainer_module.read_log(tmp_path)] == [1, 2]
    with pytest.raises(DiskFullError, match="log.jsonl"):
        trainer_module._truncate_log(log, 1)
    assert log.read_text().startswith('{"step": 1')  # the old log is intact, no temporary file left
    assert _leftovers(tmp_path) == ["log.jsonl"]
    log.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(Pano360Error, match="log.jsonl:2 is not a JSON record"):
        trainer_module.read_log(tmp_path)
