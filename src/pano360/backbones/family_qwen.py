"""Qwen-Image: a rectified-flow MMDiT with a Qwen2.5-VL text encoder, 3-axis centred RoPE and a
causal-video VAE used on single frames.

The call packs latents [N, C, h, w] into tokens as FLUX does, passes the text mask and the image grid
(``img_shapes``), and σ = t / 1000. Guidance is ``QwenImagePipeline``'s true CFG: only with a negative
prompt, weight ``guidance_scale`` (the pipeline's ``true_cfg_scale``, default 4), and the combined
prediction rescaled per token to the conditional prediction's norm. The VAE works on [B, C, 1, h, w]
with per-channel mean/std normalisation: :class:`FrameVAE` gives it the [B, C, h, w] interface with
normalised latents that :mod:`pano360.backbones.vae` expects.

Seam: :mod:`pano360.backbones.token_seam` (``exact`` by default), through the width axis of the RoPE.
"""

from __future__ import annotations

import contextlib

import torch

from .conditioning import TextConditioning
from .families import FamilyInfo
from .family import TransformerFamily, register_family
from .family_flux import pack_latents, unpack_latents
from .token_seam import pad_latent_columns, padded_columns, rope_attention_seam, rope_frequencies
from .vae import NormalisedVAE


class _Posterior:
    """The VAE posterior of one frame, normalised: ``mode()`` / ``sample(generator)`` → [B, C, h, w]."""

    def __init__(self, posterior, mean: torch.Tensor, std: torch.Tensor):
        self.posterior, self.mean, self.std = posterior, mean, std

    def _normalise(self, z):
        return ((z - self.mean.to(z)) / self.std.to(z))[:, :, 0]  # .to(z): z's device and dtype

    def mode(self):
        return self._normalise(self.posterior.mode())

    def sample(self, generator=None):
        return self._normalise(self.posterior.sample(generator))


class FrameVAE(NormalisedVAE):
    """``AutoencoderKLQwenImage`` seen as an image VAE: [B, 3, H, W] ↔ normalised latents [B, C, h, w].

    Normalised latent = (z − latents_mean) / latents_std per channel, the space the transformer works in;
    the config reports scaling 1 and shift 0 so the shared VAE helpers pass latents through unchanged.
    """

    def __init__(self, vae):
        z = int(vae.config.z_dim)
        super().__init__(vae, z, 2 ** len(vae.temperal_downsample))
        self.register_buffer("latents_mean", torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1), persistent=False)

    def decode(self, latents: torch.Tensor, return_dict: bool = False):
        like = {"device": latents.device, "dtype": self.inner.dtype}
        z = latents[:, :, None].to(**like) * self.latents_std.to(**like) + self.latents_mean.to(**like)
        return (self.inner.decode(z, return_dict=False)[0][:, :, 0],)

    def encode(self, images: torch.Tensor, return_dict: bool = False):
        posterior = self.inner.encode(images[:, :, None], return_dict=False)[0]
        return (_Posterior(posterior, self.latents_mean, self.latents_std),)


