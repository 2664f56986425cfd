"""The trainer end to end on a tiny model: it overfits, its LoRA loads with --lora (scale 0 = the base
model exactly), resume is exact, caching changes nothing, and bad arguments fail before any model."""

import json

import pytest
import torch
from safetensors.torch import load_file
from support.panoramas import write_panoramas

from pano360.cli.main import main
from pano360.training import TrainingConfig, train

TINY = {"model": "tiny", "resolution": 32, "progress": False, "checkpoint_every": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("panos")
    write_panoramas(folder, 3, height=32)
    return folder


@pytest.fixture(scope="module")
def overfit(data, tmp_path_factory, single_torch_thread):
    """2 panoramas, LoRA on attention and convolutions, 80 steps of batch 2 (attention-only LoRA on a
    random tiny UNet cannot halve the loss: its frozen random convolutions leave it too little capacity)."""
    folder = tmp_path_factory.mktemp("two")
    write_panoramas(folder, 2, height=32)
    output = tmp_path_factory.mktemp("overfit") / "lora"
    config = TrainingConfig(data=str(folder), output=str(output), steps=80, batch_size=2, learning_rate=2e-2,
                            caption_dropout=0.0, adapter_options={"rank": 4, "lora_targets": "q,k,v,o,conv"}, **TINY)
    return train(config)


def _adapter_weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


def test_loss_falls_by_half_when_overfitting(overfit):
    losses = overfit.losses
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    log = [json.loads(line) for line in (overfit.output / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 81))
    assert {"loss", "lr", "grad_norm", "loss_smoothed"} <= set(log[0])


def test_output_folder_is_an_adapter_with_card_and_report(overfit):
    out = overfit.output
    for name in ("adapter_config.json", "adapter_model.safetensors", "pytorch_lora_weights.safetensors", "README.md",
                 "training_config.json", "report.html"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "base_model: tiny" in card and "optimizer steps: 80" in card and "licence of the data: unknown" in card
    assert "<svg" in (out / "report.html").read_text()
    from pano360.adapters import load_adapter

    assert load_adapter(out).config["rank"] == 4


def test_trained_lora_changes_the_panorama_and_scale_zero_is_the_base_model(overfit):
    from pano360 import PanoramaGenerator

    kwargs = {"height": 32, "width": 64, "num_inference_steps": 3, "seed": 1, "output_type": "np", "progress": False}
    base = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32")("panorama number 0", **kwargs)
    tuned = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32", loras=[str(overfit.output)])
    with_lora = tuned("panorama number 0", **kwargs)
    tuned.set_lora_scales(0.0)
    at_zero = tuned("panorama number 0", **kwargs)
    assert abs(with_lora.images - base.images).max() > 1e-2
    assert (at_zero.images == base.images).all()


def _resume_config(data, output, steps, **extra):
    return TrainingConfig(data=str(data), output=str(output), steps=steps, learning_rate=1e-3,
                          lr_scheduler="constant_with_warmup", lr_warmup_steps=4,
                          checkpoints_total_limit=2, **{**TINY, "checkpoint_every": 5}, **extra)


def test_resume_continues_exactly(data, tmp_path, single_torch_thread):
    straight = train(_resume_config(data, tmp_path / "straight", 12))
    train(_resume_config(data, tmp_path / "split", 5))
    resumed = train(_resume_config(data, tmp_path / "split", 12, resume="latest"))
    assert resumed.steps == 12
    a, b = _adapter_weights(straight.output), _adapter_weights(resumed.output)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert any(b[k].abs().max() > 0 for k in b if "up" in k)  # it did train
    checkpoints = sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-000005", "checkpoint-000010"]  # last 2 kept
    log = [json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert log == list(range(1, 13))


def test_cached_and_uncached_runs_give_the_same_losses(data, tmp_path, single_torch_thread):
    cached = train(TrainingConfig(data=str(data), output=str(tmp_path / "a"), steps=3, **TINY))
    uncached = train(TrainingConfig(data=str(data), output=str(tmp_path / "b"), steps=3, cache=False, **TINY))
    assert cached.losses == pytest.approx(uncached.losses, rel=1e-4, abs=1e-5)


def test_validation_panoramas_and_report_leave_training_unchanged(data, tmp_path, single_torch_thread):
    from pano360.io import read_panorama_metadata

    out = tmp_path / "v"
    train(TrainingConfig(data=str(data), output=str(out), steps=4, validate_every=2, validation_steps=2,
                         validation_prompts=["a beach"], learning_rate=1e-3, **TINY))
    plain = train(TrainingConfig(data=str(data), output=str(tmp_path / "p"), steps=4, learning_rate=1e-3, **TINY))
    for step in ("000002", "000004"):
        image = out / "validation" / f"step-{step}" / "00.png"
        assert read_panorama_metadata(image)["ProjectionType"] == "equirectangular"
    assert "data:image/jpeg;base64," in (out / "report.html").read_text()
    a, b = _adapter_weights(out), _adapter_weights(plain.output)
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


@pytest.mark.parametrize("extra, message", [
    (["--steps", "0"], "--steps must be at least 1"),
    (["--batch-size", "9"], "--batch-size 9 is larger than the 3 panoramas"),
    (["--lora-targets", "q,x"], "LoRA targets must be"),
    (["--resolution", "30"], "multiple of 8"),
    (["--validate-every", "5"], "needs at least one --validation-prompt"),
    (["--report-to", "wandb"], "needs the wandb package"),
])
def test_bad_arguments_fail_before_any_model_loads(data, tmp_path, capsys, monkeypatch, extra, message):
    import importlib.util

    if "wandb" in extra and importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    from pano360.backbones import loading

    monkeypatch.setattr(loading, "load_backbone", lambda *a, **k: pytest.fail("a model was loaded"))
    code = main(["train", str(data), "--model", "tiny", "-o", str(tmp_path / "out"), "--quiet", *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_data_and_output_problems_fail_before_any_model_loads(data, tmp_path, capsys, monkeypatch):
    from pano360.backbones import loading

    monkeypatch.setattr(loading, "load_backbone", lambda *a, **k: pytest.fail("a model was loaded"))
    (tmp_path / "empty").mkdir()
    assert main(["train", str(tmp_path / "empty"), "--model", "tiny", "-o", str(tmp_path / "o"), "--quiet"]) == 2
    assert "no panoramas found" in capsys.readouterr().err
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("work")
    assert main(["train", str(data), "--model", "tiny", "-o", str(tmp_path / "used"), "--quiet"]) == 2
    assert "is not empty; pass --resume latest" in capsys.readouterr().err
    (tmp_path / "afile").write_text("not a folder")
    assert main(["train", str(data), "--model", "tiny", "-o", str(tmp_path / "afile" / "out"), "--quiet"]) == 2
    assert "is a file" in capsys.readouterr().err
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        import os

        if os.access(locked, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        assert main(["train", str(data), "--model", "tiny", "-o", str(locked / "out"), "--quiet"]) == 2
        assert "cannot write" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_accumulation_and_checkpointing_do_not_change_the_update(data, tmp_path, single_torch_thread):
    def run(name, **extra):
        config = TrainingConfig(data=str(data), output=str(tmp_path / name), steps=3, learning_rate=1e-3, **TINY,
                                **extra)
        return _adapter_weights(train(config).output)

    batch_two = run("b2", batch_size=2)
    accumulated = run("acc", batch_size=1, gradient_accumulation_steps=2)
    checkpointed = run("ckpt", batch_size=2, gradient_checkpointing=True)
    for other in (accumulated, checkpointed):
        assert max((batch_two[k] - other[k]).abs().max().item() for k in batch_two) <= 1e-6


def test_bf16_mixed_precision_and_min_snr_run(data, tmp_path, single_torch_thread):
    result = train(TrainingConfig(data=str(data), output=str(tmp_path / "bf16"), steps=2, mixed_precision="bf16",
                                  snr_gamma=5.0, **TINY))
    assert all(torch.isfinite(torch.tensor(result.losses)))
    weights = _adapter_weights(result.output)
    assert all(w.dtype == torch.float32 for w in weights.values())  # the adapter trains in fp32


def test_adapter_door_and_lora_door_give_the_same_panorama(overfit):
    from pano360 import PanoramaGenerator

    kwargs = {"height": 32, "width": 64, "num_inference_steps": 3, "seed": 2, "output_type": "np", "progress": False}
    via_lora = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32", loras=[str(overfit.output)])
    via_adapter = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32",
                                                    adapter=str(overfit.output))
    assert abs(via_lora("a room", **kwargs).images - via_adapter("a room", **kwargs).images).max() <= 1e-4


@pytest.mark.parametrize("model", ["tiny-sd2", "tiny-sdxl"])
def test_v_prediction_and_sdxl_models_train(data, tmp_path, single_torch_thread, model):
    result = train(TrainingConfig(data=str(data), output=str(tmp_path / model), steps=2,
                                  **{**TINY, "model": model}))
    card = (result.output / "README.md").read_text()
    assert all(torch.isfinite(torch.tensor(result.losses)))
    assert ("(sd2, v_prediction)" in card) == (model == "tiny-sd2") and ("(sdxl, epsilon)" in card) == (model == "tiny-sdxl")
