"""VAE encode/decode shared by every method and by training.

Latents here are *scaled* latents, the space the UNet works in: ``(vae_latent - shift) · scaling_factor``
(SD: scale 0.18215, SDXL 0.13025, no shift). Images are [B, 3, H, W] in [-1, 1]; one latent column is
``vae_scale_factor`` (8) pixels. Wraparound is not decided here: wrap the VAE with
:func:`pano360.backbones.wrap.wraparound` around these calls, or use ``wrap_padding`` to decode with
wrapped latent columns on each side and crop them (diffusers' ``circular_padding`` style).
"""

from __future__ import annotations

import contextlib

import torch


class NormalisedVAE(torch.nn.Module):
    """Base of VAE wrappers whose latent normalisation is not one scale and shift (Qwen-Image's per-channel
    mean/std, FLUX.2's batch-norm statistics): they take and return *normalised* latents [B, C, h, w] and
    report scaling 1 and shift 0, so the helpers below pass latents through unchanged. ``inner`` is the
    diffusers VAE, ``spatial_scale_factor`` its pixels per latent."""

    def __init__(self, vae, latent_channels: int, spatial_scale_factor: int):
        import types

        super().__init__()
        self.inner = vae
        self.spatial_scale_factor = int(spatial_scale_factor)
        self.config = types.MappingProxyType({"scaling_factor": 1.0, "shift_factor": 0.0,
                                              "latent_channels": int(latent_channels), "force_upcast": False})

    @property
    def dtype(self):
        return self.inner.dtype

    @property
    def device(self):
        return self.inner.device


def _scale_shift(vae) -> tuple[float, float]:
    config = vae.config
    return float(config.get("scaling_factor", 1.0) or 1.0), float(config.get("shift_factor", None) or 0.0)


def vae_scale_factor(vae) -> int:
    """Pixels per latent column: 2 ** (number of VAE resolution levels − 1), 8 for every SD/FLUX/SD3 VAE
    (a VAE wrapper such as Qwen-Image's ``FrameVAE`` says it as ``spatial_scale_factor``)."""
    factor = getattr(vae, "spatial_scale_factor", None)
    if factor is not None:
        return int(factor)
    return 2 ** (len(vae.config.block_out_channels) - 1)


@contextlib.contextmanager
def upcast_if_needed(vae):
    """Run the VAE in fp32 inside the block when it is fp16 and asks for it (``force_upcast``: the SDXL
    VAE overflows in fp16); restores the dtype afterwards."""
    upcast = vae.dtype == torch.float16 and vae.config.get("force_upcast", False)
    original = vae.dtype
    if upcast:
        vae.to(torch.float32)
    try:
        yield
    finally:
        if upcast:
            vae.to(original)


_TILING = "_pano360_tiled_decode"  # attribute on a VAE: tiled-decoding settings while tiled_decoding() is active


@contextlib.contextmanager
def tiled_decoding(vae, enabled: bool = True, tile: int | tuple[int, int] = 64, margin: int = 16, store=None):
    """Inside the block, :func:`decode_latents` on ``vae`` decodes in tiles (:func:`decode_latents_tiled`,
    exact, wrapped when the VAE is wrapped), whichever method calls it. VAEs without an SD-style
    ``decoder`` (Qwen-Image's video VAE) decode whole."""
    if not enabled or not hasattr(vae, "decoder"):
        yield
        return
    previous = getattr(vae, _TILING, None)
    setattr(vae, _TILING, {"tile": tile, "margin": margin, "store": store})
    try:
        yield
    finally:
        if previous is None:
            delattr(vae, _TILING)
        else:
            setattr(vae, _TILING, previous)


def decode_latents(vae, latents: torch.Tensor, wrap_padding: int = 0, batch_size: int = 1) -> torch.Tensor:
    """Scaled latents [B, C, h, w] → images [B, 3, h·f, w·f] in about [-1, 1] (f = vae_scale_factor).

    ``wrap_padding`` > 0 decodes with that many latent columns wrapped in from the other side on each
    edge and crops them again (``f · wrap_padding`` pixels a side). ``batch_size`` images are decoded per
    call (1 keeps the memory of one panorama). Gradients flow if enabled by the caller. Inside
    :func:`tiled_decoding` the decode runs in tiles (same result, bounded memory).
    """
    scale, shift = _scale_shift(vae)
    if wrap_padding:
        pad = min(int(wrap_padding), latents.shape[-1])
        latents = torch.cat([latents[..., -pad:], latents, latents[..., :pad]], dim=-1)
    tiling = getattr(vae, _TILING, None)
    if tiling is not None:
        from .wrap import is_wrapped

        images = decode_latents_tiled(vae, latents, wrap=is_wrapped(vae), **tiling)
        if wrap_padding:
            crop = pad * vae_scale_factor(vae)
            images = images[..., crop:images.shape[-1] - crop]
        return images
    with upcast_if_needed(vae):
        images = []
        for start in range(0, latents.shape[0], max(1, batch_size)):
            chunk = (latents[start:start + batch_size] / scale + shift).to(vae.dtype)
            images.append(vae.decode(chunk, return_dict=False)[0])
        images = torch.cat(images)
    if wrap_padding:
        crop = pad * vae_scale_factor(vae)
        images = images[..., crop:images.shape[-1] - crop]
    return images


