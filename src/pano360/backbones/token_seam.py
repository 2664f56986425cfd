"""The seam of a diffusion transformer, in token space.

A DiT has no convolutions to pad: its denoiser sees where a token is only through position
embeddings (rotary for FLUX.1 and Qwen-Image, additive sin-cos for SD3). Schemes, chosen per call by
the circular method's ``seam`` option and set on the network with :func:`token_seam`:

``exact`` (default; FLUX.1, FLUX.2 [klein], Qwen-Image)
    The width axis' rotary frequencies ω_j are snapped to integer harmonics of the panorama's width P
    in tokens, ω'_j = 2π·round(ω_j·P / 2π) / P, so image–image attention depends on column distance
    modulo P: the columns sit on a circle. Joint attention also lets text tokens see image tokens; in
    the original model that coupling depends on the image token's absolute column, which would make
    the column under the text's position special. Here text–image pairs use the *unrotated* width
    components (as if every column sat at the text's own width position), which makes the whole
    transformer exactly equivariant to rolls by whole tokens. It is computed in two attention calls that
    split the queries (:meth:`AttentionSeam.exact_operands`): text queries as released but with the image
    keys' width unrotated, image queries with one extra copy of the width dimensions (rotated for image
    keys, unrotated for text keys), so flash attention still applies (FLUX: 128 + 56 = 184 channels for
    image queries; on CUDA v is zero-padded to that size for the flash kernels). Cost: the image
    queries' q·k products grow by that ratio (``docs/benchmarks.md``).
``periodic``
    Only the frequency snapping (stable-diffusion.cpp's ``--circular``): image–image attention is
    periodic, but text–image attention keeps its dependence on the absolute column, so a roll changes
    the result slightly. For comparison and for LoRAs trained that way.
``pad`` (DiT360)
    One extra token column on each side copied from the opposite edge, with the copied columns'
    position ids, cropped after the call. Approximate: attention still sees an edge.
``blend`` (HunyuanWorld-1.0, LayerPano3D)
    The latent is extended by ``BLEND_EXTEND`` latent columns copied from its left edge onto its right,
    predicted with the model's own positions, and the prediction of those columns is blended linearly
    into the left edge's before the extension is dropped. Approximate.
``none``
    The model as released.

Rounding: ``nearest`` sends the lowest frequencies (ω·P < π: less than half a turn over the whole
panorama) to 0, i.e. no width position in those dimensions: what they carried was nearly constant
over the panorama anyway. ``ceil`` keeps at least one turn per panorama for every frequency, which
moves the low frequencies much further from what the model was trained with (measured in
``docs/seams.md``).

SD3's embedding is additive and absolute: snapping its width frequencies makes the embedding periodic
(column P−1 is followed by column 0 exactly as any column by the next), but no absolute embedding is
invariant under a shift, so an SD3 roll is exact only with the positions rolled along (``offset``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

SEAM_SCHEMES = ("exact", "periodic", "pad", "blend", "none")
BLEND_EXTEND = 6  # latent columns, HunyuanWorld-1.0's blend_extend
ROUNDINGS = ("nearest", "ceil")
_ATTRIBUTE = "_pano360_token_seam"
# devices whose attention runs flash kernels, which need one head size for q, k and v (the FLOP benchmarks
# add "meta" to count as on CUDA)
FLASH_DEVICES = ("cuda",)


@dataclass(frozen=True)
class TokenSeam:
    """How a transformer call closes the seam. ``offset`` shifts the width positions by whole tokens
    (a test hook: with it, an SD3 roll is exact)."""

    scheme: str = "exact"
    rounding: str = "nearest"
    offset: int = 0


@contextlib.contextmanager
def token_seam(network, seam: TokenSeam | None):
    """Inside the block, the family's call on ``network`` uses ``seam`` (None: the model as released)."""
    if network is None or seam is None or seam.scheme == "none":
        yield
        return
    previous = getattr(network, _ATTRIBUTE, None)
    setattr(network, _ATTRIBUTE, seam)
    try:
        yield
    finally:
        if previous is None:
            delattr(network, _ATTRIBUTE)
        else:
            setattr(network, _ATTRIBUTE, previous)


def active_seam(network) -> TokenSeam | None:
    """The seam set on ``network`` (or on the module it wraps, e.g. an adapter wrapper), if any."""
    seam = getattr(network, _ATTRIBUTE, None)
    inner = getattr(network, "network", None) or getattr(network, "module", None)
    if seam is None and inner is not None and inner is not network:
        seam = getattr(inner, _ATTRIBUTE, None)
    return seam


def rope_frequencies(dim: int, theta: float) -> torch.Tensor:
    """ω_j = θ^(−2j/dim), j < dim/2 (float64): the rotary frequencies of one axis, per position unit."""
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))


