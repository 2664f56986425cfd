"""The view protocols the metrics are computed on, seeded and reproducible.

PanFusion / UniPano (``EvalPanoGen``), for panoramas [B, 3, H, 2H]:

* ``rolled``: the panorama rolled by W/2 columns, so the left/right seam sits in the middle;
* ``random``: 20 directions uniform on the sphere per panorama, 90° FoV, 299x299 views;
* ``seam``: 20 views per panorama looking at yaw 180° (the seam) with pitch drawn as above;
* ``horizon``: MVDiffusion's 8 views, yaw 0, 45, ..., 315°, pitch 0, 90° FoV, 299x299.

Views are rendered bilinearly from the uint8 panorama scaled to [0, 1] and turned back into uint8 by
truncation, ``(x * 255).byte()``, which is what torchmetrics' FID/IS do with ``normalize=True`` inputs.
The directions of panorama *i* are drawn from a generator seeded with ``(seed, i)``, so a generated
panorama and the reference panorama with the same index get the same directions (as PanFusion's),
independent of batch sizes. PanFusion draws from numpy's global RNG instead, so its exact directions
cannot be reproduced; the distribution (uniform on the sphere) is the same.

SyncDiffusion, for strips [B, 3, H, W] (any W >= 2H):

* ``grid_crops``: non-overlapping ``crop`` x ``crop`` windows at stride ``crop`` (row-major), the crops
  of Intra-LPIPS and Intra-Style-L;
* ``random_square_crop``: one random ``crop``-wide window per panorama, numpy ``RandomState(2023)``
  drawing the x offset with ``randint(0, W - crop)`` as ``crop_panorama.py`` does, for CLIP/FID/KID/GIQA.
"""

from __future__ import annotations

import numpy as np
import torch

from ..geometry import equirect_to_cubemap, equirect_to_perspective
from ..geometry.rigs import ViewRig, horizon_ring, random_views

__all__ = [
    "VIEW_SIZE",
    "cube_faces",
    "grid_crops",
    "horizon_rig",
    "random_rig",
    "random_square_crop",
    "render_views",
    "roll_half",
    "seam_rig",
    "sync_crop_size",
]

VIEW_SIZE = 299


def roll_half(images: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] rolled by W // 2 columns (``torch.roll``, as PanFusion's rot_* metrics)."""
    return torch.roll(images, shifts=images.shape[-1] // 2, dims=-1)


def _seed(seed: int, index: int) -> int:
    return int(seed) * 1_000_003 + int(index)


def random_rig(index: int, count: int = 20, seed: int = 0) -> ViewRig:
    """``count`` 90° views uniform on the sphere for panorama ``index``."""
    return random_views(count, seed=_seed(seed, index), fov_deg=90.0)


def seam_rig(index: int, count: int = 20, seed: int = 0) -> ViewRig:
    """``count`` 90° views at yaw 180° (the seam), pitch as in :func:`random_rig` (another stream)."""
    rig = random_views(count, seed=_seed(seed + 7919, index), fov_deg=90.0)
    return ViewRig.from_angles(torch.full_like(rig.yaw_deg, 180.0), rig.pitch_deg, 90.0)


def horizon_rig() -> ViewRig:
    """MVDiffusion's 8 horizon views (yaw 0, 45, ..., 315°, pitch 0, FoV 90°)."""
    return horizon_ring(8, fov_deg=90.0)


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    return images.to(torch.float32) / 255.0


def _quantise(views: torch.Tensor) -> torch.Tensor:
    return (views.clamp(0, 1) * 255).to(torch.uint8)


def render_views(images: torch.Tensor, rigs: list[ViewRig], size: int = VIEW_SIZE) -> torch.Tensor:
    """Views of uint8 panoramas [B, 3, H, W], one rig per panorama → uint8 [B * V, 3, size, size].

    Panoramas that share a rig are rendered in one call.
    """
    if len(rigs) != images.shape[0]:
        raise ValueError(f"{len(rigs)} rigs for {images.shape[0]} panoramas")
    unit = _to_unit(images)
    outputs = []
    for i, rig in enumerate(rigs):
        views = equirect_to_perspective(unit[i:i + 1], **rig.angles(), out_hw=(size, size), mode="bilinear")
        outputs.append(_quantise(views[0]))
    return torch.cat(outputs, dim=0)


def render_shared_views(images: torch.Tensor, rig: ViewRig, size: int = VIEW_SIZE) -> torch.Tensor:
    """The same views of every panorama (e.g. the horizon ring) → uint8 [B * V, 3, size, size]."""
    views = equirect_to_perspective(_to_unit(images), **rig.angles(), out_hw=(size, size), mode="bilinear")
    return _quantise(views.flatten(0, 1))


def cube_faces(images: torch.Tensor, face_size: int) -> torch.Tensor:
    """uint8 cube faces [B, 6, 3, s, s] (F R B L U D) of uint8 panoramas, bilinear."""
    faces = equirect_to_cubemap(_to_unit(images), face_size, layout="stack", mode="bilinear")
    return _quantise(faces)


def sync_crop_size(height: int) -> int:
    """SyncDiffusion's window: 512 px (its panoramas are 512 high); the full height for lower panoramas."""
    return min(512, height)


def grid_crops(image: torch.Tensor, crop: int) -> list[torch.Tensor]:
    """Non-overlapping ``crop`` x ``crop`` windows of [C, H, W] at stride ``crop``, row-major."""
    height, width = image.shape[-2:]
    return [
        image[..., top:top + crop, left:left + crop]
        for top in range(0, height - crop + 1, crop)
        for left in range(0, width - crop + 1, crop)
    ]


def random_square_crop(images: torch.Tensor, crop: int, seed: int = 2023) -> torch.Tensor:
    """One ``crop`` x ``crop`` window per panorama [B, C, H, W]: x from ``randint(0, W - crop)``, seeded.

    Rows: the top ``crop`` rows when H == crop (SyncDiffusion's case); otherwise y is drawn the same way.
    """
    rng = np.random.RandomState(seed)
    height, width = images.shape[-2:]
    crops = []
    for image in images:
        left = int(rng.randint(0, width - crop)) if width > crop else 0
        top = int(rng.randint(0, height - crop)) if height > crop else 0
        crops.append(image[:, top:top + crop, left:left + crop])
    return torch.stack(crops)
