"""Rotating a whole panorama: resampled yaw/pitch/roll, and the exact integer-column yaw roll."""

from __future__ import annotations

import torch
from torch import Tensor

from .coords import AngleLike, cached_equirect_directions, rotation_matrix
from .sampling import Mode, check_mode, sample_equirect, work_dtype


def rotate_equirect(
    equirect: Tensor, yaw_deg: AngleLike = 0.0, pitch_deg: AngleLike = 0.0, roll_deg: AngleLike = 0.0,
    mode: Mode = "bilinear", inverse: bool = False,
) -> Tensor:
    """Rotate the *content* of panoramas [B, C, H, W] by R = R_yaw·R_pitch·R_roll (degrees).

    What was at the image centre (lon 0, lat 0) moves to lon = yaw, lat = pitch: ``yaw_deg = 360·k/W``
    is ``torch.roll(equirect, k, dims=-1)`` (up to interpolation round-off; use :func:`roll_yaw` for the
    exact, lossless version). ``inverse=True`` applies R⁻¹, undoing the same call without it. Angles
    are numbers (one rotation for the batch) or 1-D of length B (one per panorama). Full spheres only.
    """
    check_mode(mode)
    batch, _, height, width = equirect.shape
    if width != 2 * height:
        raise ValueError(f"rotation needs a full-sphere 2:1 panorama, got {height}x{width}")
    rotation = rotation_matrix(yaw_deg, pitch_deg, roll_deg, device=equirect.device)  # [N, 3, 3]
    if rotation.shape[0] not in (1, batch):
        raise ValueError(f"{rotation.shape[0]} rotations for a batch of {batch}")
    directions = cached_equirect_directions(height, width, equirect.device, torch.float64)
    # out(d) = in(R^T d); inverse: out(d) = in(R d)
    pattern = "nij,hwj->nhwi" if inverse else "nji,hwj->nhwi"
    source = torch.einsum(pattern, rotation, directions).to(work_dtype(equirect.dtype))
    if source.shape[0] == 1:
        return sample_equirect(equirect, source[0], mode)
    return sample_equirect(equirect, source, mode, per_batch=True)


def roll_yaw(equirect: Tensor, columns: int) -> Tensor:
    """Exact yaw rotation by whole columns: content moves ``columns`` to the right (``torch.roll``).

    A yaw of ``360·columns/W`` degrees; lossless, and cheap enough for the denoising loop.
    """
    return torch.roll(equirect, shifts=int(columns), dims=-1)


def yaw_to_columns(yaw_deg: float, width: int) -> int:
    """Columns matching a yaw angle, rounded to the nearest whole column."""
    return round(float(yaw_deg) / 360.0 * width)
