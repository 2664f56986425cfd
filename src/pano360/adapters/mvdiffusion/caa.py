"""The correspondence-aware attention (CAA) block: each pixel attends to 18 taps in its two neighbours.

Module tree and parameter names follow the reference's ``CPAttn`` (digest §3), so the released
checkpoints' ``cp_blocks_*`` tensors load by name:

``transformer.attn1.{to_q,to_k,to_v}`` (d→inner, no bias), ``transformer.attn1.to_out`` (inner→d, a plain
Linear, zero-initialised), ``transformer.ff.net.0.proj`` (GEGLU d→8d: value rows then gate rows),
``transformer.ff.net.2`` (4d→d, zero-initialised), ``transformer.norm1`` (shared by query and keys),
``transformer.norm2`` and the buffer ``pe.freq_bands`` [1, 1, d/4].

Per query pixel x (one token, d channels) with keys κ_n = (f_n + γ(δ_n))·valid_n, n = 0…17:

    x ← x + Attn(LN1(x + γ(0)), LN1(κ))        (softmax over all 18 keys: masked keys are LN1(0) = β)
    x ← x + FF(LN2(x))

γ(δ) = [sin δx·f, sin δy·f, cos δx·f, cos δy·f] with f = the N = d/4 bands (2^0…2^(N−1) for N ≤ 80,
else (5000^(2.5/N))^(0…N−1)). Heads have 32 channels (d/32 heads; at least one for toy widths).
A fresh block is an exact identity: to_out and the last FF layer start at zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .correspondence import SLOTS, LevelGeometry

HEAD_DIM = 32


class PositionalEncoding(nn.Module):
    """γ(δ) for 2-D displacements with ``bands`` frequencies per axis; output width 4·bands."""

    def __init__(self, bands: int):
        super().__init__()
        base = 2 if bands <= 80 else 5000 ** (1 / (bands / 2.5))
        self.register_buffer("freq_bands", base ** torch.linspace(0, bands - 1, bands)[None, None])

    def _apply(self, fn, recurse=True):
        """Device moves apply, dtype casts do not: the bands reach 2^79 and must stay float32."""
        bands = self.freq_bands
        super()._apply(fn, recurse)
        self.freq_bands = bands.to(self.freq_bands.device, torch.float32)
        return self

    def forward(self, delta: Tensor) -> Tensor:
        """[..., 2] → [..., 4N] laid out [sin δx (N), sin δy (N), cos δx (N), cos δy (N)]."""
        shape = delta.shape[:-1]
        angles = delta.reshape(-1, 2, 1) * self.freq_bands
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).reshape(*shape, -1)


class CorrespondenceAttention(nn.Module):
    """One query token attending to its keys (the reference's ``CrossAttention``)."""

    def __init__(self, dim: int, heads: int, head_dim: int = HEAD_DIM):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim)
        nn.init.zeros_(self.to_out.weight)
        nn.init.zeros_(self.to_out.bias)

    def forward(self, query: Tensor, keys: Tensor, norm: nn.LayerNorm) -> Tensor:
        """query [P, 1, d] (already normalised), raw keys [P, S, d] normalised here by ``norm`` → [P, 1, d].

        With one query per token the key and value projections are applied on the query side, which is
        the same sum reassociated: q·(W_k k̂_n) = (W_kᵀ q)·k̂_n per head, and Σ_n a_n W_v k̂_n =
        W_v (Σ_n a_n k̂_n). The LayerNorm of the keys, k̂ = γ⊙(k − μ)/σ + β, is folded in the same way,
        so normalised keys are never written: scores (q̃⊙γ)·(k − μ)/σ + q̃·β, and Σ_n a_n k̂_n =
        γ⊙Σ_n (a_n/σ_n)(k_n − μ_n) + β. Per token that costs d·inner + 2·S·heads·d multiply-adds for each
        projection instead of S·d·inner (about 11× fewer for the S = 18 keys and 32-channel heads).
        """
        tokens, _, dim = keys.shape
        q = self.to_q(query[:, 0]).view(tokens, self.heads, -1)  # [P, heads, e]
        head_dim = q.shape[-1]
        w_k = self.to_k.weight.view(self.heads, head_dim, dim)
        w_v = self.to_v.weight.view(self.heads, head_dim, dim)
        q_keys = torch.bmm(q.transpose(0, 1), w_k).transpose(0, 1)  # [P, heads, d]: W_kᵀ q per head
        # per-key statistics in float32 (E[k²] − μ², two light reductions: ``var_mean`` is slow on CPUs)
        mean = keys.mean(dim=-1, dtype=torch.float32)  # [P, S]
        square = torch.linalg.vector_norm(keys, dim=-1, dtype=torch.float32).square() / dim
        inv_std = torch.rsqrt((square - mean * mean).clamp_min(0) + norm.eps).to(keys.dtype)
        mean = mean.to(keys.dtype)
        gamma, beta = norm.weight, norm.bias
        q_gamma = q_keys * gamma
        scores = torch.bmm(q_gamma, keys.transpose(1, 2))  # [P, heads, S]: (q̃⊙γ)·k
        scores = (scores - q_gamma.sum(-1, keepdim=True) * mean[:, None]) * inv_std[:, None] \
            + (q_keys @ beta)[..., None]
        weights = (scores * head_dim ** -0.5).softmax(dim=-1) * inv_std[:, None]  # a_n / σ_n
        mixed = torch.bmm(weights, keys) - (weights * mean[:, None]).sum(-1, keepdim=True)
        mixed = mixed * gamma + beta  # [P, heads, d]: Σ_n a_n k̂_n
        out = torch.bmm(mixed.transpose(0, 1), w_v.transpose(1, 2))  # [heads, P, e]
        return self.to_out(out.transpose(0, 1).reshape(tokens, 1, -1))


class GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        last = nn.Linear(dim * mult, dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Identity(), last)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CorrespondenceTransformer(nn.Module):
    """The reference's ``BasicTransformerBlock`` with a LayerNorm shared by query and keys."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn1 = CorrespondenceAttention(dim, heads)
        self.ff = FeedForward(dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: Tensor, keys: Tensor, query_pe: Tensor) -> Tensor:
        x = self.attn1(self.norm1(x + query_pe), keys, self.norm1) + x
        return self.ff(self.norm2(x)) + x


class CAABlock(nn.Module):
    """Correspondence-aware attention over a ring of views, for features of width ``dim``."""

    def __init__(self, dim: int):
        super().__init__()
        if dim % 4:
            raise ValueError(f"CAA width must be a multiple of 4 (positional encoding), got {dim}")
        self.dim = dim
        self.transformer = CorrespondenceTransformer(dim, max(1, dim // HEAD_DIM))
        self.pe = PositionalEncoding(dim // 4)
        self.gradient_checkpointing = False

    def query_encoding(self) -> Tensor:
        """γ(0) [d]: sin 0 = 0 for the 2N sine channels, cos 0 = 1 for the 2N cosine channels."""
        half = self.dim // 2
        return torch.cat([torch.zeros(half), torch.ones(half)]).to(self.pe.freq_bands.device)

    def gather_keys(self, x: Tensor, geometry: LevelGeometry) -> Tensor:
        """The 18 bilinear taps per query pixel, already masked: x [G·V, d, h, w] → [G, V·h·w·18, d].

        One fused weighted gather (``embedding_bag``) over the channels-last features: the same sums
        as the reference's ``grid_sample`` calls times the validity mask, written straight into the
        token-major layout the attention reads.
        """
        n, dim = x.shape[:2]
        groups = n // geometry.views
        work = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        table = x.permute(0, 2, 3, 1).reshape(-1, dim).to(work)  # [G·V·h·w, d]
        keys = F.embedding_bag(geometry.bag_index(groups).to(x.device), table, mode="sum",
                               per_sample_weights=geometry.bag_weights(groups, work).to(x.device))
        return keys.view(groups, -1, dim).to(x.dtype)

    def forward(self, x: Tensor, geometry: LevelGeometry) -> Tensor:
        """x [G·V, d, h, w] (each group's V views contiguous, ring order) → the updated features."""
        n, dim, height, width = x.shape
        if (height, width) != (geometry.height, geometry.width) or n % geometry.views:
            raise ValueError(f"CAA features {tuple(x.shape)} do not fit the {geometry.views}-view "
                             f"{geometry.height}×{geometry.width} correspondence plan")
        encoding = geometry.masked_encoding(self.pe, x.dtype).to(x.device)
        keys = (self.gather_keys(x, geometry) + encoding.reshape(1, -1, dim)).reshape(-1, SLOTS, dim)
        query = x.permute(0, 2, 3, 1).reshape(-1, 1, dim)
        query_pe = self.query_encoding().to(x.dtype)
        if self.gradient_checkpointing and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            out = checkpoint(self.transformer, query, keys, query_pe, use_reentrant=False)
        else:
            out = self.transformer(query, keys, query_pe)
        return out.view(n, height, width, dim).permute(0, 3, 1, 2).contiguous()
