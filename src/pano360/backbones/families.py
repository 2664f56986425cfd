"""Which model family a checkpoint belongs to: SD 1.x, SD 2.x, SDXL (UNets), FLUX.1, SD3.x, Qwen-Image,
FLUX.2 [klein] (DiTs).

The family decides the text encoder(s), the conditioning, the noise schedule, how the seam is closed
and the native resolution; :mod:`pano360.backbones.family` holds one object per family with that
behaviour, this module only the facts and the detection. Detection works on loaded diffusers
pipelines (their components' configs) and, before loading, on ``model_index.json`` class names or the
key names of single-file checkpoints; never on the model's *name*.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

UNET_FAMILIES = ("sd1", "sd2", "sdxl")
DIT_FAMILIES = ("flux", "sd3", "qwen-image", "flux2")
FAMILIES = UNET_FAMILIES + DIT_FAMILIES

# diffusers pipeline class (model_index.json "_class_name") → family
PIPELINE_CLASSES = {
    "FluxPipeline": "flux", "FluxFillPipeline": "flux", "FluxImg2ImgPipeline": "flux",
    "FluxInpaintPipeline": "flux", "StableDiffusion3Pipeline": "sd3", "StableDiffusion3Img2ImgPipeline": "sd3",
    "StableDiffusion3InpaintPipeline": "sd3", "QwenImagePipeline": "qwen-image",
    "QwenImageImg2ImgPipeline": "qwen-image", "QwenImageInpaintPipeline": "qwen-image",
    "Flux2KleinPipeline": "flux2",
}
# diffusers denoiser class (transformer/config.json "_class_name") → family
TRANSFORMER_CLASSES = {"FluxTransformer2DModel": "flux", "SD3Transformer2DModel": "sd3",
                       "QwenImageTransformer2DModel": "qwen-image", "Flux2Transformer2DModel": "flux2"}


@dataclass(frozen=True)
class FamilyInfo:
    """Facts about a loaded backbone used by the denoising loop, the methods and the pre-flight plan.

    Sizes: ``native_size`` in pixels; ``vae_scale_factor`` pixels per latent; ``unet_downsampling`` the
    multiple (in latent units) that latent sizes must have for the denoiser to see whole cells: the
    UNet's total downsampling, or a DiT's patch size (2 × 2 latents per token).
    """

    family: str  # one of FAMILIES
    prediction_type: str  # "epsilon" | "v_prediction" | "sample" | "flow_prediction"
    native_size: int  # native square size in pixels (unet.sample_size · 8; a DiT's training size)
    vae_scale_factor: int  # pixels per latent column (8 for every SD/FLUX/SD3/Qwen VAE)
    unet_downsampling: int  # latent sizes must be multiples of it (UNet downsampling / DiT patch)
    latent_channels: int = 4  # 4 (SD), 16 (FLUX, SD3, Qwen-Image)
    patch_size: int = 1  # latents per token side (2 for FLUX, SD3, Qwen-Image; 1 = a UNet)

    @property
    def is_sdxl(self) -> bool:
        return self.family == "sdxl"

    @property
    def is_dit(self) -> bool:
        return self.family in DIT_FAMILIES

    @property
    def latent_multiple(self) -> int:
        """Latent sizes are multiples of this (UNet downsampling or DiT patch), in latent units."""
        return self.unet_downsampling

    @property
    def pixel_multiple(self) -> int:
        """Pixel sizes are multiples of this: ``latent_multiple · vae_scale_factor``."""
        return self.unet_downsampling * self.vae_scale_factor


def family_of_pipeline(pipe) -> str:
    """Family of a loaded diffusers pipeline, from its denoiser's class and its text encoders."""
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        family = TRANSFORMER_CLASSES.get(type(transformer).__name__)
        if family is None:
            raise ValueError(f"unsupported transformer {type(transformer).__name__}")
        return family
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


def family_of_model_index(index: dict) -> str | None:
    """Family named by a diffusers ``model_index.json`` (its pipeline class), None for SD/SDXL
    pipelines (whose family is read from the UNet config) and unknown classes."""
    return PIPELINE_CLASSES.get(str(index.get("_class_name", "")))


def family_of_transformer_keys(keys: Iterable[str]) -> str | None:
    """Family of a single-file DiT checkpoint (original BFL / SAI / Qwen layout or diffusers layout)
    from its key names, or None."""
    keys = list(keys)
    strip = [k.split("model.diffusion_model.", 1)[-1] for k in keys]
    has = lambda prefix: any(key.startswith(prefix) for key in strip)
    if has("single_stream_modulation."):  # FLUX.2's shared modulation (BFL and diffusers layouts)
        return "flux2"
    if has("double_blocks.") or has("single_blocks.") or has("single_transformer_blocks."):
        return "flux"
    if has("joint_blocks.") or (has("transformer_blocks.") and has("pos_embed")):
        return "sd3"
    if has("transformer_blocks.") and (has("img_in.") or has("txt_norm.")):
        return "qwen-image"
    return None


def family_of_unet_config(unet_config: dict, class_name: str = "") -> str:
    """SD family of a diffusers UNet config (``unet/config.json``) and its pipeline's class name."""
    if "XL" in class_name or unet_config.get("addition_embed_type") == "text_time":
        return "sdxl"
    if unet_config.get("cross_attention_dim") == 1024 or unet_config.get("use_linear_projection"):
        return "sd2"
    return "sd1"
