"""FLUX.1 (dev, schnell, Fill): a rectified-flow MMDiT on 2 × 2 latent patches with 3-axis RoPE.

The call packs latents [N, C, h, w] into tokens [N, h/2·w/2, 4C], gives image tokens the ids
(0, row, column) and text tokens (0, 0, 0), scales the timestep to σ = t / 1000, passes the embedded
guidance value of guidance-distilled checkpoints (dev; schnell has none) and unpacks the output.
Prompts go through CLIP (pooled) and T5 (sequence, 512 tokens). Guidance: ``guidance_scale`` is the
embedded guidance (dev, default 3.5); ``true_cfg_scale`` > 1 with a negative prompt adds a real
classifier-free pass, as ``FluxPipeline``. FLUX Fill's extra inputs (masked-image latents and the
mask, packed) are concatenated to the tokens (``fill`` [N, C', h, w]).

Seam: :mod:`pano360.backbones.token_seam` (``exact`` by default), through the column ids.
"""

from __future__ import annotations

import torch

from .conditioning import TextConditioning
from .family import AttentionSite, TransformerFamily, joint_attention_sites, register_family
from .token_seam import column_ids, pad_latent_columns, rope_attention_seam


def pack_latents(latents: torch.Tensor, patch: int = 2) -> torch.Tensor:
    """[N, C, h, w] → tokens [N, (h/p)·(w/p), C·p²], row-major, channels-then-patch (FLUX/Qwen order)."""
    n, c, h, w = latents.shape
    x = latents.view(n, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(n, (h // patch) * (w // patch), c * patch * patch)


def unpack_latents(tokens: torch.Tensor, height: int, width: int, patch: int = 2) -> torch.Tensor:
    """Inverse of :func:`pack_latents`: tokens [N, S, C·p²] → [N, C, height, width] (latent units)."""
    n, _, d = tokens.shape
    c = d // (patch * patch)
    x = tokens.view(n, height // patch, width // patch, c, patch, patch).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(n, c, height, width)


def flux_image_ids(rows: int, columns: torch.Tensor | int, device, dtype, axes: int = 3) -> torch.Tensor:
    """Image token ids [rows·W, axes]: (0, row, column[, 0…]) with ``columns`` the column ids (default
    0..W−1); FLUX.1 has 3 axes (T, H, W), FLUX.2 4 (T, H, W, L)."""
    if isinstance(columns, int):
        columns = torch.arange(columns)
    ids = torch.zeros(rows, len(columns), axes)
    ids[..., 1] = torch.arange(rows)[:, None].float()
    ids[..., 2] = columns[None, :].float()
    return ids.reshape(-1, axes).to(device=device, dtype=dtype)


class FluxFamily(TransformerFamily):
    name = "flux"
    default_steps = 28
    default_guidance = 3.5
    cfg_needs_negative = True
    max_sequence_length = 512

    def attention_sites(self, denoiser) -> list[AttentionSite]:
        """Double-stream blocks: joint attention (image ``to_*``, text ``add_*``/``to_add_out``).
        Single-stream blocks: ``attn.to_q/to_k/to_v`` over the concatenated text + image tokens and, as
        W_o, the first ``dim`` input columns of the block's ``proj_out`` (which also projects the MLP)."""
        sites = joint_attention_sites(denoiser, "transformer_blocks", ("attn",))
        for index, block in enumerate(getattr(denoiser, "single_transformer_blocks", None) or []):
            path = f"single_transformer_blocks.{index}"
            dim = int(block.attn.to_v.out_features)
            sites.append(AttentionSite(f"{path}.attn", "single",
                                       {"q": f"{path}.attn.to_q", "k": f"{path}.attn.to_k", "v": f"{path}.attn.to_v",
                                        "o": f"{path}.proj_out"}, output_inputs=dim))
        return sites

    def truncation_limit(self, pipe):
        return pipe.tokenizer_2, self.max_sequence_length

    def encode(self, pipe, prompts, negative_prompts, guidance, device) -> TextConditioning:
        with torch.no_grad():
            embeds, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, device=device,
                                                   num_images_per_prompt=1,
                                                   max_sequence_length=self.max_sequence_length)
            text = TextConditioning(embeds, pooled=pooled)
            if guidance:
                negatives = negative_prompts or [""] * len(prompts)
                text.negative_embeds, text.negative_pooled, _ = pipe.encode_prompt(
                    prompt=negatives, prompt_2=None, device=device, num_images_per_prompt=1,
                    max_sequence_length=self.max_sequence_length)
        return text

    def guidance_plan(self, pipe, guidance_scale, true_cfg_scale, has_negative):
        embedded = float(guidance_scale) if pipe.transformer.config.get("guidance_embeds", False) else None
        cfg = float(true_cfg_scale or 1.0) if has_negative else 1.0
        return cfg, embedded

    def _call(self, network, latents, t, embeds, pooled=None, mask=None, *, seam=None, size_px=None, control=None,
              controlnet=None, controlnet_scale=1.0, embedded_guidance=None, fill=None, **inputs):
        n, _, h, w = latents.shape
        scheme = seam.scheme if seam is not None else "none"
        pad = 2 if scheme == "pad" else 0  # one token column a side (2 latent columns)
        if pad:
            latents = pad_latent_columns(latents, pad)
            fill = None if fill is None else pad_latent_columns(fill, pad)
        rows, columns = h // 2, latents.shape[-1] // 2
        tokens = pack_latents(latents)
        if fill is not None:
            tokens = torch.cat([tokens, pack_latents(fill.to(tokens.dtype))], dim=2)
        image_ids = flux_image_ids(rows, column_ids(scheme, columns), latents.device, latents.dtype)
        text_ids = torch.zeros(embeds.shape[1], 3, device=latents.device, dtype=latents.dtype)
        timestep = torch.as_tensor(t, device=latents.device).expand(n).to(latents.dtype) / 1000
        guidance = None
        if embedded_guidance is not None and network.config.get("guidance_embeds", False):
            guidance = torch.full([n], float(embedded_guidance), device=latents.device, dtype=torch.float32)
        from diffusers.models.transformers import transformer_flux

        theta = getattr(network.pos_embed, "theta", 10000)
        with rope_attention_seam(seam, transformer_flux, network.config.axes_dims_rope, theta, rows, columns):
            out = network(hidden_states=tokens, timestep=timestep, guidance=guidance, pooled_projections=pooled,
                          encoder_hidden_states=embeds, txt_ids=text_ids, img_ids=image_ids, return_dict=False,
                          **inputs)[0]
        out = unpack_latents(out, h, latents.shape[-1])
        return out[..., pad:pad + w] if pad else out



register_family(FluxFamily())
