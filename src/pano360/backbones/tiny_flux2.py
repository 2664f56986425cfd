"""A tiny random FLUX.2 [klein] pipeline (``Flux2KleinPipeline``), offline, for tests: ``tiny-flux2``.

The real classes at toy width: ``Flux2Transformer2DModel`` (patch size 1 on 2 × 2-patchified latents,
4-axis RoPE), ``AutoencoderKLFlux2`` (8 pixels per latent, batch-norm statistics over the patchified
channels, set to non-trivial values here), a ``Qwen3ForCausalLM`` text encoder of 28 layers (the pipeline
stacks the hidden states of layers 9, 18 and 27) and a byte-level Qwen2 tokenizer built in memory (that of
:func:`pano360.backbones.tiny_dit.tiny_qwen_tokenizer`) with Qwen3's chat markers (``<think>``, ``</think>``)
and a chat template giving the prompt text Qwen3's template gives for ``enable_thinking=False``::

    <|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n

The scheduler is configured like FLUX.2's ``scheduler_config.json`` (flow-matching Euler, dynamic
exponential shift; the pipeline computes μ itself).
"""

from __future__ import annotations

from .tiny_dit import TEXT_WIDTH, _flow_scheduler, _seeded, _vae_widths, tiny_qwen_tokenizer

FLUX2_SCHEDULER = {
    "num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096, "time_shift_type": "exponential",
}
# Qwen3's chat format for one user turn and the generation prompt without thinking.
QWEN3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)
QWEN3_TEXT_LAYERS = 28  # the pipeline reads hidden states 9, 18, 27


def tiny_qwen3_tokenizer():
    """:func:`tiny_qwen_tokenizer` plus ``<think>`` / ``</think>`` and :data:`QWEN3_CHAT_TEMPLATE`."""
    from tokenizers import AddedToken

    tokenizer = tiny_qwen_tokenizer()
    tokenizer.add_tokens([AddedToken(token, special=False, normalized=False) for token in ("<think>", "</think>")])
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def tiny_qwen3_text_encoder(tokenizer, hidden_size: int = TEXT_WIDTH, seed: int = 0):
    """A ``Qwen3ForCausalLM`` of :data:`QWEN3_TEXT_LAYERS` layers of width ``hidden_size`` (4 query and 2
    key/value heads of ``hidden_size // 4`` channels); the pipeline's prompt embeddings are 3 × ``hidden_size``
    wide."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen3Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=QWEN3_TEXT_LAYERS, num_attention_heads=4, num_key_value_heads=2,
        head_dim=hidden_size // 4, max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, use_cache=False,
        pad_token_id=pad, bos_token_id=pad, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    with _seeded(seed):
        return Qwen3ForCausalLM(config).eval()


def tiny_flux2_vae(latent_channels: int = 32, vae_depth: int = 4, seed: int = 0):
    """An ``AutoencoderKLFlux2`` at toy width (one block per level, downsampling ``2 ** (vae_depth − 1)``)
    whose batch-norm running mean / variance (4 · ``latent_channels`` patchified channels) are drawn at
    random (mean ~ N(0, 0.3²), variance in [0.5, 2]), so the latent normalisation is not the identity."""
    import torch
    from diffusers import AutoencoderKLFlux2

    widths = _vae_widths(vae_depth)
    with _seeded(seed):
        vae = AutoencoderKLFlux2(
            down_block_types=("DownEncoderBlock2D",) * vae_depth, up_block_types=("UpDecoderBlock2D",) * vae_depth,
            block_out_channels=widths, layers_per_block=1, latent_channels=latent_channels, norm_num_groups=8,
            sample_size=128,
        ).eval()
        channels = 4 * latent_channels
        vae.bn.running_mean.copy_(0.3 * torch.randn(channels))
        vae.bn.running_var.copy_(0.5 + 1.5 * torch.rand(channels))
    return vae


def tiny_flux2_transformer(num_attention_heads: int = 2, attention_head_dim: int = 16, axes_dims_rope=(4, 4, 4, 4),
                           num_layers: int = 1, num_single_layers: int = 1, latent_channels: int = 32,
                           joint_attention_dim: int = 3 * TEXT_WIDTH, seed: int = 0):
    """A ``Flux2Transformer2DModel``: ``num_layers`` double-stream and ``num_single_layers`` single-stream
    blocks of ``num_attention_heads × attention_head_dim`` channels, 4-axis RoPE (T, H, W, L) summing to the
    head dimension, on tokens of 4 · ``latent_channels`` features; no guidance embedding (klein)."""
    from diffusers import Flux2Transformer2DModel

    if sum(axes_dims_rope) != attention_head_dim or len(axes_dims_rope) != 4:
        raise ValueError(f"axes_dims_rope {tuple(axes_dims_rope)} must be 4 axes summing to {attention_head_dim}")
    with _seeded(seed):
        return Flux2Transformer2DModel(
            patch_size=1, in_channels=4 * latent_channels, num_layers=num_layers,
            num_single_layers=num_single_layers, attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads, joint_attention_dim=joint_attention_dim,
            timestep_guidance_channels=32, axes_dims_rope=tuple(axes_dims_rope), guidance_embeds=False,
        ).eval()


def tiny_flux2_pipeline(seed: int = 0, latent_channels: int = 32, vae_depth: int = 4, is_distilled: bool = True,
                        **shape):
    """A random ``Flux2KleinPipeline`` like FLUX.2 [klein] 4B (step-distilled: ``is_distilled=True``, no
    CFG; ``False``: like klein Base, CFG against the empty prompt). ``shape``: ``num_attention_heads``,
    ``attention_head_dim``, ``axes_dims_rope``, ``num_layers``, ``num_single_layers``."""
    from diffusers import Flux2KleinPipeline

    tokenizer = tiny_qwen3_tokenizer()
    return Flux2KleinPipeline(
        transformer=tiny_flux2_transformer(latent_channels=latent_channels, seed=seed, **shape),
        vae=tiny_flux2_vae(latent_channels, vae_depth, seed=seed + 1),
        scheduler=_flow_scheduler(FLUX2_SCHEDULER),
        text_encoder=tiny_qwen3_text_encoder(tokenizer, seed=seed + 2),
        tokenizer=tokenizer, is_distilled=is_distilled,
    )
