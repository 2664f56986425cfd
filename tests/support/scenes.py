"""Synthetic scenes with known geometry for the 3D tests: a box room, optionally with a free-standing box
inside, seen from a camera at the origin (pano360's frame: x right, y up, z forward).

``radial_depth(directions)`` gives the exact distance along each ray; ``render`` gives a textured
equirect panorama and its true depth; :class:`StandInDepthModel` plays a monocular depth model that
returns each view's true planar depth under a random scale and shift plus noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pano360.geometry import ViewRig, equirect_directions, rotation_matrix, view_directions


@dataclass
class Scene:
    room_min: tuple[float, float, float] = (-2.0, -1.5, -3.0)   # floor 1.5 m below the camera
    room_max: tuple[float, float, float] = (3.0, 1.2, 2.5)
    object_min: tuple[float, float, float] | None = None
    object_max: tuple[float, float, float] | None = None

    def radial_depth(self, directions: torch.Tensor, origin=(0.0, 0.0, 0.0)) -> torch.Tensor:
        """Unit rays [..., 3] from ``origin`` (inside the room) → distance to the first surface [...]."""
        d = directions.double()
        o = torch.tensor(origin, dtype=torch.float64)
        low = torch.tensor(self.room_min, dtype=torch.float64) - o
        high = torch.tensor(self.room_max, dtype=torch.float64) - o
        safe = torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
        exit_t = torch.where(safe > 0, high / safe, low / safe).amin(-1)  # inside the room: leave it
        if self.object_min is None:
            return exit_t
        o_low = torch.tensor(self.object_min, dtype=torch.float64) - o
        o_high = torch.tensor(self.object_max, dtype=torch.float64) - o
        t1, t2 = o_low / safe, o_high / safe
        near = torch.minimum(t1, t2).amax(-1)
        far = torch.maximum(t1, t2).amin(-1)
        hit = (far >= near) & (near > 0)
        return torch.where(hit, torch.minimum(near, exit_t), exit_t)

    def planes(self) -> list[tuple[int, float]]:
        """The room's six planes as (axis, coordinate)."""
        return [(axis, bound[axis]) for axis in range(3) for bound in (self.room_min, self.room_max)]

    def render(self, height: int = 64, width: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        """(panorama [1, 3, H, W] in [0, 1], true radial depth [H, W] float32) with a checker texture."""
        directions = equirect_directions(height, width, dtype=torch.float64)
        depth = self.radial_depth(directions)
        image = self.colour(directions * depth[..., None])
        return image.permute(2, 0, 1)[None].float(), depth.float()

    def colour(self, points: torch.Tensor) -> torch.Tensor:
        """Texture of the surfaces: [..., 3] points → [..., 3] RGB (a gradient times 0.5 m checkers)."""
        checker = (torch.floor(points * 2.0).sum(-1) % 2)
        colour = 0.25 + 0.5 * (points - torch.tensor(self.room_min)) / (
            torch.tensor(self.room_max) - torch.tensor(self.room_min))
        return (colour * (0.6 + 0.4 * checker[..., None])).clamp(0, 1)

    def camera_image(self, origin, yaw_deg: float, pitch_deg: float, hfov_deg: float, hw) -> torch.Tensor:
        """What a pinhole camera at ``origin`` (pano360 frame) sees: [h, w, 3] (exact ray casting)."""
        height, width = hw
        tan = torch.tan(torch.deg2rad(torch.tensor(hfov_deg / 2, dtype=torch.float64)))
        x = (2 * (torch.arange(width, dtype=torch.float64) + 0.5) / width - 1) * tan
        y = (1 - 2 * (torch.arange(height, dtype=torch.float64) + 0.5) / height) * tan * height / width
        rays = torch.stack(torch.broadcast_tensors(x[None, :], y[:, None], torch.ones(1, 1, dtype=torch.float64)), -1)
        rays = rays / rays.norm(dim=-1, keepdim=True)
        world = rays @ rotation_matrix(yaw_deg, pitch_deg)[0].T
        distance = self.radial_depth(world, origin)
        return self.colour(torch.tensor(origin, dtype=torch.float64) + world * distance[..., None])


BOX_ROOM = Scene()
OBJECT_ROOM = Scene(object_min=(-0.6, -1.5, 0.8), object_max=(0.5, -0.2, 1.6))


class StandInDepthModel:
    """Returns each view's true *planar* depth (or its inverse) under a random per-view affine map plus
    noise. Views arrive in the rig's order, batch after batch; the model counts them."""

    def __init__(self, scene: Scene, rig: ViewRig, *, prediction: str = "depth", noise: float = 0.003,
                 seed: int = 0):
        self.scene, self.rig, self.prediction, self.noise = scene, rig, prediction, noise
        self.generator = torch.Generator().manual_seed(seed)
        self.next_view = 0
        self.scales: list[float] = []
        self.shifts: list[float] = []
        self.name = "stand-in"

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        n, _, height, width = views.shape
        index = list(range(self.next_view, self.next_view + n))
        self.next_view += n
        sub = self.rig[index]
        rays = view_directions(**sub.angles(), out_hw=(height, width), dtype=torch.float64)  # [n, h, w, 3]
        forward = rotation_matrix(sub.yaw_deg, sub.pitch_deg, sub.roll_deg)[:, :, 2]
        radial = self.scene.radial_depth(rays)
        planar = radial * torch.einsum("nhwc,nc->nhw", rays, forward)
        value = planar if self.prediction == "depth" else 1.0 / planar
        scale = 0.5 + 2.0 * torch.rand(n, generator=self.generator, dtype=torch.float64)
        shift = (torch.rand(n, generator=self.generator, dtype=torch.float64) - 0.5) * float(value.mean())
        self.scales += scale.tolist()
        self.shifts += shift.tolist()
        noisy = value * (1 + self.noise * torch.randn(value.shape, generator=self.generator, dtype=torch.float64))
        return (scale[:, None, None] * noisy + shift[:, None, None]).float()
