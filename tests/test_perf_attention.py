"""Chunked attention and chunked feed-forward give the default processors' results (exactly, up to rounding)."""

import pytest
import torch

from pano360.backbones.attention import (
    ChunkedAttnProcessor,
    chunked_attention,
    feed_forward_chunking,
    query_chunk_for,
)
from pano360.backbones.tiny import tiny_pipeline


def _unet_call(pipe, latents, text):
    return pipe.unet(latents, 500, encoder_hidden_states=text).sample


@pytest.mark.parametrize("query_chunk", [7, 64, "auto"])
def test_chunked_attention_equals_default_processor(single_torch_thread, query_chunk):
    pipe = tiny_pipeline("sd2")
    latents = torch.randn(2, 4, 16, 32, generator=torch.Generator().manual_seed(0))
    text = torch.randn(2, 77, pipe.unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _unet_call(pipe, latents, text)
        decoded = pipe.vae.decode(latents[:1]).sample
        with chunked_attention(pipe.unet, pipe.vae, query_chunk=query_chunk, score_budget=2 ** 12):
            assert all(isinstance(p, ChunkedAttnProcessor) for p in pipe.unet.attn_processors.values())
            got = _unet_call(pipe, latents, text)
            got_decoded = pipe.vae.decode(latents[:1]).sample
    assert not any(isinstance(p, ChunkedAttnProcessor) for p in pipe.unet.attn_processors.values())
    assert (got - expected).abs().max() <= 1e-5
    assert (got_decoded - decoded).abs().max() <= 1e-5


def test_chunked_attention_with_mask_matches_sdpa():
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(0)
    attn = Attention(query_dim=16, heads=2, dim_head=8).eval()
    x = torch.randn(2, 10, 16)
    mask = torch.zeros(2, 1, 10)
    mask[:, :, 7:] = -1e4
    with torch.no_grad():
        attn.set_processor(AttnProcessor2_0())
        expected = attn(x, attention_mask=mask)
        attn.set_processor(ChunkedAttnProcessor(3))
        got = attn(x, attention_mask=mask)
    assert (got - expected).abs().max() <= 1e-6


def test_query_chunk_for_bounds_the_scores():
    assert query_chunk_for(2, 5, 32768, 32768, budget=2 ** 28) * 2 * 5 * 32768 <= 2 ** 28
    assert query_chunk_for(1, 1, 100, 100, budget=10 ** 9) == 100
    assert query_chunk_for(64, 64, 10, 10 ** 9, budget=1) == 1


def test_feed_forward_chunking_is_exact_and_reversible(single_torch_thread):
    pipe = tiny_pipeline("sdxl")
    unet = pipe.unet
    latents = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    extra = {"text_embeds": torch.randn(2, 32), "time_ids": torch.zeros(2, 6)}
    text = torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        expected = unet(latents, 10, encoder_hidden_states=text, added_cond_kwargs=extra).sample
        with feed_forward_chunking(unet, rows=5):
            got = unet(latents, 10, encoder_hidden_states=text, added_cond_kwargs=extra).sample
    assert (got - expected).abs().max() <= 1e-5
    assert not any(hasattr(m, "_pano360_ff_chunk") for m in unet.modules())
