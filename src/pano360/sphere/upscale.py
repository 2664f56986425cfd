"""Seamless tiled upscaling of an equirect panorama: bicubic upscale, then img2img refinement with the
panorama's own model family in tiles that wrap across the 0°/360° seam.

Algorithm (sizes in latent units = pixels / 8 unless a name ends in ``_px``):

1. **Target size**: ``scale`` × the input (2 or 4), or ``target_width`` pixels wide with the aspect
   kept (a 2:1 sphere stays 2:1, a cylindrical strip stays a strip).
2. **Tiled encode**: for each tile of a wrapping :class:`~pano360.sphere.tiles.TileGrid` on the
   target latent, the bicubic upscale of the input is computed for that tile only (sampling the
   input with wrapped columns, so the seam is interpolated like any column) and encoded with the
   shared :func:`~pano360.backbones.vae.encode_images`; tiles are blended with the grid's
   partition-of-unity weights.
3. **Refinement** (SDEdit / img2img): the latent is noised to ``strength`` (the first
   ``(1 − strength)·steps`` steps are skipped) and denoised; at every step each tile is predicted by
   :class:`~pano360.backbones.guided.GuidedModel` at the tile size, ``tile_batch_size`` tiles per
   call, and the predictions are blended with the same weights (MultiDiffusion over tiles). The
   scheduler steps once on the whole latent.
4. **Tiled decode**: latent tiles are decoded with :func:`~pano360.backbones.vae.decode_latents`
   and blended at pixel resolution into a buffer one row of tiles high; rows that no later tile
   touches are converted to 8-bit and written to the output. A tile as wide as the image wraps its
   own convolutions instead (:func:`~pano360.backbones.wrap.wraparound`).

Memory: the models run on one batch of tiles at a time; besides them the run holds the input, the
8-bit output, the whole latent (4 channels at 1/8 resolution: 8 MB for 8192×4096 in fp32) and one
row of decoded tiles. Nothing of full pixel resolution is kept in floating point.
Cost: ``tiles × strength·steps`` tile predictions (×2 with guidance) plus one encode and one decode
per VAE tile; see ``docs/fullsphere.md``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..backbones.conditioning import encode_prompts
from ..backbones.guided import GuidedModel
from ..backbones.schedulers import make_scheduler, resolve_scheduler, set_timesteps
from ..backbones.vae import decode_latents, encode_images
from ..backbones.wrap import wraparound
from ..errors import InvalidInputError
from ..methods.windows import in_batches
from .tiles import Tile, TileGrid

SCALES = (2, 4)
MAX_WIDTH = 16384


def target_size(height: int, width: int, scale: int | None = None, target_width: int | None = None) -> tuple[int, int]:
    """Output (height, width) in pixels for ``scale`` (2 or 4) or ``target_width``; checks them.

    The width must be a multiple of 8 and the height comes out a multiple of 8 (the aspect ratio is
    kept exactly), otherwise one clear line says which widths work.
    """
    from .poles import check_panorama_shape

    check_panorama_shape(height, width)
    if (scale is None) == (target_width is None):
        raise InvalidInputError("give either an upscaling factor (--scale 2 or 4) or a target width (--to), not both")
    if scale is not None:
        if scale not in SCALES:
            raise InvalidInputError(f"unsupported scale {scale!r}; use 2 or 4 (or --to WIDTH for another size)")
        target_width = width * scale
    if not isinstance(target_width, int) or target_width <= width or target_width > MAX_WIDTH:
        raise InvalidInputError(
            f"target width must be a whole number of pixels larger than the input width {width} and at most "
            f"{MAX_WIDTH}, got {target_width!r}"
        )
    def fits(candidate: int) -> bool:
        return candidate % 8 == 0 and (candidate * height) % width == 0 and (candidate * height // width) % 8 == 0

    if not fits(target_width):
        nearest = next(w for w in range(target_width, 4 * MAX_WIDTH) if fits(w))
        raise InvalidInputError(
            f"a {height}x{width} panorama scaled to width {target_width} would not have a height that is a whole "
            f"multiple of 8 pixels; use --to {nearest}"
        )
    out_height = target_width * height // width
    return int(out_height), target_width


@dataclass(frozen=True)
class UpscaleSettings:
    """Refinement settings: ``strength`` in (0, 1] (the part of the schedule redone; 0.3 keeps the
    composition and adds detail), tile sizes in latent units (None: the model's native size for
    diffusion tiles, 64 latents = 512 px for VAE tiles), overlaps in latent units (None: a quarter of
    the tile), ``tile_batch_size`` tiles per UNet call."""

    strength: float = 0.3
    num_inference_steps: int = 20
    guidance_scale: float = 5.0
    scheduler: str | None = None  # None: the model's default (ddim for SD, flow_euler for transformers)
    tile: int | None = None
    overlap: int | None = None
    vae_tile: int = 64
    vae_overlap: int | None = None
    tile_batch_size: int = 4
    seed: int | None = 0

    def check(self) -> UpscaleSettings:
        if not isinstance(self.strength, (int, float)) or not 0.0 < self.strength <= 1.0:
            raise InvalidInputError(f"upscale strength must be in (0, 1], got {self.strength!r}")
        for name in ("tile", "vae_tile"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 8):
                raise InvalidInputError(f"{name.replace('_', ' ')} must be a whole number of latents >= 8, got {value!r}")
        if not isinstance(self.tile_batch_size, int) or self.tile_batch_size < 1:
            raise InvalidInputError(f"tile batch size must be >= 1, got {self.tile_batch_size!r}")
        return self


def _grid(latent_hw: tuple[int, int], tile: int, overlap: int | None) -> TileGrid:
    """The wrapping grid for ``tile`` latents; tiles larger than the latent are clipped to it and the
    overlap (default: a quarter of the tile) to half the clipped tile."""
    sizes = [min(tile, n) for n in latent_hw]
    wanted = overlap if overlap is not None else max(1, tile // 4)
    return TileGrid.make(latent_hw, tile, tuple(max(1, min(wanted, size // 2)) for size in sizes), wrap=True)


def bicubic_tile(source: Tensor, out_hw: tuple[int, int], tile: Tile) -> Tensor:
    """The bicubic upscale of ``source`` [C, H, W] (uint8 or float) to ``out_hw``, computed only for the
    pixel ``tile`` (columns wrapping): [1, C, th, tw] float32 in the source's value range.

    Target pixel centre x' maps to source x = (x' + 0.5)·W/W' − 0.5 (align_corners=False, as
    ``F.interpolate``); columns are read modulo W, rows are clamped at the top and bottom.
    """
    _, height, width = source.shape
    out_h, out_w = out_hw
    ys = (torch.arange(tile.top, tile.top + tile.height, dtype=torch.float64) + 0.5) * height / out_h - 0.5
    xs = (torch.arange(tile.left, tile.left + tile.width, dtype=torch.float64) + 0.5) * width / out_w - 0.5
    row0, row1 = max(0, math.floor(ys[0]) - 2), min(height, math.ceil(ys[-1]) + 3)
    col0, col1 = math.floor(xs[0]) - 2, math.ceil(xs[-1]) + 3
    crop = source[:, row0:row1].index_select(2, torch.arange(col0, col1) % width).float()[None]
    gx = (xs - col0 + 0.5) / (col1 - col0) * 2 - 1
    gy = (ys - row0 + 0.5) / (row1 - row0) * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)[None].float()
    return F.grid_sample(crop, grid, mode="bicubic", padding_mode="border", align_corners=False)


def tiled_encode(vae, pixel_tile: Callable[[Tile], Tensor], grid: TileGrid, scale: int = 8,
                 progress: Callable[[], None] | None = None) -> Tensor:
    """Latents [1, 4, h, w] of an image given tile by tile: ``pixel_tile(tile_px)`` returns the pixels
    [1, 3, th·8, tw·8] in [-1, 1] of a pixel tile; latent tiles are blended with the grid's weights."""
    pixel_grid = grid.scaled(scale)
    latent = None
    pixel_tiles = pixel_grid.tiles
    wrap = wraparound(vae) if grid.spans_width else contextlib.nullcontext()
    with wrap, torch.no_grad():
        for tile, tile_px in zip(grid.tiles, pixel_tiles):
            encoded = encode_images(vae, pixel_tile(tile_px))
            if latent is None:
                latent = torch.zeros(1, encoded.shape[1], *grid.size, device=encoded.device, dtype=torch.float32)
            grid.add(latent, encoded.float() * grid.weight(tile, encoded.device), tile)
            if progress is not None:
                progress()
    return latent


