"""The exact seam's attention (two calls split by query kind) against its definition, score by score:
image–image pairs see the periodic width rotation, every pair with a text token the unrotated width
components; with and without masks (a key-padding mask, a mask with a query axis) and text tokens."""

import math

import pytest
import torch

from pano360.backbones.token_seam import AttentionSeam, intercept_attention, rotate_pairs


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """diffusers' dispatch layout [B, S, H, D] over torch's SDPA."""
    out = torch.nn.functional.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=attn_mask, scale=scale)
    return out.transpose(1, 2)


class _Processors:
    """Stands for a diffusers attention-processor module: it has a module-level dispatch function."""

    def __init__(self, dispatch):
        self.dispatch_attention_fn = dispatch


def _reference(q, k, v, text_len, width, angles, mask, rotate_text_pairs):
    """softmax(scores / √D + mask) v with the scores written out pair by pair."""
    start, stop = width
    rq, rk = q.clone(), k.clone()
    rq[:, text_len:, :, start:stop] = rotate_pairs(q[:, text_len:, :, start:stop], angles[None, :, None])
    rk[:, text_len:, :, start:stop] = rotate_pairs(k[:, text_len:, :, start:stop], angles[None, :, None])
    rotated = torch.einsum("bqhd,bkhd->bhqk", rq, rk)
    plain = torch.einsum("bqhd,bkhd->bhqk", q, k)
    scores = plain.clone()
    scores[:, :, text_len:, text_len:] = rotated[:, :, text_len:, text_len:]
    if rotate_text_pairs:  # periodic: every pair with the rotation
        scores = rotated
    scores = scores / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return torch.einsum("bhqk,bkhd->bqhd", scores.softmax(dim=-1), v)


@pytest.mark.parametrize("text_len", [0, 5])
@pytest.mark.parametrize("mask_kind", ["none", "key_padding", "query_axis"])
@pytest.mark.parametrize("scheme, flash", [("exact", False), ("exact", True), ("periodic", False)])
def test_seam_attention_equals_its_pairwise_definition(text_len, mask_kind, scheme, flash, monkeypatch):
    from pano360.backbones import token_seam

    if flash:  # the CUDA path: v zero-padded to the image queries' head size, the output sliced back
        monkeypatch.setattr(token_seam, "FLASH_DEVICES", ("cuda", "cpu"))
    generator = torch.Generator().manual_seed(0)
    batch, rows, columns, heads, dim, width = 2, 3, 8, 2, 32, (12, 24)
    image = rows * columns
    tokens = text_len + image
    q, k, v = (torch.randn(batch, tokens, heads, dim, generator=generator, dtype=torch.float64) for _ in range(3))
    angles = torch.rand(image, (width[1] - width[0]) // 2, generator=generator, dtype=torch.float64) * 6.28
    mask = None
    if mask_kind == "key_padding":
        mask = torch.ones(batch, 1, 1, tokens, dtype=torch.bool)
        if text_len:
            mask[1, ..., text_len - 2:text_len] = False  # two padded text tokens in the second sample
        else:
            mask[1, ..., :2] = False
    elif mask_kind == "query_axis":
        mask = torch.randn(batch, 1, tokens, tokens, generator=generator, dtype=torch.float64)
    plan = AttentionSeam(image, width, angles, text_invariant=scheme == "exact")
    module = _Processors(_sdpa)
    with intercept_attention([module], plan):
        ours = module.dispatch_attention_fn(q, k, v, mask)
    assert module.dispatch_attention_fn is _sdpa  # restored
    reference = _reference(q, k, v, text_len, width, angles, mask, rotate_text_pairs=scheme == "periodic")
    assert ours.shape == v.shape
    assert (ours - reference).abs().max().item() < 1e-10


def test_cross_attention_and_short_sequences_pass_through_unchanged():
    plan = AttentionSeam(6, (4, 8), torch.zeros(6, 2), text_invariant=True)
    calls = []

    def record(query, key, value, attn_mask=None, **kwargs):
        calls.append((query.shape, key.shape))
        return value[:, :query.shape[1]]

    module = _Processors(record)
    q, k = torch.randn(1, 4, 1, 8), torch.randn(1, 9, 1, 8)
    with intercept_attention([module], plan):
        module.dispatch_attention_fn(q, k, k)
    assert calls == [(q.shape, k.shape)]
