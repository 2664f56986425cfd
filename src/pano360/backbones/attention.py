"""Attention and feed-forward in pieces: the same results with bounded memory (and, on CPUs, in cache).

Every attention pano360 runs goes through PyTorch's ``scaled_dot_product_attention`` (SDPA): diffusers'
default processor for ``UNet2DConditionModel``/``AutoencoderKL`` on torch ≥ 2 is SDPA, and
:class:`ChunkedAttnProcessor` here is SDPA too. What SDPA allocates depends on the backend: the flash
and memory-efficient kernels (CUDA fp16/bf16, CPU) never hold the [tokens × tokens] score matrix,
but the math fallback (MPS, masks on some GPUs, old cards) does, and at a 1024×2048 panorama's
first UNet level (128×256 latents = 32768 tokens) that is 4 GiB per head and image in fp32.

* :class:`ChunkedAttnProcessor` splits the *queries* into chunks of ``query_chunk`` rows and runs SDPA
  on each against all keys. Every output row is a softmax over all keys either way, so the result
  equals the unchunked one up to float rounding (no approximation), with at most
  ``batch · heads · query_chunk · keys`` scores alive at once.
* :func:`feed_forward_chunking` runs the transformer blocks' GEGLU feed-forward on ``rows`` tokens at a
  time (it is per token, so the result is the same). The GEGLU's 8×-wide intermediate of a batched
  64-latent window call (16 windows × 4096 tokens × 8·64 channels = 512 MiB in fp32) then stays small.

Both are reversible context managers over any modules (``None`` entries skipped), like
:func:`pano360.backbones.wrap.wraparound`.
"""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn.functional as F
from torch import nn

_FF_PATCH = "_pano360_ff_chunk"
DEFAULT_SCORE_BUDGET = 2 ** 28  # attention scores alive at once in "auto" mode (1 GiB in fp32)


def _attention_modules(modules):
    from diffusers.models.attention_processor import Attention

    seen = set()
    for root in modules:
        if root is None:
            continue
        for module in root.modules():
            if isinstance(module, Attention) and id(module) not in seen:
                seen.add(id(module))
                yield module


