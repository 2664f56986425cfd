"""VAE encode/decode shared by every method and by training.

Latents here are *scaled* latents, the space the UNet works in: ``(vae_latent - shift) · scaling_factor``
(SD: scale 0.18215, SDXL 0.13025, no shift). Images are [B, 3, H, W] in [-1, 1]; one latent column is
``vae_scale_factor`` (8) pixels. Wraparound is not decided here: wrap the VAE with
:func:`pano360.backbones.wrap.wraparound` around these calls, or use ``wrap_padding`` to decode with
wrapped latent columns on each side and crop them (diffusers' ``circular_padding`` style).
"""

from __future__ import annotations

import contextlib

import torch


def _scale_shift(vae) -> tuple[float, float]:
    config = vae.config
    return float(config.get("scaling_factor", 1.0) or 1.0), float(config.get("shift_factor", None) or 0.0)


def vae_scale_factor(vae) -> int:
    """Pixels per latent column: 2 ** (number of VAE resolution levels − 1), 8 for every SD VAE."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


@contextlib.contextmanager
def upcast_if_needed(vae):
    """Run the VAE in fp32 inside the block when it is fp16 and asks for it (``force_upcast``: the SDXL
    VAE overflows in fp16); restores the dtype afterwards."""
    upcast = vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
    original = vae.dtype
    if upcast:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(original)


def decode_latents(vae, latents: torch.Tensor, wrap_padding: int = 0, batch_size: int = 1) -> torch.Tensor:
    """Scaled latents [B, C, h, w] → images [B, 3, h·f, w·f] in about [-1, 1] (f = vae_scale_factor).

    ``wrap_padding`` > 0 decodes with that many latent columns wrapped in from the other side on each
    edge and crops them again (``f · wrap_padding`` pixels a side). ``batch_size`` images are decoded per
    call (1 keeps the memory of one panorama). Gradients flow if enabled by the caller.
    """
    scale, shift = _scale_shift(vae)
    if wrap_padding:
        pad = min(int(wrap_padding), latents.shape[-1])
        latents = torch.cat([latents[..., -pad:], latents, latents[..., :pad]], dim=-1)
    with upcast_if_needed(vae):
        images = []
        for start in range(0, latents.shape[0], max(1, batch_size)):
            chunk = (latents[start:start + batch_size] / scale + shift).to(vae.dtype)
            images.append(vae.decode(chunk, return_dict=False)[0])
        images = torch.cat(images)
    if wrap_padding:
        crop = pad * vae_scale_factor(vae)
        images = images[..., crop:images.shape[-1] - crop]
    return images


def encode_images(vae, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None,
                  batch_size: int = 1) -> torch.Tensor:
    """Images [B, 3, H, W] in [-1, 1] → scaled latents [B, C, H/f, W/f].

    ``sample=False`` takes the posterior mean (deterministic: the right choice for caches and
    comparisons); ``sample=True`` draws from the posterior with ``generator`` (what SD training and
    MVDiffusion's outpainting do).
    """
    scale, shift = _scale_shift(vae)
    latents = []
    with upcast_if_needed(vae):
        for start in range(0, images.shape[0], max(1, batch_size)):
            chunk = images[start:start + batch_size].to(device=vae.device, dtype=vae.dtype)
            posterior = vae.encode(chunk, return_dict=False)[0]
            latent = posterior.sample(generator) if sample else posterior.mode()
            latents.append((latent - shift) * scale)
    return torch.cat(latents)