def encode_images(vae, images: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None,
                  batch_size: int = 1) -> torch.Tensor:
    """Images [B, 3, H, W] in [-1, 1] → scaled latents [B, C, H/f, W/f].

    ``sample=False`` takes the posterior mean (deterministic: the right choice for caches and
    comparisons); ``sample=True`` draws from the posterior with ``generator`` (what SD training and
    MVDiffusion's outpainting do).
    """
    scale, shift = _scale_shift(vae)
    latents = []
    with upcast_if_needed(vae):
        for start in range(0, images.shape[0], max(1, batch_size)):
            chunk = images[start:start + batch_size].to(device=vae.device, dtype=vae.dtype)
            posterior = vae.encode(chunk, return_dict=False)[0]
            latent = posterior.sample(generator) if sample else posterior.mode()
            latents.append((latent - shift) * scale)
    return torch.cat(latents)


# --- tiled decoding (bounded memory, wrap-aware, exact) ------------------------------------------------
#
# The decoder's up path (three quarters of its FLOPs and nearly all of its memory: 128-512 channels at
# 1-8x the latent resolution) is local except for GroupNorm, whose statistics span the whole image.
# decode_latents_tiled runs conv_in and the mid block (attention at latent resolution: global, but
# small) on the whole latent, then the up path tile by tile, layer by layer: every tile is a core of
# ``tile`` latents plus ``margin`` latents of context on each side, taken modulo the width when the
# panorama wraps. Each GroupNorm first gathers its statistics from the *cores* of all tiles and then
# normalises every tile with the global ones, so nothing is approximated: with a margin at least the
# up path's receptive radius (about 13 latents for SD's VAE), every core pixel equals the untiled
# decode up to float rounding, and the cores are placed side by side (no blending, no seam between
# tiles, none at the panorama's own seam when ``wrap``). diffusers' ``enable_tiling`` instead decodes
# tiles independently (local GroupNorm statistics), blends them, and does not wrap.


def _tile_spans(length: int, core: int, margin: int, wrap: bool) -> list[tuple[int, int, int, int]]:
    """Per tile along one axis: (core start, core stop, context start, context stop) in latent units.

    Context start/stop may lie outside [0, length) when ``wrap`` (indices are then taken modulo
    ``length``); without wrap they are clipped to the axis, which is exact because the untiled decode
    zero-pads there too.
    """
    spans = []
    for start in range(0, length, core):
        stop = min(length, start + core)
        if wrap and length > core:
            spans.append((start, stop, start - margin, stop + margin))
        else:
            spans.append((start, stop, max(0, start - margin), min(length, stop + margin)))
    return spans


