"""A benchmark FLUX.1-dev pipeline: the released architectures at their depth, narrower widths.

The DiT counterpart of :mod:`.proportional` (SD 2 / SDXL): a complete ``FluxPipeline`` that pano360 and
diffusers load from a saved folder like the real one, for measuring where a FLUX training or sampling step
spends its time without the 12 B + 4.7 B parameters. Kept from FLUX.1-dev:

* the transformer's depth (19 double- + 38 single-stream blocks), head dimension 128, RoPE axes (16, 56, 56),
  packed 2×2 input (64 features), guidance embedding (:func:`.tiny_dit.proportional_flux_transformer`);
* the VAE's layout (SD's VAE architecture, four levels of two resnets, mid-block attention, 16 latent
  channels, no quant convs, scaling 0.3611 / shift 0.1159);
* the text encoders' depths: CLIP ViT-L (12 layers, pooled output) and T5-XXL (24 layers, gated GELU,
  relative-position buckets 32 / distance 128) on 512 T5 tokens (``max_sequence_length`` of FLUX.1-dev);
* the flow-matching scheduler of FLUX.1-dev (dynamic shifting 0.5 → 1.15 over 256 → 4096 tokens).

Every width is divided by ``divisor``: the transformer's heads (24 / divisor of 128 channels), the T5
width 4096 and CLIP width 768 (rounded to multiples of 16; they are the transformer's
``joint_attention_dim`` and ``pooled_projection_dim``), T5's feed-forward 10240, its heads of 64 channels,
and the VAE's channels 128/256/512/512 (rounded to multiples of 8, GroupNorm of 8 groups, as
:func:`.proportional.proportional_vae_config`). Linear layers and convolutions then shrink by about
``divisor²`` in FLOPs, attention's ``softmax(QKᵀ)V`` by ``divisor`` only (token counts are set by the image
and the 512 text tokens), so a proportional model is more attention-heavy than FLUX.1-dev.

``divisor=24`` (the default: one 128-channel head, inner width 128) makes one LoRA training step at
256×512 px a few seconds on one CPU thread; :func:`flux_t5_config`, :func:`flux_clip_config` and
:func:`flux_vae_config` with ``divisor=1`` are the released configs (build them on the meta device for FLOP
counts). Tokenizers are the in-memory ones of :mod:`.tiny` / :mod:`.tiny_dit` (character level), so prompt
lengths in tokens differ from the real tokenizers; every prompt is padded to 77 CLIP and 512 T5 tokens
anyway, as FLUX.1-dev does, so the encoders' work is the same.
"""

from __future__ import annotations

from .proportional import _round, _text_width
from .tiny_dit import (
    FLUX_DEV_SCHEDULER,
    FLUX_VAE_SCALING,
    FLUX_VAE_SHIFT,
    T5_MAX_LENGTH,
    _flow_scheduler,
    _seeded,
    proportional_flux_config,
    proportional_flux_transformer,
    tiny_t5_tokenizer,
)

DEFAULT_FLUX_DIVISOR = 24

# Released configs (FLUX.1-dev's vae/, text_encoder/ (CLIP ViT-L/14), text_encoder_2/ (T5 v1.1 XXL encoder)).
FLUX_VAE = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 16, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4, "norm_num_groups": 32, "sample_size": 1024,
    "scaling_factor": FLUX_VAE_SCALING, "shift_factor": FLUX_VAE_SHIFT, "use_quant_conv": False,
    "use_post_quant_conv": False, "mid_block_add_attention": True, "force_upcast": True,
}
T5_XXL = {
    "vocab_size": 32128, "d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64,
    "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
}
CLIP_L = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768,
}
CLIP_HEAD_DIM = 64


def _check_divisor(divisor: int) -> int:
    proportional_flux_config(divisor)  # raises unless divisor divides FLUX's 24 heads
    return int(divisor)


def flux_vae_config(divisor: int = DEFAULT_FLUX_DIVISOR) -> dict:
    """FLUX.1-dev's ``AutoencoderKL`` config with channel widths divided by ``divisor`` (multiples of 8,
    8 GroupNorm groups; ``divisor=1``: the released config)."""
    config = dict(FLUX_VAE)
    if divisor > 1:
        config["block_out_channels"] = tuple(_round(w / divisor, 8) for w in FLUX_VAE["block_out_channels"])
        config["norm_num_groups"] = 8
    return config


