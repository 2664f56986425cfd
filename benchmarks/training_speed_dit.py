"""Training steps/s on FLUX.1-dev's proportions: ``pano360 train`` against a diffusers-script-style loop.

The FLUX counterpart of ``training_speed.py``. The model is ``proportional_flux_pipeline(divisor)``
(``pano360.backbones.proportional_dit``: FLUX.1-dev's transformer depth and 128-channel heads, T5-XXL's 24
and CLIP-L's 12 layers on 512 and 77 tokens, FLUX's VAE layout, every width ÷ divisor), saved once as a
diffusers folder that both loops load.

* ``baseline``: what diffusers' ``examples/dreambooth/train_dreambooth_lora_flux.py`` does per step when
  every image has its own caption and latents are not cached (no ``--cache_latents``), plus reading and
  resizing the images (random flip) each step, which that script does once when it builds its dataset
  (about 3 ms of a 3 s step here):
  ``vae.encode(...).latent_dist.sample()``, (z − shift)·scale, CLIP pooled + T5 (512 tokens) embeddings of
  the batch's captions, σ from ``compute_density_for_timestep_sampling`` and the scheduler's table,
  x_σ = (1 − σ)x0 + σε, 2×2 packing, image and text ids, the transformer with the embedded guidance,
  unpacking, target ε − x0, ``compute_loss_weighting_for_sd3``-weighted MSE, backward, gradient clipping,
  AdamW; peft LoRA (r = α = ``--rank``, gaussian init) on to_q/to_k/to_v/to_out.0 (the double blocks'
  image-stream projections and the single blocks' q/k/v: 190 layers, the same as pano360's
  ``--lora-targets q,k,v,o``).
* ``pano360 train`` (``TrainingConfig``/``train()``, same data, rank, batch, size, weighting scheme,
  AdamW, clipping 1.0): ``cached`` (the default: latents and text encoded once, text encoders dropped;
  the default exact seam on transformers), ``uncached`` (``--no-cache``: VAE and both text encoders every
  step, exact seam), with the cache the other seams ``pad`` (DiT360's) and ``none`` (the released
  attention, as in the baseline), and ``uncached-none`` (``--no-cache --seam none``: the baseline's work in
  pano360's loop). Its step times come from its ``log.jsonl`` (``elapsed_s``).

Rates are 1 / median step time after ``--warmup`` steps; each configuration runs ``--repeats`` times,
interleaved, and the best repeat is kept (the shared CPU's load changes within a minute); 1 / the fastest
step of all repeats is printed beside it (the least disturbed by load). ``--components ROUNDS`` times the
step's parts instead (read, VAE, CLIP, T5, the transformer step per seam), in turn in one process, which
gives the encoders' share of the baseline's step and so the ratios to expect from the loops.

``--flops``: FLOPs on the meta device of one LoRA training step at full size (FLUX.1-dev, 1024×2048,
batch 1): the transformer's forward + backward with a frozen base (per seam), the VAE encoder on the
image, T5-XXL on 512 tokens and CLIP-L on 77; the compute-bound speed-up bound of caching is
(transformer + VAE + T5 + CLIP) / transformer. The same counts for the proportional model at the
benchmark's size say what the measured ratios should be if the CPU were compute-bound.

    OMP_NUM_THREADS=1 python benchmarks/training_speed_dit.py [--divisor 24] [--resolution 256] [--steps 6]
        [--warmup 2] [--repeats 2] [--threads 1] [--variants baseline,cached,uncached,pad,none]
    OMP_NUM_THREADS=1 python benchmarks/training_speed_dit.py --components 8
    python benchmarks/training_speed_dit.py --flops [--divisor 24] [--resolution 256]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_speed import write_data

LORA_MODULES = ["to_k", "to_q", "to_v", "to_out.0"]  # diffusers' FLUX LoRA scripts' default targets
VARIANTS = {  # name -> (label, TrainingConfig keyword arguments); "baseline" is the diffusers-style loop
    "cached": ("`pano360 train` (cached latents + text, default exact seam)", {"cache": True, "seam": None}),
    "uncached": ("`pano360 train --no-cache` (encodes every step, exact seam)", {"cache": False, "seam": None}),
    "pad": ("`pano360 train --seam pad` (cached; DiT360's padded seam, +1 token column a side)",
            {"cache": True, "seam": "pad"}),
    "none": ("`pano360 train --seam none` (cached; the released attention, as the baseline)",
             {"cache": True, "seam": "none"}),
    "uncached-none": ("`pano360 train --no-cache --seam none` (the baseline's work, pano360's loop)",
                      {"cache": False, "seam": "none"}),
}
BASELINE_LABEL = "diffusers-script style: read + resize + VAE + CLIP + T5 every step (peft LoRA)"


def _quiet() -> None:
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def save_model(folder: Path, divisor: int) -> Path:
    from pano360.backbones.proportional_dit import proportional_flux_pipeline

    proportional_flux_pipeline(divisor).save_pretrained(folder)
    return folder


def diffusers_style(model: Path, data: Path, steps: int, warmup: int, resolution: int, batch_size: int,
                    rank: int = 4, weighting_scheme: str = "none", guidance_scale: float = 1.0,
                    max_sequence_length: int = 512, seed: int = 0) -> list[float]:
    """Step times (s) after ``warmup`` steps of the per-step-encoding FLUX LoRA loop."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3
    from peft import LoraConfig
    from PIL import Image

    pipe = FluxPipeline.from_pretrained(str(model))
    transformer, vae = pipe.transformer, pipe.vae
    clip, clip_tokenizer, t5, t5_tokenizer = pipe.text_encoder, pipe.tokenizer, pipe.text_encoder_2, pipe.tokenizer_2
    for module in (transformer, vae, clip, t5):
        module.requires_grad_(False)
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                       target_modules=LORA_MODULES))
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    schedule = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)  # the script's scheduler copy
    total = schedule.config.num_train_timesteps
    shift, scale = vae.config.shift_factor, vae.config.scaling_factor
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    files = sorted(data.glob("*.png"))
    rng = np.random.default_rng(seed)
    transformer.train()
    durations = []
    for _ in range(warmup + steps):
        started = time.perf_counter()
        images, captions = [], []
        for index in rng.choice(len(files), batch_size, replace=False):
            with Image.open(files[index]) as image:
                image = image.convert("RGB").resize((2 * resolution, resolution), Image.Resampling.BILINEAR)
            pixels = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
            images.append(pixels.flip(-1) if rng.random() < 0.5 else pixels)
            captions.append(files[index].with_suffix(".txt").read_text().strip())
        with torch.no_grad():
            ids = clip_tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                                 return_tensors="pt").input_ids
            pooled = clip(ids, output_hidden_states=False).pooler_output
            ids = t5_tokenizer(captions, padding="max_length", max_length=max_sequence_length, truncation=True,
                               return_tensors="pt").input_ids
            embeds = t5(ids)[0]
            text_ids = torch.zeros(embeds.shape[1], 3)
            x0 = vae.encode(torch.stack(images)).latent_dist.sample()
        x0 = (x0 - shift) * scale
        b, c, h, w = x0.shape
        image_ids = FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, x0.device, x0.dtype)
        noise = torch.randn_like(x0)
        u = compute_density_for_timestep_sampling(weighting_scheme=weighting_scheme, batch_size=b, logit_mean=0.0,
                                                  logit_std=1.0, mode_scale=1.29)
        indices = (u * total).long()
        timesteps = schedule.timesteps[indices]
        sigmas = schedule.sigmas[indices].reshape(b, 1, 1, 1)
        noisy = (1.0 - sigmas) * x0 + sigmas * noise
        packed = FluxPipeline._pack_latents(noisy, b, c, h, w)
        guidance = torch.tensor([guidance_scale]).expand(b) if transformer.config.guidance_embeds else None
        prediction = transformer(hidden_states=packed, timestep=timesteps / 1000, guidance=guidance,
                                 pooled_projections=pooled, encoder_hidden_states=embeds, txt_ids=text_ids,
                                 img_ids=image_ids, return_dict=False)[0]
        prediction = FluxPipeline._unpack_latents(prediction, h * vae_scale, w * vae_scale, vae_scale)
        weighting = compute_loss_weighting_for_sd3(weighting_scheme=weighting_scheme, sigmas=sigmas)
        target = noise - x0
        loss = (weighting.float() * (prediction.float() - target.float()) ** 2).reshape(b, -1).mean(1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        durations.append(time.perf_counter() - started)
    return durations[warmup:]


def pano360_rate(model: Path, data: Path, output: Path, steps: int, warmup: int, resolution: int,
                 batch_size: int, rank: int = 4, weighting_scheme: str = "none", cache: bool = True,
                 seam: str | None = None) -> tuple[list[float], float]:
    """(step times (s) after ``warmup`` steps, seconds from the start of train() to the first step's end:
    model load, caching and step 1)."""
    from pano360.training import TrainingConfig, train

    shutil.rmtree(output, ignore_errors=True)
    config = TrainingConfig(data=str(data), output=str(output), model=str(model), steps=warmup + steps,
                            batch_size=batch_size, resolution=resolution, progress=False, checkpoint_every=0,
                            cache=cache, seam=seam, weighting_scheme=weighting_scheme,
                            adapter_options={"rank": rank, "lora_targets": "q,k,v,o"})
    started = time.perf_counter()
    train(config)
    log = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]
    first_step_s = (time.perf_counter() - started) - log[-1]["elapsed_s"] + log[0]["elapsed_s"]
    durations = np.diff([record["elapsed_s"] for record in log])[warmup - 1:]
    return [float(d) for d in durations], first_step_s