def tiled_decode(vae, latents: Tensor, grid: TileGrid, out: np.ndarray, scale: int = 8,
                 progress: Callable[[], None] | None = None, chunk_rows: int = 64) -> np.ndarray:
    """Decode latents [1, 4, h, w] tile by tile into ``out`` (uint8 [H, W, 3], H = 8h, W = 8w).

    Decoded tiles are blended into one float buffer a tile high (allocated once); rows that no later
    tile touches are converted to 8-bit ``chunk_rows`` at a time, written to ``out``, and the rest of
    the buffer moves up. No float image of the full size exists.
    """
    pixel_grid = grid.scaled(scale)
    tile_rows, width_px = pixel_grid.tile[0], pixel_grid.size[1]
    buffer = torch.zeros(3, tile_rows, width_px)
    buffer_top = 0
    wrap = wraparound(vae) if grid.spans_width else contextlib.nullcontext()
    with wrap, torch.no_grad():
        for r, (row, row_px) in enumerate(zip(grid.rows(), pixel_grid.rows())):
            for tile, tile_px in zip(row, row_px):
                pixels = decode_latents(vae, grid.crop(latents, tile)).float().cpu()[0]
                pixel_grid.add(buffer, pixels * pixel_grid.weight(tile_px), tile_px, row_offset=buffer_top)
                if progress is not None:
                    progress()
            done = pixel_grid.final_rows(r)
            for start in range(buffer_top, done, chunk_rows):
                stop = min(done, start + chunk_rows)
                rows = buffer[:, start - buffer_top:stop - buffer_top]
                out[start:stop] = rows.mul(127.5).add_(127.5).clamp_(0, 255).round_().byte().permute(1, 2, 0).numpy()
            keep = tile_rows - (done - buffer_top)  # rows of this tile row that the next one overlaps
            buffer[:, :keep] = buffer[:, done - buffer_top:].clone()
            buffer[:, keep:] = 0
            buffer_top = done
    return out


