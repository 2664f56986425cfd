"""Tiny random Stable Diffusion-family models for tests and offline smoke runs.

They have the real architectures (diffusers ``UNet2DConditionModel``, ``AutoencoderKL``,
``ControlNetModel``, transformers CLIP text encoders) at toy width, deterministic random weights,
and the real structure where it matters for panoramas:

* the VAE downsamples by 8, like every SD VAE, so a latent column is 8 pixels;
* the UNet has three resolution levels (total downsampling 4), enough to test wrap equivariance;
* the SD 2-like model predicts ``v`` and uses OpenCLIP-style ``gelu`` text layers and linear
  transformer projections; the SDXL-like model has two text encoders, pooled text embeddings and
  added time ids; ControlNets have *non-zero* output convolutions so that they change the result.

The tokenizer is a byte-level CLIP tokenizer with no merges (one token per character), built in
memory, so nothing is downloaded. Each builder takes well under a second.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

from ..defaults import TINY_MODEL_NAMES  # noqa: F401  (re-exported; defined torch-free for the CLI)

TINY_FAMILIES = ("sd1", "sd2", "sdxl")
TEXT_WIDTH = 32


@lru_cache(maxsize=1)
def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins for bytes used by byte-level BPE vocabularies (GPT-2/CLIP scheme)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    alphabet, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            alphabet[byte] = chr(byte)
        else:
            alphabet[byte] = chr(256 + extra)
            extra += 1
    return [alphabet[b] for b in range(256)]


def tiny_tokenizer():
    """A character-level ``CLIPTokenizer`` (vocabulary: 256 byte symbols, their word-final forms, specials)."""
    from transformers import CLIPTokenizer

    symbols = _byte_alphabet()
    tokens = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def tiny_text_encoder(with_projection: bool = False, openclip_style: bool = False, seed: int = 0):
    """A 2-layer CLIP text encoder of width 32 (``CLIPTextModelWithProjection`` if ``with_projection``)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = tiny_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_WIDTH,
        intermediate_size=2 * TEXT_WIDTH,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=TEXT_WIDTH,
        hidden_act="gelu" if openclip_style else "quick_gelu",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model_class(config).eval()


def tiny_unet(family: str = "sd1", seed: int = 0):
    """A 3-level ``UNet2DConditionModel`` (channels 16/32/32, total downsampling 4) for ``family``."""
    from diffusers import UNet2DConditionModel

    common = dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
    )
    if family == "sdxl":
        config = dict(
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=2 * TEXT_WIDTH,
            attention_head_dim=(2, 4, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + TEXT_WIDTH,
        )
    else:
        config = dict(
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=TEXT_WIDTH,
            attention_head_dim=4 if family == "sd1" else (2, 4, 4),
            use_linear_projection=family == "sd2",
        )
    torch.manual_seed(seed)
    return UNet2DConditionModel(**common, **config).eval()


def tiny_vae(family: str = "sd1", seed: int = 0):
    """A 4-level ``AutoencoderKL`` with the SD downsampling factor 8 and 4 latent channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.13025 if family == "sdxl" else 0.18215,
        force_upcast=family == "sdxl",
    ).eval()


def tiny_scheduler(family: str = "sd1"):
    """The DDIM scheduler SD checkpoints ship with (v-prediction for the SD 2-like model)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="v_prediction" if family == "sd2" else "epsilon",
        timestep_spacing="leading",
    )


def tiny_pipeline(family: str = "sd1", seed: int = 0):
    """A complete random ``StableDiffusionPipeline`` (sd1, sd2) or ``StableDiffusionXLPipeline`` (sdxl)."""
    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; use one of {TINY_FAMILIES}")
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    unet = tiny_unet(family, seed)
    vae = tiny_vae(family, seed + 1)
    scheduler = tiny_scheduler(family)
    if family == "sdxl":
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=tiny_text_encoder(seed=seed + 2),
            text_encoder_2=tiny_text_encoder(with_projection=True, openclip_style=True, seed=seed + 3),
            tokenizer=tiny_tokenizer(),
            tokenizer_2=tiny_tokenizer(),
            unet=unet,
            scheduler=scheduler,
        )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=tiny_text_encoder(openclip_style=family == "sd2", seed=seed + 2),
        tokenizer=tiny_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_window64_pipeline(seed: int = 0):
    """A tiny SD 1.x ``StableDiffusionPipeline`` whose UNet is cheap at SD's native 64-latent windows.

    Attention sits only at the lowest resolution (16×16 for a 64×64 window). Used where a reference
    fixes the window at 64 latents (diffusers' ``StableDiffusionPanoramaPipeline``).
    """
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, block_out_channels=(16, 32, 32), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"), cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=4,
    ).eval()
    return StableDiffusionPipeline(
        vae=tiny_vae(), text_encoder=tiny_text_encoder(), tokenizer=tiny_tokenizer(), unet=unet,
        scheduler=tiny_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def tiny_controlnet(unet, seed: int = 0):
    """A depth-style ``ControlNetModel`` derived from ``unet``, with random (non-zero) output convs.

    A trained ControlNet's zero-initialised convolutions are no longer zero; randomising them here makes
    the control image actually change the prediction, so tests of the control path can fail.
    """
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                  controlnet.controlnet_cond_embedding.conv_out]
    with torch.no_grad():
        for conv in zero_convs:
            conv.weight.normal_(0.0, 0.2)
            conv.bias.normal_(0.0, 0.05)
        # He-initialise the control image encoder so the image's content (not only biases) gets through.
        for conv in controlnet.controlnet_cond_embedding.modules():
            if isinstance(conv, torch.nn.Conv2d):
                fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
                conv.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
    return controlnet.eval()


def save_tiny_pipeline(folder: str | os.PathLike, family: str = "sd1", seed: int = 0, controlnet: bool = False):
    """Save a tiny pipeline in diffusers layout (and a ControlNet in ``folder/controlnet``); returns the folder."""
    folder = Path(folder)
    pipe = tiny_pipeline(family, seed)
    pipe.save_pretrained(folder)
    if controlnet:
        tiny_controlnet(pipe.unet, seed).save_pretrained(folder / "controlnet")
    return folder


TINY_INPAINTING_NAMES = {"tiny-inpaint": "sd1", "tiny-sd2-inpaint": "sd2", "tiny-sdxl-inpaint": "sdxl"}


def tiny_inpainting_pipeline(family: str = "sd1", seed: int = 0):
    """A random 9-channel inpainting pipeline of ``family`` (``StableDiffusionInpaintPipeline`` or
    ``StableDiffusionXLInpaintPipeline``): the tiny UNet with in_channels 9 (noisy latent, mask,
    masked-image latent), the tiny VAE, text encoder(s) and scheduler of :func:`tiny_pipeline`."""
    from diffusers import (
        StableDiffusionInpaintPipeline,
        StableDiffusionXLInpaintPipeline,
        UNet2DConditionModel,
    )

    base = tiny_pipeline(family, seed)
    torch.manual_seed(seed + 10)
    unet = UNet2DConditionModel.from_config(base.unet.config, in_channels=9).eval()
    parts = {name: getattr(base, name) for name in ("vae", "text_encoder", "tokenizer", "scheduler")}
    if family == "sdxl":
        return StableDiffusionXLInpaintPipeline(unet=unet, text_encoder_2=base.text_encoder_2,
                                                tokenizer_2=base.tokenizer_2, **parts)
    return StableDiffusionInpaintPipeline(unet=unet, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False, **parts)
