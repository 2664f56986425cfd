"""Time cost of wraparound padding: wrapped vs plain UNet and VAE-decoder calls on the same latent.

Run: ``python benchmarks/wrap_overhead.py`` (CPU, tiny random models, about a minute). Wrapping adds one
copy per convolution (the map with its wrapped columns concatenated) and no FLOPs. Both memory layouts
are measured: the default (NCHW) and channels-last, pano360's default on the CPU.
"""

from __future__ import annotations

import statistics
import time

import torch

from pano360.backbones.tiny import tiny_pipeline
from pano360.backbones.wrap import wraparound


def median_seconds_interleaved(plain, module, repeats: int = 25) -> tuple[float, float]:
    """Median seconds of ``plain()`` and of ``plain()`` under wraparound, alternating call by call so
    that drifting machine load hits both alike."""
    times = {"plain": [], "wrapped": []}
    plain()  # warm-up
    for _ in range(repeats):
        for name in ("plain", "wrapped"):
            with wraparound(module, enabled=name == "wrapped"):
                start = time.perf_counter()
                plain()
                times[name].append(time.perf_counter() - start)
    return statistics.median(times["plain"]), statistics.median(times["wrapped"])


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
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
