"""Inpainting with any SD 1/2/SDXL backbone: a 9-channel inpainting UNet when one is loaded, masked
latent blending with the normal text-to-image UNet otherwise.

Images are [B, 3, H, W] in [-1, 1], masks [B|1, 1, H, W] with **1 = regenerate**, 0 = keep; H and W
are multiples of 8 (one latent = 8 pixels). The denoising is the ``inpaint`` method
(:mod:`pano360.methods.inpaint`, which documents both variants) run by the shared loop of
:class:`~pano360.generator.PanoramaGenerator`; this module registers it and wraps it for tensors.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..errors import InvalidInputError
from ..methods import available_methods, register_method
from ..methods.inpaint import INPAINT_CHANNELS, InpaintMethod

if InpaintMethod.name not in available_methods():
    register_method(InpaintMethod)


def is_inpainting_unet(unet) -> bool:
    return int(unet.config.in_channels) == INPAINT_CHANNELS


def inpaint(
    pipe,
    image: Tensor,
    mask: Tensor,
    prompt: str | list[str],
    *,
    negative_prompt: str | None = None,
    num_inference_steps: int = 30,
    guidance_scale: float = 7.5,
    scheduler: str | None = None,
    seed: int | None = 0,
    wrap: bool = False,
    noise: Tensor | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Regenerate ``mask`` (1 = new) of ``image`` [B, 3, H, W] in [-1, 1]; returns [B, 3, H, W] in [-1, 1].

    ``pipe`` is a loaded diffusers SD/SDXL pipeline (text-to-image or inpainting). ``wrap`` makes the
    left and right edges neighbours (equirect canvases). ``noise`` [B, 4, H/8, W/8] replaces the
    seeded unit Gaussian noise (image i uses seed + i). ``progress(i)`` is called after each step.
    Kept pixels come back through the VAE (close, not exact): paste them back for exactness.
    """
    from ..generator import PanoramaGenerator

    height, width = image.shape[-2:]
    if height % 8 or width % 8:
        raise InvalidInputError(f"inpainting needs sizes that are multiples of 8 pixels, got {height}x{width}")
    batch = image.shape[0]
    prompts = [prompt] * batch if isinstance(prompt, str) else list(prompt)
    generator = PanoramaGenerator.from_pipe(pipe, scheduler=scheduler)

    def step_done(_generator, i, _t, _tensors):
        if progress is not None:
            progress(i)
        return {}

    result = generator(
        prompts, method="inpaint", image=image, mask=mask, wrap=wrap, height=height, width=width,
        num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, negative_prompt=negative_prompt,
        seed=seed if seed is not None else 0, latents=noise, output_type="pt", progress=False,
        callback_on_step_end=step_done,
    )
    return result.images.to(image.device) * 2 - 1
