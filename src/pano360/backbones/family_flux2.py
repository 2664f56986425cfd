"""FLUX.2 [klein]: a rectified-flow MMDiT on 2 × 2 latent patches with 4-axis RoPE and a Qwen3 text encoder.

Latents. The FLUX.2 VAE (``AutoencoderKLFlux2``, C = 32 channels, 8 pixels per latent) normalises its
latents *after* a 2 × 2 patchify: a batch-norm's running mean / std per patchified channel (4C of them,
order channel, row parity, column parity). pano360 works on [N, C, h, w] latents in that normalised
space, unpatchified again: :class:`PatchNormVAE` gives the VAE that interface (patchify → normalise →
unpatchify on encode, the inverse on decode), so :mod:`pano360.backbones.vae` and every method see
ordinary [B, C, h, w] latents, 8 pixels each. The call packs them into tokens [N, h/2·w/2, 4C] exactly as
``Flux2KleinPipeline`` does (its ``_patchify_latents`` + ``_pack_latents`` = FLUX.1's packing order).

Ids: 4 axes (T, H, W, L). Image tokens (0, row, column, 0); text tokens (0, 0, 0, index): the text's
position is on the fourth axis, its width position is 0, as FLUX.1's text ids. σ = t / 1000; no
embedded guidance (the pipeline passes ``guidance=None``).

Prompts: ``Flux2KleinPipeline.encode_prompt`` (Qwen3 chat template, 512 tokens, hidden states of layers
9, 18, 27 stacked along features). Guidance as the pipeline: the step-distilled klein (``is_distilled``
in the pipeline config: klein 4B / 9B) runs one pass, guidance ignored; the base models run CFG with
weight ``guidance_scale`` (default 4) against the empty prompt (or the given negative prompt) when > 1.

Timesteps: σ = linspace(1, 1/N, N) with the pipeline's *empirical* shift μ(image tokens, N steps)
(:func:`empirical_mu`), passed to the scheduler's exponential time shift.

Seam: :mod:`pano360.backbones.token_seam` on the third RoPE axis (the width), as for FLUX.1: ``exact``
(snapped width frequencies + column-independent text–image coupling, through the module's
``dispatch_attention_fn``, which both the double-stream and the parallel single-stream processors call),
``periodic``, ``pad``, ``blend`` (base class), ``none``.
"""

from __future__ import annotations

import torch

from .conditioning import TextConditioning
from .family import TransformerFamily, register_family
from .family_flux import flux_image_ids, pack_latents, unpack_latents
from .token_seam import column_ids, pad_latent_columns, rope_attention_seam
from .vae import NormalisedVAE


def empirical_mu(image_seq_len: int, num_steps: int) -> float:
    """FLUX.2's shift μ for ``image_seq_len`` image tokens and ``num_steps`` steps: above 4300 tokens
    linear in the tokens (slope 1.6927e-4, intercept 0.45667); below, interpolated linearly in the number
    of steps between the 10-step line (8.738e-5·L + 1.89833) and the 200-step line."""
    long_slope, long_intercept = 0.00016927, 0.45666666
    short_slope, short_intercept = 8.73809524e-05, 1.89833333
    at_200 = long_slope * image_seq_len + long_intercept
    if image_seq_len > 4300:
        return float(at_200)
    at_10 = short_slope * image_seq_len + short_intercept
    per_step = (at_200 - at_10) / 190.0
    return float(per_step * num_steps + (at_200 - 200.0 * per_step))


