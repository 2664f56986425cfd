"""MVDiffusion's pinhole cameras: K and R in float32, built the way the reference's ``get_K_R`` builds them.

The correspondence-aware attention's positional encoding uses frequencies up to 2^79, so most of its
channels are a hash of the float32 rounding in the camera matrices (digest §7). To reproduce the
released checkpoints' behaviour, K and R are built with the reference's exact arithmetic:

* K (pixels, "integer index = pixel centre"): f = 0.5·W / tan(FoV/2), c = ((W − 1)/2, (H − 1)/2),
  rounded to float32.
* R (camera → world, OpenCV axes: x right, y down, z forward) = R2·R1, R1 a Rodrigues rotation of
  θ = yaw about y, R2 one of φ = pitch about R1·x. The reference ran numpy 1.23, where a float32
  axis times a float64 angle stays float32, so the rotation vector is rounded to float32 *before*
  OpenCV's Rodrigues formula (evaluated in float64: R = cos θ·I + (1 − cos θ)·r rᵀ + sin θ·[r]×),
  whose result is rounded to float32; the product R2·R1 is a float32 matmul.

Positive yaw turns the camera right, positive pitch looks up (pano360's rig convention). Yaw is taken
modulo 360 like the reference's ``(init_degree + 45·i) % 360``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


def _rodrigues(vector: np.ndarray) -> np.ndarray:
    """OpenCV's ``Rodrigues`` for a float32 rotation vector: float64 arithmetic, float32 result [3, 3]."""
    r = vector.astype(np.float64)
    theta = math.sqrt(float(r[0] * r[0] + r[1] * r[1] + r[2] * r[2]))
    if theta < np.finfo(np.float64).eps:
        return np.eye(3, dtype=np.float32)
    c, s = math.cos(theta), math.sin(theta)
    c1 = 1.0 - c
    x, y, z = (float(v) * (1.0 / theta) for v in r)
    rrt = np.array([[x * x, x * y, x * z], [x * y, y * y, y * z], [x * z, y * z, z * z]], np.float64)
    cross = np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], np.float64)
    rotation = c * np.eye(3) + c1 * rrt + s * cross
    return rotation.astype(np.float32)


def get_k_r(fov_deg: float, yaw_deg: float, pitch_deg: float, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(K, R) float32 [3, 3] of one view: horizontal FoV and angles in degrees, size in pixels."""
    f = 0.5 * width * 1 / np.tan(0.5 * fov_deg / 180.0 * np.pi)
    K = np.array([[f, 0, (width - 1) / 2.0], [0, f, (height - 1) / 2.0], [0, 0, 1]], np.float32)
    y_axis = np.array([0.0, 1.0, 0.0], np.float32)
    x_axis = np.array([1.0, 0.0, 0.0], np.float32)
    R1 = _rodrigues((y_axis * np.float32(np.radians(yaw_deg))).astype(np.float32))
    R2 = _rodrigues((np.dot(R1, x_axis) * np.float32(np.radians(pitch_deg))).astype(np.float32))
    return K, (R2 @ R1).astype(np.float32)


@dataclass(frozen=True, eq=False)
class Cameras:
    """A ring (or any set) of V pinhole cameras at one centre, all of one view size.

    Attributes:
        K: [V, 3, 3] float32 intrinsics in pixels (index = pixel centre).
        R: [V, 3, 3] float32 camera→world rotations (OpenCV camera axes).
        height, width: the view size in pixels (latent size × 8).
    """

    K: Tensor
    R: Tensor
    height: int
    width: int

    def __post_init__(self):
        for name in ("K", "R"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or value.ndim != 3 or tuple(value.shape[1:]) != (3, 3):
                raise ValueError(f"cameras.{name} must be a [V, 3, 3] tensor, got "
                                 f"{tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__}")
        if self.K.shape[0] != self.R.shape[0] or self.K.shape[0] < 2:
            raise ValueError(f"cameras need the same number (≥ 2) of K and R, got {self.K.shape[0]} and {self.R.shape[0]}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"camera view size must be positive, got {self.height}×{self.width}")
        object.__setattr__(self, "K", self.K.detach().to("cpu", torch.float32).contiguous())
        object.__setattr__(self, "R", self.R.detach().to("cpu", torch.float32).contiguous())

    def __len__(self) -> int:
        return int(self.K.shape[0])

    def key(self) -> tuple:
        """A hashable identity (exact float32 bytes and view size) for caches."""
        return (self.height, self.width, self.K.numpy().tobytes(), self.R.numpy().tobytes())

    def roll(self, shift: int) -> Cameras:
        """The same cameras with view i moved to position i + shift (mod V)."""
        return Cameras(torch.roll(self.K, shift, 0), torch.roll(self.R, shift, 0), self.height, self.width)


def ring_cameras(n: int = 8, fov_deg: float = 90.0, height: int = 512, width: int | None = None,
                 pitch_deg: float = 0.0, start_deg: float = 0.0) -> Cameras:
    """``n`` views around the horizon, yaw = start + 360·i/n degrees (MVDiffusion: 8 views, 45° steps)."""
    from ...geometry.rigs import horizon_ring

    return cameras_from_rig(horizon_ring(n, fov_deg, pitch_deg, start_deg), height, width or height)


def cameras_from_rig(rig, height: int, width: int) -> Cameras:
    """Cameras for a :class:`pano360.geometry.rigs.ViewRig` (roll must be 0: the reference has none)."""
    if bool((rig.roll_deg != 0).any()):
        raise ValueError("MVDiffusion cameras have no roll; pass explicit Cameras(K, R, height, width) for a rolled rig")
    Ks, Rs = [], []
    for yaw, pitch, fov in zip(rig.yaw_deg.tolist(), rig.pitch_deg.tolist(), rig.fov_deg.tolist()):
        yaw = yaw % 360.0
        yaw = int(yaw) if float(yaw).is_integer() else yaw
        K, R = get_k_r(fov, yaw, pitch, height, width)
        Ks.append(K)
        Rs.append(R)
    return Cameras(torch.from_numpy(np.stack(Ks)), torch.from_numpy(np.stack(Rs)), int(height), int(width))
