"""FLOPs, parameters and weight memory of the full-size transformers (FLUX.1-dev, SD3-medium, SD3.5-large,
Qwen-Image) per panorama, beside SD 2 base and SDXL, counted on the meta device (no memory, any machine).

Run: ``python benchmarks/flops_dit.py`` (a few minutes on 2 CPU cores; prints Markdown tables).

One ``circular`` call is one transformer call on the whole panorama's tokens (2 × 2 latents each) plus
the text tokens (FLUX 512 T5 tokens, SD3 77 + 256, Qwen-Image a typical 64-token prompt). Guidance:
FLUX.1-dev has it embedded (batch 1); SD3 and Qwen-Image run classifier-free guidance (batch 2; Qwen-Image
only with a negative prompt). The exact seam runs the image queries over one extra copy of the width
dimensions (FLUX/Qwen 128 → 184 channels for their logits, v zero-padded to match as CUDA's flash kernels
need; text queries unchanged): its FLOPs are counted as a second column. Steps: each family's default (28, 28, 28, 50).
"""

from __future__ import annotations

import contextlib

import torch
from common import SD2_BASE_UNET, SDXL_UNET, tflop, unet_call_flops, vae_decode_flops
from torch.utils.flop_counter import FlopCounterMode

from pano360.backbones import token_seam as token_seam_module
from pano360.backbones.family import get_family
from pano360.backbones.tiny_dit import full_size_transformer
from pano360.backbones.token_seam import TokenSeam, token_seam

token_seam_module.FLASH_DEVICES = ("cuda", "meta")  # count the exact seam as it runs on a GPU

CASES = [  # (label, full-size name, family, text tokens, CFG batch, steps)
    ("FLUX.1-dev", "flux-dev", "flux", 512, 1, 28),
    ("SD3-medium", "sd3-medium", "sd3", 333, 2, 28),
    ("SD3.5-large", "sd3.5-large", "sd3", 333, 2, 28),
    ("Qwen-Image", "qwen-image", "qwen-image", 64, 2, 50),
]
SIZES = [(512, 1024), (1024, 2048)]


def transformer_call_flops(network, family_name: str, batch: int, text_tokens: int, latent_h: int, latent_w: int,
                           seam: TokenSeam | None) -> int:
    family = get_family(family_name)
    config = network.config
    meta = {"device": "meta"}
    latents = torch.empty(batch, 16, latent_h, latent_w, **meta)
    embeds = torch.empty(batch, text_tokens, config.joint_attention_dim, **meta)
    pooled = (torch.empty(batch, config.pooled_projection_dim, **meta)
              if "pooled_projection_dim" in config else None)
    mask = None
    context = token_seam(network, seam) if seam is not None else contextlib.nullcontext()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), context, counter:
        family.call(network, latents, torch.tensor(500.0, **meta), embeds, pooled, mask, embedded_guidance=3.5)
    return counter.get_total_flops()


def main() -> None:
    print("| model | parameters | weights bf16 (GiB) | size (H×W px) | call, released (TFLOP) | call, exact seam (TFLOP) "
          "| panorama, default steps + VAE (TFLOP) |")
    print("|---|---|---|---|---|---|---|")
    for label, name, family, text, batch, steps in CASES:
        network = full_size_transformer(name, device="meta")
        parameters = sum(p.numel() for p in network.parameters())
        for height, width in SIZES:
            latent_h, latent_w = height // 8, width // 8
            plain = transformer_call_flops(network, family, batch, text, latent_h, latent_w, None)
            seam = TokenSeam("exact")
            exact = transformer_call_flops(network, family, batch, text, latent_h, latent_w, seam)
            vae = vae_decode_flops(latent_h, latent_w)
            print(f"| {label} | {parameters / 1e9:.2f} B | {parameters * 2 / 2**30:.1f} | {height}×{width} | "
                  f"{tflop(plain)} | {tflop(exact)} | {tflop(steps * exact + vae)} |")
    for label, config in (("SD 2 base", SD2_BASE_UNET), ("SDXL", SDXL_UNET)):
        for height, width in SIZES:
            unet = unet_call_flops(config, 2, height // 8, width // 8)
            vae = vae_decode_flops(height // 8, width // 8)
            print(f"| {label} (UNet, CFG 2) | | | {height}×{width} | {tflop(unet)} | {tflop(unet)} | "
                  f"{tflop(50 * unet + vae)} |")


if __name__ == "__main__":
    main()
