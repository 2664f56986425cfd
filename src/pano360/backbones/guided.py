"""The model call shared by sampling and training, and classifier-free guidance around it.

The call itself belongs to the backbone's family (:meth:`pano360.backbones.family.BackboneFamily.call`:
UNet keyword arguments and SDXL time ids, or a transformer's token packing, position ids, timestep
scale and embedded guidance); :class:`GuidedModel` batches the unconditional and conditional halves
in one call and combines them as the family does (plain CFG, or Qwen-Image's norm-preserving true
CFG). Nothing else in pano360 calls a denoiser, so training and sampling cannot drift apart.

The output is what the network predicts: ε, v, x0 or a flow velocity; turn it into a clean-latent
estimate with :func:`pano360.backbones.parameterization.predicted_original`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .conditioning import TextConditioning


def predict_noise(network: Callable, latents: torch.Tensor, t: torch.Tensor | int, embeds: torch.Tensor,
                  pooled: torch.Tensor | None = None, size_px: tuple[int, int] | None = None,
                  control: torch.Tensor | None = None, controlnet=None, controlnet_scale: float = 1.0,
                  family=None, **inputs) -> torch.Tensor:
    """One conditioned network output [N, C, h, w] for ``latents`` [N, C, h, w] at timestep(s) ``t``.

    ``family`` is the backbone's contract (default: the UNet call, with SDXL time ids when ``pooled``
    is given, for SD 1/2/SDXL callers that pass no family). See
    :func:`pano360.backbones.family_unet.unet_call` for the UNet arguments.
    """
    if family is None:
        from .family_unet import unet_call

        return unet_call(network, latents, t, embeds, pooled, size_px, control, controlnet, controlnet_scale,
                         **inputs)
    return family.call(network, latents, t, embeds, pooled, inputs.pop("mask", None), size_px=size_px,
                       control=control, controlnet=controlnet, controlnet_scale=controlnet_scale, **inputs)


def _doubled(value):
    """[x; x] along the batch for tensors, as is for anything else."""
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return torch.cat([value, value])
    return value


class GuidedModel:
    """Guided network output (ε, v, x0 or velocity, as the network predicts) for a batch of latents.

    Args:
        network: the denoiser (UNet or transformer), or a network with its signature (e.g. MVDiffusion's
            multi-view UNet).
        text: the encoded prompts, one row per conditioning unit.
        guidance_scale: classifier-free guidance weight w; guidance is skipped (one pass) when ``w == 1``
            or there is no negative conditioning.
        controlnet: optional ``ControlNetModel``; ``controlnet_scale`` its conditioning scale.
        family: the backbone's contract (:mod:`pano360.backbones.family`); default the UNet call.
        embedded_guidance: the guidance value a guidance-distilled transformer (FLUX.1-dev) takes as an
            input, or None.

    ``calls`` counts the network batches run (for benchmarks and tests).
    """

    def __init__(self, network: Callable, text: TextConditioning, guidance_scale: float, controlnet=None,
                 controlnet_scale: float = 1.0, family=None, embedded_guidance: float | None = None):
        if family is None:
            from .family import get_family

            family = get_family("sd1")
        self.network = network
        self.text = text
        self.guidance_scale = float(guidance_scale)
        self.controlnet = controlnet
        self.controlnet_scale = float(controlnet_scale)
        self.family = family
        self.embedded_guidance = embedded_guidance
        self.do_guidance = self.guidance_scale != 1.0 and text.negative_embeds is not None
        self.calls = 0

    def __call__(
        self,
        latents: torch.Tensor,
        t: torch.Tensor | int,
        units: torch.Tensor | None = None,
        control: torch.Tensor | None = None,
        size_px: tuple[int, int] | None = None,
        **inputs,
    ) -> torch.Tensor:
        """Guided prediction for ``latents`` [N, C, h, w] at timestep ``t``.

        ``units`` [N] says which conditioning unit (row of ``text``) each latent uses (default
        ``arange(N)``, which needs N == number of units). ``control`` [N, 3, 8h, 8w] is the ControlNet
        image per latent; ``inputs`` are extra per-latent tensors for the network, doubled with the
        latents for guidance. ``size_px`` (height, width) in pixels is what SDXL's time ids describe.
        """
        n = latents.shape[0]
        if units is None:
            units = torch.arange(n)
        text = self.text.select(units)
        embeds, pooled, mask = text.embeds, text.pooled, text.mask
        if self.do_guidance:
            latents = torch.cat([latents, latents])
            embeds = torch.cat([text.negative_embeds, embeds])
            if pooled is not None:
                pooled = torch.cat([text.negative_pooled, pooled])
            if mask is not None:
                mask = torch.cat([text.negative_mask, mask])
            control = _doubled(control)
            inputs = {name: _doubled(value) for name, value in inputs.items()}
        prediction = self.family.call(self.network, latents, t, embeds, pooled, mask, size_px=size_px, control=control,
                                      controlnet=self.controlnet, controlnet_scale=self.controlnet_scale,
                                      embedded_guidance=self.embedded_guidance, **inputs)
        self.calls += 1
        if self.do_guidance:
            unconditional, conditional = prediction.chunk(2)
            prediction = self.family.combine_guidance(unconditional, conditional, self.guidance_scale)
        return prediction
