"""Flow-matching adapter training on the tiny transformers (FLUX.1, SD3): the loss falls, resume is exact,
the trained LoRA loads with --lora and with diffusers' load_lora_weights to the same image, DiT360's yaw
and cube losses have their defining properties, and flags a family does not take fail before training."""

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from support.panoramas import write_panoramas

from pano360.cli.main import main
from pano360.training import TrainingConfig, train

H = 64  # pixels: 8 x 16 latents, 4 x 8 tokens
TINY = {"resolution": H, "progress": False, "checkpoint_every": 0}

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    write_panoramas(folder, 2, height=H)
    return folder


def _weights(folder):
    return load_file(str(Path(folder) / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def trained(two, tmp_path_factory):
    """tiny FLUX and tiny SD3, 24 steps of batch 2 on two panoramas, LoRA r=8 on q/k/v/o."""
    results = {}
    for model in ("tiny-flux", "tiny-sd3"):
        output = tmp_path_factory.mktemp(model) / "lora"
        results[model] = train(TrainingConfig(data=str(two), output=str(output), model=model, steps=24, batch_size=2,
                                              learning_rate=1e-2, caption_dropout=0.0, adapter_options={"rank": 8},
                                              **TINY))
    return results


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3"])
def test_loss_falls_on_two_panoramas(trained, model):
    losses = trained[model].losses
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.9 * first, (first, last)
    card = (trained[model].output / "README.md").read_text()
    assert "flow_prediction" in card


def test_lora_targets_the_transformer_attention_in_the_diffusers_layout(trained):
    keys = load_file(str(trained["tiny-flux"].output / "pytorch_lora_weights.safetensors"))
    assert all(k.startswith("transformer.") for k in keys)
    assert any(".single_transformer_blocks." in k and ".attn.to_q." in k for k in keys)
    assert any(".transformer_blocks." in k and ".attn.to_out.0." in k for k in keys)
    assert not any("add_q_proj" in k or "to_add_out" in k for k in keys)  # image stream only, as DiT360


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3"])
def test_trained_lora_loads_with_lora_flag_and_load_lora_weights_to_the_same_image(trained, model):
    from pano360 import PanoramaGenerator
    from pano360.backbones.family_flux import pack_latents
    from pano360.backbones.tiny_dit import tiny_dit_pipeline

    out = trained[model].output
    latents = torch.randn(1, 16, H // 8, 2 * H // 8, generator=torch.Generator().manual_seed(4))
    packed = pack_latents(latents) if model == "tiny-flux" else latents
    kwargs = {"height": H, "width": 2 * H, "num_inference_steps": 3, "output_type": "pt"}
    reference_pipe = tiny_dit_pipeline(model)
    plain = reference_pipe("a room", latents=packed, **kwargs).images
    reference_pipe.load_lora_weights(str(out))
    reference = reference_pipe("a room", latents=packed, **kwargs).images
    generator = PanoramaGenerator.from_pretrained(model, device="cpu", torch_dtype="fp32", loras=[str(out)])
    ours = generator("a room", latents=latents, wrap=False, wrap_vae=False, progress=False, **kwargs).images
    assert (reference - ours).abs().max() <= 1e-4
    assert (reference - plain).abs().max() > 1e-3  # the LoRA changes the image


def _resume_config(data, output, steps, model="tiny-flux", **extra):
    return TrainingConfig(data=str(data), output=str(output), model=model, steps=steps, learning_rate=1e-3,
                          lr_scheduler="constant_with_warmup", lr_warmup_steps=2, checkpoints_total_limit=2,
                          weighting_scheme="logit_normal", **{**TINY, "checkpoint_every": 2}, **extra)


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3"])
def test_resume_continues_exactly(two, tmp_path, model):
    losses = {"yaw_loss": 0.5, "cube_loss": 0.5, "cube_loss_start_step": 1, "model": model}
    straight = train(_resume_config(two, tmp_path / "straight", 4, **losses))
    train(_resume_config(two, tmp_path / "split", 2, **losses))
    resumed = train(_resume_config(two, tmp_path / "split", 4, resume="latest", **losses))
    a, b = _weights(straight.output), _weights(resumed.output)
    assert resumed.steps == 4
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    assert any(b[k].abs().max() > 0 for k in b if "up" in k)


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="the accelerate launcher is not installed")
@pytest.mark.parametrize("model, extra", [
    ("tiny-flux", ["--weighting-scheme", "mode", "--guidance-scale", "2.5", "--seam", "pad"]),
    ("tiny-sd3", ["--weighting-scheme", "logit_normal"]),
    ("tiny-flux", ["--quantize", "nf4", "--gradient-checkpointing"]),  # QLoRA: a 4-bit base under DDP
])
def test_two_processes_equal_one_process(two, tmp_path, model, extra):
    if "nf4" in extra:
        pytest.importorskip("bitsandbytes")
    args = ["--model", model, "--steps", "2", "--resolution", str(H), "--checkpoint-every", "0", "--quiet",
            "--lr", "1e-3", "--yaw-loss", "0.5", "--cube-loss", "0.5", *extra]  # the yaw loss's second pass under DDP
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    launch = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29519", "-m", "pano360"]
    result = subprocess.run([*launch, "train", str(two), "-o", str(tmp_path / "two"), "--batch-size", "1", "--cpu",
                             *args], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert main(["train", str(two), "-o", str(tmp_path / "one"), "--batch-size", "2", *args]) == 0
    assert json.loads((tmp_path / "two" / "training_config.json").read_text())["processes"] == 2
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    assert max(b[k].abs().max().item() for k in b if "up" in k) > 1e-5


# --- DiT360's losses -------------------------------------------------------------------------------

def test_yaw_loss_is_zero_for_a_roll_equivariant_prediction_and_positive_otherwise():
    from pano360.training.pano_losses import yaw_columns, yaw_loss

    x = torch.randn(2, 4, 8, 16)
    columns = [yaw_columns(60.0, 16, 2), yaw_columns(180.0, 16, 2)]
    assert columns == [2, 8]  # 60° of 8 tokens rounds to 1 token = 2 latent columns
    equivariant = lambda z: 2.0 * z + z.mean(dim=-1, keepdim=True) + torch.tanh(z.roll(1, dims=-1))
    assert yaw_loss(equivariant, x, equivariant(x), columns).abs().max() <= 1e-6
    ramp = torch.linspace(0, 1, 16)
    fixed_in_space = lambda z: z * ramp  # depends on the absolute column: not equivariant
    assert (yaw_loss(fixed_in_space, x, fixed_in_space(x), columns) > 1e-3).all()


def test_yaw_loss_on_tiny_flux_vanishes_with_the_exact_seam_only():
    from pano360.backbones.guided import predict_noise
    from pano360.backbones.loading import load_backbone
    from pano360.training.pano_losses import yaw_loss

    backbone = load_backbone("tiny-flux")
    family, transformer = backbone.contract, backbone.denoiser
    x = torch.randn(1, 16, 8, 16, generator=torch.Generator().manual_seed(0))
    embeds, pooled = torch.randn(1, 7, 32), torch.randn(1, 32)
    f = lambda z: predict_noise(transformer, z, 500.0, embeds, pooled, family=family, embedded_guidance=1.0)
    with torch.no_grad():
        with family.seam(backbone, network=True, vae=False, scheme="exact"):
            exact = yaw_loss(f, x, f(x), [4])
        with family.seam(backbone, network=True, vae=False, scheme="none"):
            plain = yaw_loss(f, x, f(x), [4])
    assert exact.item() <= 1e-8 and plain.item() > 1e-6, (exact, plain)


def test_yaw_loss_on_a_wrapped_unet_vanishes_for_rolls_by_its_downsampling():
    from pano360.backbones.guided import predict_noise
    from pano360.backbones.loading import load_backbone
    from pano360.backbones.wrap import wraparound
    from pano360.training.pano_losses import yaw_loss

    backbone = load_backbone("tiny")
    unet, multiple = backbone.denoiser, backbone.info.unet_downsampling
    x, embeds = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(1)), torch.randn(1, 77, 32)
    f = lambda z: predict_noise(unet, z, 500, embeds)
    with torch.no_grad():
        with wraparound(unet):
            wrapped = yaw_loss(f, x, f(x), [2 * multiple])
        plain = yaw_loss(f, x, f(x), [2 * multiple])
    assert wrapped.item() <= 1e-10 and plain.item() > 1e-4, (wrapped, plain)


def _faces_independently(latents):
    """Six cube faces of [B, C, h, w], face by face: rays from pano360.geometry.cubemap, longitude and
    latitude by hand (DESIGN.md's conventions), bilinear sampling with the columns wrapped."""
    from pano360.geometry.cubemap import cube_face_directions

    b, _, h, w = latents.shape
    size = h // 2
    rays = cube_face_directions(size, dtype=torch.float64)  # [6, s, s, 3]
    wrapped = torch.cat([latents[..., -1:], latents, latents[..., :1]], dim=-1).double()
    faces = []
    for face in range(6):
        x, y, z = rays[face].unbind(-1)
        lon, lat = torch.atan2(x, z), torch.asin(y.clamp(-1, 1))
        column = (lon / (2 * math.pi) + 0.5) * w - 0.5 + 1  # +1: the wrapped column on the left
        row = (0.5 - lat / math.pi) * h - 0.5
        grid = torch.stack([(column + 0.5) / (w + 2) * 2 - 1, (row + 0.5) / h * 2 - 1], -1)
        faces.append(torch.nn.functional.grid_sample(wrapped, grid[None].expand(b, -1, -1, -1), mode="bilinear",
                                                     padding_mode="border", align_corners=False))
    return faces


def test_dit360_code_yaw_form_turns_prediction_and_target_together():
    from pano360.training.pano_losses import turn, turned_pair_loss

    generator = torch.Generator().manual_seed(3)
    prediction, target = torch.randn(2, 4, 6, 12, generator=generator), torch.randn(2, 4, 6, 12, generator=generator)
    assert torch.equal(turn(prediction, 60.0), torch.roll(prediction, 2, dims=-1))  # 60° of 12 columns = 2
    half = turn(prediction, 15.0)  # half a column: the mean of the two neighbours
    assert torch.allclose(half, 0.5 * (prediction + torch.roll(prediction, 1, dims=-1)))
    plain = (prediction - target).square().reshape(2, -1).mean(dim=1)
    assert torch.allclose(turned_pair_loss(prediction, target, [180.0, 300.0]), plain)  # whole columns: the MSE
    smoothed = turned_pair_loss(prediction, target, [45.0, 45.0])  # 1.5 columns: interpolation lowers it
    assert (smoothed < plain).all() and (smoothed > 0.4 * plain).all()


def test_dit360_code_yaw_form_trains_and_is_recorded(two, tmp_path):
    result = train(_resume_config(two, tmp_path / "code", 2, yaw_loss=0.5, yaw_loss_form="dit360-code"))
    record = json.loads((result.output / "training_config.json").read_text())
    assert record["config"]["yaw_loss_form"] == "dit360-code"
    assert all(math.isfinite(loss) for loss in result.losses)


def test_cube_loss_equals_a_face_by_face_computation():
    from pano360.training.pano_losses import cube_loss

    prediction, target = torch.randn(2, 4, 16, 32), torch.randn(2, 4, 16, 32)
    faces_p, faces_t = _faces_independently(prediction), _faces_independently(target)
    expected = sum((p - t).square().mean(dim=(1, 2, 3)) for p, t in zip(faces_p, faces_t)) / 6
    assert torch.allclose(cube_loss(prediction, target).double(), expected, atol=1e-5, rtol=1e-4)
    assert cube_loss(target, target).abs().max() == 0


def test_pano_losses_switch_on_at_the_start_step(two, tmp_path):
    def run(name, **extra):
        return train(TrainingConfig(data=str(two), output=str(tmp_path / name), model="tiny-flux", steps=3,
                                    learning_rate=1e-3, seam="pad", **TINY, **extra)).losses

    plain = run("plain")
    late = run("late", yaw_loss=0.5, cube_loss=0.5, cube_loss_start_step=2)
    assert late[:2] == pytest.approx(plain[:2], abs=1e-7) and late[2] > plain[2]


# --- flags ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, extra, message", [
    ("tiny", ["--weighting-scheme", "logit_normal"], "--weighting-scheme is for flow-matching models"),
    ("tiny", ["--guidance-scale", "1"], "--guidance-scale is for flow-matching models"),
    ("tiny-sd3", ["--guidance-scale", "2"], "has no guidance embedding"),
    ("tiny-flux", ["--snr-gamma", "5"], "use --weighting-scheme"),
    ("tiny-flux", ["--lora-attention", "self"], "joint attention"),
    ("tiny", ["--seam", "pad"], "--seam pad is not available"),
    ("tiny-flux", ["--weighting-scheme", "lognorm"], "invalid choice"),
    ("tiny", ["--cube-loss", "1", "--cube-loss-space", "x0"], "--cube-loss-space x0 is for flow-matching"),
    ("tiny-flux", ["--use-8bit-adam"], "needs bitsandbytes"),
    ("tiny-flux", ["--quantize", "nf4"], "--quantize nf4 needs bitsandbytes"),
    ("tiny", ["--quantize", "fp8"], "--quantize stores a FLUX/SD3/Qwen-Image transformer base"),
    ("tiny-flux", ["--quantize", "int3"], "invalid choice"),
    ("tiny-flux", ["--yaw-loss-form", "paper"], "invalid choice"),
])
def test_flags_a_family_does_not_take_fail_before_any_model_loads(two, tmp_path, capsys, monkeypatch, model, extra,
                                                                   message):
    import sys

    from pano360.backbones import loading

    if "bitsandbytes" in message:  # as on a machine without it
        monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    monkeypatch.setattr(loading, "load_backbone", lambda *a, **k: pytest.fail("a model was loaded"))
    try:
        code = main(["train", str(two), "--model", model, "-o", str(tmp_path / "out"), "--quiet", *extra])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_dit360_preset_fills_the_recipe():
    import argparse

    from pano360.cli.train import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["train", "data", "-o", "out", "--preset", "dit360", "--model", "tiny-flux"])
    config = config_from_args(args)
    assert config.adapter_options["rank"] == 64 and config.adapter_options["lora_alpha"] == 64.0
    assert (config.learning_rate, config.gradient_accumulation_steps, config.lr_warmup_ratio) == (5e-5, 4, 0.05)
    assert (config.yaw_loss, config.cube_loss, config.seam, config.guidance_scale) == (0.5, 0.5, "pad", 1.0)
    assert config.model == "tiny-flux" and config.warmup_steps == 50  # 5% of the default 1000 steps


