"""SyncDiffusion: batched gradients vs. an original-style window-by-window loop, and FLOPs at full size.

1. Time (CPU): pano360's ``syncdiffusion`` against a loop written the way the reference computes it
   (per window: a UNet+VAE+LPIPS forward/backward, the anchor included, then a fresh UNet call;
   per-window DDIM step and average). Same initial latent, same settings; the outputs are compared.
   ``--model proportional`` (default): SD 2 base's proportions (channels / 5, head dim 64, 64-latent
   windows, attention at 4096 tokens) with an LPIPS VGG16 narrowed the same way; ``--model tiny``:
   the tiny SD 1.x model with 16-latent windows and the full-size random LPIPS VGG of the first
   measurements. ``--components`` adds the per-component time breakdown.
2. FLOPs per panorama for full-size SD 2 base (meta device): MultiDiffusion part + synchronisation
   overhead (UNet forward+backward, VAE decode forward+backward, LPIPS VGG forward+backward per window).

    python benchmarks/bench_syncdiffusion.py --components   # proportional model, 512x1024, 5 windows
    python benchmarks/bench_syncdiffusion.py --model tiny   # the old tiny setup (13 windows)
    python benchmarks/bench_syncdiffusion.py --flops        # FLOPs only (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

PROMPT = "a mountain lake at sunrise"


def reference_style(pipe, latents, steps, weight, decay, threshold, stride, window, lpips, guidance=7.5):
    """The reference algorithm, one window at a time (as in SyncDiffusion's sample_syncdiffusion).

    ``lpips(x, y)`` is called as the reference calls ``lpips.LPIPS``: both images through the trunk on
    every call, the gradient only through ``x`` (the anchor image is computed without gradient).
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True)
    embeds = torch.cat([uncond, cond])
    h, w = latents.shape[-2:]
    views = [(top, left) for top in range(0, h - window + 1, stride) for left in range(0, w - window + 1, stride)]
    anchor = len(views) // 2
    x = latents.clone()

    def eps(view, t):
        u, c = pipe.unet(torch.cat([view, view]), t, encoder_hidden_states=embeds).sample.chunk(2)
        return u + guidance * (c - u)

    def decode(z):
        return (pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)

    for i, t in enumerate(scheduler.timesteps):
        value, count = torch.zeros_like(x), torch.zeros_like(x)
        sync = i < threshold
        if sync:
            with torch.no_grad():
                xa = x[..., views[anchor][0]:views[anchor][0] + window, views[anchor][1]:views[anchor][1] + window]
                target = decode(scheduler.step(eps(xa, t), t, xa).pred_original_sample)
        for index, (top, left) in enumerate(views):
            view = x[..., top:top + window, left:left + window].detach()
            updated = view.clone()
            if sync:
                leaf = view.clone().requires_grad_(True)
                x0 = scheduler.step(eps(leaf, t), t, leaf).pred_original_sample
                loss = lpips(2 * decode(x0) - 1, 2 * target - 1).sum()
                (gradient,) = torch.autograd.grad(loss, leaf)
                if index != anchor:
                    updated = updated - weight * decay ** i * gradient
            with torch.no_grad():
                stepped = scheduler.step(eps(updated, t), t, updated).prev_sample
            value[..., top:top + window, left:left + window] += stepped
            count[..., top:top + window, left:left + window] += 1
        x = torch.where(count > 0, value / count, value)
    return x


SETUPS = {
    # height, width (px), window, stride (latents), steps, sync threshold
    "proportional": dict(height=512, width=1024, window=64, stride=16, steps=2, threshold=2),
    "tiny": dict(height=128, width=512, window=16, stride=4, steps=3, threshold=3),
}


