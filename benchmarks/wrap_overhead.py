"""Time cost of wraparound padding: wrapped vs plain UNet and VAE-decoder calls on the same latent.

Run: ``python benchmarks/wrap_overhead.py`` (CPU, tiny random models, about a minute), or
``OMP_NUM_THREADS=1 python benchmarks/wrap_overhead.py --model proportional --repeats 5 --clock cpu``
(SD 2 base's proportions, 64×128 latent = 512×1024 px, CPU time; a few minutes). Wrapping adds one
copy per convolution (the map with its wrapped columns concatenated) and no FLOPs. Both memory layouts
are measured: the default (NCHW) and channels-last, pano360's default on the CPU.
"""

from __future__ import annotations

import statistics
import time

import torch

from pano360.backbones.tiny import tiny_pipeline
from pano360.backbones.wrap import wraparound


def median_seconds_interleaved(plain, module, repeats: int = 25, clock=time.perf_counter) -> tuple[float, float]:
    """Median seconds of ``plain()`` and of ``plain()`` under wraparound, alternating call by call so
    that drifting machine load hits both alike."""
    times = {"plain": [], "wrapped": []}
    plain()  # warm-up
    for _ in range(repeats):
        for name in ("plain", "wrapped"):
            with wraparound(module, enabled=name == "wrapped"):
                start = clock()
                plain()
                times[name].append(clock() - start)
    return statistics.median(times["plain"]), statistics.median(times["wrapped"])


@torch.no_grad()
def proportional(repeats: int, clock) -> None:
    """Circular 512x1024 on the SD 2-proportioned model: UNet (batch 2) and VAE decoder, both layouts."""
    from pano360.backbones.proportional import proportional_pipeline

    print("| component | layout | input (latent units) | plain (ms) | wrapped (ms) | overhead |")
    print("|---|---|---|---|---|---|")
    pipe = proportional_pipeline("sd2")
    unet, vae = pipe.unet, pipe.vae
    latents = torch.randn(2, 4, 64, 128)
    text = torch.randn(2, 77, unet.config.cross_attention_dim)
    for layout in ("NCHW", "channels-last"):
        memory_format = torch.channels_last if layout == "channels-last" else torch.contiguous_format
        unet.to(memory_format=memory_format)
        vae.to(memory_format=memory_format)
        for name, fn, module in (("UNet (proportional sd2)", lambda: unet(latents, 500, encoder_hidden_states=text), unet),
                                 ("VAE decoder (proportional)", lambda: vae.decode(latents[:1]), vae)):
            plain, wrapped = median_seconds_interleaved(fn, module, repeats, clock)
            print(f"| {name} | {layout} | 64×128 | {plain * 1e3:.0f} | {wrapped * 1e3:.0f} | "
                  f"{(wrapped / plain - 1) * 100:+.0f}% |", flush=True)


@torch.no_grad()
def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["tiny", "proportional"], default="tiny")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.manual_seed(0)
    if args.model == "proportional":
        proportional(args.repeats, clock)
        return
    torch.set_num_threads(2)
    print("| component | layout | input (latent units) | plain (ms) | wrapped (ms) | overhead |")
    print("|---|---|---|---|---|---|")
    for family, layout in (("sd1", "NCHW"), ("sd1", "channels-last"), ("sdxl", "NCHW"), ("sdxl", "channels-last")):
        pipe = tiny_pipeline(family)
        unet, vae = pipe.unet, pipe.vae
        if layout == "channels-last":
            unet.to(memory_format=torch.channels_last)
            vae.to(memory_format=torch.channels_last)
        for latent_h, latent_w in ((16, 32), (32, 64)):
            latents = torch.randn(2, 4, latent_h, latent_w)
            text = torch.randn(2, 77, unet.config.cross_attention_dim)
            extra = {}
            if family == "sdxl":
                extra["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 32), "time_ids": torch.zeros(2, 6)}

            def call_unet():
                unet(latents, 500, encoder_hidden_states=text, **extra)

            def call_vae():
                vae.decode(latents[:1])

            for name, fn, module in ((f"UNet ({family})", call_unet, unet), ("VAE decoder", call_vae, vae)):
                plain, wrapped = median_seconds_interleaved(fn, module)
                print(f"| {name} | {layout} | {latent_h}×{latent_w} | {plain * 1e3:.1f} | {wrapped * 1e3:.1f} | "
                      f"{(wrapped / plain - 1) * 100:+.0f}% |")


if __name__ == "__main__":
    main()
