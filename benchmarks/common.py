"""Shared benchmark helpers: full-size SD configs (built on the meta device) and FLOP counting.

The configs are the published architecture hyper-parameters of the released checkpoints; building
on ``torch.device("meta")`` allocates no memory, so FLOPs of full-size models can be counted anywhere.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from pano360.backbones.proportional import SD2_BASE_UNET, SD_VAE, SDXL_UNET  # noqa: F401  (the real configs)

TEXT_TOKENS = 77


def meta_unet(config: dict):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**config).eval()


def meta_vae():
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        return AutoencoderKL(**SD_VAE).eval()


def unet_inputs(config: dict, batch: int, latent_h: int, latent_w: int) -> dict:
    """Meta tensors for one UNet call on [batch, 4, latent_h, latent_w] latents (latent units)."""
    meta = dict(device="meta")
    inputs = dict(
        sample=torch.empty(batch, 4, latent_h, latent_w, **meta),
        timestep=torch.tensor(500, **meta),
        encoder_hidden_states=torch.empty(batch, TEXT_TOKENS, config["cross_attention_dim"], **meta),
    )
    if config.get("addition_embed_type") == "text_time":
        inputs["added_cond_kwargs"] = {"text_embeds": torch.empty(batch, 1280, **meta),
                                       "time_ids": torch.empty(batch, 6, **meta)}
    return inputs


def count_flops(module, **inputs) -> int:
    """FLOPs (2 per multiply-add) of one forward call, counted with torch's FlopCounterMode."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(**inputs)
    return counter.get_total_flops()


def unet_call_flops(config: dict, batch: int, latent_h: int, latent_w: int) -> int:
    return count_flops(meta_unet(config), **unet_inputs(config, batch, latent_h, latent_w))


def vae_decode_flops(latent_h: int, latent_w: int) -> int:
    vae = meta_vae()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        vae.decode(torch.empty(1, 4, latent_h, latent_w, device="meta"))
    return counter.get_total_flops()


def tflop(flops: float) -> str:
    return f"{flops / 1e12:.2f}"
