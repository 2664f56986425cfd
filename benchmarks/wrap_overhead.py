"""Time cost of wraparound padding: wrapped vs plain UNet and VAE-decoder calls on the same latent.

Run: ``python benchmarks/wrap_overhead.py`` (CPU, tiny random models, about 30 s). Wrapping adds two
pads per convolution (a circular and a zero pad, i.e. memory copies) and no FLOPs.
"""

from __future__ import annotations

import statistics
import time

import torch

from pano360.backbones.tiny import tiny_pipeline
from pano360.backbones.wrap import wraparound


def median_seconds(fn, repeats: int = 25) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    print("| component | input (latent units) | plain (ms) | wrapped (ms) | overhead |")
    print("|---|---|---|---|---|")
    for family in ("sd1", "sdxl"):
        pipe = tiny_pipeline(family)
        unet, vae = pipe.unet, pipe.vae
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
                plain = median_seconds(fn)
                with wraparound(module):
                    wrapped = median_seconds(fn)
                print(f"| {name} | {latent_h}×{latent_w} | {plain * 1e3:.1f} | {wrapped * 1e3:.1f} | "
                      f"{(wrapped / plain - 1) * 100:+.0f}% |")


if __name__ == "__main__":
    main()