def snap_frequencies(freqs: torch.Tensor, period: int, rounding: str = "nearest") -> torch.Tensor:
    """Frequencies snapped to integer harmonics of ``period`` (in position units): 2π·k/period."""
    turns = freqs * period / (2 * math.pi)
    harmonics = torch.round(turns) if rounding == "nearest" else torch.ceil(turns)
    return 2 * math.pi * harmonics / period


def periodic_angles(columns: int, rows: int, freqs: torch.Tensor, rounding: str, offset: int = 0) -> torch.Tensor:
    """Rotation angles [rows·columns, len(freqs)] of the width axis for a row-major token grid, with
    frequencies snapped to harmonics of ``columns``."""
    snapped = snap_frequencies(freqs, columns, rounding)
    positions = (torch.arange(columns, dtype=torch.float64) + offset)
    angles = positions[:, None] * snapped[None, :]
    return angles.repeat(rows, 1)


def rotate_pairs(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x[2j], x[2j+1]) of the last dim by ``angles`` (broadcast to x[..., ::2]).

    The convention of FLUX's and Qwen-Image's rotary embeddings: (a, b) → (a·cos − b·sin, a·sin + b·cos).
    """
    pairs = x.float().unflatten(-1, (-1, 2))
    a, b = pairs.unbind(-1)
    cos, sin = angles.cos().to(pairs.dtype), angles.sin().to(pairs.dtype)
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2).to(x.dtype)


@dataclass
class AttentionSeam:
    """What the attention interception needs for one call: the image tokens (the last ``image_tokens``
    of the joint sequence), the width axis' dims in a head and their angles [image_tokens, d_w/2]."""

    image_tokens: int
    width_dims: tuple[int, int]
    angles: torch.Tensor
    text_invariant: bool  # "exact": text–image terms unrotated; "periodic": plain rotation

    def _rotated(self, x: torch.Tensor) -> torch.Tensor:
        """q or k [B, S, H, D] with the image tokens' width dims rotated by their periodic angles."""
        start, stop = self.width_dims
        text_len = x.shape[1] - self.image_tokens
        angles = self.angles.to(x.device)[None, :, None, :]
        main = x.clone()
        main[:, text_len:, :, start:stop] = rotate_pairs(x[:, text_len:, :, start:stop], angles)
        return main

    def periodic_operands(self, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``periodic``: q, k [B, S, H, D] with every image token's width dims rotated periodically."""
        return self._rotated(query), self._rotated(key)

    def exact_operands(self, query: torch.Tensor, key: torch.Tensor) -> tuple[tuple, tuple]:
        """``exact``: the operands of two attention calls that split the queries, from q, k [B, S, H, D]
        (text tokens first; the image tokens' width dims not yet rotated).

        * text queries [B, T, H, D] against all keys, every image key's width dims unrotated: text–image
          terms do not depend on the image token's column;
        * image queries [B, S−T, H, D + d_w] = [width rotated | width unrotated] against keys
          [B, S, H, D + d_w]: image keys [width rotated | 0], text keys [width 0 | width]. So image–image
          terms see the periodic rotation and image–text terms the unrotated width components.

        Returns ((text_q, text_k), (image_q, image_k)); the text pair is None without text tokens.
        The same scores as one call over D + 2·d_w channels, with fewer products: FLUX's image queries run
        over 128 + 56 = 184 channels and its text queries over 128, instead of 240 for every pair.
        """
        start, stop = self.width_dims
        text_len = query.shape[1] - self.image_tokens
        image_q = query[:, text_len:]
        image_q = torch.cat([self._rotated(image_q), image_q[..., start:stop]], dim=-1)
        key_main = self._rotated(key)
        key_main[:, :text_len, :, start:stop] = 0
        key_width = torch.zeros_like(key[..., start:stop])
        key_width[:, :text_len] = key[:, :text_len, :, start:stop]
        image_k = torch.cat([key_main, key_width], dim=-1)
        text = (query[:, :text_len], key) if text_len else None
        return text, (image_q, image_k)


def _query_rows(mask, start: int, stop: int | None, queries: int):
    """The rows of an attention mask for queries ``start:stop`` (masks without a query axis: as they are)."""
    if mask is None or mask.ndim < 3 or mask.shape[-2] != queries:
        return mask
    return mask[..., start:stop, :]


@contextlib.contextmanager
def intercept_attention(modules, plan: AttentionSeam):
    """Inside the block, ``dispatch_attention_fn`` of the given diffusers modules sees the seam's q/k.

    The processors of FLUX and Qwen-Image call the module-level ``dispatch_attention_fn`` with rotated
    q, k; the wrapper rotates the image tokens' width dims periodically (``exact``: in two calls split by query),
    keeps the softmax scale of the true head dim, and returns the true head dim's output.
    """
    originals = {}

    def make(original):
        def dispatch(query, key, value, attn_mask=None, *args, **kwargs):
            if query.shape[1] != key.shape[1] or query.shape[1] < plan.image_tokens:
                return original(query, key, value, attn_mask, *args, **kwargs)
            if kwargs.get("scale") is None:
                kwargs["scale"] = 1.0 / math.sqrt(query.shape[-1])
            if not plan.text_invariant:
                q, k = plan.periodic_operands(query, key)
                return original(q, k, value, attn_mask, *args, **kwargs)
            text, (image_q, image_k) = plan.exact_operands(query, key)
            text_len, queries = query.shape[1] - plan.image_tokens, query.shape[1]
            outputs = []
            if text is not None:
                outputs.append(original(*text, value, _query_rows(attn_mask, 0, text_len, queries), *args, **kwargs))
            # CUDA's flash kernels need one head size for q, k and v: pad v with zeros there (output sliced);
            # elsewhere (math / memory-efficient kernels) v keeps its size and costs nothing extra
            extra = image_q.shape[-1] - value.shape[-1] if query.device.type in FLASH_DEVICES else 0
            v = torch.nn.functional.pad(value, (0, extra)) if extra else value
            image = original(image_q, image_k, v, _query_rows(attn_mask, text_len, None, queries), *args, **kwargs)
            outputs.append(image[..., :value.shape[-1]] if extra else image)
            return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]
        return dispatch

    try:
        for module in modules:
            originals[module] = module.dispatch_attention_fn
            module.dispatch_attention_fn = make(module.dispatch_attention_fn)
        yield
    finally:
        for module, original in originals.items():
            module.dispatch_attention_fn = original


