"""Tiny random transformer (DiT) pipelines: FLUX.1, SD3.x and Qwen-Image at toy width.

The DiT counterpart of :mod:`pano360.backbones.tiny`: the real diffusers / transformers architectures
(``FluxTransformer2DModel``, ``SD3Transformer2DModel``, ``QwenImageTransformer2DModel``, ``AutoencoderKL``,
``AutoencoderKLQwenImage``, CLIP, T5 and Qwen2.5-VL text encoders) with deterministic random weights,
wrapped in diffusers' own pipelines (``FluxPipeline``, ``FluxFillPipeline``, ``StableDiffusion3Pipeline``,
``QwenImagePipeline``) so that their ``__call__`` runs unchanged. What matters for panoramas is kept:

* latents of 16 channels (8 optionally), the VAE's scaling/shift factors of the released models and its
  downsampling 8 (4 with ``vae_depth=3``); FLUX and Qwen-Image pack 2×2 latent patches into one token,
  SD3 patchifies 2×2 inside the transformer, so one token covers 16×16 pixels by default;
* the RoPE layout (``axes_dims_rope``: index/text, row, column; they sum to the head dimension) of FLUX and
  Qwen-Image, SD3's cropped absolute position embedding (``pos_embed_max_size`` patches);
* the flow-matching Euler schedulers configured like the released ``scheduler_config.json`` files.

Tokenizers are built in memory (nothing is downloaded): the CLIP one of :mod:`.tiny`; a character-level
Unigram T5 tokenizer (``<pad>``, ``</s>``, ``<unk>``); a byte-level BPE Qwen2 tokenizer whose merges make
Qwen-Image's prompt-template prefix exactly 34 tokens, as with the real tokenizer, so that the pipeline's
``prompt_template_encode_start_idx`` drops the template and nothing else. Each builder takes well under a
second; a 2-step 64×128 generation runs in a fraction of a second on a CPU.

:func:`proportional_flux_transformer` and :func:`full_size_config` are the benchmark side (cf.
:mod:`.proportional`): FLUX.1-dev's depth and head dimension with fewer heads, and the released transformer
configs, buildable on the meta device for FLOP counts.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from .tiny import TEXT_WIDTH, _byte_alphabet, tiny_text_encoder, tiny_tokenizer

# VAE latent normalisation of the released checkpoints: latents = (z - shift) * scaling.
FLUX_VAE_SCALING, FLUX_VAE_SHIFT = 0.3611, 0.1159
SD3_VAE_SCALING, SD3_VAE_SHIFT = 1.5305, 0.0609

# scheduler_config.json of the released checkpoints (FlowMatchEulerDiscreteScheduler; unlisted keys default).
FLUX_DEV_SCHEDULER = {
    "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
}
FLUX_SCHNELL_SCHEDULER = {
    "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False, "base_shift": 0.5,
    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096,
}
SD3_SCHEDULER = {"num_train_timesteps": 1000, "shift": 3.0}
QWEN_IMAGE_SCHEDULER = {
    "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True, "base_shift": 0.5,
    "max_shift": 0.9, "base_image_seq_len": 256, "max_image_seq_len": 8192, "shift_terminal": 0.02,
    "time_shift_type": "exponential",
}

T5_MAX_LENGTH = 512  # FLUX's T5 tokenizer (model_max_length); SD3 asks for 256 tokens by default


@contextmanager
def _seeded(seed: int):
    """Seed torch's CPU generator for a build, restoring the caller's generator state afterwards."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _clip_encoder(seed: int, **kwargs):
    """:func:`.tiny.tiny_text_encoder` (width 32), seeded without touching the caller's random stream."""
    with _seeded(seed):
        return tiny_text_encoder(seed=seed, **kwargs)


def _flow_scheduler(config: dict):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(**config)


# --------------------------------------------------------------------------------------------- T5


