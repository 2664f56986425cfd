"""Draw the figures of docs/fullsphere.md from a synthetic test panorama (no model involved).

    PYTHONPATH=src python docs/figures/make_fullsphere_figures.py

The test panorama is a latitude/longitude grid (lines every 15°, the seam column and the horizon
thicker) coloured by direction, so every projection shows where its pixels come from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pano360.geometry import equirect_lonlat
from pano360.sphere import placement as pl
from pano360.sphere import poles
from pano360.sphere.tiles import TileGrid

HERE = Path(__file__).parent


def grid_panorama(height: int = 256, width: int = 512) -> torch.Tensor:
    """[1, 3, H, W] in [0, 1]: direction colours with a 15° lat/long grid."""
    lon, lat = equirect_lonlat(height, width, dtype=torch.float64)
    x, y, z = torch.cos(lat) * torch.sin(lon), torch.sin(lat), torch.cos(lat) * torch.cos(lon)
    colour = torch.stack([0.55 + 0.35 * x, 0.55 + 0.35 * y, 0.55 + 0.35 * z])
    deg_lon, deg_lat = torch.rad2deg(lon), torch.rad2deg(lat)
    near = lambda v, step, tol: ((v / step - torch.round(v / step)).abs() * step) < tol
    lines = near(deg_lon, 15, 0.45) | near(deg_lat, 15, 0.45)
    strong = (deg_lon.abs() > 179.0) | (deg_lat.abs() < 0.6)
    colour = torch.where(lines, colour * 0.35, colour)
    colour = torch.where(strong, torch.tensor([0.9, 0.1, 0.1], dtype=torch.float64)[:, None, None], colour)
    return colour[None].float()


def to_image(tensor: torch.Tensor) -> Image.Image:
    array = (tensor[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(array))


def tint(base: torch.Tensor, mask: torch.Tensor, colour, strength: float = 0.45) -> torch.Tensor:
    colour = torch.tensor(colour, dtype=base.dtype)[None, :, None, None]
    return base * (1 - strength * mask) + colour * strength * mask


def poles_figure(pano: torch.Tensor) -> Image.Image:
    height, width = pano.shape[-2:]
    settings = poles.PoleSettings().check()
    full = poles.pole_alpha(height, width, settings, "up") + poles.pole_alpha(height, width, settings, "down")
    blend = ((full > 0) & (full < 1)).float()
    cap = (full >= 1).float()
    _, lat = equirect_lonlat(height, width)
    theta = 90 - torch.rad2deg(lat.abs())
    context = ((theta >= settings.cap_deg) & (theta < settings.cap_deg + settings.context_deg)).float()[None, None]
    shown = tint(tint(tint(pano, cap, (1.0, 0.2, 0.2)), blend, (1.0, 0.85, 0.1)), context, (0.1, 0.4, 1.0), 0.3)
    view = poles.pole_views(pano, settings, 256)[:, 0]
    mask = poles.pole_view_mask(settings, 256)
    view = tint(view, mask, (1.0, 0.2, 0.2), 0.35)
    canvas = Image.new("RGB", (width + 16 + 256, max(height, 256)), "white")
    canvas.paste(to_image(shown), (0, 0))
    canvas.paste(to_image(view), (width + 16, 0))
    return canvas


def photo_figure(pano: torch.Tensor) -> Image.Image:
    height, width = pano.shape[-2:]
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    checker = ((torch.floor(xx * 8) + torch.floor(yy * 6)) % 2)
    photo = torch.stack([0.3 + 0.6 * xx, 0.3 + 0.4 * checker, 0.9 - 0.6 * yy])[None]
    placement = pl.Placement(yaw_deg=60.0, pitch_deg=20.0, fov_deg=70.0, feather_px=10.0)
    canvas, _, alpha = pl.place_photo(photo, (height, width), placement)
    grey = pano.mean(1, keepdim=True).expand_as(pano) * 0.6 + 0.2
    shown = pl.paste_back(grey, canvas, alpha)
    ring = ((alpha > 0) & (alpha < 1)).float()
    shown = tint(shown, ring, (1.0, 0.85, 0.1), 0.6)
    return to_image(shown)


def tiles_figure(pano: torch.Tensor) -> Image.Image:
    height, width = pano.shape[-2:]
    grid = TileGrid.make((height // 8, width // 8), 24, 6).scaled(8)
    image = to_image(pano * 0.7 + 0.15)
    draw = ImageDraw.Draw(image)
    for tile in grid.tiles:
        colour = (255, 60, 60) if tile.left + tile.width > width else (40, 40, 40)
        for offset in (0, -width) if tile.left + tile.width > width else (0,):
            x0, y0 = tile.left + offset, tile.top
            draw.rectangle([x0, y0, x0 + tile.width - 1, y0 + tile.height - 1], outline=colour, width=1)
    return image


def main() -> None:
    pano = grid_panorama()
    poles_figure(pano).save(HERE / "fullsphere_poles.png", optimize=True)
    photo_figure(pano).save(HERE / "fullsphere_photo.png", optimize=True)
    tiles_figure(pano).save(HERE / "fullsphere_tiles.png", optimize=True)


if __name__ == "__main__":
    main()
