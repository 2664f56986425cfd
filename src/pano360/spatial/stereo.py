"""Stereo 360 (omni-directional stereo, ODS) from a panorama and its depth, for VR headsets.

ODS: each eye sits on a circle of radius e = IPD/2 around the camera, and the eye that renders
longitude θ is the one whose line of sight at θ is tangent to that circle. A point at horizontal
distance ρ from the centre, azimuth φ and height y is therefore seen by

    left eye:  θ_L = φ + asin(e/ρ),      right eye:  θ_R = φ − asin(e/ρ),
    both:      latitude = atan2(y, √(ρ² − e²)),

so its angular disparity is 2·asin(e/ρ) (≈ IPD/ρ), i.e. 2·asin(e/ρ)·W/(2π) pixels in a W-wide image.
Within 60° of the horizon e is IPD/2; beyond, it fades to 0 at the poles (see :func:`ods_project`).
Each eye is rendered by forward-warping every panorama pixel to its ODS position with a z-buffer
(nearest surface wins; a second pass splats each pixel into its second-closest column where the first
left a gap, so surfaces that stretch leave no cracks).
Disocclusions (background that only one eye sees) are filled offline by extending the *background*
side of each hole along its row (the farther of the two neighbours); a ``fill`` callable (e.g. a
diffusion inpainting pass, ``fill(image [1, 3, H, W], holes [1, 1, H, W]) -> [1, 3, H, W]``) can refine them.

Layout: ``"tb"`` top-bottom (over-under) [3, 2H, W], left eye on top, the layout headset players
(Meta Quest gallery, Skybox VR, DeoVR, Pigasus) expect for "360 3D TB"; ``"sbs"`` side by side,
left eye left. Files carry XMP ``GSpherical:StereoMode`` (Google's spherical metadata) and
the suggested name suffix ``_360_TB`` / ``_360_LR`` that players use to detect the layout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..geometry import lonlat_to_unit

DEFAULT_IPD = 0.064  # metres, the adult average
LAYOUTS = ("tb", "sbs")
GSPHERICAL_NS = "http://ns.google.com/videos/1.0/spherical/"


POLE_FADE_DEG = 60.0


def ods_project(points: Tensor, eye: int, ipd: float, height: int, width: int,
                pole_fade_deg: float = POLE_FADE_DEG) -> tuple[Tensor, Tensor, Tensor]:
    """Points [..., 3] (pano360 frame) → (column, row, distance from the eye) [...] in eye ``eye``
    (+1 left, −1 right) of an H×W ODS panorama (pixel centres at integer coordinates).

    ODS breaks down towards the zenith and nadir (every eye direction there is horizontal), so the eye
    separation is full within ±``pole_fade_deg`` of the horizon and fades with cos(latitude) to 0 at the
    poles, where both eyes see the same (mono) image, as ODS renderers do."""
    x, y, z = points.unbind(-1)
    cos_lat = torch.hypot(x, z) / points.norm(dim=-1).clamp_min(1e-12)
    e = (ipd / 2.0) * (cos_lat / math.cos(math.radians(pole_fade_deg))).clamp(0.0, 1.0)
    rho = torch.maximum(torch.hypot(x, z), e * 1.0001).clamp_min(1e-12)
    phi = torch.atan2(x, z)
    theta = phi + eye * torch.asin(e / rho)
    tangent = torch.sqrt(rho.square() - e * e)
    lat = torch.atan2(y, tangent)
    col = (theta / (2 * math.pi) + 0.5) * width - 0.5
    row = (0.5 - lat / math.pi) * height - 0.5
    return col, row, torch.hypot(tangent, y)


def _fill_rows(image: Tensor, zbuf: Tensor, valid: Tensor) -> Tensor:
    """Fill invalid pixels of [3, H, W] from the farther of their nearest valid row neighbours (wrapping)."""
    height, width = valid.shape
    tiled = valid.repeat(1, 3)
    pos = torch.arange(3 * width).expand(height, -1)
    left = torch.where(tiled, pos, torch.full_like(pos, -1)).cummax(1).values[:, width:2 * width]
    right_src = torch.where(tiled, pos, torch.full_like(pos, 3 * width)).flip(1).cummin(1).values.flip(1)
    right = right_src[:, width:2 * width]
    has_left, has_right = left >= 0, right < 3 * width
    left, right = left.clamp(0, 3 * width - 1) % width, right.clamp(0, 3 * width - 1) % width
    rows = torch.arange(height)[:, None].expand(-1, width)
    z_left = torch.where(has_left, zbuf[rows, left], torch.full_like(zbuf, -1.0))
    z_right = torch.where(has_right, zbuf[rows, right], torch.full_like(zbuf, -1.0))
    source = torch.where(z_left >= z_right, left, right)
    filled = image[:, rows, source]
    return torch.where(valid[None], image, filled)


def render_eye(pano: Tensor, depth: Tensor, eye: int, ipd: float, supersample: int = 2) -> tuple[Tensor, Tensor]:
    """One ODS eye of ``pano`` [1, 3, H, W] with radial ``depth`` [H, W] (metres) → (image [1, 3, H, W],
    hole mask [1, 1, H, W] of the disocclusions that were filled). Splatting runs on a grid
    ``supersample`` times wider and is averaged back, so disparities are placed to 1/(2·supersample) px."""
    import torch.nn.functional as F

    if supersample > 1:
        wide = F.interpolate(pano, scale_factor=(1, supersample), mode="bilinear", align_corners=False)
        image, hole = render_eye(wide, depth.repeat_interleave(supersample, dim=1), eye, ipd, supersample=1)
        image = F.avg_pool2d(image, (1, supersample))
        hole = F.max_pool2d(hole.float(), (1, supersample)) > 0
        return image, hole
    _, channels, height, width = pano.shape
    lat = (0.5 - (torch.arange(height, dtype=torch.float64) + 0.5) / height) * math.pi
    lon = ((torch.arange(width, dtype=torch.float64) + 0.5) / width - 0.5) * 2 * math.pi
    lon, lat = torch.broadcast_tensors(lon[None, :], lat[:, None])
    points = lonlat_to_unit(lon, lat) * depth.double()[..., None]  # [H, W, 3]
    col, row, dist = ods_project(points, eye, ipd, height, width)
    row_i = row.round().long().clamp(0, height - 1).reshape(-1)
    dist = dist.reshape(-1).float()
    colour = pano[0].reshape(channels, -1)
    image = torch.zeros(channels, height * width)
    zbuf = torch.full((height * width,), float("inf"))
    nearest = col.round()
    other = torch.where(nearest > col, col.floor(), col.floor() + 1)  # the second-closest column
    for col_i in (nearest, other):  # 2nd pass only into pixels the 1st left empty: closes cracks, no bias
        target = row_i * width + (col_i.long().reshape(-1) % width)
        empty = torch.isinf(zbuf)
        use = empty[target]
        pass_z = torch.full((height * width,), float("inf")).scatter_reduce_(0, target[use], dist[use], reduce="amin")
        win = use & (dist <= pass_z[target])
        image[:, target[win]] = colour[:, win]
        zbuf = torch.where(empty, pass_z, zbuf)
    valid = torch.isfinite(zbuf).reshape(height, width)
    zmap = torch.where(valid, zbuf.reshape(height, width), torch.zeros(height, width))
    image = _fill_rows(image.reshape(channels, height, width), zmap, valid)
    empty_rows = ~valid.any(1)  # a row nothing landed in (never within the fade band): keep the source row
    image[:, empty_rows] = pano[0][:, empty_rows]
    return image[None], (~valid)[None, None]


def render_stereo(
    pano: Tensor, depth: Tensor, *, ipd: float = DEFAULT_IPD, layout: str = "tb",
    fill: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, dict]:
    """Stereo 360 pair of ``pano`` [1, 3, H, W] (float in [0, 1]) with ``depth`` [H, W] in metres.

    Returns (image [1, 3, 2H, W] for ``"tb"`` or [1, 3, H, 2W] for ``"sbs"``, info dict with the
    IPD, layout and the fraction of pixels that were disoccluded per eye).
    """
    if layout not in LAYOUTS:
        raise InvalidInputError(f"unknown stereo layout {layout!r}; use tb (top-bottom) or sbs (side by side)")
    if not (math.isfinite(ipd) and ipd > 0):
        raise InvalidInputError(f"--ipd must be a positive distance in metres, got {ipd}")
    eyes, holes = [], {}
    for name, eye in (("left", 1), ("right", -1)):
        image, hole = render_eye(pano[:, :3].float(), depth, eye, ipd)
        if fill is not None and bool(hole.any()):
            image = torch.where(hole, fill(image, hole).to(image.dtype), image)
        eyes.append(image.clamp(0, 1))
        holes[name] = round(float(hole.float().mean()), 6)
    stacked = torch.cat(eyes, dim=-2 if layout == "tb" else -1)
    return stacked, {"ipd_m": ipd, "layout": layout, "left_eye": "top" if layout == "tb" else "left",
                     "projection": "omni-directional stereo (ODS), equirectangular per eye",
                     "disoccluded_fraction": holes}


def stereo_xmp(layout: str, software: str = "pano360") -> str:
    """XMP packet with Google's spherical metadata (``GSpherical``) stating the stereo layout."""
    mode = "top-bottom" if layout == "tb" else "left-right"
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="pano360">\n'
        ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
        f'  <rdf:Description rdf:about="" xmlns:GSpherical="{GSPHERICAL_NS}"\n'
        '    GSpherical:Spherical="true" GSpherical:Stitched="true"\n'
        f'    GSpherical:StitchingSoftware="{software}" GSpherical:ProjectionType="equirectangular"\n'
        f'    GSpherical:StereoMode="{mode}"/>\n'
        " </rdf:RDF>\n</x:xmpmeta>\n"
        '<?xpacket end="w"?>'
    )


def stereo_suffix(layout: str) -> str:
    """The file-name tag players look for: ``_360_TB`` or ``_360_LR``."""
    return "_360_TB" if layout == "tb" else "_360_LR"


def write_stereo(image: Tensor, path: str | os.PathLike, layout: str, *, overwrite: bool = False) -> Path:
    """Write the stereo pair as PNG/JPEG with the stereo XMP, atomically."""
    from ..io.atomic import atomic_write_bytes
    from ..io.export import tensor_to_image
    from ..io.images import encode_image
    from ..io.xmp import embed_xmp

    data = encode_image(tensor_to_image(image[0]), path)
    return atomic_write_bytes(path, embed_xmp(data, stereo_xmp(layout)), overwrite=overwrite)
