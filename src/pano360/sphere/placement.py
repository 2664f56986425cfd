"""A perspective photo on the sphere: its field of view, its place on an equirect canvas, and the
exact paste-back of its pixels with a feathered border.

Angles are in degrees, the FoV is **horizontal** and spans the photo's outer pixel edges (the
conventions of :mod:`pano360.geometry`). Images are [B, C, H, W] tensors.

Field of view from EXIF (:func:`fov_from_exif`): the 35 mm-equivalent focal length ``f35`` (tag
FocalLengthIn35mmFilm) refers to the 43.27 mm diagonal of a 36×24 mm frame (CIPA DC-004), so a
``w×h`` photo spans ``43.27·w/√(w²+h²)`` mm horizontally and ``hfov = 2·atan(that / (2·f35))``
(36 mm for 3:2 photos). Without it, the focal length in mm and the focal-plane resolution
(FocalPlaneXResolution, per inch or cm) give the sensor width: ``w / x_resolution · unit``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..geometry import equirect_to_perspective, perspective_to_equirect

MIN_PHOTO_SIDE = 64  # pixels: smaller photos carry too little to outpaint from
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 43.27 mm
EXIF_IFD = 0x8769
TAG_FOCAL_LENGTH = 0x920A
TAG_FOCAL_LENGTH_35MM = 0xA405
TAG_FOCAL_PLANE_X_RESOLUTION = 0xA20E
TAG_FOCAL_PLANE_UNIT = 0xA210
FOCAL_PLANE_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # inch, cm, mm, µm


def check_fov(fov_deg: float) -> float:
    """The horizontal FoV must lie strictly between 0° and 180° (a perspective camera)."""
    if not isinstance(fov_deg, (int, float)) or isinstance(fov_deg, bool) or not 0.0 < fov_deg < 180.0:
        raise InvalidInputError(f"field of view must be between 0 and 180 degrees (exclusive), got {fov_deg!r}")
    return float(fov_deg)


def check_photo_size(width: int, height: int) -> None:
    if min(width, height) < MIN_PHOTO_SIDE:
        raise InvalidInputError(
            f"the photo is {height}x{width} pixels, too small to outpaint from; give one at least "
            f"{MIN_PHOTO_SIDE} pixels on each side"
        )


def fov_from_focal_35mm(focal_35mm: float, width: int, height: int) -> float:
    """Horizontal FoV (degrees) of a ``width × height`` photo with a 35 mm-equivalent focal length."""
    sensor_width = FULL_FRAME_DIAGONAL_MM * width / math.hypot(width, height)
    return math.degrees(2.0 * math.atan(sensor_width / (2.0 * focal_35mm)))


def fov_from_exif(image) -> float | None:
    """Horizontal FoV (degrees) from a PIL image's EXIF, or None when it does not say.

    Tries FocalLengthIn35mmFilm, then FocalLength with FocalPlaneXResolution (the latter refers to
    the EXIF pixel width, so it is only used when the image has its original size).
    """
    try:
        exif = image.getexif()
        tags = dict(exif.get_ifd(EXIF_IFD)) | dict(exif)
    except (AttributeError, KeyError, OSError, TypeError, ValueError):  # no or broken EXIF
        return None
    width, height = image.size
    focal_35 = tags.get(TAG_FOCAL_LENGTH_35MM)
    if focal_35 and float(focal_35) > 0:
        return fov_from_focal_35mm(float(focal_35), width, height)
    focal = tags.get(TAG_FOCAL_LENGTH)
    resolution = tags.get(TAG_FOCAL_PLANE_X_RESOLUTION)
    unit = FOCAL_PLANE_UNIT_MM.get(int(tags.get(TAG_FOCAL_PLANE_UNIT, 2) or 2))
    if focal and resolution and unit and float(focal) > 0 and float(resolution) > 0:
        sensor_width = width / float(resolution) * unit
        return math.degrees(2.0 * math.atan(sensor_width / (2.0 * float(focal))))
    return None


@dataclass(frozen=True)
class Placement:
    """Where a photo sits on the sphere: camera yaw/pitch/roll and horizontal FoV in degrees, and
    the feather width in photo pixels (the band inside the photo's border where it fades into the
    generated surroundings)."""

    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    fov_deg: float = 90.0
    roll_deg: float = 0.0
    feather_px: float = 8.0

    def angles(self) -> dict:
        return {"yaw_deg": self.yaw_deg, "pitch_deg": self.pitch_deg, "fov_deg": self.fov_deg,
                "roll_deg": self.roll_deg}


def border_distance(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Distance in pixels from each pixel centre to the nearest image edge: [1, 1, H, W], 0.5 at the rim."""
    ys = torch.arange(height, device=device, dtype=dtype) + 0.5
    xs = torch.arange(width, device=device, dtype=dtype) + 0.5
    dy = torch.minimum(ys, height - ys)[:, None]
    dx = torch.minimum(xs, width - xs)[None, :]
    return torch.minimum(dy, dx)[None, None]


def place_photo(photo: Tensor, out_hw: tuple[int, int], placement: Placement) -> tuple[Tensor, Tensor, Tensor]:
    """Project a photo onto an equirect canvas.

    Args:
        photo: [B, C, h, w] any range.
        out_hw: (H, W) of the canvas in pixels.

    Returns:
        ``(canvas [B, C, H, W], covered [B, 1, H, W], alpha [B, 1, H, W])``: the photo resampled
        (bilinear) onto the sphere, 0 elsewhere; ``covered`` is 1 where the photo is seen, 0 outside;
        ``alpha`` in [0, 1] is the paste-back weight: 1 deeper than ``feather_px`` photo pixels inside
        its border, falling linearly to 0 at the border.
    """
    height, width = photo.shape[-2:]
    views = photo[:, None]
    canvas, covered = perspective_to_equirect(views, **placement.angles(), out_hw=out_hw)
    distance = border_distance(height, width, photo.device, torch.float32)[:, None]
    distance, _ = perspective_to_equirect(distance.expand(photo.shape[0], -1, -1, -1, -1), **placement.angles(),
                                          out_hw=out_hw)
    covered = (covered > 0).to(photo.dtype)
    feather = max(float(placement.feather_px), 1e-6)
    alpha = ((distance - 0.5) / feather).clamp(0, 1).to(photo.dtype) * covered
    return canvas, covered, alpha


def paste_back(panorama: Tensor, canvas: Tensor, alpha: Tensor) -> Tensor:
    """``alpha · canvas + (1 − alpha) · panorama``: where alpha is 1 the photo's pixels come back exactly."""
    return torch.where(alpha >= 1, canvas, alpha * canvas + (1 - alpha) * panorama)


def reproject_photo(panorama: Tensor, photo_hw: tuple[int, int], placement: Placement) -> Tensor:
    """The photo's view rendered back from a panorama: [B, C, h, w] (for checks and previews)."""
    return equirect_to_perspective(panorama, **placement.angles(), out_hw=photo_hw)[:, 0]


def interior_mask(photo_hw: tuple[int, int], feather_px: float, device=None) -> Tensor:
    """[1, 1, h, w] bool: photo pixels deeper than the feather band plus one pixel of resampling
    support (where the paste-back is exact)."""
    return border_distance(*photo_hw, device=device) > feather_px + 1.5
