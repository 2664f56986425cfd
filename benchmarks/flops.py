"""FLOPs per panorama of the ``circular`` method for full-size SD 2 base and SDXL (meta device).

Run: ``python benchmarks/flops.py`` (about a minute on 2 CPU cores; prints a Markdown table).
Circular does one UNet call per step on the whole latent, with classifier-free guidance batched
(batch 2), and one VAE decode. Wraparound padding adds no FLOPs (it only changes what is padded).
"""

from __future__ import annotations

from common import SD2_BASE_UNET, SDXL_UNET, tflop, unet_call_flops, vae_decode_flops

STEPS = 50
CASES = [
    ("SD 2 base", SD2_BASE_UNET, 512, 512),
    ("SD 2 base", SD2_BASE_UNET, 512, 1024),
    ("SD 2 base", SD2_BASE_UNET, 1024, 2048),
    ("SDXL", SDXL_UNET, 1024, 1024),
    ("SDXL", SDXL_UNET, 512, 1024),
    ("SDXL", SDXL_UNET, 1024, 2048),
]


def main() -> None:
    print(f"| model | size (H×W px) | UNet call, CFG batch 2 (TFLOP) | VAE decode (TFLOP) | "
          f"panorama, {STEPS} steps (TFLOP) |")
    print("|---|---|---|---|---|")
    for name, config, height, width in CASES:
        unet = unet_call_flops(config, 2, height // 8, width // 8)
        vae = vae_decode_flops(height // 8, width // 8)
        print(f"| {name} | {height}×{width} | {tflop(unet)} | {tflop(vae)} | {tflop(STEPS * unet + vae)} |")


if __name__ == "__main__":
    main()
