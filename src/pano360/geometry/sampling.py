"""Sampling an equirectangular image at arbitrary directions, wrapping across the seam and the poles.

One :func:`torch.nn.functional.grid_sample` call does the interpolation, on a copy of the image
padded so that every tap of the interpolation kernel reads the right neighbour on the sphere:

* across the seam, column −1 is column W−1 and column W is column 0;
* across a pole (full spheres only), the row beyond row 0 is row 0 again, half a turn away (W/2
  columns further on), so going over the pole along a meridian is continuous;
* inside the *polar cap* (within half a pixel of a pole, where no pixel centre lies), bilinear and
  bicubic sampling interpolate linearly in latitude between the first row and the pole value, the
  mean of the first row. So the pole has one value whatever the longitude (a view looking straight
  up has the same centre pixel at every yaw) and sampling is continuous everywhere on the sphere.
  Nearest sampling instead picks the pixel on the nearer side, as py360convert does.

py360convert (1.0.x) pads the same way but has no polar cap: its sample exactly at a pole is the
mean of the two pixels on either side (at lon and lon + 180°), so it depends on the longitude.
That half-pixel cap is the only place where our bilinear sampling differs from its.
Cylindrical bands (W > 2H) have no pole: their edge rows are repeated and directions above or
below the band sample as 0.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .coords import is_full_sphere, latitude_extent, unit_to_lonlat

Mode = Literal["nearest", "bilinear", "bicubic"]
MODES = ("nearest", "bilinear", "bicubic")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown interpolation mode {mode!r}; use one of {', '.join(MODES)}")
    return mode


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """Sampling runs in float32 (float64 stays float64): half-precision grids are too coarse."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def pad_equirect(equirect: Tensor, pad: int, polar_caps: bool = False) -> Tensor:
    """Pad [..., H, W] by ``pad`` pixels on every side with the sphere's true neighbours.

    Horizontally the image wraps. Vertically, for a full sphere the rows beyond a pole are the rows
    next to it, mirrored and turned half way round; for a band the edge rows are repeated. With
    ``polar_caps`` (full sphere only) the padding row next to each pole holds the pole value (the mean
    of the first / last row) instead, and for ``pad = 2`` the outer row holds the mirrored first /
    last row; :func:`sample_equirect_pixels` stretches its coordinates to match.
    One allocation and one full copy of the image.
    """
    height, width = equirect.shape[-2:]
    if pad > height:
        raise ValueError(f"image height {height} is too small to pad by {pad}")
    out = equirect.new_empty(*equirect.shape[:-2], height + 2 * pad, width + 2 * pad)
    inner = slice(pad, pad + width)
    out[..., pad : pad + height, inner] = equirect
    if is_full_sphere(height, width):
        half = width // 2
        if polar_caps:
            out[..., pad - 1, inner] = equirect[..., 0, :].mean(-1, keepdim=True)
            out[..., pad + height, inner] = equirect[..., -1, :].mean(-1, keepdim=True)
            if pad == 2:
                out[..., 0, inner] = torch.roll(equirect[..., 0, :], half, dims=-1)
                out[..., -1, inner] = torch.roll(equirect[..., -1, :], half, dims=-1)
        else:
            out[..., :pad, inner] = torch.roll(equirect[..., :pad, :].flip(-2), half, dims=-1)
            out[..., pad + height :, inner] = torch.roll(equirect[..., height - pad :, :].flip(-2), half, dims=-1)
    else:
        out[..., :pad, inner] = equirect[..., :1, :]
        out[..., pad + height :, inner] = equirect[..., -1:, :]
    out[..., :, :pad] = out[..., :, width : width + pad]
    out[..., :, pad + width :] = out[..., :, pad : 2 * pad]
    return out