def flux_t5_config(divisor: int = DEFAULT_FLUX_DIVISOR, vocab_size: int | None = None) -> dict:
    """T5-XXL encoder arguments (``T5Config``) with widths divided by ``divisor``: ``d_model`` equal to the
    proportional transformer's ``joint_attention_dim``, heads of 64 channels (at least one), feed-forward
    ``10240 / divisor``; 24 layers. ``vocab_size``: the tokenizer's (default T5's 32128)."""
    config = dict(T5_XXL)
    if divisor > 1:
        config["d_model"] = _text_width(T5_XXL["d_model"], divisor)
        config["num_heads"] = max(1, round(T5_XXL["num_heads"] / divisor))
        config["d_ff"] = _round(T5_XXL["d_ff"] / divisor, 16)
    if vocab_size is not None:
        config["vocab_size"] = int(vocab_size)
    return config


def flux_clip_config(divisor: int = DEFAULT_FLUX_DIVISOR, vocab_size: int | None = None) -> dict:
    """CLIP ViT-L/14 text encoder arguments (``CLIPTextConfig``) with width ``768 / divisor`` (the
    transformer's ``pooled_projection_dim``), heads of up to 64 channels, MLP 4× the width; 12 layers."""
    config = dict(CLIP_L)
    if divisor > 1:
        width = _text_width(CLIP_L["hidden_size"], divisor)
        config.update(hidden_size=width, intermediate_size=4 * width, projection_dim=width,
                      num_attention_heads=max(1, width // CLIP_HEAD_DIM))
    if vocab_size is not None:
        config["vocab_size"] = int(vocab_size)
    return config


def flux_vae(divisor: int = DEFAULT_FLUX_DIVISOR, device="cpu", seed: int = 1):
    """A random ``AutoencoderKL`` of :func:`flux_vae_config` on ``device`` (``"meta"``: no memory)."""
    import torch
    from diffusers import AutoencoderKL

    with _seeded(seed), torch.device(device):
        return AutoencoderKL(**flux_vae_config(divisor)).eval()


def flux_t5_encoder(divisor: int = DEFAULT_FLUX_DIVISOR, device="cpu", seed: int = 3, vocab_size: int | None = None):
    """A random ``T5EncoderModel`` of :func:`flux_t5_config` (no dropout, no cache) on ``device``."""
    import torch
    from transformers import T5Config, T5EncoderModel

    config = T5Config(**flux_t5_config(divisor, vocab_size), dropout_rate=0.0, is_encoder_decoder=False,
                      use_cache=False, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    with _seeded(seed), torch.device(device):
        return T5EncoderModel(config).eval()


def flux_clip_encoder(divisor: int = DEFAULT_FLUX_DIVISOR, device="cpu", seed: int = 2, tokenizer=None):
    """A random ``CLIPTextModel`` of :func:`flux_clip_config` on ``device``; ``tokenizer`` (default: the
    character-level one of :func:`.tiny.tiny_tokenizer`) sets the vocabulary and special ids."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    from .tiny import tiny_tokenizer

    tokenizer = tokenizer or tiny_tokenizer()
    config = CLIPTextConfig(**flux_clip_config(divisor, len(tokenizer)), bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with _seeded(seed), torch.device(device):
        return CLIPTextModel(config).eval()


def proportional_flux_pipeline(divisor: int = DEFAULT_FLUX_DIVISOR, seed: int = 0):
    """A random ``FluxPipeline`` with FLUX.1-dev's proportions (see the module docstring), on the CPU.

    At ``divisor=24``: transformer 19 + 38 blocks of one 128-channel head (about 12 M parameters), T5
    width 176 (24 layers, 3 heads of 64, feed-forward 432), CLIP width 32 (12 layers), VAE channels
    8/8/24/24. Save it with ``save_pretrained`` and pass the folder as ``--model``.
    """
    from diffusers import FluxPipeline

    from .tiny import tiny_tokenizer

    divisor = _check_divisor(divisor)
    tokenizer, tokenizer_2 = tiny_tokenizer(), tiny_t5_tokenizer(T5_MAX_LENGTH)
    return FluxPipeline(
        transformer=proportional_flux_transformer(divisor, device="cpu", seed=seed),
        vae=flux_vae(divisor, seed=seed + 1),
        scheduler=_flow_scheduler(FLUX_DEV_SCHEDULER),
        text_encoder=flux_clip_encoder(divisor, seed=seed + 2, tokenizer=tokenizer),
        tokenizer=tokenizer,
        text_encoder_2=flux_t5_encoder(divisor, seed=seed + 3, vocab_size=len(tokenizer_2)),
        tokenizer_2=tokenizer_2,
    )