class _Tile:
    def __init__(self, rows, cols, full_width: int):
        self.rows, self.cols = rows, cols  # (core start, core stop, context start, context stop)
        self.full_width = full_width

    def crop(self, latent: torch.Tensor) -> torch.Tensor:
        r0, r1 = self.rows[2], self.rows[3]
        c0, c1 = self.cols[2], self.cols[3]
        if c0 >= 0 and c1 <= self.full_width:
            return latent[..., r0:r1, c0:c1]
        index = torch.arange(c0, c1, device=latent.device) % self.full_width
        return latent[..., r0:r1, :].index_select(-1, index)

    def core(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """The core region of a tile tensor at ``scale`` × the latent resolution."""
        top = (self.rows[0] - self.rows[2]) * scale
        left = (self.cols[0] - self.cols[2]) * scale
        return x[..., top:top + (self.rows[1] - self.rows[0]) * scale, left:left + (self.cols[1] - self.cols[0]) * scale]


def _group_stats(norm: torch.nn.GroupNorm, parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Global (mean, var) per [B, groups] from the core regions of every tile (Chan's parallel update)."""
    count = mean = m2 = None
    for part in parts:
        grouped = part.float().reshape(part.shape[0], norm.num_groups, -1)
        n = grouped.shape[-1]
        var, mu = torch.var_mean(grouped, dim=-1, unbiased=False)
        if count is None:
            count, mean, m2 = n, mu, var * n
            continue
        total = count + n
        delta = mu - mean
        mean = mean + delta * (n / total)
        m2 = m2 + var * n + delta * delta * (count * n / total)
        count = total
    return mean, m2 / count


def _apply_group_norm(norm: torch.nn.GroupNorm, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    b, c = x.shape[:2]
    grouped = x.float().reshape(b, norm.num_groups, -1)
    out = (grouped - mean[..., None]) * torch.rsqrt(var[..., None] + norm.eps)
    out = out.reshape(x.shape)
    if norm.affine:
        out = out * norm.weight.float().view(1, c, 1, 1) + norm.bias.float().view(1, c, 1, 1)
    return out.to(x.dtype)


class _TiledRun:
    """Layer-synchronous execution of the decoder's up path over tiles; states live on ``store``."""

    def __init__(self, tiles: list[_Tile], device: torch.device, store: torch.device | None):
        self.tiles, self.device, self.store = tiles, device, store
        self.scale = 1

    def _keep(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.store is None else x.to(self.store)

    def _load(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device)

    def map(self, fn, *states):
        return [self._keep(fn(*(self._load(s[k]) for s in states))) for k in range(len(self.tiles))]

    def norm(self, norm, states):
        if not isinstance(norm, torch.nn.GroupNorm):
            raise TypeError(f"tiled decoding needs GroupNorm layers in the decoder, found {type(norm).__name__}")
        mean, var = _group_stats(norm, [tile.core(self._load(s), self.scale) for tile, s in zip(self.tiles, states)])
        return lambda x: _apply_group_norm(norm, x, mean, var)

    def resnet(self, block, states):
        if block.upsample is not None or block.downsample is not None or block.time_emb_proj is not None:
            raise ValueError("tiled decoding supports the VAE decoder's plain resnet blocks only")
        norm1 = self.norm(block.norm1, states)
        hidden = self.map(lambda x: block.conv1(block.nonlinearity(norm1(x))), states)
        norm2 = self.norm(block.norm2, hidden)
        hidden = self.map(lambda h: block.conv2(block.dropout(block.nonlinearity(norm2(h)))), hidden)

        def merge(x, h):
            shortcut = block.conv_shortcut(x) if block.conv_shortcut is not None else x
            return (shortcut + h) / block.output_scale_factor

        return self.map(merge, states, hidden)


def decode_latents_tiled(vae, latents: torch.Tensor, tile: int | tuple[int, int] = 64, margin: int = 16,
                         wrap: bool = False, store: torch.device | str | None = None) -> torch.Tensor:
    """Scaled latents [B, C, h, w] → images [B, 3, 8h, 8w] like :func:`decode_latents`, in tiles.

    ``tile`` latents (one number or (rows, columns)) per tile core, ``margin`` latents of context on each
    side (≥ the up path's receptive radius, 13 for SD's VAE, for an exact result). ``wrap`` decodes the
    panorama as horizontally periodic: tiles take their context across the seam, and conv_in and the
    mid block run wrapped, matching ``with wraparound(vae): decode_latents(vae, latents)``.
    ``store="cpu"`` keeps the tiles' intermediate maps in CPU memory between layers, so the device holds
    only one tile's working set at a time (for small GPUs). Images are decoded one at a time.
    """
    from .wrap import wraparound

    rows_core, cols_core = (tile, tile) if isinstance(tile, int) else tile
    decoder = vae.decoder
    if not hasattr(decoder, "up_blocks") or getattr(decoder, "conv_norm_out", None) is None:
        raise ValueError("tiled decoding needs an AutoencoderKL-style decoder (conv_in, mid_block, up_blocks)")
    scale, shift = _scale_shift(vae)
    h, w = latents.shape[-2:]
    tiles = [_Tile(r, c, w) for r in _tile_spans(h, rows_core, margin, False)
             for c in _tile_spans(w, cols_core, margin, wrap)]
    store = torch.device(store) if store is not None else None
    images = []
    with upcast_if_needed(vae):
        for index in range(latents.shape[0]):
            z = (latents[index:index + 1] / scale + shift).to(device=vae.device, dtype=vae.dtype)
            with wraparound(getattr(vae, "post_quant_conv", None), decoder.conv_in, decoder.mid_block, enabled=wrap):
                if getattr(vae, "post_quant_conv", None) is not None:
                    z = vae.post_quant_conv(z)
                sample = decoder.conv_in(z)
                sample = decoder.mid_block(sample, None)
            upscale_dtype = next(iter(decoder.up_blocks.parameters())).dtype
            sample = sample.to(upscale_dtype)
            run = _TiledRun(tiles, sample.device, store)
            states = [run._keep(t.crop(sample)) for t in tiles]
            del sample
            for block in decoder.up_blocks:
                for resnet in block.resnets:
                    states = run.resnet(resnet, states)
                for upsampler in block.upsamplers or []:
                    states = run.map(upsampler, states)
                    run.scale *= 2
            final_norm = run.norm(decoder.conv_norm_out, states)
            states = run.map(lambda x, norm=final_norm: decoder.conv_out(decoder.conv_act(norm(x))), states)
            f = run.scale
            out = torch.empty(1, states[0].shape[1], h * f, w * f, device=vae.device, dtype=states[0].dtype)
            for t, s in zip(tiles, states):
                out[..., t.rows[0] * f:t.rows[1] * f, t.cols[0] * f:t.cols[1] * f] = t.core(run._load(s), f)
            images.append(out)
    return torch.cat(images)
