"""Shared benchmark helpers: full-size SD configs (built on the meta device) and FLOP counting.

The configs are the published architecture hyper-parameters of the released checkpoints; building
on ``torch.device("meta")`` allocates no memory, so FLOPs of full-size models can be counted anywhere.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

SD2_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
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
