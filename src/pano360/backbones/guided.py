"""The model call shared by sampling and training, and classifier-free guidance around it.

:func:`predict_noise` is *the* conditioned UNet call: text embeddings, SDXL's pooled embedding and
added time ids, ControlNet residuals and any extra inputs a network takes (e.g. MVDiffusion's
cameras). The trainer calls it directly; sampling calls it through :class:`GuidedModel`, which
batches the unconditional and conditional halves in one call and applies guidance. Nothing else in
pano360 calls a UNet, so training and sampling cannot drift apart.

The output is what the network predicts: ε, v or x0 (``scheduler.config.prediction_type``); turn it
into a clean-latent estimate with :func:`pano360.backbones.parameterization.predicted_original`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .conditioning import TextConditioning, sdxl_time_ids


def predict_noise(
    network: Callable,
    latents: torch.Tensor,
    t: torch.Tensor | int,
    embeds: torch.Tensor,
    pooled: torch.Tensor | None = None,
    size_px: tuple[int, int] | None = None,
    control: torch.Tensor | None = None,
    controlnet=None,
    controlnet_scale: float = 1.0,
    **inputs,
) -> torch.Tensor:
    """One conditioned network output for ``latents`` [N, C, h, w] (latent units) at timestep(s) ``t``.

    Args:
        network: a ``UNet2DConditionModel`` or anything with its call signature (plus ``inputs``).
        t: a scalar timestep or one per latent [N].
        embeds: [N, L, D] text embeddings; ``pooled`` [N, P] for SDXL (then added time ids are built for
            ``size_px`` = (height, width) in pixels, default: the latent size × 8).
        control: [N, 3, 8h, 8w] ControlNet image in [0, 1], used when ``controlnet`` is given.
        inputs: extra tensors the network takes, each with N rows (e.g. ``cameras``).

    Returns [N, C_out, h, w]. Gradients flow if the caller enables them (training, SyncDiffusion).
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


def _doubled(value):
    """[x; x] along the batch for tensors, as is for anything else."""
    if isinstance(value, torch.Tensor) and value.ndim > 0:
        return torch.cat([value, value])
    return value


class GuidedModel:
    """Guided network output (ε, v or x0, as the network predicts) for a batch of latents.

    Args:
        network: the UNet, or a network with its signature (e.g. MVDiffusion's multi-view UNet).
        text: the encoded prompts, one row per conditioning unit.
        guidance_scale: classifier-free guidance weight w; the output is ``u + w·(c − u)``. Guidance is
            skipped (one pass) when ``w == 1`` or there is no negative conditioning.
        controlnet: optional ``ControlNetModel``; ``controlnet_scale`` its conditioning scale.

    ``calls`` counts the network batches run (for benchmarks and tests).
    """

    def __init__(self, network: Callable, text: TextConditioning, guidance_scale: float, controlnet=None,
                 controlnet_scale: float = 1.0):
        self.network = network
        self.text = text
        self.guidance_scale = float(guidance_scale)
        self.controlnet = controlnet
        self.controlnet_scale = float(controlnet_scale)
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
        embeds, pooled = text.embeds, text.pooled
        if self.do_guidance:
            latents = torch.cat([latents, latents])
            embeds = torch.cat([text.negative_embeds, embeds])
            if pooled is not None:
                pooled = torch.cat([text.negative_pooled, pooled])
            control = _doubled(control)
            inputs = {name: _doubled(value) for name, value in inputs.items()}
        prediction = predict_noise(self.network, latents, t, embeds, pooled, size_px, control, self.controlnet,
                                   self.controlnet_scale, **inputs)
        self.calls += 1
        if self.do_guidance:
            unconditional, conditional = prediction.chunk(2)
            prediction = unconditional + self.guidance_scale * (conditional - unconditional)
        return prediction
