"""One noise prediction for a batch of latents: text conditioning, ControlNet and classifier-free guidance.

Methods never call the UNet directly; they hand a batch of (window or panorama) latents to a
:class:`Denoiser`, which batches the conditional and unconditional halves through the UNet (and the
ControlNet) in a single call and applies guidance. That keeps guidance in exactly one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextConditioning:
    """Encoded prompts for ``B`` images.

    ``embeds``: [B, L, D] conditional token embeddings; ``negative_embeds`` the same for the negative
    prompt (None without guidance). SDXL also has ``pooled``/``negative_pooled`` [B, P].
    """

    embeds: torch.Tensor
    negative_embeds: torch.Tensor | None = None
    pooled: torch.Tensor | None = None
    negative_pooled: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.embeds.shape[0]


class Denoiser:
    """Guided model output (ε, v or x0, as the UNet predicts) for latents of any spatial size.

    Args:
        unet: diffusers ``UNet2DConditionModel``.
        text: the encoded prompts.
        guidance_scale: classifier-free guidance weight w; the output is ``u + w·(c − u)``.
            Guidance is skipped (one UNet pass) when ``w == 1`` or there is no negative conditioning.
        controlnet: optional ``ControlNetModel``; ``controlnet_scale`` its conditioning scale.
        sdxl_size: for SDXL, the (height, width) in pixels written into the added time ids as the
            original and target size (crop offset 0); methods pass their window or panorama size.
    """

    def __init__(self, unet, text: TextConditioning, guidance_scale: float, controlnet=None,
                 controlnet_scale: float = 1.0):
        self.unet = unet
        self.text = text
        self.guidance_scale = float(guidance_scale)
        self.controlnet = controlnet
        self.controlnet_scale = float(controlnet_scale)
        self.do_guidance = self.guidance_scale != 1.0 and text.negative_embeds is not None
        self.unet_calls = 0  # number of UNet batches run (for benchmarks and tests)

    def __call__(
        self,
        latents: torch.Tensor,
        t: torch.Tensor | int,
        image_index: torch.Tensor | None = None,
        control: torch.Tensor | None = None,
        sdxl_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Predict for ``latents`` [N, 4, h, w] (latent units) at timestep ``t``.

        ``image_index`` [N] says which of the B prompts each latent belongs to (default: arange(B),
        which requires N == B). ``control`` [N, 3, 8h, 8w] is the ControlNet image per latent, in [0, 1].
        """
        n = latents.shape[0]
        if image_index is None:
            image_index = torch.arange(n, device=latents.device)
        image_index = image_index.to(self.text.embeds.device)
        embeds = self.text.embeds[image_index]
        pooled = self.text.pooled[image_index] if self.text.pooled is not None else None
        if self.do_guidance:
            latents = torch.cat([latents, latents])
            embeds = torch.cat([self.text.negative_embeds[image_index], embeds])
            if pooled is not None:
                pooled = torch.cat([self.text.negative_pooled[image_index], pooled])
            if control is not None:
                control = torch.cat([control, control])
        added = None
        if pooled is not None:
            height, width = sdxl_size if sdxl_size is not None else (latents.shape[-2] * 8, latents.shape[-1] * 8)
            time_ids = torch.tensor([height, width, 0, 0, height, width], dtype=embeds.dtype, device=embeds.device)
            added = {"text_embeds": pooled, "time_ids": time_ids.expand(latents.shape[0], 6)}
        residuals = {}
        if self.controlnet is not None and control is not None:
            down, mid = self.controlnet(
                latents, t, encoder_hidden_states=embeds, controlnet_cond=control.to(latents.dtype),
                conditioning_scale=self.controlnet_scale, added_cond_kwargs=added, return_dict=False,
            )
            residuals = {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
        prediction = self.unet(
            latents, t, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False, **residuals
        )[0]
        self.unet_calls += 1
        if self.do_guidance:
            unconditional, conditional = prediction.chunk(2)
            prediction = unconditional + self.guidance_scale * (conditional - unconditional)
        return prediction
