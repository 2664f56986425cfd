"""Pixels, longitude/latitude and unit vectors on the sphere; rotation matrices.

Conventions (``shared/DESIGN.md``, "Spherical conventions"):

* An equirectangular image W×H with W = 2H covers the full sphere. Column centre u = (x + 0.5)/W has
  longitude lon = (u − 0.5)·2π, row centre v = (y + 0.5)/H has latitude lat = (0.5 − v)·π. Pixel
  indices count from 0 at the left / top edge, so pixel x spans [x − 0.5, x + 0.5] around its centre.
* A wider image (W > 2H) is a *cylindrical band*: 360° across with square pixels (2π/W radians each),
  centred on the horizon, so it spans ±(H/W)·π in latitude. Images taller than 2:1 are not panoramas.
* 3-D frame: x right, y up, z forward (lon = 0, lat = 0 is +z; lon = +90° is +x, the right half of
  the image; lat = +90° is +y). This is py360convert's frame; it is left-handed, like Unity's and like
  the RenderMan/OpenGL cube-map convention.
* Angles of these functions are in **radians**; the camera-level API (``yaw_deg`` …) takes degrees.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Union

import torch
from torch import Tensor

AngleLike = Union[float, int, Sequence[float], Tensor]  # noqa: UP007 (a runtime alias, Python 3.10)


def latitude_extent(height: int, width: int) -> float:
    """Vertical angle (radians) covered by a ``height``×``width`` equirectangular image or band.

    π for a 2:1 full sphere, ``2π·height/width`` for a wider cylindrical band. Raises ``ValueError``
    for images taller than 2:1.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if 2 * height > width:
        raise ValueError(
            f"a {height}x{width} image is taller than 2:1 and cannot be an equirectangular panorama"
        )
    return 2.0 * math.pi * height / width


def is_full_sphere(height: int, width: int) -> bool:
    """True when ``width == 2·height`` (the image covers the whole sphere)."""
    return width == 2 * height


def pixel_to_lonlat(x: Tensor, y: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Pixel coordinates (0 = centre of the first pixel) → (lon, lat) in radians."""
    lon = ((x + 0.5) / width - 0.5) * (2.0 * math.pi)
    lat = (0.5 - (y + 0.5) / height) * latitude_extent(height, width)
    return lon, lat


def lonlat_to_pixel(lon: Tensor, lat: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """(lon, lat) in radians → pixel coordinates (inverse of :func:`pixel_to_lonlat`, no wrapping)."""
    x = (lon / (2.0 * math.pi) + 0.5) * width - 0.5
    y = (0.5 - lat / latitude_extent(height, width)) * height - 0.5
    return x, y


def lonlat_to_unit(lon: Tensor, lat: Tensor) -> Tensor:
    """(lon, lat) radians, any shape S → unit vectors of shape S + (3,) (x right, y up, z forward)."""
    cos_lat = torch.cos(lat)
    return torch.stack([cos_lat * torch.sin(lon), torch.sin(lat), cos_lat * torch.cos(lon)], dim=-1)


def unit_to_lonlat(xyz: Tensor) -> tuple[Tensor, Tensor]:
    """Vectors [..., 3] (need not be unit length) → (lon, lat) radians; lon ∈ [−π, π]."""
    x, y, z = xyz.unbind(-1)
    lon = torch.atan2(x, z)
    lat = torch.atan2(y, torch.hypot(x, z))
    return lon, lat


def equirect_lonlat(
    height: int, width: int, *, device=None, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """(lon, lat) radians of every pixel centre of a ``height``×``width`` equirect image, each [H, W]."""
    ys = torch.arange(height, device=device, dtype=torch.float64)
    xs = torch.arange(width, device=device, dtype=torch.float64)
    lon, lat = pixel_to_lonlat(xs[None, :], ys[:, None], height, width)
    lon, lat = torch.broadcast_tensors(lon, lat)
    return lon.to(dtype), lat.to(dtype)


def equirect_directions(
    height: int, width: int, *, device=None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Unit vectors [H, W, 3] through every pixel centre of an equirect image.

    Angles are computed in float64 and the trigonometry runs in ``dtype`` (float32 is accurate to
    ~1e-7 rad, far below a pixel at any practical size)."""
    trig = torch.float64 if dtype == torch.float64 else torch.float32
    lon, lat = equirect_lonlat(height, width, device=device, dtype=trig)
    return lonlat_to_unit(lon, lat).to(dtype)


@functools.lru_cache(maxsize=4)
def cached_equirect_directions(height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """:func:`equirect_directions`, cached per size/device/dtype for the conversions' hot path.
    The returned tensor is shared: never modify it in place."""
    return equirect_directions(height, width, device=device, dtype=dtype)


def as_angle_tensor(value: AngleLike, *, device=None, dtype: torch.dtype = torch.float64) -> Tensor:
    """A float or 1-D sequence/tensor of angles → 1-D tensor (keeps autograd history of tensors)."""
    if isinstance(value, Tensor):
        tensor = value.to(device=device, dtype=dtype)
    else:
        tensor = torch.as_tensor(value, device=device, dtype=dtype)
    if tensor.ndim > 1:
        raise ValueError(f"angles must be a number or a 1-D sequence, got shape {tuple(tensor.shape)}")
    return tensor.reshape(-1)


def rotation_matrix(
    yaw_deg: AngleLike, pitch_deg: AngleLike = 0.0, roll_deg: AngleLike = 0.0, *, device=None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Camera-to-world rotations [V, 3, 3] for yaw/pitch/roll in degrees (broadcast to length V).

    ``R = R_yaw · R_pitch · R_roll`` maps camera coordinates (x right, y up, z forward) to world
    coordinates: the camera forward axis ``R·(0, 0, 1)`` points at lon = yaw, lat = pitch. Positive yaw
    turns right (towards larger image columns), positive pitch looks up, positive roll turns the
    camera clockwise about its forward axis as seen from behind it (its right vector tilts down),
    so the scene in the view turns counter-clockwise; this matches py360convert's ``in_rot_deg``.
    Built in float64 by default (angles of 360° must give the identity to ~1e-15).
    """
    yaw, pitch, roll = torch.broadcast_tensors(
        as_angle_tensor(yaw_deg, device=device, dtype=dtype),
        as_angle_tensor(pitch_deg, device=device, dtype=dtype),
        as_angle_tensor(roll_deg, device=device, dtype=dtype),
    )
    yaw, pitch, roll = torch.deg2rad(yaw), torch.deg2rad(pitch), torch.deg2rad(roll)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    cp, sp = torch.cos(pitch), torch.sin(pitch)
    cr, sr = torch.cos(roll), torch.sin(roll)
    r_yaw = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
    r_pitch = torch.stack([one, zero, zero, zero, cp, sp, zero, -sp, cp], -1).reshape(-1, 3, 3)
    r_roll = torch.stack([cr, sr, zero, -sr, cr, zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return r_yaw @ r_pitch @ r_roll
