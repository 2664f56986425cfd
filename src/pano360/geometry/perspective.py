"""Equirectangular ↔ perspective views (pinhole cameras at the sphere's centre), batched over views.

A view is given by yaw, pitch, roll and a *horizontal* field of view (degrees) plus its size
(h, w) in pixels. Pixels are square, so the vertical FoV follows: tan(vfov/2) = tan(hfov/2)·h/w.
The FoV spans the outer *edges* of the outer pixels: pixel column c has its centre at
x = (2(c + 0.5)/w − 1)·tan(hfov/2) on the image plane z = 1 (focal length f = w / (2·tan(hfov/2)),
principal point (w − 1)/2 in "index = pixel centre" units, as in MVDiffusion's K).

Deviations from py360convert's ``e2p`` (1.0.x), which the equivalence tests account for:

* py360convert spreads the FoV between the *centres* of the outer pixels (``linspace(-t, t, w)``),
  so its view is slightly wider: its ``fov`` equals ours for ``2·atan(tan(fov/2)·(w − 1)/w)``.
* py360convert's ``fov_deg`` scalar sets the horizontal *and* vertical FoV; ours derives the vertical
  FoV from the aspect ratio (the same thing for square views).
* Its bicubic mode is a prefiltered cubic B-spline (scipy ``map_coordinates(order=3)``); ours is
  PyTorch's cubic convolution (a = −0.75). Both interpolate; they differ by O(h³) on smooth images.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .coords import AngleLike, as_angle_tensor, cached_equirect_directions, rotation_matrix
from .sampling import Mode, check_mode, sample_equirect_lonlat, work_dtype


def _out_size(out_hw) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in out_hw)
    except (TypeError, ValueError):
        raise ValueError(f"out_hw must be a pair (height, width) of pixels, got {out_hw!r}") from None
    if height <= 0 or width <= 0:
        raise ValueError(f"out_hw must be positive, got {out_hw!r}")
    return height, width


def view_angles(
    yaw_deg: AngleLike, pitch_deg: AngleLike, fov_deg: AngleLike, roll_deg: AngleLike = 0.0, *, device=None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Broadcast yaw, pitch, horizontal FoV and roll (degrees; numbers or 1-D, length V) to [V] each.

    Raises ``ValueError`` when a FoV is not strictly between 0° and 180°.
    """
    yaw, pitch, fov, roll = torch.broadcast_tensors(
        *(as_angle_tensor(v, device=device) for v in (yaw_deg, pitch_deg, fov_deg, roll_deg))
    )
    fov_values = fov.detach()
    if not bool(((fov_values > 0) & (fov_values < 180)).all()):
        raise ValueError(f"field of view must be between 0 and 180 degrees (exclusive), got {fov_values.tolist()}")
    return yaw, pitch, fov, roll


def camera_rays(fov_deg: Tensor, out_hw: tuple[int, int], *, dtype=torch.float64) -> Tensor:
    """Camera-space rays [V, h, w, 3] (x right, y up, z = 1) through the pixel centres of each view."""
    height, width = out_hw
    device = fov_deg.device
    tan_x = torch.tan(torch.deg2rad(fov_deg.to(torch.float64)) / 2).to(dtype)
    tan_y = tan_x * (height / width)
    u = (2.0 * (torch.arange(width, device=device, dtype=dtype) + 0.5) / width - 1.0)
    v = (1.0 - 2.0 * (torch.arange(height, device=device, dtype=dtype) + 0.5) / height)
    x = u[None, None, :] * tan_x[:, None, None]
    y = v[None, :, None] * tan_y[:, None, None]
    x, y = torch.broadcast_tensors(x, y)
    return torch.stack([x, y, torch.ones_like(x)], dim=-1)


