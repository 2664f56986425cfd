"""Disocclusion filling for stereo 360 by the panorama's own inpainting path.

:func:`pano360.spatial.stereo.render_stereo` fills the background that only one eye sees by extending
the background along each row (offline, no model). Where a diffusion model is loaded, :func:`inpaint_fill`
gives it a ``fill`` callable that regenerates those holes with :func:`pano360.sphere.inpaint.inpaint`
(an inpainting checkpoint, or masked blending with a text-to-image model), with wraparound so holes at
the seam are filled consistently. The row fill is kept as the starting image, so the model only refines.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from .inpaint import inpaint


def inpaint_fill(pipe, prompt: str, *, num_inference_steps: int = 20, guidance_scale: float = 7.5, seed: int = 0,
                 grow: int = 2) -> Callable[[Tensor, Tensor], Tensor]:
    """A ``fill(image [1, 3, H, W] in [0, 1], holes [1, 1, H, W] bool) -> [1, 3, H, W]`` for
    ``render_stereo``. ``grow`` widens the holes by that many pixels so their borders blend. H and W
    must be multiples of 8 (the VAE's)."""

    def fill(image: Tensor, holes: Tensor) -> Tensor:
        mask = F.max_pool2d(holes.float(), 2 * grow + 1, stride=1, padding=grow) if grow else holes.float()
        out = inpaint(pipe, image * 2 - 1, mask, prompt, num_inference_steps=num_inference_steps,
                      guidance_scale=guidance_scale, seed=seed, wrap=True)
        return ((out + 1) / 2).clamp(0, 1).to(image.dtype)

    return fill


__all__ = ["inpaint_fill"]

