"""What training MVDiffusion's blocks needs per sample: views of an equirect at a random global yaw, their
cameras and captions' yaw, and the ε-MSE loss with one timestep shared by the views (digest §4).

The reference renders each view from Matterport3D's cube faces; here views come from any equirect image
through :func:`pano360.geometry.equirect_to_perspective` (bicubic). The loss goes through
:func:`pano360.backbones.guided.predict_noise`, the model call sampling uses too, and targets follow the
scheduler's prediction type (ε for SD 2 base, as in the reference).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .cameras import Cameras, cameras_from_rig


def training_rig(yaw_offset_deg: float, num_views: int = 8, fov_deg: float = 90.0):
    """The ring rotated by a global yaw: view i at (offset + 360·i/V) mod 360 degrees (the reference's
    ``(init_degree + 45·i) % 360``, with ``init_degree`` drawn from 0…359 per sample)."""
    from ...geometry.rigs import ViewRig

    yaw = [(yaw_offset_deg + 360.0 * i / num_views) % 360.0 for i in range(num_views)]
    return ViewRig.from_angles(yaw, 0.0, fov_deg)


def render_views(equirect: Tensor, yaw_offset_deg: float, num_views: int = 8, size: int = 512,
                 fov_deg: float = 90.0) -> tuple[Tensor, Cameras]:
    """Views [B, V, C, size, size] of equirects [B, C, H, W] (pixels, any range) and their cameras."""
    from ...geometry import equirect_to_perspective

    rig = training_rig(yaw_offset_deg, num_views, fov_deg)
    views = equirect_to_perspective(equirect, out_hw=(size, size), mode="bicubic", **rig.angles())
    return views, cameras_from_rig(rig, size, size)


def caption_yaw(yaw_deg: float) -> int:
    """The canonical yaw whose caption a view uses: the nearest multiple of 45° (mod 360)."""
    return int(round(yaw_deg / 45.0) * 45) % 360


def multiview_loss(network, scheduler, latents: Tensor, embeds: Tensor, cameras: Cameras,
                   generator: torch.Generator | None = None, pooled: Tensor | None = None) -> Tensor:
    """Mean squared error of the multi-view network's prediction for ``latents`` [B, V, C, h, w] (scaled
    VAE latents) noised at one random timestep per sample, shared by its V views.

    ``embeds`` [B·V, L, D]: each view's caption embedding (image-major); ``cameras``: the V views' rig.
    """
    from ...backbones.guided import predict_noise
    from ...backbones.parameterization import training_target

    batch, views = latents.shape[:2]
    steps = int(scheduler.config.num_train_timesteps)
    device = latents.device
    t = torch.randint(0, steps, (batch,), generator=generator, device=generator.device if generator else "cpu")
    t = t.to(device).repeat_interleave(views)  # [B·V]: one timestep per panorama
    flat = latents.flatten(0, 1)
    noise = torch.randn(flat.shape, generator=generator, device=generator.device if generator else "cpu")
    noise = noise.to(device=device, dtype=flat.dtype)
    noisy = scheduler.add_noise(flat, noise, t)
    output = predict_noise(network, noisy, t, embeds, pooled, cameras=cameras)
    target = training_target(scheduler, flat, noise, t)
    return torch.nn.functional.mse_loss(output.float(), target.float())