@lru_cache(maxsize=1)
def _t5_vocab() -> tuple:
    """Unigram pieces: T5's specials at ids 0/1/2 (``<pad>``, ``</s>``, ``<unk>``), the word-start mark
    ``▁`` and single characters (printable ASCII and Latin-1/Latin Extended letters)."""
    chars = [chr(c) for c in range(0x21, 0x7F)] + [chr(c) for c in range(0xA1, 0x250) if chr(c).isprintable()]
    specials = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    return tuple(specials + [(c, -3.0) for c in chars])


def tiny_t5_tokenizer(model_max_length: int = T5_MAX_LENGTH):
    """A character-level ``T5TokenizerFast`` (Unigram, 528 pieces, no sentinel tokens), built in memory.

    Like T5's SentencePiece tokenizer it marks word starts with ``▁``, appends ``</s>`` and pads with
    ``<pad>`` (id 0); unknown characters map to ``<unk>``."""
    from transformers import T5TokenizerFast

    return T5TokenizerFast(vocab=list(_t5_vocab()), extra_ids=0, model_max_length=model_max_length)


def tiny_t5_encoder(width: int = TEXT_WIDTH, seed: int = 0):
    """A 2-layer T5 v1.1-style ``T5EncoderModel`` (gated-GELU feed-forward) of width ``width``, 4 heads of
    ``width // 4`` channels; its output (batch, tokens, ``width``) is the DiTs' ``joint_attention_dim``."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=len(_t5_vocab()), d_model=width, d_kv=width // 4, d_ff=2 * width, num_layers=2,
        num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    with _seeded(seed):
        return T5EncoderModel(config).eval()


# ------------------------------------------------------------------------------------------ VAEs


def _vae_widths(vae_depth: int) -> tuple:
    if vae_depth < 2:
        raise ValueError(f"vae_depth must be at least 2 (downsampling 2), got {vae_depth}")
    return (8,) + (16,) * (vae_depth - 1)


def tiny_flow_vae(latent_channels: int = 16, vae_depth: int = 4, scaling_factor: float = FLUX_VAE_SCALING,
                  shift_factor: float = FLUX_VAE_SHIFT, seed: int = 0):
    """An ``AutoencoderKL`` like FLUX's and SD3's VAEs (no quant convs; shift and scaling factors), toy width.

    ``vae_depth`` levels downsample by ``2 ** (vae_depth - 1)`` (4 levels: 8, as the real VAEs; 3: 4);
    ``latent_channels`` 16 as released (8 for a variant)."""
    from diffusers import AutoencoderKL

    with _seeded(seed):
        return AutoencoderKL(
            in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * vae_depth,
            up_block_types=("UpDecoderBlock2D",) * vae_depth, block_out_channels=_vae_widths(vae_depth),
            layers_per_block=1, latent_channels=latent_channels, norm_num_groups=8, sample_size=64,
            scaling_factor=scaling_factor, shift_factor=shift_factor, force_upcast=True,
            use_quant_conv=False, use_post_quant_conv=False,
        ).eval()


# ------------------------------------------------------------------------------------------ FLUX


def _check_rope(axes_dims_rope, attention_head_dim: int) -> tuple:
    axes = tuple(int(a) for a in axes_dims_rope)
    if len(axes) != 3 or sum(axes) != attention_head_dim or any(a % 2 for a in axes):
        raise ValueError(f"axes_dims_rope {axes} must be three even numbers summing to the head dimension "
                         f"{attention_head_dim}")
    return axes


def tiny_flux_transformer(num_attention_heads: int = 2, attention_head_dim: int = 16,
                          axes_dims_rope=(4, 6, 6), num_layers: int = 1, num_single_layers: int = 2,
                          latent_channels: int = 16, in_channels: int | None = None,
                          guidance_embeds: bool = True,
                          joint_attention_dim: int = TEXT_WIDTH, pooled_projection_dim: int = TEXT_WIDTH,
                          seed: int = 0):
    """A ``FluxTransformer2DModel`` on packed latents (tokens of ``4 * latent_channels`` features: 2×2).

    ``num_layers`` double-stream and ``num_single_layers`` single-stream blocks of ``num_attention_heads ×
    attention_head_dim`` channels; ``in_channels`` overrides the input width (Fill), the output stays
    ``4 * latent_channels``."""
    from diffusers import FluxTransformer2DModel

    with _seeded(seed):
        return FluxTransformer2DModel(
            patch_size=1, in_channels=in_channels or 4 * latent_channels, out_channels=4 * latent_channels,
            num_layers=num_layers, num_single_layers=num_single_layers, attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads, joint_attention_dim=joint_attention_dim,
            pooled_projection_dim=pooled_projection_dim, guidance_embeds=guidance_embeds,
            axes_dims_rope=_check_rope(axes_dims_rope, attention_head_dim),
        ).eval()


def _flux_components(seed: int, schnell: bool, fill: bool, latent_channels: int = 16, vae_depth: int = 4,
                     **transformer_shape) -> dict:
    vae = tiny_flow_vae(latent_channels, vae_depth, FLUX_VAE_SCALING, FLUX_VAE_SHIFT, seed=seed + 1)
    in_channels = None
    if fill:  # packed noisy and masked-image latents, and the mask's vae_scale² pixels per latent pixel
        scale = 2 ** (vae_depth - 1)
        in_channels = 2 * 4 * latent_channels + 4 * scale * scale
    transformer = tiny_flux_transformer(latent_channels=latent_channels, in_channels=in_channels,
                                        guidance_embeds=not schnell, seed=seed, **transformer_shape)
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": _flow_scheduler(FLUX_SCHNELL_SCHEDULER if schnell else FLUX_DEV_SCHEDULER),
        "text_encoder": _clip_encoder(seed + 2),
        "tokenizer": tiny_tokenizer(),
        "text_encoder_2": tiny_t5_encoder(TEXT_WIDTH, seed=seed + 3),
        "tokenizer_2": tiny_t5_tokenizer(),
    }


def tiny_flux_pipeline(seed: int = 0, schnell: bool = False, **shape):
    """A random ``FluxPipeline`` like FLUX.1-dev (``schnell=True``: like FLUX.1-schnell, with no guidance
    embedding and a fixed shift 1).

    Defaults: transformer of 1 double + 2 single blocks, 2 heads × 16 channels (inner width 32), RoPE axes
    (4, 6, 6); VAE with 16 latent channels, downsampling 8, scaling 0.3611 / shift 0.1159; CLIP (width 32, its
    pooled output 32) and T5 (width 32 = ``joint_attention_dim``) text encoders; FLUX.1-dev's scheduler.
    ``shape``: ``num_attention_heads``, ``attention_head_dim``, ``axes_dims_rope`` (three even numbers summing
    to the head dimension), ``num_layers``, ``num_single_layers``, ``latent_channels``, ``vae_depth`` (4:
    downsampling 8, 3: 4).
    """
    from diffusers import FluxPipeline

    return FluxPipeline(**_flux_components(seed, schnell, False, **shape))


def tiny_flux_fill_pipeline(seed: int = 0, **shape):
    """A random ``FluxFillPipeline`` like FLUX.1-Fill-dev (same knobs as :func:`tiny_flux_pipeline`).

    Its transformer takes ``8 * latent_channels + 4 * vae_scale²`` features per token (packed noisy latents,
    packed masked-image latents, the mask's pixels per latent pixel: 64 + 64 + 256 = 384 at the defaults, as
    released) and predicts ``4 * latent_channels``."""
    from diffusers import FluxFillPipeline

    return FluxFillPipeline(**_flux_components(seed, False, True, **shape))


# ------------------------------------------------------------------------------------------- SD3

SD3_T5_WIDTH = 96  # wider than the two CLIPs' concatenation (64), which SD3 zero-pads to the T5 width


def tiny_sd3_transformer(num_attention_heads: int = 2, attention_head_dim: int = 16, num_layers: int = 2,
                         latent_channels: int = 16, sample_size: int = 32, pos_embed_max_size: int = 128,
                         qk_norm: str | None = None, dual_attention_layers=(),
                         joint_attention_dim: int = SD3_T5_WIDTH, pooled_projection_dim: int = 2 * TEXT_WIDTH,
                         seed: int = 0):
    """An ``SD3Transformer2DModel`` (MMDiT) with 2×2 patches of ``latent_channels``-channel latents.

    ``num_layers`` joint blocks of ``num_attention_heads × attention_head_dim`` channels (the caption
    projection has the same width, as released); ``pos_embed_max_size`` patches per side of the absolute
    position embedding (cropped at its centre: latents up to ``2 * pos_embed_max_size`` per side);
    ``qk_norm="rms_norm"`` and ``dual_attention_layers`` (indices of MMDiT-X blocks) give SD 3.5 flavours."""
    from diffusers import SD3Transformer2DModel

    inner = num_attention_heads * attention_head_dim
    with _seeded(seed):
        return SD3Transformer2DModel(
            sample_size=sample_size, patch_size=2, in_channels=latent_channels, out_channels=latent_channels,
            num_layers=num_layers, attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=joint_attention_dim, caption_projection_dim=inner,
            pooled_projection_dim=pooled_projection_dim, pos_embed_max_size=pos_embed_max_size,
            dual_attention_layers=tuple(dual_attention_layers), qk_norm=qk_norm,
        ).eval()


def tiny_sd3_pipeline(seed: int = 0, latent_channels: int = 16, vae_depth: int = 4, **shape):
    """A random ``StableDiffusion3Pipeline`` like SD3-medium (with ``qk_norm="rms_norm"`` and
    ``dual_attention_layers``: like SD 3.5).

    Defaults: transformer of 2 joint blocks, 2 heads × 16 channels (inner width 32), patch 2, position
    embedding of 128×128 patches (up to 2048 pixels a side; ``sample_size`` 32 latents); VAE with 16 latent
    channels, downsampling 8, scaling 1.5305 / shift 0.0609; two ``CLIPTextModelWithProjection`` (width 32
    each: pooled 64, hidden states concatenated to 64 and zero-padded to the T5's 96) and a T5 of width 96
    (``joint_attention_dim``); SD3's scheduler (flow matching, shift 3). ``shape``: ``num_attention_heads``,
    ``attention_head_dim``, ``num_layers``, ``pos_embed_max_size``, ``sample_size``, ``qk_norm``,
    ``dual_attention_layers``; ``latent_channels``; ``vae_depth`` (4: downsampling 8, 3: 4).
    """
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline(
        transformer=tiny_sd3_transformer(latent_channels=latent_channels, seed=seed, **shape),
        vae=tiny_flow_vae(latent_channels, vae_depth, SD3_VAE_SCALING, SD3_VAE_SHIFT, seed=seed + 1),
        scheduler=_flow_scheduler(SD3_SCHEDULER),
        text_encoder=_clip_encoder(seed + 2, with_projection=True),
        tokenizer=tiny_tokenizer(),
        text_encoder_2=_clip_encoder(seed + 3, with_projection=True, openclip_style=True),
        tokenizer_2=tiny_tokenizer(),
        text_encoder_3=tiny_t5_encoder(SD3_T5_WIDTH, seed=seed + 4),
        tokenizer_3=tiny_t5_tokenizer(),
    )


# ------------------------------------------------------------------------------------- Qwen-Image

# Qwen2's special tokens (chat markers, grounding and vision placeholders), in the released order.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
# The part of QwenImagePipeline's prompt template before the prompt; the released tokenizer makes it 34 tokens
# (the pipeline's prompt_template_encode_start_idx), and so does tiny_qwen_tokenizer.
QWEN_IMAGE_TEMPLATE_PREFIX = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, "
    "spatial relationships of the objects and background:<|im_end|>\n<|im_start|>user\n"
)
QWEN_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134, -0.0715,
                     0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
QWEN_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526, 2.8652,
                    1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


def tiny_qwen_tokenizer(model_max_length: int = 32768):
    """A byte-level BPE ``Qwen2TokenizerFast`` built in memory (370 tokens).

    Vocabulary: the 256 byte symbols, Qwen2's special tokens (:data:`QWEN_SPECIAL_TOKENS`, special added
    tokens as in the released tokenizer) and merges that make every word of Qwen-Image's prompt-template
    prefix one token, so the prefix is 34 tokens as with the real tokenizer; other text is mostly one token
    per byte. Padding uses ``<|endoftext|>``.
    """
    import re

    from tokenizers import AddedToken
    from transformers import Qwen2TokenizerFast

    vocab = {symbol: index for index, symbol in enumerate(_byte_alphabet())}
    # Split the prefix as the tokenizer will: special tokens apart, then Qwen2's regex and byte-level mapping.
    pre_tokenizer = Qwen2TokenizerFast(vocab=dict(vocab), merges=[]).backend_tokenizer.pre_tokenizer
    specials = "(" + "|".join(re.escape(token) for token in QWEN_SPECIAL_TOKENS) + ")"
    chunks = [c for c in re.split(specials, QWEN_IMAGE_TEMPLATE_PREFIX) if c and c not in QWEN_SPECIAL_TOKENS]
    words = [word for chunk in chunks for word, _ in pre_tokenizer.pre_tokenize_str(chunk)]
    merges = []
    for word in dict.fromkeys(words):  # left-to-right merge chains: w[:1]+w[1], w[:2]+w[2], ...
        for end in range(1, len(word)):
            if word[:end + 1] not in vocab:
                vocab[word[:end + 1]] = len(vocab)
                merges.append((word[:end], word[end]))
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=merges, model_max_length=model_max_length)
    tokenizer.add_tokens([AddedToken(token, special=True, normalized=False) for token in QWEN_SPECIAL_TOKENS],
                         special_tokens=True)
    return tokenizer


def tiny_qwen_text_encoder(tokenizer=None, hidden_size: int = TEXT_WIDTH, seed: int = 0):
    """A ``Qwen2_5_VLForConditionalGeneration`` with a 2-layer text model of width ``hidden_size`` (4 query
    and 2 key/value heads of ``hidden_size // 4`` channels, multimodal RoPE sections summing to half a head)
    and a 1-block vision tower of width 16 (unused for text-to-image, built because the class has one). Its
    last hidden states (batch, tokens, ``hidden_size``) are Qwen-Image's ``joint_attention_dim``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = tokenizer or tiny_qwen_tokenizer()
    # Multimodal RoPE: (temporal, height, width) sections of the head's frequency pairs, split like the
    # released (16, 24, 24) of a 128-channel head.
    pairs = hidden_size // 4 // 2
    temporal = max(1, pairs // 4)
    height = (pairs - temporal) // 2
    mrope_section = [temporal, height, pairs - temporal - height]
    ids = {name: tokenizer.convert_tokens_to_ids(f"<|{name}|>")
           for name in ("image_pad", "video_pad", "vision_start", "vision_end", "endoftext", "im_end")}
    text_config = {
        "vocab_size": len(tokenizer), "hidden_size": hidden_size, "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope_section},
        "bos_token_id": ids["endoftext"], "eos_token_id": ids["im_end"], "pad_token_id": ids["endoftext"],
    }
    vision_config = {
        "depth": 1, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "patch_size": 14,
        "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56, "out_hidden_size": hidden_size,
        "fullatt_block_indexes": [0],
    }
    config = Qwen2_5_VLConfig(
        text_config=text_config, vision_config=vision_config, image_token_id=ids["image_pad"],
        video_token_id=ids["video_pad"], vision_start_token_id=ids["vision_start"],
        vision_end_token_id=ids["vision_end"],
    )
    with _seeded(seed):
        return Qwen2_5_VLForConditionalGeneration(config).eval()


def tiny_qwen_vae(latent_channels: int = 16, vae_depth: int = 4, seed: int = 0):
    """An ``AutoencoderKLQwenImage`` (the causal 3-D Wan-style VAE) at toy width: base width 8, multipliers
    (1, 2, 2, ...) over ``vae_depth`` levels (spatial downsampling ``2 ** (vae_depth - 1)``: 8 by default, as
    released), one residual block per level, temporal downsampling like the released (1, 2, 2) pattern, and
    the released ``latents_mean`` / ``latents_std`` (cycled to ``latent_channels`` entries)."""
    from diffusers import AutoencoderKLQwenImage

    if vae_depth < 2:
        raise ValueError(f"vae_depth must be at least 2 (downsampling 2), got {vae_depth}")
    mean = [QWEN_LATENTS_MEAN[i % 16] for i in range(latent_channels)]
    std = [QWEN_LATENTS_STD[i % 16] for i in range(latent_channels)]
    with _seeded(seed):
        return AutoencoderKLQwenImage(
            base_dim=8, z_dim=latent_channels, dim_mult=[1] + [2] * (vae_depth - 1), num_res_blocks=1,
            attn_scales=[], temperal_downsample=[False] + [True] * (vae_depth - 2), latents_mean=mean,
            latents_std=std,
        ).eval()


def tiny_qwen_image_transformer(num_attention_heads: int = 2, attention_head_dim: int = 16,
                                axes_dims_rope=(4, 6, 6), num_layers: int = 2, latent_channels: int = 16,
                                joint_attention_dim: int = TEXT_WIDTH, seed: int = 0):
    """A ``QwenImageTransformer2DModel`` (MMDiT on packed 2×2 latent patches: ``4 * latent_channels``
    features per token in, ``latent_channels`` per patch pixel out) of ``num_layers`` blocks of
    ``num_attention_heads × attention_head_dim`` channels, 3-axis RoPE ``axes_dims_rope`` (frame, row,
    column) summing to the head dimension."""
    from diffusers import QwenImageTransformer2DModel

    with _seeded(seed):
        return QwenImageTransformer2DModel(
            patch_size=2, in_channels=4 * latent_channels, out_channels=latent_channels,
            num_layers=num_layers, attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=joint_attention_dim, guidance_embeds=False,
            axes_dims_rope=_check_rope(axes_dims_rope, attention_head_dim),
        ).eval()


def tiny_qwen_image_pipeline(seed: int = 0, latent_channels: int = 16, vae_depth: int = 4, **shape):
    """A random ``QwenImagePipeline`` like Qwen-Image.

    Defaults: transformer of 2 blocks, 2 heads × 16 channels (inner width 32), RoPE axes (4, 6, 6); VAE with
    16 latent channels, downsampling 8; Qwen2.5-VL text encoder of width 32 (:func:`tiny_qwen_text_encoder`)
    and the offline tokenizer of :func:`tiny_qwen_tokenizer`; Qwen-Image's scheduler (dynamic exponential
    shift 0.5 → 0.9 over 256 → 8192 tokens, ``shift_terminal`` 0.02). ``shape``: ``num_attention_heads``,
    ``attention_head_dim``, ``axes_dims_rope``, ``num_layers``; ``latent_channels``; ``vae_depth``.
    """
    from diffusers import QwenImagePipeline

    tokenizer = tiny_qwen_tokenizer()
    return QwenImagePipeline(
        transformer=tiny_qwen_image_transformer(latent_channels=latent_channels, seed=seed, **shape),
        vae=tiny_qwen_vae(latent_channels, vae_depth, seed=seed + 1),
        scheduler=_flow_scheduler(QWEN_IMAGE_SCHEDULER),
        text_encoder=tiny_qwen_text_encoder(tokenizer, seed=seed + 2),
        tokenizer=tokenizer,
    )


# ------------------------------------------------------------------------------------ by name

# name -> (builder, preset keyword arguments); the builders below take ``seed`` and the shape knobs.
TINY_DIT_NAMES = {
    "tiny-flux": ("flux", {}),
    "tiny-flux-schnell": ("flux", {"schnell": True}),
    "tiny-flux-fill": ("flux-fill", {}),
    "tiny-sd3": ("sd3", {}),
    "tiny-sd35": ("sd3", {"qk_norm": "rms_norm", "dual_attention_layers": (0,)}),
    "tiny-qwen": ("qwen", {}),
    "tiny-flux2": ("flux2", {}),
}


def _builders() -> dict:
    from .tiny_flux2 import tiny_flux2_pipeline

    return {"flux2": tiny_flux2_pipeline, "flux": tiny_flux_pipeline, "flux-fill": tiny_flux_fill_pipeline, "sd3": tiny_sd3_pipeline,
            "qwen": tiny_qwen_image_pipeline}


def tiny_dit_pipeline(name: str, seed: int = 0, **shape):
    """The tiny pipeline called ``name`` (a key of :data:`TINY_DIT_NAMES`); ``shape`` overrides its knobs
    (``num_attention_heads``, ``attention_head_dim``, ``axes_dims_rope``, ``num_layers``, ``latent_channels``,
    ``vae_depth``, ...; see each builder)."""
    if name not in TINY_DIT_NAMES:
        raise ValueError(f"unknown tiny DiT {name!r}; use one of {sorted(TINY_DIT_NAMES)}")
    family, preset = TINY_DIT_NAMES[name]
    return _builders()[family](seed=seed, **{**preset, **shape})


def save_tiny_dit_pipeline(folder: str | os.PathLike, name: str = "tiny-flux", seed: int = 0,
                           **shape) -> Path:
    """Save :func:`tiny_dit_pipeline` ``(name, seed, **shape)`` in diffusers layout (``save_pretrained``:
    ``model_index.json``, one folder per component, tokenizers as ``tokenizer.json``); returns the folder."""
    folder = Path(folder)
    tiny_dit_pipeline(name, seed, **shape).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------- full size / proportional

# Transformer configs of the released checkpoints (their diffusers ``transformer/config.json``).
FLUX_DEV_TRANSFORMER = {
    "patch_size": 1, "in_channels": 64, "out_channels": None, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": (16, 56, 56),
}
SD3_MEDIUM_TRANSFORMER = {
    "sample_size": 128, "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 24,
    "attention_head_dim": 64, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "caption_projection_dim": 1536, "pooled_projection_dim": 2048, "pos_embed_max_size": 192,
}
QWEN_IMAGE_TRANSFORMER = {
    "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 3584, "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}
# FLUX.2 [klein] 4B: 5 double- and 20 single-stream blocks of 24 × 128 channels, Qwen3-4B's 3 × 2560 features
FLUX2_KLEIN_4B_TRANSFORMER = {
    "patch_size": 1, "in_channels": 128, "num_layers": 5, "num_single_layers": 20, "attention_head_dim": 128,
    "num_attention_heads": 24, "joint_attention_dim": 7680, "axes_dims_rope": (32, 32, 32, 32),
    "rope_theta": 2000, "guidance_embeds": False,
}
FULL_SIZE_CONFIGS = {
    "flux-dev": ("FluxTransformer2DModel", FLUX_DEV_TRANSFORMER),
    "flux-schnell": ("FluxTransformer2DModel", {**FLUX_DEV_TRANSFORMER, "guidance_embeds": False}),
    "flux-fill": ("FluxTransformer2DModel", {**FLUX_DEV_TRANSFORMER, "in_channels": 384, "out_channels": 64}),
    "sd3-medium": ("SD3Transformer2DModel", SD3_MEDIUM_TRANSFORMER),
    "sd3.5-medium": ("SD3Transformer2DModel", {
        **SD3_MEDIUM_TRANSFORMER, "pos_embed_max_size": 384, "qk_norm": "rms_norm",
        "dual_attention_layers": tuple(range(13)),
    }),
    "sd3.5-large": ("SD3Transformer2DModel", {
        **SD3_MEDIUM_TRANSFORMER, "num_layers": 38, "num_attention_heads": 38, "caption_projection_dim": 2432,
        "qk_norm": "rms_norm",
    }),
    "qwen-image": ("QwenImageTransformer2DModel", QWEN_IMAGE_TRANSFORMER),
    "flux2-klein-4b": ("Flux2Transformer2DModel", FLUX2_KLEIN_4B_TRANSFORMER),
}
# Family names and the tiny models' names -> the released model they stand for.
FULL_SIZE_ALIASES = {
    "flux": "flux-dev", "sd3": "sd3-medium", "sd3.5": "sd3.5-large", "qwen": "qwen-image",
    "tiny-flux": "flux-dev", "tiny-flux-schnell": "flux-schnell", "tiny-flux-fill": "flux-fill",
    "tiny-sd3": "sd3-medium", "tiny-sd35": "sd3.5-medium", "tiny-qwen": "qwen-image",
    "flux2": "flux2-klein-4b", "tiny-flux2": "flux2-klein-4b",
}


def _full_size_entry(name: str) -> tuple:
    key = FULL_SIZE_ALIASES.get(name, name)
    if key not in FULL_SIZE_CONFIGS:
        raise ValueError(f"no full-size config for {name!r}; use one of {sorted(FULL_SIZE_CONFIGS)} "
                         f"or {sorted(FULL_SIZE_ALIASES)}")
    return FULL_SIZE_CONFIGS[key]


def full_size_config(name: str) -> dict:
    """The released transformer's constructor arguments for ``name`` (a key of :data:`FULL_SIZE_CONFIGS`,
    a family name or a tiny model's name, see :data:`FULL_SIZE_ALIASES`); a fresh dict."""
    return dict(_full_size_entry(name)[1])


def full_size_transformer(name: str, device="meta", seed: int = 0):
    """The released transformer architecture for ``name`` with random weights, on ``device`` (default
    ``"meta"``: no memory, for parameter and FLOP counts; 12 B parameters for FLUX.1, 20 B for Qwen-Image)."""
    import diffusers
    import torch

    class_name, config = _full_size_entry(name)
    with _seeded(seed), torch.device(device):
        return getattr(diffusers, class_name)(**config).eval()


def proportional_flux_config(divisor: int = 8) -> dict:
    """FLUX.1-dev's transformer config with ``divisor``-times fewer heads (and text widths).

    The depth (19 double + 38 single blocks), the head dimension 128, the RoPE axes (16, 56, 56) and the
    packed input (64 features) are kept: linear layers shrink by ``divisor²`` in FLOPs, attention's
    ``softmax(QKᵀ)V`` by ``divisor`` only, so benchmarks err on the attention-heavy side (cf.
    :mod:`.proportional`). At 4096 image + 512 text tokens ``divisor=8`` has 1/27 of FLUX.1-dev's FLOPs.

    Raises ``ValueError`` unless ``divisor`` divides the 24 heads."""
    from .proportional import _text_width

    config = full_size_config("flux-dev")
    heads = config["num_attention_heads"]
    if divisor < 1 or heads % divisor:
        raise ValueError(f"divisor {divisor} must divide FLUX's {heads} heads (1, 2, 3, 4, 6, 8, 12, 24)")
    config["num_attention_heads"] = heads // divisor
    config["joint_attention_dim"] = _text_width(config["joint_attention_dim"], divisor)
    config["pooled_projection_dim"] = _text_width(config["pooled_projection_dim"], divisor)
    return config


def proportional_flux_transformer(divisor: int = 8, device="meta", seed: int = 0):
    """A random ``FluxTransformer2DModel`` with FLUX.1-dev's proportions (:func:`proportional_flux_config`):
    at ``divisor=8`` 3 heads × 128 (inner width 384), 19 + 38 blocks, T5 width 512, pooled width 96.
    ``device="meta"`` (the default) builds it without memory, for FLOP counts; ``"cpu"``/``"cuda"`` to run."""
    import torch
    from diffusers import FluxTransformer2DModel

    with _seeded(seed), torch.device(device):
        return FluxTransformer2DModel(**proportional_flux_config(divisor)).eval()
