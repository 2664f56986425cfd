"""Inpainting with any SD 1/2/SDXL backbone: a 9-channel inpainting UNet when one is loaded, masked
latent blending with the normal text-to-image UNet otherwise.

Images are [B, 3, H, W] in [-1, 1], masks [B|1, 1, H, W] with **1 = regenerate**, 0 = keep; H and W
are multiples of 8 (one latent = 8 pixels). The latent mask is the pixel mask max-pooled over each
8×8 cell, so a latent is regenerated as soon as one of its pixels is.

* **Masked latent blending** (any 4-channel UNet; RePaint-style, as diffusers' inpainting pipeline
  does for 4-channel UNets): before each step at timestep t the kept latents are replaced by the
  known latents noised to t, ``x_t ← m·x_t + (1 − m)·add_noise(x0_known, ε, t)`` with the run's
  own noise ε, and after the last step by the known latents themselves.
* **Inpainting UNet** (9 input channels: noisy latent, latent mask, latents of the masked image, as
  ``runwayml/stable-diffusion-inpainting`` / SD 2 / SDXL inpainting checkpoints): the model sees the
  masked image and the mask at every step; no blending (the caller pastes kept pixels back).

The run has the shape of a method run of the shared loop (``init_latents``, ``before_step``,
``predict``, ``finish``); :func:`inpaint` drives it with the shared helpers (prompt encoding,
:class:`~pano360.backbones.guided.GuidedModel`, VAE encode/decode, wraparound padding).
``wrap=True`` wraps every convolution of the UNet and VAE horizontally, for equirect canvases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..backbones.conditioning import encode_prompts
from ..backbones.guided import GuidedModel
from ..backbones.schedulers import DEFAULT_SCHEDULER, make_scheduler
from ..backbones.vae import decode_latents, encode_images
from ..backbones.wrap import wraparound
from ..errors import InvalidInputError

INPAINT_CHANNELS = 9  # 4 noisy latent + 1 mask + 4 masked-image latent


def is_inpainting_unet(unet) -> bool:
    return int(unet.config.in_channels) == INPAINT_CHANNELS


def latent_mask(mask: Tensor, scale: int = 8) -> Tensor:
    """Pixel mask [B, 1, H, W] → latent mask [B, 1, H/8, W/8]: 1 where any pixel of the cell is 1."""
    return F.max_pool2d((mask > 0.5).float(), scale)


@dataclass
class InpaintRun:
    """One inpainting run on known latents ``known`` [B, 4, h, w] with latent mask ``mask`` [B, 1, h, w].

    ``masked_latents`` [B, 4, h, w] (latents of the image with the regenerated part set to 0) is given
    for 9-channel UNets, None for masked blending. ``noise`` [B, 4, h, w] is unit Gaussian.
    """

    scheduler: object
    known: Tensor
    mask: Tensor
    noise: Tensor
    masked_latents: Tensor | None = None
    size_px: tuple[int, int] | None = None
    timesteps: list = field(default_factory=list)

    @property
    def blends(self) -> bool:
        return self.masked_latents is None

    def init_latents(self) -> Tensor:
        return self.noise * self.scheduler.init_noise_sigma

    def before_step(self, latents: Tensor, t, i: int) -> Tensor:
        if not self.blends:
            return latents
        noised = self.scheduler.add_noise(self.known, self.noise, torch.as_tensor([t]).reshape(1))
        return self.mask * latents + (1 - self.mask) * noised

    def predict(self, model: GuidedModel, model_input: Tensor, t, i: int) -> Tensor:
        if self.masked_latents is not None:
            model_input = torch.cat([model_input, self.mask.to(model_input.dtype),
                                     self.masked_latents.to(model_input.dtype)], dim=1)
        return model(model_input, t, size_px=self.size_px)

    def finish(self, latents: Tensor) -> Tensor:
        return self.mask * latents + (1 - self.mask) * self.known if self.blends else latents


def _noise(shape, seed: int | None, device, dtype) -> Tensor:
    generator = torch.Generator("cpu").manual_seed(int(seed if seed is not None else 0))
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)


def inpaint(
    pipe,
    image: Tensor,
    mask: Tensor,
    prompt: str | list[str],
    *,
    negative_prompt: str | None = None,
    num_inference_steps: int = 30,
    guidance_scale: float = 7.5,
    scheduler: str = DEFAULT_SCHEDULER,
    seed: int | None = 0,
    wrap: bool = False,
    noise: Tensor | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Regenerate ``mask`` (1 = new) of ``image`` [B, 3, H, W] in [-1, 1]; returns [B, 3, H, W] in [-1, 1].

    ``pipe`` is a loaded diffusers SD/SDXL pipeline (text-to-image or inpainting). ``wrap`` makes the
    left and right edges neighbours (equirect canvases). ``noise`` [B, 4, H/8, W/8] replaces the
    seeded unit Gaussian noise. ``progress(i)`` is called after each step.
    Kept pixels come back through the VAE (close, not exact): paste them back for exactness.
    """
    height, width = image.shape[-2:]
    if height % 8 or width % 8:
        raise InvalidInputError(f"inpainting needs sizes that are multiples of 8 pixels, got {width}x{height}")
    unet, vae = pipe.unet, pipe.vae
    device, dtype = unet.device, unet.dtype
    batch = image.shape[0]
    prompts = [prompt] * batch if isinstance(prompt, str) else list(prompt)
    negatives = None if negative_prompt is None else [negative_prompt] * batch
    image = image.to(device=device, dtype=dtype)
    mask = mask.to(device=device, dtype=dtype).expand(batch, 1, height, width)
    sched = make_scheduler(scheduler, pipe.scheduler.config)
    sched.set_timesteps(num_inference_steps, device=device)
    text = encode_prompts(pipe, prompts, negatives, guidance_scale != 1.0, device)
    model = GuidedModel(unet, text, guidance_scale)
    wrapping = wraparound(unet, vae) if wrap else contextlib.nullcontext()
    with wrapping, torch.no_grad():
        known = encode_images(vae, image)
        small_mask = latent_mask(mask, height // known.shape[-2]).to(dtype)
        masked = None
        if is_inpainting_unet(unet):
            masked = encode_images(vae, image * (mask < 0.5))
        noise = _noise(known.shape, seed, device, dtype) if noise is None else noise.to(device=device, dtype=dtype)
        run = InpaintRun(sched, known, small_mask, noise, masked,
                         size_px=(height, width), timesteps=list(sched.timesteps))
        latents = run.init_latents()
        for i, t in enumerate(sched.timesteps):
            latents = run.before_step(latents, t, i)
            model_input = sched.scale_model_input(latents, t)
            output = run.predict(model, model_input, t, i)
            latents = sched.step(output, t, latents).prev_sample
            if progress is not None:
                progress(i)
        latents = run.finish(latents)
        return decode_latents(vae, latents).float().clamp(-1, 1)