class QwenImageFamily(TransformerFamily):
    name = "qwen-image"
    default_steps = 50
    default_guidance = 4.0
    cfg_needs_negative = True
    max_sequence_length = 512

    def facts(self, pipe) -> FamilyInfo:
        vae_scale = 2 ** len(pipe.vae.temperal_downsample)
        return FamilyInfo(family=self.name, prediction_type="flow_prediction",
                          native_size=int(getattr(pipe, "default_sample_size", 128)) * vae_scale,
                          vae_scale_factor=vae_scale, unet_downsampling=2,
                          latent_channels=int(pipe.vae.config.z_dim), patch_size=2)

    def image_vae(self, pipe):
        return FrameVAE(pipe.vae)

    def truncation_limit(self, pipe):
        return pipe.tokenizer, self.max_sequence_length + int(getattr(pipe, "prompt_template_encode_start_idx", 34))

    def encode(self, pipe, prompts, negative_prompts, guidance, device) -> TextConditioning:
        with torch.no_grad():
            embeds, mask = self._encode(pipe, prompts, device)
            text = TextConditioning(embeds, mask=mask)
            if guidance:
                negative, negative_mask = self._encode(pipe, negative_prompts or [" "] * len(prompts), device)
                length = max(embeds.shape[1], negative.shape[1])
                text.embeds, text.mask = _pad_tokens(embeds, mask, length)
                text.negative_embeds, text.negative_mask = _pad_tokens(negative, negative_mask, length)
        return text

    def _encode(self, pipe, prompts, device):
        embeds, mask = pipe.encode_prompt(prompt=prompts, device=device, num_images_per_prompt=1,
                                          max_sequence_length=self.max_sequence_length)
        if mask is None:
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        return embeds, mask

    def guidance_plan(self, pipe, guidance_scale, true_cfg_scale, has_negative):
        cfg = float(guidance_scale) if has_negative else 1.0
        embedded = None
        if pipe.transformer.config.get("guidance_embeds", False):
            embedded = float(true_cfg_scale if true_cfg_scale is not None else 1.0)
        return cfg, embedded

    def combine_guidance(self, unconditional, conditional, scale):
        combined = unconditional + scale * (conditional - unconditional)
        h, w = combined.shape[-2:]
        c_tokens, m_tokens = pack_latents(conditional), pack_latents(combined)
        rescaled = m_tokens * (c_tokens.norm(dim=-1, keepdim=True) / m_tokens.norm(dim=-1, keepdim=True))
        return unpack_latents(rescaled, h, w)

    def _call(self, network, latents, t, embeds, pooled=None, mask=None, *, seam=None, size_px=None, control=None,
              controlnet=None, controlnet_scale=1.0, embedded_guidance=None, **inputs):
        n, _, h, w = latents.shape
        scheme = seam.scheme if seam is not None else "none"
        pad = 2 if scheme == "pad" else 0
        if pad:
            latents = pad_latent_columns(latents, pad)
        rows, columns = h // 2, latents.shape[-1] // 2
        tokens = pack_latents(latents)
        timestep = torch.as_tensor(t, device=latents.device).expand(n).to(latents.dtype) / 1000
        guidance = None
        if embedded_guidance is not None and network.config.get("guidance_embeds", False):
            guidance = torch.full([n], float(embedded_guidance), device=latents.device, dtype=torch.float32)
        if mask is not None and bool(mask.all()):
            mask = None  # what QwenImagePipeline.encode_prompt passes for unpadded prompts
        with self._positions(network, seam, rows, columns, w // 2):
            out = network(hidden_states=tokens, timestep=timestep, guidance=guidance, encoder_hidden_states_mask=mask,
                          encoder_hidden_states=embeds, img_shapes=[[(1, rows, columns)]] * n, return_dict=False,
                          **inputs)[0]
        out = unpack_latents(out, h, latents.shape[-1])
        return out[..., pad:pad + w] if pad else out

    @contextlib.contextmanager
    def _positions(self, network, seam, rows: int, columns: int, true_columns: int):
        """The seam's positions: width angles of image tokens zeroed (exact/periodic: the periodic rotation
        is applied in attention) or copied from the source columns (pad)."""
        if seam is None or seam.scheme not in ("exact", "periodic", "pad"):
            yield
            return
        from diffusers.models.transformers import transformer_qwenimage

        rope = network.pos_embed
        axes = list(rope.axes_dim)
        half = axes[2] // 2
        freqs = rope_frequencies(axes[2], float(rope.theta))
        centre = true_columns - true_columns // 2  # scale_rope: column x sits at x − centre
        original = rope.forward

        def forward(*args, **kwargs):
            vid, txt = original(*args, **kwargs)
            vid = vid.clone()
            if seam.scheme == "pad":
                source = padded_columns(true_columns, 1).double() - (centre if rope.scale_rope else 0)
                angles = torch.outer(source, freqs).repeat(rows, 1)
                vid[:, -half:] = torch.polar(torch.ones_like(angles), angles).to(vid.dtype).to(vid.device)
            else:
                vid[:, -half:] = 1
            return vid, txt

        rope.forward = forward
        try:
            with rope_attention_seam(seam, transformer_qwenimage, axes, rope.theta, rows, columns,
                                     position_offset=-(centre if rope.scale_rope else 0)):
                yield
        finally:
            del rope.forward



def _pad_tokens(embeds: torch.Tensor, mask: torch.Tensor, length: int):
    """Zero-pad text embeddings [N, L, D] and mask [N, L] to ``length`` tokens (padding masked out)."""
    extra = length - embeds.shape[1]
    if extra <= 0:
        return embeds, mask
    return (torch.nn.functional.pad(embeds, (0, 0, 0, extra)), torch.nn.functional.pad(mask, (0, extra)))


register_family(QwenImageFamily())
