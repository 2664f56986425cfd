"""The contract every panorama method fulfils inside the shared denoising loop.

::

    latents = method.init_latents(ctx, noise)              # [B, 4, h, w] equirect latent by default
    for i, t in enumerate(timesteps):
        latents = method.before_step(ctx, latents, t, i)   # e.g. SyncDiffusion's gradient step
        model_in = scheduler.scale_model_input(latents, t)
        output = method.predict(ctx, model_in, t, i)       # one prediction for the whole panorama
        latents = scheduler.step(output, t, latents).prev_sample
    images = method.decode(ctx, latents)                   # [B, 3, H, W] in [-1, 1]

A method never encodes prompts, applies guidance or steps the scheduler: the generator does that
once for all methods (``ctx.denoiser`` carries conditioning and guidance).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..backbones.vae import decode_latents
from ..errors import InvalidInputError


@dataclass
class GenerationContext:
    """What a method can see during one generation.

    Sizes: ``height``/``width`` in pixels, ``latent_height``/``latent_width`` in latent units
    (pixels / ``info.vae_scale_factor``). ``control_image`` is [B, 3, H, W] in [0, 1] or None.
    """

    height: int
    width: int
    info: Any  # backbones.families.FamilyInfo
    pipe: Any  # the diffusers pipeline (unet, vae, scheduler, ...)
    denoiser: Any  # pano360.denoiser.Denoiser
    scheduler: Any
    batch_size: int
    control_image: torch.Tensor | None = None
    generator: Any = None
    channels_last: bool = False  # the generator's memory layout for convolutions (extra networks follow it)
    extras: dict = field(default_factory=dict)

    @property
    def latent_height(self) -> int:
        return self.height // self.info.vae_scale_factor

    @property
    def latent_width(self) -> int:
        return self.width // self.info.vae_scale_factor


@dataclass
class PanoramaMethod:
    """Base class: a plain full-image pass (no wrap). Subclasses override what they change.

    Options are dataclass fields, so ``get_method(name, **options)`` rejects unknown ones and every
    option is recorded in the sidecar.
    """

    name: ClassVar[str] = "base"

    # --- checks ------------------------------------------------------------------------------
    def check_size(self, height: int, width: int) -> None:
        """Model-free size checks specific to the method (pixels); raise InvalidInputError."""

    def check_for_model(self, height: int, width: int, info, num_inference_steps: int) -> None:
        """Checks that need the loaded model's facts (e.g. its downsampling factor)."""

    def fetch_resources(self, num_inference_steps: int) -> None:
        """Make sure the files the method needs besides the diffusion model (e.g. LPIPS weights) are
        on disk, downloading them if allowed; raise ModelLoadError naming the fix. Called before any
        model call (the CLI calls it before it even loads the model)."""

    # --- loop hooks --------------------------------------------------------------------------
    def modules_to_wrap(self, ctx: GenerationContext) -> list:
        """Modules patched with wraparound padding for the whole generation."""
        return []

    def init_latents(self, ctx: GenerationContext, noise: torch.Tensor) -> torch.Tensor:
        """Initial latents from unit Gaussian ``noise`` [B, 4, h, w] (already scaled by the scheduler)."""
        return noise

    def before_step(self, ctx: GenerationContext, latents: torch.Tensor, t, i: int) -> torch.Tensor:
        return latents

    def predict(self, ctx: GenerationContext, latents: torch.Tensor, t, i: int) -> torch.Tensor:
        """Guided model output [B, 4, h, w] for the scaled panorama latents [B, 4, h, w]."""
        return ctx.denoiser(latents, t, control=ctx.control_image, size_px=(ctx.height, ctx.width))

    def decode(self, ctx: GenerationContext, latents: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, H, W] in about [-1, 1] from final latents [B, 4, h, w]."""
        return decode_latents(ctx.pipe.vae, latents)

    def options(self) -> dict:
        return dataclasses.asdict(self)


def unknown_option_error(method: str, unknown: set[str], valid: list[str]) -> InvalidInputError:
    return InvalidInputError(
        f"method {method!r} has no option(s) {', '.join(sorted(unknown))}; its options are: "
        f"{', '.join(valid) if valid else '(none)'}"
    )