def _patchify(z: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] → [B, 4C, h/2, w/2], channel order (c, row parity, column parity)."""
    b, c, h, w = z.shape
    return z.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)


def _unpatchify(z: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_patchify`: [B, 4C, h/2, w/2] → [B, C, h, w]."""
    b, c4, h2, w2 = z.shape
    return z.view(b, c4 // 4, 2, 2, h2, w2).permute(0, 1, 4, 2, 5, 3).reshape(b, c4 // 4, 2 * h2, 2 * w2)


class _Posterior:
    """The VAE posterior, normalised: ``mode()`` / ``sample(generator)`` → [B, C, h, w]."""

    def __init__(self, posterior, vae: PatchNormVAE):
        self.posterior, self.vae = posterior, vae

    def mode(self):
        return self.vae.normalise(self.posterior.mode())

    def sample(self, generator=None):
        return self.vae.normalise(self.posterior.sample(generator))


class PatchNormVAE(NormalisedVAE):
    """``AutoencoderKLFlux2`` seen as an image VAE: [B, 3, H, W] ↔ normalised latents [B, C, H/8, W/8].

    Normalised latent = unpatchify((patchify(z) − running_mean) / √(running_var + eps)) with the VAE's
    batch-norm statistics over the 4C patchified channels; the config reports scaling 1 and shift 0 so the
    shared VAE helpers pass latents through unchanged. Only for even latent sizes (whole 2 × 2 patches).
    """

    def __init__(self, vae):
        super().__init__(vae, int(vae.config.latent_channels), 2 ** (len(vae.config.block_out_channels) - 1))

    def _statistics(self, like: torch.Tensor):
        bn = self.inner.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(like.device, like.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + self.inner.config.batch_norm_eps).to(like.device, like.dtype)
        return mean, std

    def normalise(self, z: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents [B, C, h, w] → normalised latents [B, C, h, w]."""
        patches = _patchify(z)
        mean, std = self._statistics(patches)
        return _unpatchify((patches - mean) / std)

    def denormalise(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, C, h, w] → raw VAE latents [B, C, h, w]."""
        patches = _patchify(latents)
        mean, std = self._statistics(patches)
        return _unpatchify(patches * std + mean)

    def decode(self, latents: torch.Tensor, return_dict: bool = False):
        z = self.denormalise(latents).to(device=self.inner.device, dtype=self.inner.dtype)
        return (self.inner.decode(z, return_dict=False)[0],)

    def encode(self, images: torch.Tensor, return_dict: bool = False):
        return (_Posterior(self.inner.encode(images, return_dict=False)[0], self),)


def flux2_image_ids(rows: int, columns: torch.Tensor | int, device, dtype) -> torch.Tensor:
    """Image token ids [rows·W, 4]: (0, row, column, 0), ``columns`` the column ids (default 0..W−1)."""
    return flux_image_ids(rows, columns, device, dtype, axes=4)


def flux2_text_ids(length: int, device, dtype) -> torch.Tensor:
    """Text token ids [L, 4]: (0, 0, 0, index), as ``Flux2KleinPipeline._prepare_text_ids``."""
    ids = torch.zeros(length, 4)
    ids[:, 3] = torch.arange(length).float()
    return ids.to(device=device, dtype=dtype)


class Flux2Family(TransformerFamily):
    name = "flux2"
    default_steps = 50  # Flux2KleinPipeline's defaults (the distilled klein needs only ~4 steps)
    default_guidance = 4.0
    cfg_needs_negative = False  # the base models' CFG runs against the empty prompt by default
    max_sequence_length = 512

    def image_vae(self, pipe):
        return PatchNormVAE(pipe.vae)

    def shift_mu(self, image_seq_len: int, num_steps: int, config) -> float:
        return empirical_mu(image_seq_len, num_steps)

    def truncation_limit(self, pipe):
        return pipe.tokenizer, self.max_sequence_length

    def encode(self, pipe, prompts, negative_prompts, guidance, device) -> TextConditioning:
        with torch.no_grad():
            embeds, _ = pipe.encode_prompt(prompt=prompts, device=device, num_images_per_prompt=1,
                                           max_sequence_length=self.max_sequence_length)
            text = TextConditioning(embeds)
            if guidance:
                negatives = negative_prompts or [""] * len(prompts)
                text.negative_embeds, _ = pipe.encode_prompt(prompt=negatives, device=device,
                                                             num_images_per_prompt=1,
                                                             max_sequence_length=self.max_sequence_length)
        return text

    def guidance_plan(self, pipe, guidance_scale, true_cfg_scale, has_negative):
        distilled = bool(getattr(pipe, "config", {}).get("is_distilled", False))
        cfg = 1.0 if distilled or float(guidance_scale) <= 1 else float(guidance_scale)
        return cfg, None

    def _call(self, network, latents, t, embeds, pooled=None, mask=None, *, seam=None, size_px=None, control=None,
              controlnet=None, controlnet_scale=1.0, embedded_guidance=None, **inputs):
        n, _, h, w = latents.shape
        scheme = seam.scheme if seam is not None else "none"
        pad = 2 if scheme == "pad" else 0  # one token column a side (2 latent columns)
        if pad:
            latents = pad_latent_columns(latents, pad)
        rows, columns = h // 2, latents.shape[-1] // 2
        tokens = pack_latents(latents)
        image_ids = flux2_image_ids(rows, column_ids(scheme, columns), latents.device, torch.long)
        text_ids = flux2_text_ids(embeds.shape[1], latents.device, torch.long)
        timestep = torch.as_tensor(t, device=latents.device).expand(n).to(latents.dtype) / 1000
        from diffusers.models.transformers import transformer_flux2

        # (T, H, W, L) axes: the width is the third
        with rope_attention_seam(seam, transformer_flux2, network.config.axes_dims_rope, network.pos_embed.theta,
                                 rows, columns):
            out = network(hidden_states=tokens, timestep=timestep, guidance=None,
                          encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=image_ids, return_dict=False,
                          **inputs)[0]
        out = unpack_latents(out, h, latents.shape[-1])
        return out[..., pad:pad + w] if pad else out


register_family(Flux2Family())