def img2img_timesteps(scheduler, num_inference_steps: int, strength: float, device, image_seq_len: int | None = None,
                      linear_sigmas: bool = True, shift_mu=None) -> Tensor:
    """The last ``round(strength·steps)`` (at least 1) of the scheduler's timesteps (diffusers' img2img rule);
    flow schedules shift for ``image_seq_len`` tokens (a tile)."""
    set_timesteps(scheduler, num_inference_steps, device, image_seq_len, linear_sigmas=linear_sigmas,
                  shift_mu=shift_mu)
    keep = min(num_inference_steps, max(1, round(strength * num_inference_steps)))
    start = num_inference_steps - keep
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(start * scheduler.order)
    return scheduler.timesteps[start * scheduler.order:]


def refine_tiles(pipe, latents: Tensor, grid: TileGrid, prompt: str, settings: UpscaleSettings,
                 negative_prompt: str | None = None, progress: Callable[[], None] | None = None) -> Tensor:
    """Img2img refinement of clean latents [1, C, h, w] with wrapping, blended tiles (step 3 above)."""
    from ..backbones.loading import Backbone, ModelSource, family_info
    from ..backbones.parameterization import add_noise
    from ..backbones.parameterization import model_input as scaled_input

    backbone = Backbone(pipe=pipe, info=family_info(pipe), source=ModelSource("pipeline", "pipeline"))
    contract, info, unet = backbone.contract, backbone.info, backbone.denoiser
    device, dtype = unet.device, unet.dtype
    sched = make_scheduler(resolve_scheduler(settings.scheduler, contract.schedule, info.family), pipe.scheduler.config)
    timesteps = img2img_timesteps(sched, settings.num_inference_steps, settings.strength, device,
                                  contract.image_seq_len(grid.tile[0], grid.tile[1], info), contract.linear_sigmas,
                                  contract.shift_mu)
    cfg, embedded = contract.guidance_plan(pipe, settings.guidance_scale, None, negative_prompt is not None)
    text = encode_prompts(pipe, [prompt], None if negative_prompt is None else [negative_prompt], cfg != 1.0, device)
    model = GuidedModel(unet, text, cfg, family=contract, embedded_guidance=embedded)
    generator = torch.Generator("cpu").manual_seed(int(settings.seed or 0))
    noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(device)
    latents = add_noise(sched, latents.to(device), noise, timesteps[:1]).to(dtype)
    del noise
    tiles = grid.tiles
    weights = [grid.weight(tile, device, torch.float32) for tile in tiles]
    factor = info.vae_scale_factor
    size_px = (grid.tile[0] * factor, grid.tile[1] * factor)
    batch_size = settings.tile_batch_size
    wrap = contract.seam(backbone, vae=False) if grid.spans_width else contextlib.nullcontext()
    with wrap, torch.no_grad():
        for t in timesteps:
            model_input = scaled_input(sched, latents, t)
            prediction = torch.zeros(latents.shape, device=device, dtype=torch.float32)

            def run(start: int, stop: int, model_input=model_input, t=t, prediction=prediction) -> None:
                batch = torch.cat([grid.crop(model_input, tile) for tile in tiles[start:stop]])
                output = model(batch, t, units=torch.zeros(stop - start, dtype=torch.long), size_px=size_px)
                for j, index in enumerate(range(start, stop)):
                    grid.add(prediction, output[j:j + 1].float() * weights[index], tiles[index])
                    if progress is not None:
                        progress()

            _, batch_size = in_batches(len(tiles), batch_size, run)
            latents = sched.step(prediction.to(dtype), t, latents).prev_sample
    return latents


