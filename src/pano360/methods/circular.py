"""``circular``: one full-panorama UNet pass per step with wraparound padding everywhere.

Every convolution of the UNet, the ControlNet and the VAE (encoder and decoder) pads horizontally
with the opposite edge (:mod:`pano360.backbones.wrap`), so the left and right borders of the
panorama are computed as neighbours and meet without a seam. This is the recipe of
Coherent_Panorama_SD (SDXL + circular padding of every Conv2d in UNet and VAE, optionally a 360 LoRA
and a depth ControlNet; ``shared/reference/ecosystem.md`` §2.1 explains why the VAE must wrap too).

Cost: one UNet call per step on the whole ``h × w`` latent (no overlapping windows), plus padding
copies (measured in ``docs/benchmarks.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..errors import InvalidInputError
from .base import GenerationContext, PanoramaMethod


@dataclass
class CircularMethod(PanoramaMethod):
    """Options:

    * ``wrap`` (default True): wraparound padding in the UNet/ControlNet; False gives plain SD at the
      panorama size (for comparisons: its left and right edges do not meet).
    * ``wrap_vae`` (default True): wraparound padding in the VAE too, so pixels meet as latents do.
    """

    name: ClassVar[str] = "circular"
    wrap: bool = True
    wrap_vae: bool = True

    def check_for_model(self, height: int, width: int, info, num_inference_steps: int) -> None:
        latent_width = width // info.vae_scale_factor
        multiple = info.unet_downsampling
        if self.wrap and latent_width % multiple:
            step = multiple * info.vae_scale_factor
            lower = max(step, width - width % step)
            raise InvalidInputError(
                f"width {width} is not a multiple of {step} pixels, which this model needs to wrap seamlessly "
                f"(its UNet downsamples latents by {multiple}); use width {lower} or {lower + step}"
            )

    def modules_to_wrap(self, ctx: GenerationContext) -> list:
        modules = []
        if self.wrap:
            modules += [ctx.pipe.unet, ctx.denoiser.controlnet]
        if self.wrap_vae:
            modules.append(ctx.pipe.vae)
        return modules