def sample_equirect_pixels(
    equirect: Tensor, x: Tensor, y: Tensor, mode: Mode = "bilinear", per_batch: bool = False
) -> Tensor:
    """Sample [B, C, H, W] at pixel coordinates ``x``, ``y`` (any shape S, shared by the batch; or
    [B, *S], one set per panorama, with ``per_batch=True``).

    ``x`` is taken modulo W (any longitude works); ``y`` must lie in [−0.5, H − 0.5] (the sphere),
    anything else reads the padding. Returns [B, C, *S] in ``equirect``'s dtype; the computation
    runs in float32 (float64 for float64 input) and is differentiable w.r.t. ``equirect`` (and the
    coordinates, except in nearest mode).
    """
    compute = work_dtype(equirect.dtype)
    width = equirect.shape[-1]
    x = torch.remainder(x.to(compute) + 0.5, width) - 0.5  # into [-0.5, W - 0.5)
    return _sample(equirect, x, 1.0, 0.0, y.to(compute), mode, per_batch)


def sample_equirect_lonlat(
    equirect: Tensor, lon: Tensor, lat: Tensor, mode: Mode = "bilinear", per_batch: bool = False
) -> Tensor:
    """Sample [B, C, H, W] at longitudes/latitudes in radians (any shape S, or [B, *S] with
    ``per_batch``) → [B, C, *S]. For a cylindrical band, latitudes outside it give 0."""
    height, width = equirect.shape[-2:]
    compute = work_dtype(equirect.dtype)
    lon, lat = lon.to(compute), lat.to(compute)
    lon = torch.remainder(lon + math.pi, 2 * math.pi) - math.pi  # any longitude, into [-π, π)
    extent = latitude_extent(height, width)
    y = lat * (-height / extent) + (height / 2 - 0.5)
    out = _sample(equirect, lon, width / (2 * math.pi), width / 2 - 0.5, y, mode, per_batch)
    if not is_full_sphere(height, width):
        inside = (lat.abs() <= extent / 2).to(out.dtype)
        out = out * (inside.unsqueeze(1) if per_batch else inside)
    return out


def _sample(equirect: Tensor, u: Tensor, scale: float, offset: float, y: Tensor, mode: str, per_batch: bool):
    """Shared core: column x = u·scale + offset (already within [−0.5, W − 0.5]), row y in pixels."""
    check_mode(mode)
    if equirect.ndim != 4:
        raise ValueError(f"equirect must be [B, C, H, W], got shape {tuple(equirect.shape)}")
    batch, channels, height, width = equirect.shape
    compute = work_dtype(equirect.dtype)
    shape = u.shape[1:] if per_batch else u.shape
    if per_batch and u.shape[0] != batch:
        raise ValueError(f"per-batch coordinates for {u.shape[0]} panoramas, batch has {batch}")
    pad = 2 if mode == "bicubic" else 1
    caps = mode != "nearest" and is_full_sphere(height, width)
    padded = pad_equirect(equirect.to(compute), pad, polar_caps=caps)
    if caps:  # stretch the half-pixel caps [-0.5, 0) and (H-1, H-0.5] onto the pixel next to the pole
        last = height - 1.0
        y = torch.where(y < 0, 2.0 * y, torch.where(y > last, 2.0 * y - last, y))
    # Normalised coordinates for align_corners=False: -1 and +1 are the outer edges of the padded
    # image, so g = (2·(x + pad) + 1) / size − 1, folded into one multiply-add per axis.
    padded_w, padded_h = width + 2 * pad, height + 2 * pad
    gx = u * (2.0 * scale / padded_w) + ((2.0 * (offset + pad) + 1.0) / padded_w - 1.0)
    gy = y * (2.0 / padded_h) + ((2.0 * pad + 1.0) / padded_h - 1.0)
    grid = torch.stack([gx, gy], dim=-1)
    grid = grid.reshape(batch, 1, -1, 2) if per_batch else grid.reshape(1, 1, -1, 2).expand(batch, 1, -1, 2)
    out = F.grid_sample(padded, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.reshape(batch, channels, *shape).to(equirect.dtype)


def sample_equirect(
    equirect: Tensor, directions: Tensor, mode: Mode = "bilinear", per_batch: bool = False
) -> Tensor:
    """Sample [B, C, H, W] along vectors ``directions`` [*S, 3] (any length) → [B, C, *S] (or
    [B, *S, 3] with ``per_batch=True``, one set of directions per panorama).

    For a cylindrical band (W > 2H), directions outside its latitude range give 0.
    """
    lon, lat = unit_to_lonlat(directions.to(work_dtype(equirect.dtype)))
    return sample_equirect_lonlat(equirect, lon, lat, mode, per_batch)