def rope_attention_seam(seam: TokenSeam | None, module, axes_dims, theta: float, rows: int, columns: int,
                        width_axis: int = 2, position_offset: int = 0):
    """The attention interception of ``exact``/``periodic`` for a transformer whose processors live in
    ``module`` and whose RoPE has ``axes_dims`` (the width axis ``width_axis``), for an image of ``rows`` ×
    ``columns`` tokens whose column x sits at width position x + ``position_offset``; a null context for
    the other schemes."""
    if seam is None or seam.scheme not in ("exact", "periodic"):
        return contextlib.nullcontext()
    axes = list(axes_dims)
    start = sum(axes[:width_axis])
    freqs = rope_frequencies(axes[width_axis], float(theta))
    plan = AttentionSeam(rows * columns, (start, start + axes[width_axis]),
                         periodic_angles(columns, rows, freqs, seam.rounding, seam.offset + position_offset).float(),
                         text_invariant=seam.scheme == "exact")
    return intercept_attention([module], plan)


def column_ids(scheme: str, columns: int) -> torch.Tensor:
    """Width ids of the image tokens of a call with ``columns`` token columns (padded ones included):
    zeros for ``exact``/``periodic`` (the width rotation is applied in attention, periodically), the source
    columns for ``pad``, 0..columns−1 otherwise."""
    if scheme in ("exact", "periodic"):
        return torch.zeros(columns)
    if scheme == "pad":
        return padded_columns(columns - 2, 1)
    return torch.arange(columns)


def padded_columns(columns: int, pad: int) -> torch.Tensor:
    """Source columns of a width padded by ``pad`` token columns a side, copied from the opposite edge:
    [W−pad, …, W−1, 0, …, W−1, 0, …, pad−1] (DiT360's padding, ids copied with the tokens)."""
    return torch.cat([torch.arange(columns - pad, columns), torch.arange(columns), torch.arange(pad)])


def pad_latent_columns(latents: torch.Tensor, pad: int) -> torch.Tensor:
    """[..., w] → [..., pad + w + pad] latents, wrapped from the opposite edge (``pad`` latent columns)."""
    return torch.cat([latents[..., -pad:], latents, latents[..., :pad]], dim=-1)


def extend_and_blend(call, latents: torch.Tensor, extend: int = BLEND_EXTEND) -> torch.Tensor:
    """HunyuanWorld's extend-and-blend around one model call: ``call`` [N, C, h, w + e] → [N, C, h, w + e].

    ``extend`` latent columns (rounded up to an even number, the 2-latent token) are copied from the left
    edge onto the right; the output's copy of those columns is blended into the left edge with a linear
    ramp (weight 1 for the copy at the outer column, 0 at the inner one).
    """
    width = latents.shape[-1]
    extend = min(width, extend + extend % 2)
    out = call(torch.cat([latents, latents[..., :extend]], dim=-1))
    ramp = torch.linspace(1.0, 0.0, extend, device=out.device, dtype=out.dtype)
    blended = out[..., :width].clone()
    blended[..., :extend] = ramp * out[..., width:] + (1 - ramp) * out[..., :extend]
    return blended
