"""Which Stable Diffusion family a checkpoint belongs to: SD 1.x, SD 2.x or SDXL.

The family decides the text encoder(s), the conditioning (SDXL's pooled text embedding and added
time ids) and the native resolution. Detection works on loaded diffusers pipelines and, before
loading, on the key names of single-file (original LDM layout) checkpoints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FAMILIES = ("sd1", "sd2", "sdxl")


@dataclass(frozen=True)
class FamilyInfo:
    """Facts about a loaded backbone used by the denoising loop."""

    family: str  # "sd1" | "sd2" | "sdxl"
    prediction_type: str  # "epsilon" | "v_prediction" | "sample"
    native_size: int  # native square size in pixels (unet.sample_size · 8)
    vae_scale_factor: int  # pixels per latent column (8 for every SD VAE)
    unet_downsampling: int  # total UNet downsampling: latent sizes should be multiples of it

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"


def family_of_pipeline(pipe) -> str:
    """Family of a loaded diffusers SD/SDXL pipeline."""
    if getattr(pipe, "text_encoder_2", None) is not None or "XL" in type(pipe).__name__:
        return "sdxl"
    text_config = pipe.text_encoder.config
    unet_config = pipe.unet.config
    # SD 2 uses OpenCLIP ViT-H (gelu, width 1024) and linear transformer projections.
    if (
        getattr(text_config, "hidden_act", "quick_gelu") == "gelu"
        or unet_config.cross_attention_dim == 1024
        or unet_config.get("use_linear_projection", False)
    ):
        return "sd2"
    return "sd1"


def family_of_checkpoint_keys(keys: Iterable[str]) -> str | None:
    """Family of an original-layout (LDM / A1111) checkpoint from its key names, or None if unknown."""
    keys = list(keys)
    has = lambda prefix: any(key.startswith(prefix) for key in keys)
    if has("conditioner.embedders.1."):
        return "sdxl"
    if has("cond_stage_model.model."):
        return "sd2"
    if has("cond_stage_model.transformer."):
        return "sd1"
    if has("model.diffusion_model."):
        return "sd1"  # UNet without a text encoder: the most common case
    return None