def component_times(model: Path, data: Path, resolution: int, batch_size: int = 1, rank: int = 4,
                    rounds: int = 8, seams=("none", "pad", "exact")) -> dict[str, list[float]]:
    """Seconds per part of one training step, the parts timed in turn ``rounds`` times in one process (so
    the machine's load hits them alike): ``read`` (read + resize the images), ``vae`` (encode + sample),
    ``clip`` (77 tokens, pooled), ``t5`` (512 tokens), and ``step_<seam>``: the transformer's forward +
    backward + clipping + AdamW with the peft LoRA, through pano360's FLUX call with that seam (``none``
    is the baseline's call)."""
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from PIL import Image

    from pano360.backbones.family import get_family
    from pano360.backbones.guided import predict_noise
    from pano360.backbones.token_seam import TokenSeam, token_seam

    pipe = FluxPipeline.from_pretrained(str(model))
    transformer, vae = pipe.transformer, pipe.vae
    for module in (transformer, vae, pipe.text_encoder, pipe.text_encoder_2):
        module.requires_grad_(False)
    torch.manual_seed(0)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                       target_modules=LORA_MODULES))
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    files = sorted(data.glob("*.png"))[:batch_size]
    captions = [f.with_suffix(".txt").read_text().strip() for f in files]
    family = get_family("flux")
    state = {}

    def read():
        images = []
        for file in files:
            with Image.open(file) as image:
                image = image.convert("RGB").resize((2 * resolution, resolution), Image.Resampling.BILINEAR)
            images.append(torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1)
        state["pixels"] = torch.stack(images)

    def encode_vae():
        state["x0"] = (vae.encode(state["pixels"]).latent_dist.sample() - vae.config.shift_factor) \
            * vae.config.scaling_factor

    def encode_clip():
        ids = pipe.tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                             return_tensors="pt").input_ids
        state["pooled"] = pipe.text_encoder(ids).pooler_output

    def encode_t5():
        ids = pipe.tokenizer_2(captions, padding="max_length", max_length=512, truncation=True,
                               return_tensors="pt").input_ids
        state["embeds"] = pipe.text_encoder_2(ids)[0]

    def step(seam):
        x0 = state["x0"]
        noise = torch.randn_like(x0)
        sigma = 0.5
        with token_seam(transformer, TokenSeam(seam)):
            prediction = predict_noise(transformer, (1 - sigma) * x0 + sigma * noise, 1000 * sigma, state["embeds"],
                                       state["pooled"], family=family, embedded_guidance=1.0)
        loss = torch.nn.functional.mse_loss(prediction, noise - x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    parts = {"read": read, "vae": encode_vae, "clip": encode_clip, "t5": encode_t5}
    parts |= {f"step_{seam}": (lambda seam=seam: step(seam)) for seam in seams}
    transformer.train()
    times: dict[str, list[float]] = {name: [] for name in parts}
    for round_ in range(rounds + 1):  # round 0 warms up
        for name, part in parts.items():
            started = time.perf_counter()
            with torch.no_grad() if not name.startswith("step_") else torch.enable_grad():
                part()
            if round_:
                times[name].append(time.perf_counter() - started)
    return times


def print_component_times(times: dict[str, list[float]]) -> None:
    fastest = {k: min(v) for k, v in times.items()}
    median = {k: float(np.median(v)) for k, v in times.items()}
    for label, value in (("fastest", fastest), ("median", median)):
        encode = value["read"] + value["vae"] + value["clip"] + value["t5"]
        baseline = encode + value["step_none"]
        print(f"{label}: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in value.items())
              + f"; encoding share of the baseline step {encode / baseline:.1%} (read {value['read'] / baseline:.1%}, "
              f"VAE {value['vae'] / baseline:.1%}, CLIP {value['clip'] / baseline:.1%}, T5 {value['t5'] / baseline:.1%})")
        for key in (k for k in value if k.startswith("step_")):
            print(f"  expected ratio of a cached loop with seam {key.removeprefix('step_')}: "
                  f"{baseline / value[key]:.3f}x (uncached: {baseline / (value[key] + encode):.3f}x)")


# ------------------------------------------------------------------------------------------- FLOPs


def _count(run) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def component_flops(divisor: int = 1, height: int = 1024, rank: int = 4, batch: int = 1,
                    seams=("none", "pad", "exact")) -> dict:
    """FLOPs (meta device) of one LoRA training step's parts at ``height`` × 2·``height`` px, ``batch``:
    ``transformer_<seam>`` the forward + backward of the transformer (frozen base, LoRA rank ``rank`` on
    q/k/v/o, pano360's family call with that seam; ``none`` is the baseline's call), ``vae_encode``,
    ``t5`` (512 tokens), ``clip`` (77 tokens). ``divisor=1``: FLUX.1-dev; otherwise the proportional model.
    The exact seam is counted as it runs on a GPU (v zero-padded for the flash kernels)."""
    from pano360.adapters.lora import LoRAAdapter
    from pano360.backbones import token_seam as token_seam_module
    from pano360.backbones.family import get_family
    from pano360.backbones.guided import predict_noise
    from pano360.backbones.proportional_dit import flux_clip_encoder, flux_t5_encoder, flux_vae
    from pano360.backbones.tiny_dit import proportional_flux_transformer
    from pano360.backbones.token_seam import TokenSeam, token_seam

    meta = {"device": "meta"}
    transformer = proportional_flux_transformer(divisor, device="meta").requires_grad_(False)
    with torch.device("meta"):
        LoRAAdapter.for_unet(transformer, rank=rank, targets="q,k,v,o").attach(transformer)
    config = transformer.config
    family = get_family("flux")
    latents = torch.empty(batch, 16, height // 8, height // 4, **meta)
    embeds = torch.empty(batch, 512, config.joint_attention_dim, **meta)
    pooled = torch.empty(batch, config.pooled_projection_dim, **meta)
    t = torch.full((batch,), 500.0, **meta)
    counts = {}
    flash_devices, token_seam_module.FLASH_DEVICES = token_seam_module.FLASH_DEVICES, ("cuda", "meta")
    try:
        for seam in seams:
            def step(seam=seam):
                with token_seam(transformer, TokenSeam(seam)):
                    out = predict_noise(transformer, latents, t, embeds, pooled, family=family, embedded_guidance=1.0)
                out.float().square().mean().backward()

            counts[f"transformer_{seam}"] = _count(step)
    finally:
        token_seam_module.FLASH_DEVICES = flash_devices
    vae = flux_vae(divisor, device="meta")
    image = torch.empty(batch, 3, height, 2 * height, **meta)
    with torch.no_grad():
        counts["vae_encode"] = _count(lambda: vae.encode(image))
        t5 = flux_t5_encoder(divisor, device="meta")
        counts["t5"] = _count(lambda: t5(torch.zeros(batch, 512, dtype=torch.long, **meta)))
        clip = flux_clip_encoder(divisor, device="meta")
        counts["clip"] = _count(lambda: clip(torch.zeros(batch, 77, dtype=torch.long, **meta)))
    return counts


def print_flops(counts: dict, label: str, unit: float = 1e12, name: str = "TFLOP") -> None:
    encode = counts["vae_encode"] + counts["t5"] + counts["clip"]
    baseline = counts["transformer_none"] + encode
    print(f"{label}: " + ", ".join(f"{k} {v / unit:.3g} {name}" for k, v in counts.items()))
    print(f"  encoders' share of the baseline step {encode / baseline:.1%} (VAE {counts['vae_encode'] / baseline:.1%}, "
          f"T5 {counts['t5'] / baseline:.1%}, CLIP {counts['clip'] / baseline:.2%})")
    for key in (k for k in counts if k.startswith("transformer_")):
        seam = key.removeprefix("transformer_")
        print(f"  compute-bound ratio, cached with seam {seam} vs the baseline: {baseline / counts[key]:.3f}x "
              f"(uncached: {baseline / (counts[key] + encode):.3f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--divisor", type=int, default=24, help="width divisor of the proportional FLUX.1-dev")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--resolution", type=int, default=256, help="panorama height H (images are H x 2H)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--weighting-scheme", default="none",
                        choices=["none", "sigma_sqrt", "logit_normal", "mode", "cosmap"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default="baseline,cached,uncached,pad,none",
                        help=f"comma list of baseline and {', '.join(VARIANTS)}")
    parser.add_argument("--components", type=int, default=0, metavar="ROUNDS",
                        help="instead of the loops: time the step's parts (read, VAE, CLIP, T5, transformer step "
                             "per seam) in turn for ROUNDS rounds in one process")
    parser.add_argument("--flops", action="store_true",
                        help="only the FLOP counts (meta device): FLUX.1-dev at 1024x2048 and the proportional "
                             "model at --resolution")
    args = parser.parse_args()
    _quiet()
    if args.flops:
        print_flops(component_flops(1, 1024, args.rank), "FLUX.1-dev, 1024x2048 px, batch 1")
        print_flops(component_flops(1, args.resolution, args.rank),
                    f"FLUX.1-dev, {args.resolution}x{2 * args.resolution} px, batch 1")
        print_flops(component_flops(args.divisor, args.resolution, args.rank, args.batch_size),
                    f"proportional FLUX.1-dev (divisor {args.divisor}), {args.resolution}x{2 * args.resolution} px, "
                    f"batch {args.batch_size}", 1e9, "GFLOP")
        return
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v != "baseline" and v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}")
    torch.set_num_threads(args.threads)
    runs: dict[str, list[list[float]]] = {v: [] for v in variants}  # per repeat, the step times
    setups: dict[str, list[float]] = {v: [] for v in variants if v != "baseline"}
    with tempfile.TemporaryDirectory() as tmp:
        data, model = Path(tmp) / "data", Path(tmp) / "model"
        write_data(data, args.images, args.resolution)
        save_model(model, args.divisor)
        if args.components:
            print_component_times(component_times(model, data, args.resolution, args.batch_size, args.rank,
                                                  args.components))
            return
        common = (args.steps, args.warmup, args.resolution, args.batch_size)
        options = {"rank": args.rank, "weighting_scheme": args.weighting_scheme}
        for repeat in range(args.repeats):
            for variant in variants:
                if variant == "baseline":
                    runs[variant].append(diffusers_style(model, data, *common, **options))
                else:
                    durations, setup = pano360_rate(model, data, Path(tmp) / "out", *common, **options,
                                                    **VARIANTS[variant][1])
                    runs[variant].append(durations)
                    setups[variant].append(setup)
                print(f"repeat {repeat + 1}: {variant} step times "
                      + " ".join(f"{d:.2f}" for d in runs[variant][-1]) + " s", flush=True)
    median = {k: max(1 / float(np.median(d)) for d in v) for k, v in runs.items()}  # best repeat's median
    fastest = {k: 1 / min(min(d) for d in v) for k, v in runs.items()}
    size = f"{args.resolution}x{2 * args.resolution}"
    print(f"proportional FLUX.1-dev (divisor {args.divisor}), {size} px, batch {args.batch_size}, {args.images} "
          f"images, LoRA rank {args.rank}, weighting {args.weighting_scheme}, {args.threads} thread(s), "
          f"{args.steps} steps after {args.warmup} warm-up, {args.repeats} interleaved repeats; steps/s "
          "(1 / median step time) per repeat: "
          + json.dumps({k: [round(1 / float(np.median(d)), 3) for d in v] for k, v in runs.items()}))
    print("| loop | steps/s (best repeat's median) | vs baseline | steps/s (fastest step) | vs baseline |")
    print("|---|---|---|---|---|")
    for variant in variants:
        label = BASELINE_LABEL if variant == "baseline" else VARIANTS[variant][0]
        ratios = [f"{rates[variant] / rates['baseline']:.2f}x" if "baseline" in rates else "-"
                  for rates in (median, fastest)]
        print(f"| {label} | {median[variant]:.3f} | {ratios[0]} | {fastest[variant]:.3f} | {ratios[1]} |")
    for variant, values in setups.items():
        print(f"pano360 {variant}: train() start to the end of step 1 (load + caching + step 1): "
              f"{min(values):.1f} s")

if __name__ == "__main__":
    main()