@pytest.mark.parametrize("seam", ["exact", "pad"])
def test_gradient_checkpointing_does_not_change_the_update(two, tmp_path, seam):
    """The exact seam swaps the attention function only during the call; the recomputation in the
    backward pass must see it too (trainer.seam_aware_checkpointing)."""
    def run(name, **extra):
        config = TrainingConfig(data=str(two), output=str(tmp_path / name), model="tiny-flux", steps=2, batch_size=2,
                                learning_rate=1e-3, seam=seam, **TINY, **extra)
        return _weights(train(config).output)

    plain, checkpointed = run("plain"), run("ckpt", gradient_checkpointing=True)
    assert max((plain[k] - checkpointed[k]).abs().max().item() for k in plain) <= 1e-6


def test_qwen_image_trains_with_its_text_mask_and_frame_vae(two, tmp_path):
    from pano360.training.cache import TextCache

    result = train(TrainingConfig(data=str(two), output=str(tmp_path / "qwen"), model="tiny-qwen", steps=2,
                                  learning_rate=1e-3, weighting_scheme="cosmap", **TINY))
    assert all(math.isfinite(loss) for loss in result.losses)
    keys = load_file(str(result.output / "pytorch_lora_weights.safetensors"))
    assert keys and all(k.startswith("transformer.transformer_blocks.") for k in keys)
    from pano360.backbones.tiny_dit import tiny_dit_pipeline

    cache = TextCache(tiny_dit_pipeline("tiny-qwen"), ["a", "a much longer caption with many more words"], "cpu")
    embeds, _, mask = cache.lookup_all(["a", ""])
    assert mask is not None and mask.shape == embeds.shape[:2] and mask[0].sum() < mask.shape[1]


def test_cached_and_uncached_runs_give_the_same_losses_on_tiny_flux(two, tmp_path):
    """Latents cached through the wrapped VAE and rolled by whole tokens equal encoding every step."""
    def run(name, cache):
        return train(TrainingConfig(data=str(two), output=str(tmp_path / name), model="tiny-flux", steps=3,
                                    cache=cache, **TINY)).losses

    assert run("cached", True) == pytest.approx(run("uncached", False), rel=1e-4, abs=1e-5)