def upscale_panorama(
    pipe,
    image: np.ndarray | Tensor,
    prompt: str,
    *,
    scale: int | None = None,
    target_width: int | None = None,
    settings: UpscaleSettings | None = None,
    negative_prompt: str | None = None,
    progress: Callable[[str, int], Callable[[], None]] | None = None,
) -> np.ndarray:
    """Upscale an 8-bit panorama ``image`` (numpy [H, W, 3] or tensor [3, H, W]) → uint8 [H', W', 3].

    ``progress(stage, total)`` may return a callback called once per tile of that stage
    ("encode", "refine", "decode").
    """
    settings = (settings or UpscaleSettings()).check()
    source = torch.from_numpy(np.array(image)) if isinstance(image, np.ndarray) else torch.as_tensor(image)
    if source.ndim == 3 and source.shape[-1] == 3 and source.shape[0] != 3:
        source = source.permute(2, 0, 1)
    source = source.contiguous()
    height, width = source.shape[-2:]
    out_h, out_w = target_size(height, width, scale, target_width)
    from ..backbones.loading import family_info

    facts = family_info(pipe)
    info_native = facts.native_size // facts.vae_scale_factor
    latent_hw = (out_h // facts.vae_scale_factor, out_w // facts.vae_scale_factor)
    grid = _grid(latent_hw, settings.tile or info_native, settings.overlap)
    vae_grid = _grid(latent_hw, settings.vae_tile, settings.vae_overlap)
    from ..backbones.family import family_of

    vae = family_of(pipe).image_vae(pipe)
    to_unit = (lambda x: x / 127.5 - 1.0) if source.dtype == torch.uint8 else (lambda x: x)

    def callback(stage: str, total: int):
        return progress(stage, total) if progress is not None else None

    latents = tiled_encode(vae, lambda tile_px: to_unit(bicubic_tile(source, (out_h, out_w), tile_px)).clamp(-1, 1)
                           .to(vae.device, vae.dtype), vae_grid, progress=callback("encode", len(vae_grid)))
    scheduler_name = resolve_scheduler(settings.scheduler, "flow" if facts.is_dit else "alpha", facts.family)
    step_count = len(img2img_timesteps(make_scheduler(scheduler_name, pipe.scheduler.config),
                                       settings.num_inference_steps, settings.strength, "cpu"))
    latents = refine_tiles(pipe, latents, grid, prompt, settings, negative_prompt,
                           callback("refine", len(grid) * step_count))
    out = np.zeros((out_h, out_w, 3), dtype=np.uint8)
    return tiled_decode(vae, latents, vae_grid, out, progress=callback("decode", len(vae_grid)))
