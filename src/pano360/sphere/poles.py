"""Zenith and nadir: pole views cut from a panorama, their inpainting masks, and the feathered blend
of regenerated views back into the equirect image. Pure geometry (no model here; the denoising is
:mod:`pano360.sphere.inpaint`, the orchestration :mod:`pano360.sphere.pipeline`).

Why: an equirect image stretches the rows near a pole over the whole width, so SD (which draws an
ordinary flat picture) fills them with a horizontal strip that a 360° viewer pinches into a swirl.
Looking straight up or down through a perspective camera there is no stretch: the cap around the
pole is an ordinary picture, which SD can paint.

Geometry (angles in degrees, θ = angle from the pole = 90° − |latitude|):

* each pole is seen by a square perspective view looking straight up (pitch +90°) or down (−90°),
  horizontal FoV ``2·(cap + context)``: its centre is the pole, its rim is ``cap + context`` from it;
* the **cap** (θ < ``cap_deg``) is regenerated; the ring ``cap ≤ θ < cap + context`` is taken from
  the panorama and kept, so the new cap continues what is around it;
* the regenerated view is projected back and blended with weight
  ``α(θ) = clamp((cap − θ) / feather, 0, 1)``: 0 at θ = cap (the panorama is unchanged there and
  everywhere closer to the equator, exactly), 1 from ``cap − feather`` to the pole.

A cylindrical band (W > 2H, e.g. MVDiffusion's) covers only ±e = 180°·H/W around the horizon; it is
first put on a full 2:1 canvas (:func:`band_to_sphere`, missing rows filled with the band's edge
rows) and the cap is widened to ``90° − e + feather`` at least, so everything outside the band is
regenerated and the band itself is kept below the blend zone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InvalidInputError
from ..geometry import equirect_lonlat, equirect_to_perspective, perspective_to_equirect

POLE_PITCH = {"up": 90.0, "down": -90.0}
MAX_CAP_DEG = 60.0  # beyond this the pole views would need FoVs near 180° (extreme stretch at the rim)


@dataclass(frozen=True)
class PoleSettings:
    """Pole refinement geometry (degrees) and the view size in pixels.

    * ``cap_deg``: angular radius of the regenerated cap around each pole (default 35°: latitudes
      beyond ±55°);
    * ``context_deg``: ring of panorama kept around the cap inside the view, what the model continues;
    * ``feather_deg``: width of the blend zone inside the cap (must be ≤ ``cap_deg``);
    * ``view_size``: pixels per side of each pole view (None: the model's native size);
    * ``poles``: which poles, ``("up", "down")`` by default.
    """

    cap_deg: float = 35.0
    context_deg: float = 15.0
    feather_deg: float = 10.0
    view_size: int | None = None
    poles: tuple[str, ...] = ("up", "down")

    @property
    def fov_deg(self) -> float:
        return 2.0 * (self.cap_deg + self.context_deg)

    def check(self) -> PoleSettings:
        for name in ("cap_deg", "context_deg", "feather_deg"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InvalidInputError(f"pole {name.removesuffix('_deg')} must be a positive angle in degrees, got {value!r}")
        if self.feather_deg > self.cap_deg:
            raise InvalidInputError(
                f"pole feather ({self.feather_deg:g}°) is wider than the cap ({self.cap_deg:g}°); use a feather <= cap"
            )
        if self.cap_deg > MAX_CAP_DEG:
            raise InvalidInputError(
                f"pole cap {self.cap_deg:g}° is larger than {MAX_CAP_DEG:g}° (the band is too thin, or the cap too wide); "
                f"use a cap <= {MAX_CAP_DEG:g}° or a panorama covering at least ±{90 - MAX_CAP_DEG + self.feather_deg:g}°"
            )
        if self.fov_deg >= 170.0:
            raise InvalidInputError(f"cap + context = {self.cap_deg + self.context_deg:g}° is too wide; keep it below 85°")
        unknown = set(self.poles) - set(POLE_PITCH)
        if not self.poles or unknown:
            raise InvalidInputError(f"poles must be 'up', 'down' or both, got {', '.join(self.poles) or 'none'}")
        if self.view_size is not None and (self.view_size < 64 or self.view_size % 8):
            raise InvalidInputError(f"pole view size must be a multiple of 8 pixels >= 64, got {self.view_size}")
        return self


def check_panorama_shape(height: int, width: int, what: str = "input") -> None:
    """A 2:1 sphere or a wider cylindrical band with an even width, else one clear line."""
    if width < 16 or height < 8 or width % 2 or 2 * height > width:
        raise InvalidInputError(
            f"the {what} is {height}x{width}, which is not an equirectangular panorama; give a 2:1 image (or a "
            "wider 360° strip) with an even width"
        )


def settings_for(height: int, width: int, settings: PoleSettings) -> PoleSettings:
    """``settings`` with the cap widened so that a band's missing rows are regenerated (see module doc)."""
    check_panorama_shape(height, width)
    extent = 180.0 * height / width  # half the band's latitude span in degrees (90 for a sphere)
    needed = 90.0 - extent + settings.feather_deg
    if extent < 90.0 and settings.cap_deg < needed:
        settings = replace(settings, cap_deg=needed)
    return settings.check()


def band_to_sphere(band: Tensor) -> Tensor:
    """A cylindrical band [B, C, H, W] (W > 2H) centred on the full 2:1 canvas [B, C, W/2, W]; missing
    rows repeat the band's first/last row (they are regenerated anyway). A sphere is returned as is."""
    height, width = band.shape[-2:]
    full = width // 2
    if height == full:
        return band
    top = (full - height) // 2
    return F.pad(band, (0, 0, top, full - height - top), mode="replicate")


def pole_views(equirect: Tensor, settings: PoleSettings, view_size: int, mode: str = "bicubic") -> Tensor:
    """The pole views [B, P, C, s, s] of a 2:1 panorama [B, C, H, W] (P = len(settings.poles))."""
    pitch = [POLE_PITCH[p] for p in settings.poles]
    return equirect_to_perspective(equirect, yaw_deg=0.0, pitch_deg=pitch, fov_deg=settings.fov_deg,
                                   out_hw=(view_size, view_size), mode=mode)


def view_polar_angle(view_size: int, fov_deg: float, device=None) -> Tensor:
    """Angle (degrees) between each pixel centre's ray and the view axis: [s, s]."""
    tan_half = math.tan(math.radians(fov_deg) / 2)
    t = (2.0 * (torch.arange(view_size, device=device, dtype=torch.float64) + 0.5) / view_size - 1.0) * tan_half
    return torch.rad2deg(torch.atan(torch.hypot(t[None, :], t[:, None]))).float()


def pole_view_mask(settings: PoleSettings, view_size: int, device=None) -> Tensor:
    """[1, 1, s, s] inpainting mask of a pole view: 1 inside the cap (regenerate), 0 in the context ring."""
    return (view_polar_angle(view_size, settings.fov_deg, device) < settings.cap_deg).float()[None, None]


def pole_alpha(height: int, width: int, settings: PoleSettings, pole: str, device=None) -> Tensor:
    """Blend weight [1, 1, H, W] of a regenerated pole view on a 2:1 canvas (see the module docstring)."""
    _, lat = equirect_lonlat(height, width, device=device, dtype=torch.float64)
    theta = 90.0 - torch.rad2deg(lat if pole == "up" else -lat)
    return ((settings.cap_deg - theta) / settings.feather_deg).clamp(0, 1).float()[None, None]


def blend_poles(equirect: Tensor, views: Tensor, settings: PoleSettings) -> Tensor:
    """Blend regenerated pole views [B, P, C, s, s] into a 2:1 panorama [B, C, H, W].

    Rows outside the caps (|latitude| < 90° − cap) are returned bit for bit.
    """
    height, width = equirect.shape[-2:]
    out = equirect.clone()
    cap_rows = min(height, math.ceil(height * settings.cap_deg / 180.0) + 1)  # rows that can be inside a cap
    for index, pole in enumerate(settings.poles):
        projected, _ = perspective_to_equirect(views[:, index:index + 1], yaw_deg=0.0, pitch_deg=POLE_PITCH[pole],
                                               fov_deg=settings.fov_deg, out_hw=(height, width), mode="bicubic")
        alpha = pole_alpha(height, width, settings, pole, equirect.device).to(equirect.dtype)
        rows = slice(0, cap_rows) if pole == "up" else slice(height - cap_rows, height)
        a = alpha[..., rows, :]
        out[..., rows, :] = torch.where(a > 0, a * projected[..., rows, :].to(out.dtype) + (1 - a) * out[..., rows, :],
                                        out[..., rows, :])
    return out