def query_chunk_for(batch: int, heads: int, queries: int, keys: int, budget: int = DEFAULT_SCORE_BUDGET) -> int:
    """Largest query chunk whose ``batch · heads · chunk · keys`` scores fit in ``budget`` elements (≥ 1)."""
    return max(1, min(queries, budget // max(1, batch * heads * keys)))


class ChunkedAttnProcessor:
    """Scaled-dot-product attention over query chunks (exact).

    Args:
        query_chunk: query rows per SDPA call, or ``"auto"``: as many as keep ``score_budget`` scores
            (batch · heads · rows · keys) alive at once; no chunking when the whole matrix fits.
        score_budget: elements of the score matrix allowed at once in ``"auto"`` mode.

    Implements diffusers' ``Attention`` semantics (self- and cross-attention, 3-D token or 4-D feature
    map inputs, group/spatial norms, q/k norms, masks, residual connection, output rescale), so it can
    replace the default processor of any UNet, VAE or ControlNet ``Attention`` layer.
    """

    def __init__(self, query_chunk: int | str = "auto", score_budget: int = DEFAULT_SCORE_BUDGET):
        if query_chunk != "auto" and (not isinstance(query_chunk, int) or query_chunk < 1):
            raise ValueError(f"query_chunk must be 'auto' or a whole number >= 1, got {query_chunk!r}")
        self.query_chunk = query_chunk
        self.score_budget = int(score_budget)

    def _chunk(self, batch: int, heads: int, queries: int, keys: int) -> int:
        if self.query_chunk == "auto":
            return query_chunk_for(batch, heads, queries, keys, self.score_budget)
        return min(int(self.query_chunk), queries)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        spatial = hidden_states.ndim == 4
        if spatial:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        batch, keys = context.shape[:2]
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, keys, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key, value = attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads

        def heads(x: torch.Tensor) -> torch.Tensor:  # [B, T, H·d] -> [B, H, T, d]
            return x.view(batch, -1, attn.heads, head_dim).transpose(1, 2)

        query, key, value = heads(query), heads(key), heads(value)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        queries = query.shape[2]
        chunk = self._chunk(batch, attn.heads, queries, key.shape[2])
        if chunk >= queries:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=0.0)
        else:
            pieces = []
            for start in range(0, queries, chunk):
                mask = attention_mask
                if mask is not None and mask.shape[2] != 1:
                    mask = mask[:, :, start:start + chunk]
                pieces.append(F.scaled_dot_product_attention(query[:, :, start:start + chunk], key, value,
                                                             attn_mask=mask, dropout_p=0.0))
            out = torch.cat(pieces, dim=2)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial:
            out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextlib.contextmanager
def chunked_attention(*modules: nn.Module | None, query_chunk: int | str = "auto",
                      score_budget: int = DEFAULT_SCORE_BUDGET, enabled: bool = True):
    """``with chunked_attention(unet, vae, query_chunk=4096):`` every diffusers ``Attention`` below the
    modules uses :class:`ChunkedAttnProcessor`; the previous processors come back afterwards."""
    if not enabled:
        yield
        return
    processor = ChunkedAttnProcessor(query_chunk, score_budget)
    layers = list(_attention_modules(modules))
    previous = [layer.processor for layer in layers]
    for layer in layers:
        layer.processor = processor
    try:
        yield processor
    finally:
        for layer, old in zip(layers, previous):
            layer.processor = old


def _chunked_ff_forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    rows = getattr(self, _FF_PATCH)
    shape = hidden_states.shape
    flat = hidden_states.reshape(-1, shape[-1])
    if flat.shape[0] <= rows:
        return type(self).forward(self, hidden_states, *args, **kwargs)
    outputs = [type(self).forward(self, piece, *args, **kwargs) for piece in flat.split(rows)]
    return torch.cat(outputs).view(*shape[:-1], outputs[0].shape[-1])


def enable_feed_forward_chunking(*modules: nn.Module | None, rows: int = 4096) -> int:
    """Make every diffusers ``FeedForward`` below ``modules`` run ``rows`` tokens (all images together)
    at a time. Idempotent (a second call changes ``rows``); returns the number of layers patched."""
    from diffusers.models.attention import FeedForward

    if not isinstance(rows, int) or rows < 1:
        raise ValueError(f"rows must be a whole number >= 1, got {rows!r}")
    count = 0
    for root in modules:
        if root is None:
            continue
        for module in root.modules():
            if isinstance(module, FeedForward):
                setattr(module, _FF_PATCH, rows)
                module.forward = types.MethodType(_chunked_ff_forward, module)
                count += 1
    return count


def disable_feed_forward_chunking(*modules: nn.Module | None) -> int:
    """Undo :func:`enable_feed_forward_chunking`; returns the number of layers restored."""
    count = 0
    for root in modules:
        if root is None:
            continue
        for module in root.modules():
            if hasattr(module, _FF_PATCH):
                del module.forward
                delattr(module, _FF_PATCH)
                count += 1
    return count


@contextlib.contextmanager
def feed_forward_chunking(*modules: nn.Module | None, rows: int = 4096, enabled: bool = True):
    """``with feed_forward_chunking(unet, rows=4096):`` feed-forward layers run in token chunks inside the
    block; layers chunked before the block keep their setting afterwards."""
    if not enabled:
        yield
        return
    before = {id(m): getattr(m, _FF_PATCH) for root in modules if root is not None
              for m in root.modules() if hasattr(m, _FF_PATCH)}
    enable_feed_forward_chunking(*modules, rows=rows)
    try:
        yield
    finally:
        disable_feed_forward_chunking(*modules)
        for root in modules:
            if root is None:
                continue
            for module in root.modules():
                if id(module) in before:
                    enable_feed_forward_chunking(module, rows=before[id(module)])


def score_bytes(batch: int, heads: int, queries: int, keys: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one full attention score matrix (what SDPA's math fallback allocates)."""
    return batch * heads * queries * keys * torch.empty((), dtype=dtype).element_size()


__all__ = [
    "DEFAULT_SCORE_BUDGET",
    "ChunkedAttnProcessor",
    "chunked_attention",
    "disable_feed_forward_chunking",
    "enable_feed_forward_chunking",
    "feed_forward_chunking",
    "query_chunk_for",
    "score_bytes",
]
