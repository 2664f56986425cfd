"""Training steps/s: ``pano360 train`` (cached latents and text) against a diffusers-script-style loop.

The baseline does what diffusers' ``train_text_to_image_lora.py`` does every step, on the same tiny
model, data, LoRA (peft, rank 4 on to_q/to_k/to_v/to_out.0), batch and resolution: read and resize the
images, random flip, VAE-encode them (``latent_dist.sample()``), tokenize and encode the captions,
then the same noise / UNet / loss / AdamW step. pano360's steady-state rate is taken from its
``log.jsonl`` (after caching); its cache time is reported separately. Rates are 1 / median step time, and
each configuration runs ``--repeats`` times interleaved (best of the repeats), because the shared CPU's
load changes by 3x within a minute.

    python benchmarks/training_speed.py [--steps 30] [--resolution 64] [--batch-size 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def write_data(folder: Path, count: int, height: int) -> None:
    from support.panoramas import write_panoramas

    write_panoramas(folder, count, height=height)


def build_pipeline(model: str):
    """The benchmark's model: the tiny SD 1 model, or SD 2 base's proportions (widths / 5, same depth)."""
    if model == "proportional":
        from pano360.backbones.proportional import proportional_pipeline

        return proportional_pipeline("sd2")
    from pano360.backbones.tiny import tiny_pipeline

    return tiny_pipeline("sd1")


def diffusers_style(data: Path, steps: int, warmup: int, resolution: int, batch_size: int,
                    model: str = "tiny") -> float:
    """Steps/s (1 / median step time after ``warmup`` steps) of the per-step-encoding loop."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from peft import LoraConfig
    from PIL import Image

    pipe = build_pipeline(model)
    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
    torch.manual_seed(0)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    files = sorted(data.glob("*.png"))
    rng = np.random.default_rng(0)
    durations = []
    for step in range(warmup + steps):
        started = time.perf_counter()
        chosen = rng.choice(len(files), batch_size, replace=False)
        images, captions = [], []
        for index in chosen:
            with Image.open(files[index]) as image:
                image = image.convert("RGB").resize((2 * resolution, resolution), Image.Resampling.LANCZOS)
            array = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
            images.append(array.flip(-1) if rng.random() < 0.5 else array)
            captions.append(files[index].with_suffix(".txt").read_text().strip())
        pixels = torch.stack(images)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                            return_tensors="pt").input_ids
            embeds = text_encoder(ids)[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,))
        noisy = scheduler.add_noise(latents, noise, t)
        prediction = unet(noisy, t, encoder_hidden_states=embeds).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        durations.append(time.perf_counter() - started)
    return 1.0 / float(np.median(durations[warmup:]))


def pano360_rate(data: Path, output: Path, steps: int, warmup: int, resolution: int, batch_size: int,
                 model: str = "tiny", cache: bool = True, wrap: bool = True) -> tuple[float, float]:
    """(1 / median step time after ``warmup`` steps, seconds from the start of train() to the first step)."""
    from pano360.training import TrainingConfig, train

    shutil.rmtree(output, ignore_errors=True)
    config = TrainingConfig(data=str(data), output=str(output), model=model, steps=warmup + steps,
                            batch_size=batch_size, resolution=resolution, progress=False, checkpoint_every=0,
                            cache=cache, wrap_unet=wrap, adapter_options={"rank": 4, "lora_targets": "q,k,v,o"})
    started = time.perf_counter()
    train(config)
    log = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    first_step_s = (time.perf_counter() - started) - log[-1]["elapsed_s"] + log[0]["elapsed_s"]
    ends = [record["elapsed_s"] for record in log]
    durations = np.diff(ends)[warmup - 1:]
    return 1.0 / float(np.median(durations)), first_step_s


def full_size_flops(height: int = 512) -> dict:
    """FLOPs of one SD 2 base LoRA training step at height × 2·height, batch 1, on the meta device:
    the UNet forward + backward with a frozen base (input gradients only, plus the LoRA's weight
    gradients) and what caching removes (the VAE encoder on the image, the text encoder on 77 tokens)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import SD2_BASE_UNET, meta_unet, meta_vae, unet_inputs
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextConfig, CLIPTextModel

    from pano360.adapters.lora import LoRAAdapter

    unet = meta_unet(SD2_BASE_UNET).requires_grad_(False)
    with torch.device("meta"):
        LoRAAdapter.for_unet(unet, rank=4).attach(unet)
    inputs = unet_inputs(SD2_BASE_UNET, 1, height // 8, height // 4)
    with FlopCounterMode(display=False) as counter:
        unet(**inputs).sample.sum().backward()
    step = counter.get_total_flops()
    vae = meta_vae()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vae.encode(torch.empty(1, 3, height, 2 * height, device="meta"))
    encode = counter.get_total_flops()
    config = CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                            num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu")
    with torch.device("meta"):
        text_encoder = CLIPTextModel(config)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        text_encoder(torch.zeros(1, 77, dtype=torch.long, device="meta"))
    text = counter.get_total_flops()
    return {"unet_forward_backward": step, "vae_encode": encode, "text_encode": text,
            "speedup_bound": (step + encode + text) / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flops", action="store_true", help="only the full-size SD 2 base FLOP count")
    parser.add_argument("--model", choices=["tiny", "proportional"], default="tiny",
                        help="tiny SD 1, or SD 2 base's proportions (backbones/proportional.py, widths / 5)")
    args = parser.parse_args()
    if args.flops:
        counts = full_size_flops()
        print(" ".join(f"{k}={v / 1e12:.2f} TFLOP" if k != "speedup_bound" else f"{k}={v:.2f}x"
                       for k, v in counts.items()))
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_data(data, args.images, args.resolution)
        runs = {"baseline": [], "cached": [], "uncached": [], "unwrapped": []}
        model = "tiny"
        if args.model == "proportional":  # saved once, so pano360 loads it like any diffusers folder
            model = str(Path(tmp) / "model")
            build_pipeline("proportional").save_pretrained(model)
        common = (args.steps, args.warmup, args.resolution, args.batch_size)
        for _ in range(args.repeats):
            runs["baseline"].append(diffusers_style(data, *common, model=args.model))
            rate, setup = pano360_rate(data, Path(tmp) / "out", *common, model=model)
            runs["cached"].append(rate)
            runs["uncached"].append(pano360_rate(data, Path(tmp) / "out", *common, model=model, cache=False)[0])
            runs["unwrapped"].append(pano360_rate(data, Path(tmp) / "out", *common, model=model, wrap=False)[0])
        baseline, cached, uncached, unwrapped = (max(runs[k]) for k in ("baseline", "cached", "uncached", "unwrapped"))
    size = f"{args.resolution}x{2 * args.resolution}"
    print(f"{args.model}, {size} px, batch {args.batch_size}, {args.images} images, {args.threads} thread(s), "
          f"best of {args.repeats}: " + json.dumps({k: [round(v, 2) for v in vals] for k, vals in runs.items()}))
    print(f"| diffusers-style loop (encode every step) | {baseline:.2f} steps/s | 1.00x |")
    print(f"| pano360 train --no-cache | {uncached:.2f} steps/s | {uncached / baseline:.2f}x |")
    print(f"| pano360 train (cached latents + text) | {cached:.2f} steps/s | {cached / baseline:.2f}x |")
    print(f"| pano360 train --no-wrap (cached; the baseline's unwrapped UNet) | {unwrapped:.2f} steps/s | "
          f"{unwrapped / baseline:.2f}x |")
    print(f"pano360 setup to first step (model build + caching + step 1): {setup:.1f} s")


if __name__ == "__main__":
    main()