def time_comparison(repeats: int = 1, channels_last="auto", model: str = "proportional", components: bool = False,
                    sync_batch_size="auto", steps: int | None = None, clock: str = "wall") -> dict:
    import copy

    from components import ComponentTimer, clock_named

    now = clock_named(clock)

    from pano360 import PanoramaGenerator

    setup = dict(SETUPS[model])
    if steps is not None:
        setup.update(steps=steps, threshold=steps)
    # separate, identical copies: pano360's memory layout must not leak into the reference's modules
    torch.manual_seed(0)
    if model == "proportional":
        from pano360.backbones.proportional import proportional_lpips, proportional_pipeline

        reference_lpips = proportional_lpips()
        reference_pipe = proportional_pipeline("sd2")
        gen = PanoramaGenerator.from_pipe(proportional_pipeline("sd2"), name="proportional-sd2",
                                          channels_last=channels_last)
    else:
        from pano360.backbones.tiny import tiny_pipeline
        from pano360.nets.lpips import LPIPS

        reference_lpips = LPIPS(net="vgg", pretrained=False)
        reference_pipe = tiny_pipeline("sd1")
        gen = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32", channels_last=channels_last)
    lpips = copy.deepcopy(reference_lpips)
    if channels_last in (True, "auto"):  # this benchmark runs on the CPU, where "auto" means on
        lpips.to(memory_format=torch.channels_last)
    height, width, window, stride = setup["height"], setup["width"], setup["window"], setup["stride"]
    steps, threshold = setup["steps"], setup["threshold"]
    windows = (width // 8 - window) // stride + 1
    latents = torch.randn(1, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(0))
    settings = dict(weight=20.0, decay=0.95, threshold=threshold, stride=stride, window=window)
    results = {"model": model,
               "size": f"{height}x{width} px (HxW), window {window}, stride {stride}, {windows} windows, {steps} steps, "
                       f"sync every step, random LPIPS VGG, {torch.get_num_threads()} threads, "
                       f"pano360 channels_last={channels_last}, sync_batch_size={sync_batch_size}"}
    best_ref = best_ours = float("inf")
    parts = {}
    for _ in range(repeats):
        timer = (ComponentTimer(**_parts(reference_pipe), lpips=reference_lpips, clock=now) if components
                 else contextlib.nullcontext())
        start = now()
        with timer:
            expected = reference_style(reference_pipe, latents, steps, lpips=reference_lpips, **settings)
        if now() - start < best_ref:
            best_ref = now() - start
            if components:
                parts["reference"] = timer.row()
        timer = ComponentTimer(**_parts(gen.pipe), lpips=lpips, clock=now) if components else contextlib.nullcontext()
        start = now()
        with timer:
            ours = gen(PROMPT, method="syncdiffusion", height=height, width=width, latents=latents,
                       num_inference_steps=steps, output_type="latent", progress=False, window=window, stride=stride,
                       loop_closure=False, sync_weight=20.0, sync_decay_rate=0.95, sync_threshold=threshold,
                       perceptual_loss=lpips, view_batch_size=windows, sync_batch_size=sync_batch_size).latents
        if now() - start < best_ours:
            best_ours = now() - start
            if components:
                parts["pano360"] = timer.row()
    results.update(clock=clock, reference_s=round(best_ref, 2), pano360_s=round(best_ours, 2),
                   speedup=round(best_ref / best_ours, 2), max_abs_latent_diff=float((expected - ours).abs().max()))
    if components:
        results["components"] = parts
    return results


def _parts(pipe) -> dict:
    return dict(unet=pipe.unet, vae=pipe.vae, text=[pipe.text_encoder])


def grad_flops(module_call, leaf) -> int:
    """FLOPs of one forward + backward to ``leaf`` (meta tensors)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = module_call(leaf)
        out.float().sum().backward()
    return counter.get_total_flops()


def flops_table() -> list[dict]:
    from common import SD2_BASE_UNET, meta_unet, meta_vae, unet_call_flops, unet_inputs, vae_decode_flops

    from pano360.methods.windows import WindowGrid
    from pano360.nets.lpips import LPIPS

    unet_fwd = unet_call_flops(SD2_BASE_UNET, 2, 64, 64)  # one window with CFG
    unet, vae = meta_unet(SD2_BASE_UNET), meta_vae()
    inputs = unet_inputs(SD2_BASE_UNET, 2, 64, 64)
    inputs.pop("sample")
    unet_grad = grad_flops(lambda x: unet(torch.cat([x, x]), **inputs).sample,
                           torch.empty(1, 4, 64, 64, device="meta", requires_grad=True))
    vae_fwd = vae_decode_flops(64, 64)
    vae_grad = grad_flops(lambda z: vae.decode(z).sample, torch.empty(1, 4, 64, 64, device="meta", requires_grad=True))
    lpips = LPIPS(net="vgg", pretrained=False).to("meta")
    target = torch.empty(1, 3, 512, 512, device="meta")
    lpips_grad = grad_flops(lambda img: lpips(img, target), torch.empty(1, 3, 512, 512, device="meta",
                                                                         requires_grad=True))
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        lpips.features(target)
    trunk_fwd = counter.get_total_flops()  # the anchor image's trunk pass
    lpips_grad -= trunk_fwd  # grad_flops above also ran the target through the trunk (no backward)
    rows = []
    for width, threshold in ((2048, 50), (3072, 10), (3072, 50)):
        grid = WindowGrid.make((64, width // 8), (64, 64), (16, 16))
        n = len(grid)
        decode = vae_decode_flops(64, width // 8)
        multi = 50 * n * unet_fwd + decode
        grads = unet_grad + vae_grad + lpips_grad
        # pano360: anchor decode + anchor trunk pass, N-1 gradient passes (the anchor's prediction is reused)
        per_sync = vae_fwd + trunk_fwd + (n - 1) * grads
        # reference: an extra anchor prediction, N gradient passes, and the anchor's trunk pass in each
        per_sync_reference = unet_fwd + vae_fwd + n * (grads + trunk_fwd)
        rows.append(dict(size=f"512x{width}", stride=16, windows=n, sync_steps=threshold,
                         multidiffusion_tflop=multi / 1e12, sync_overhead_tflop=threshold * per_sync / 1e12,
                         syncdiffusion_tflop=(multi + threshold * per_sync) / 1e12,
                         reference_tflop=(multi + threshold * per_sync_reference) / 1e12))
    parts = dict(unet_fwd_cfg_tflop=unet_fwd / 1e12, unet_fwd_bwd_cfg_tflop=unet_grad / 1e12,
                 vae_decode_fwd_tflop=vae_fwd / 1e12, vae_decode_fwd_bwd_tflop=vae_grad / 1e12,
                 lpips_vgg_fwd_bwd_tflop=lpips_grad / 1e12, lpips_vgg_trunk_fwd_tflop=trunk_fwd / 1e12)
    return [parts, *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flops", action="store_true", help="FLOPs only")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                        help="pano360's layout (auto: channels-last on the CPU); the reference keeps the default")
    parser.add_argument("--model", choices=sorted(SETUPS), default="proportional")
    parser.add_argument("--components", action="store_true", help="per-component time breakdown")
    parser.add_argument("--sync-batch-size", default="auto", help="pano360's sync_batch_size (auto or a number)")
    parser.add_argument("--steps", type=int, default=None, help="steps (all synchronised); default per model")
    parser.add_argument("--skip-flops", action="store_true")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (use with OMP_NUM_THREADS=1 on a shared machine)")
    args = parser.parse_args()
    if not args.skip_flops:
        for row in flops_table():
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
    if not args.flops:
        size = args.sync_batch_size if args.sync_batch_size == "auto" else int(args.sync_batch_size)
        print(time_comparison(args.repeats, {"on": True, "off": False}.get(args.channels_last, "auto"), args.model,
                              args.components, size, args.steps, args.clock))


if __name__ == "__main__":
    main()
