"""SD 1.x, SD 2.x and SDXL: UNets with ε/v prediction, CLIP text encoders, wraparound convolutions.

SDXL differs from SD 1/2 in two places, both here: prompts go through two text encoders (plus a pooled
embedding), and the UNet takes added time ids (original size, crop, target size in pixels: the size of
what the UNet sees, a window, a view or the whole panorama).
"""

from __future__ import annotations

import torch

from .conditioning import TextConditioning
from .families import FamilyInfo, family_of_pipeline
from .family import BackboneFamily, register_family


def sdxl_time_ids(size_px: tuple[int, int], count: int, dtype: torch.dtype, device) -> torch.Tensor:
    """SDXL's added time ids [count, 6]: original size, crop offset (0, 0), target size, in pixels
    (height, width): the size of what the UNet sees (a window, a view or the whole panorama)."""
    height, width = size_px
    ids = torch.tensor([height, width, 0, 0, height, width], dtype=dtype, device=device)
    return ids.expand(count, 6)


def unet_call(network, latents: torch.Tensor, t, embeds: torch.Tensor, pooled: torch.Tensor | None = None,
              size_px: tuple[int, int] | None = None, control: torch.Tensor | None = None, controlnet=None,
              controlnet_scale: float = 1.0, **inputs) -> torch.Tensor:
    """One conditioned UNet output for ``latents`` [N, C, h, w] (latent units) at timestep(s) ``t``.

    ``embeds`` [N, L, D] text embeddings; ``pooled`` [N, P] (SDXL only: then the added time ids are built
    for ``size_px`` = (height, width) in pixels, default the latent size × 8); ``control`` [N, 3, 8h, 8w]
    the ControlNet image in [0, 1]; ``inputs`` extra per-latent tensors (e.g. MVDiffusion's ``cameras``).
    """
    added = None
    if pooled is not None:
        size_px = size_px or (latents.shape[-2] * 8, latents.shape[-1] * 8)
        added = {"text_embeds": pooled, "time_ids": sdxl_time_ids(size_px, latents.shape[0], embeds.dtype, embeds.device)}
    residuals = {}
    if controlnet is not None and control is not None:
        down, mid = controlnet(
            latents, t, encoder_hidden_states=embeds, controlnet_cond=control.to(latents.dtype),
            conditioning_scale=controlnet_scale, added_cond_kwargs=added, return_dict=False,
        )
        residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
    return network(latents, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False,
                   **residuals, **inputs)[0]


class UNetFamily(BackboneFamily):
    """SD 1.x / 2.x (one CLIP text encoder) and SDXL (two, pooled embedding, time ids)."""

    kind = "unet"
    schedule = "alpha"
    default_steps = 50
    default_guidance = 7.5

    def __init__(self, name: str):
        self.name = name

    def facts(self, pipe) -> FamilyInfo:
        from .wrap import total_downsampling

        vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        return FamilyInfo(
            family=family_of_pipeline(pipe),
            prediction_type=pipe.scheduler.config.get("prediction_type", "epsilon"),
            native_size=int(pipe.unet.config.sample_size) * vae_scale,
            vae_scale_factor=vae_scale,
            unet_downsampling=total_downsampling(pipe.unet),
            latent_channels=int(pipe.vae.config.latent_channels),
        )

    def encode(self, pipe, prompts, negative_prompts, guidance, device) -> TextConditioning:
        with torch.no_grad():
            if self.name == "sdxl":
                embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
                    prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=guidance,
                    negative_prompt=negative_prompts,
                )
                return TextConditioning(embeds, negative if guidance else None, pooled,
                                        negative_pooled if guidance else None)
            embeds, negative = pipe.encode_prompt(prompts, device, 1, guidance, negative_prompt=negative_prompts)
            return TextConditioning(embeds, negative if guidance else None)

    def call(self, network, latents, t, embeds, pooled=None, mask=None, *, size_px=None, control=None,
             controlnet=None, controlnet_scale=1.0, embedded_guidance=None, **inputs):
        return unet_call(network, latents, t, embeds, pooled, size_px, control,
                         controlnet, controlnet_scale, **inputs)


for _name in ("sd1", "sd2", "sdxl"):
    register_family(UNetFamily(_name))
