"""SD3 / SD3.5: a rectified-flow MMDiT with an additive 2-D sin-cos position embedding.

Latents [N, C, h, w] go to the transformer as they are (it patchifies them itself, 2 × 2); prompts
through two CLIP encoders (pooled, 77 tokens) and T5 (256 tokens), concatenated; guidance is plain
classifier-free guidance with the empty prompt as default negative (``StableDiffusion3Pipeline``,
default weight 7.0, 28 steps).

Seam: the patch embedding's width frequencies snapped to harmonics of the panorama's width in tokens
(:mod:`pano360.backbones.token_seam`), so column P−1 is followed by column 0 exactly as any column by
the next; the embedding stays absolute (see that module on what this means for rolls).
"""

from __future__ import annotations

import contextlib

import torch

from .conditioning import TextConditioning
from .families import FamilyInfo
from .family import AttentionSite, TransformerFamily, joint_attention_sites, register_family
from .token_seam import snap_frequencies


def _frequencies(dim: int) -> torch.Tensor:
    """The dim/2 frequencies of a 1-D sin-cos embedding of width ``dim`` (float64)."""
    return 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))


def _sincos(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """1-D sin-cos embedding [M, dim] of float64 ``positions`` (diffusers' layout: sines, then cosines)."""
    out = torch.outer(positions, _frequencies(dim))
    return torch.cat([out.sin(), out.cos()], dim=1)


def sd3_position_embedding(patch_embed, rows: int, columns: int, seam=None) -> torch.Tensor:
    """The position embedding [1, rows·columns, D] the SD3 patch embedding adds for a token grid.

    Without ``seam`` this equals diffusers' ``cropped_pos_embed`` (centre crop of the max grid); with it
    the width half is periodic in ``columns`` (positions shifted by ``seam.offset`` tokens).
    """
    dim = patch_embed.pos_embed.shape[-1]
    grid = int(patch_embed.pos_embed_max_size)
    step = patch_embed.base_size / grid / patch_embed.interpolation_scale  # position units per token
    top, left = (grid - rows) // 2, (grid - columns) // 2
    row_pos = (torch.arange(rows, dtype=torch.float64) + top) * step
    if seam is None:
        col_emb = _sincos((torch.arange(columns, dtype=torch.float64) + left) * step, dim // 2)
    else:
        # periodic in tokens: the per-token frequencies ω·step snapped to harmonics of the width
        omega = snap_frequencies(_frequencies(dim // 2) * step, columns, seam.rounding)
        out = torch.outer(torch.arange(columns, dtype=torch.float64) + left + seam.offset, omega)
        col_emb = torch.cat([out.sin(), out.cos()], dim=1)
    row_emb = _sincos(row_pos, dim // 2)
    emb = torch.cat([col_emb[None, :, :].expand(rows, -1, -1), row_emb[:, None, :].expand(-1, columns, -1)], dim=-1)
    return emb.reshape(1, rows * columns, dim).float()


@contextlib.contextmanager
def _periodic_patch_embedding(patch_embed, seam):
    """Inside the block the patch embedding adds :func:`sd3_position_embedding` with ``seam``."""
    def forward(latent):
        rows, columns = latent.shape[-2] // patch_embed.patch_size, latent.shape[-1] // patch_embed.patch_size
        x = patch_embed.proj(latent).flatten(2).transpose(1, 2)
        if patch_embed.layer_norm:
            x = patch_embed.norm(x)
        pos = sd3_position_embedding(patch_embed, rows, columns, seam).to(x.device)
        return (x + pos).to(x.dtype)

    patch_embed.forward = forward
    try:
        yield
    finally:
        del patch_embed.forward


class SD3Family(TransformerFamily):
    name = "sd3"
    default_steps = 28
    default_guidance = 7.0
    linear_sigmas = False
    seam_schemes = ("exact", "pad", "none")
    max_sequence_length = 256

    def attention_sites(self, denoiser) -> list[AttentionSite]:
        """Joint attention of every block (image ``to_*``; text ``add_*``, ``to_add_out`` except in the
        last, context-pre-only block) and SD3.5's image-only ``attn2`` where present."""
        return joint_attention_sites(denoiser, "transformer_blocks", ("attn", "attn2"))

    def facts(self, pipe) -> FamilyInfo:
        vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        config = pipe.transformer.config
        return FamilyInfo(family=self.name, prediction_type="flow_prediction",
                          native_size=int(getattr(pipe, "default_sample_size", None) or config.sample_size) * vae_scale,
                          vae_scale_factor=vae_scale,
                          unet_downsampling=int(config.patch_size),
                          latent_channels=int(pipe.vae.config.latent_channels), patch_size=int(config.patch_size))

    def encode(self, pipe, prompts, negative_prompts, guidance, device) -> TextConditioning:
        with torch.no_grad():
            embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
                prompt=prompts, prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
                do_classifier_free_guidance=guidance, negative_prompt=negative_prompts,
                max_sequence_length=self.max_sequence_length)
        return TextConditioning(embeds, negative if guidance else None, pooled, negative_pooled if guidance else None)

    def _call(self, network, latents, t, embeds, pooled=None, mask=None, *, seam=None, size_px=None, control=None,
              controlnet=None, controlnet_scale=1.0, embedded_guidance=None, **inputs):
        n, _, _, w = latents.shape
        scheme = seam.scheme if seam is not None else "none"
        patch = int(network.config.patch_size)
        pad = patch if scheme == "pad" else 0
        if pad:
            latents = torch.cat([latents[..., -pad:], latents, latents[..., :pad]], dim=-1)
        timestep = torch.as_tensor(t, device=latents.device).expand(n)
        context = (_periodic_patch_embedding(network.pos_embed, seam) if scheme == "exact"
                   else contextlib.nullcontext())
        with context:
            out = network(hidden_states=latents, timestep=timestep, encoder_hidden_states=embeds,
                          pooled_projections=pooled, return_dict=False, **inputs)[0]
        return out[..., pad:pad + w] if pad else out



register_family(SD3Family())
