"""Camera rigs as data: sets of views (yaw, pitch, roll, horizontal FoV in degrees).

A :class:`ViewRig` plugs straight into the view functions::

    rig = horizon_ring()                                   # MVDiffusion's 8 views
    views = equirect_to_perspective(pano, **rig.angles(), out_hw=(512, 512))   # [B, 8, C, 512, 512]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .coords import AngleLike, as_angle_tensor


@dataclass(frozen=True)
class ViewRig:
    """V cameras at the sphere's centre. Every field is a float64 tensor [V] in degrees."""

    yaw_deg: Tensor
    pitch_deg: Tensor
    roll_deg: Tensor
    fov_deg: Tensor
    names: tuple[str, ...] | None = None

    @classmethod
    def from_angles(
        cls, yaw_deg: AngleLike, pitch_deg: AngleLike = 0.0, fov_deg: AngleLike = 90.0,
        roll_deg: AngleLike = 0.0, names=None,
    ) -> ViewRig:
        """Broadcast numbers / 1-D sequences into a rig."""
        yaw, pitch, roll, fov = torch.broadcast_tensors(
            *(as_angle_tensor(v) for v in (yaw_deg, pitch_deg, roll_deg, fov_deg))
        )
        names = tuple(names) if names is not None else None
        if names is not None and len(names) != yaw.numel():
            raise ValueError(f"{len(names)} names for {yaw.numel()} views")
        return cls(yaw.clone(), pitch.clone(), roll.clone(), fov.clone(), names)

    def __len__(self) -> int:
        return int(self.yaw_deg.numel())

    def angles(self) -> dict[str, Tensor]:
        """Keyword arguments for :func:`equirect_to_perspective` / :func:`perspective_to_equirect`."""
        return {"yaw_deg": self.yaw_deg, "pitch_deg": self.pitch_deg, "roll_deg": self.roll_deg,
                "fov_deg": self.fov_deg}

    def __getitem__(self, index) -> ViewRig:
        index = torch.as_tensor(index).reshape(-1)
        names = tuple(self.names[int(i)] for i in index) if self.names is not None else None
        return ViewRig(self.yaw_deg[index], self.pitch_deg[index], self.roll_deg[index],
                       self.fov_deg[index], names)


def horizon_ring(n: int = 8, fov_deg: float = 90.0, pitch_deg: float = 0.0, start_deg: float = 0.0) -> ViewRig:
    """``n`` views around the horizon, yaw = start + 360·i/n (MVDiffusion: n = 8, 45° steps, FoV 90°)."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    yaw = start_deg + 360.0 * torch.arange(n, dtype=torch.float64) / n
    return ViewRig.from_angles(yaw, pitch_deg, fov_deg)


CUBE_FACE_NAMES = ("F", "R", "B", "L", "U", "D")


def cube_faces(fov_deg: float = 90.0) -> ViewRig:
    """The six cube-face cameras in F R B L U D order (FoV 90° gives exactly the cubemap faces).

    Front yaw 0, right yaw 90, back yaw 180, left yaw −90 (all pitch 0); up pitch +90, down pitch −90
    (yaw 0: the top of the up face borders the back face, the top of the down face borders front).
    """
    return ViewRig.from_angles(
        [0.0, 90.0, 180.0, -90.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, 90.0, -90.0], fov_deg,
        names=CUBE_FACE_NAMES,
    )


def random_views(
    n: int, seed: int = 0, fov_deg: float | tuple[float, float] = 90.0,
    pitch_range_deg: tuple[float, float] = (-90.0, 90.0), roll_range_deg: tuple[float, float] = (0.0, 0.0),
) -> ViewRig:
    """``n`` view directions uniform on the sphere (restricted to a pitch range), reproducible by seed.

    Yaw is uniform in [−180, 180); sin(pitch) is uniform over the pitch range (uniform on the sphere,
    like PanFusion's normalised-Gaussian sampler); roll is uniform in ``roll_range_deg``; ``fov_deg``
    is a number or a (low, high) range sampled uniformly.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    low, high = pitch_range_deg
    if not -90.0 <= low <= high <= 90.0:
        raise ValueError(f"pitch_range_deg must satisfy -90 <= low <= high <= 90, got {pitch_range_deg}")
    generator = torch.Generator().manual_seed(int(seed))
    u = torch.rand(4, n, generator=generator, dtype=torch.float64)
    yaw = -180.0 + 360.0 * u[0]
    s_low, s_high = math.sin(math.radians(low)), math.sin(math.radians(high))
    pitch = torch.rad2deg(torch.asin((s_low + (s_high - s_low) * u[1]).clamp(-1.0, 1.0)))
    roll = roll_range_deg[0] + (roll_range_deg[1] - roll_range_deg[0]) * u[2]
    if isinstance(fov_deg, (tuple, list)):
        fov = fov_deg[0] + (fov_deg[1] - fov_deg[0]) * u[3]
    else:
        fov = torch.full((n,), float(fov_deg), dtype=torch.float64)
    return ViewRig.from_angles(yaw, pitch, fov, roll)