def view_directions(
    yaw_deg: AngleLike, pitch_deg: AngleLike, fov_deg: AngleLike, out_hw, roll_deg: AngleLike = 0.0,
    *, device=None, dtype: torch.dtype = torch.float32, normalize: bool = True,
) -> Tensor:
    """World-space rays [V, h, w, 3] through the pixel centres of V perspective views (unit length
    unless ``normalize=False``). Angles and rotations are computed in float64, the per-pixel rays in
    ``dtype``."""
    out_hw = _out_size(out_hw)
    yaw, pitch, fov, roll = view_angles(yaw_deg, pitch_deg, fov_deg, roll_deg, device=device)
    rays = camera_rays(fov, out_hw, dtype=dtype)
    if normalize:
        rays = rays / rays.norm(dim=-1, keepdim=True)
    rotation = rotation_matrix(yaw, pitch, roll).to(dtype)  # [V, 3, 3]
    return torch.einsum("vij,vhwj->vhwi", rotation, rays)


def _view_lonlat(yaw_deg, pitch_deg, fov_deg, out_hw, roll_deg, device, dtype) -> tuple[Tensor, Tensor]:
    """(lon, lat) [V, h, w] of every view pixel, without materialising [V, h, w, 3] ray tensors:
    world = R·(x, y, 1) is expanded per component from a row term and a column term."""
    height, width = _out_size(out_hw)
    yaw, pitch, fov, roll = view_angles(yaw_deg, pitch_deg, fov_deg, roll_deg, device=device)
    rotation = rotation_matrix(yaw, pitch, roll).to(dtype)  # [V, 3, 3]
    tan_x = torch.tan(torch.deg2rad(fov) / 2).to(dtype)[:, None]
    tan_y = tan_x * (height / width)
    u = (2.0 * (torch.arange(width, device=device, dtype=dtype) + 0.5) / width - 1.0) * tan_x  # [V, w]
    v = (1.0 - 2.0 * (torch.arange(height, device=device, dtype=dtype) + 0.5) / height) * tan_y  # [V, h]
    world = [
        (rotation[:, i, 0:1] * u)[:, None, :] + (rotation[:, i, 1:2] * v + rotation[:, i, 2:3])[:, :, None]
        for i in range(3)  # the three coordinates, each [V, h, w]
    ]
    x, y, z = world
    return torch.atan2(x, z), torch.atan2(y, torch.hypot(x, z))


def equirect_to_perspective(
    equirect: Tensor, yaw_deg: AngleLike, pitch_deg: AngleLike, fov_deg: AngleLike, out_hw,
    roll_deg: AngleLike = 0.0, mode: Mode = "bilinear",
) -> Tensor:
    """Render V perspective views of each panorama in a batch.

    Args:
        equirect: [B, C, H, W] equirectangular images (W = 2H; a wider band is allowed, see
            :mod:`pano360.geometry.sampling`), any float dtype, any device.
        yaw_deg, pitch_deg, fov_deg, roll_deg: degrees, each a number or a 1-D sequence/tensor of
            length V (broadcast together). ``fov_deg`` is the horizontal FoV, in (0, 180).
        out_hw: (h, w) of each view in pixels.
        mode: "nearest", "bilinear" or "bicubic".

    Returns:
        [B, V, C, h, w] in ``equirect``'s dtype; differentiable w.r.t. ``equirect`` (and the angles,
        when given as tensors that require grad).
    """
    check_mode(mode)
    lon, lat = _view_lonlat(yaw_deg, pitch_deg, fov_deg, out_hw, roll_deg, equirect.device,
                            work_dtype(equirect.dtype))
    views = sample_equirect_lonlat(equirect, lon, lat, mode)  # [B, C, V, h, w]
    return views.permute(0, 2, 1, 3, 4)


Blend = Literal["average", "feather"]


def perspective_to_equirect(
    views: Tensor, yaw_deg: AngleLike, pitch_deg: AngleLike, fov_deg: AngleLike, out_hw,
    roll_deg: AngleLike = 0.0, mode: Mode = "bilinear", blend: Blend = "average",
) -> tuple[Tensor, Tensor]:
    """Project V perspective views back onto an equirectangular canvas and blend them.

    Args:
        views: [B, V, C, h, w] (the camera of view v is yaw/pitch/roll/fov entry v).
        out_hw: (H, W) of the equirect output (W = 2H, or wider for a band).
        blend: "average" gives every view covering a pixel the same weight; "feather" weights a
            view by (1 − |x|)(1 − |y|) in its normalised image coordinates (x, y ∈ [−1, 1]), so
            overlaps fade smoothly from one view to the next.

    Returns:
        (equirect [B, C, H, W], weight [B, 1, H, W]): the weighted mean of the views that see each
        pixel (0 where none does) and the sum of the blend weights there, which for "average" is
        the number of views covering the pixel (coverage). A pixel is covered when its direction
        projects inside a view's outer pixel edges (in front of the camera).
    """
    check_mode(mode)
    if blend not in ("average", "feather"):
        raise ValueError(f"unknown blend {blend!r}; use 'average' or 'feather'")
    if views.ndim != 5:
        raise ValueError(f"views must be [B, V, C, h, w], got shape {tuple(views.shape)}")
    batch, n_views, channels, height, width = views.shape
    out_h, out_w = _out_size(out_hw)
    yaw, pitch, fov, roll = view_angles(yaw_deg, pitch_deg, fov_deg, roll_deg, device=views.device)
    if yaw.numel() == 1 and n_views > 1:
        yaw, pitch, fov, roll = (t.expand(n_views) for t in (yaw, pitch, fov, roll))
    if yaw.numel() != n_views:
        raise ValueError(f"{yaw.numel()} camera poses given for {n_views} views")
    compute = work_dtype(views.dtype)

    world = cached_equirect_directions(out_h, out_w, views.device, compute)  # [H, W, 3]
    rotation = rotation_matrix(yaw, pitch, roll).to(compute)  # [V, 3, 3]; camera = R^T · world
    cam = torch.einsum("vji,hwj->vhwi", rotation, world)  # [V, H, W, 3]
    z = cam[..., 2]
    in_front = z > 1e-6
    z = torch.where(in_front, z, torch.ones_like(z))
    tan_x = torch.tan(torch.deg2rad(fov) / 2).to(compute)[:, None, None]
    tan_y = tan_x * (height / width)
    gx = cam[..., 0] / z / tan_x  # -1 / +1 at the outer pixel edges (align_corners=False)
    gy = -cam[..., 1] / z / tan_y
    inside = in_front & (gx.abs() <= 1.0) & (gy.abs() <= 1.0)
    gx = torch.where(inside, gx, torch.zeros_like(gx))
    gy = torch.where(inside, gy, torch.zeros_like(gy))

    if blend == "average":
        weight = inside.to(compute)
    else:
        weight = ((1 - gx.abs()) * (1 - gy.abs())).clamp_min(0).to(compute) * inside.to(compute)
    grid = torch.stack([gx, gy], dim=-1).to(compute)  # [V, H, W, 2]
    grid = grid.unsqueeze(0).expand(batch, -1, -1, -1, -1).reshape(batch * n_views, out_h, out_w, 2)
    flat = views.reshape(batch * n_views, channels, height, width).to(compute)
    sampled = F.grid_sample(flat, grid, mode=mode, padding_mode="border", align_corners=False)
    sampled = sampled.reshape(batch, n_views, channels, out_h, out_w)
    total = weight.sum(0)  # [H, W]
    merged = (sampled * weight[None, :, None]).sum(1) / total.clamp_min(1e-12)
    merged = merged * (total > 0)
    weight_out = total.reshape(1, 1, out_h, out_w).expand(batch, 1, out_h, out_w)
    return merged.to(views.dtype), weight_out.to(views.dtype)


def horizontal_to_vertical_fov(fov_deg: float, out_hw) -> float:
    """Vertical FoV (degrees) of a view of size (h, w) with horizontal FoV ``fov_deg``."""
    height, width = _out_size(out_hw)
    return math.degrees(2 * math.atan(math.tan(math.radians(fov_deg) / 2) * height / width))
