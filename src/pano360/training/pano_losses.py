"""DiT360's two panorama losses on the network's flow prediction (``--preset dit360``).

Both act on latents [B, C, h, w] (equirect, w = 2h) and return per-sample values [B] (mean over
channels and pixels), which the trainer weights like the main loss.

* **Cube loss** (DiT360 ``src/cube_map.py`` + ``src/dit360.py``): the MSE between the six cube faces
  (face edge h/2 latents, pano360's F R B L U D faces from
  :func:`pano360.geometry.cubemap.equirect_to_cubemap`, bilinear) of the prediction and of the target.
  DiT360's code compares the faces of the *velocity* v̂ with those of ε − x0 (``space="velocity"``,
  the preset's choice); ``space="x0"`` compares the faces of x̂0 = x_t − σ·v̂ with those of x0, which
  is the velocity loss times σ² (x̂0 − x0 = σ·(v − v̂), and face sampling is linear).
* **Yaw loss**: the network is run again on x_t turned about the vertical axis by an angle drawn from
  {60°, 180°, 300°} (DiT360's angles), snapped to whole tokens (a roll of the latent columns), and its
  output is compared with the first prediction turned by the same angle: mean‖f(R·x_t) − R·f(x_t)‖².
  It is zero exactly when the prediction is roll-equivariant, whatever the target. DiT360's code
  instead turns v̂ and ε − x0 by the same angle (bilinear resampling) and takes their MSE, which is the
  main loss again up to interpolation, since a turn only moves columns; see docs/training.md.
  :func:`turned_pair_loss` is that form (``--yaw-loss-form dit360-code``), for reproducing its training.
"""

from __future__ import annotations

import torch

YAW_ANGLES_DEG = (60.0, 180.0, 300.0)


def cube_faces(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] equirect → [B, 6, C, h/2, h/2] cube faces (F R B L U D, bilinear)."""
    from ..geometry.cubemap import equirect_to_cubemap

    return equirect_to_cubemap(latents, max(1, latents.shape[-2] // 2), layout="stack")


def cube_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample MSE [B] between the cube faces of ``prediction`` and ``target`` [B, C, h, w]."""
    difference = cube_faces(prediction.float()) - cube_faces(target.float())
    return difference.square().reshape(difference.shape[0], -1).mean(dim=1)


def yaw_columns(angle_deg: float, width: int, multiple: int) -> int:
    """Latent columns of a turn by ``angle_deg`` (positive = to the right), a multiple of ``multiple``."""
    tokens = width // multiple
    return round(angle_deg / 360.0 * tokens) % tokens * multiple


def yaw_loss(network, noisy: torch.Tensor, prediction: torch.Tensor, columns: torch.Tensor | list[int]
             ) -> torch.Tensor:
    """Per-sample ‖f(roll(x_t)) − roll(f(x_t))‖² mean [B].

    ``network(x)`` gives the prediction for latents ``x`` [B, C, h, w]; ``prediction`` = network(noisy);
    ``columns`` [B] the roll of each sample in latent columns (whole tokens).
    """
    shifts = [int(c) for c in columns]
    rolled_input = torch.stack([torch.roll(x, s, dims=-1) for x, s in zip(noisy, shifts)])
    rolled_prediction = torch.stack([torch.roll(p, s, dims=-1) for p, s in zip(prediction, shifts)])
    difference = network(rolled_input).float() - rolled_prediction.float()
    return difference.square().reshape(difference.shape[0], -1).mean(dim=1)


def turn(latents: torch.Tensor, angle_deg: float) -> torch.Tensor:
    """[B, C, h, w] equirect turned about the vertical axis by ``angle_deg`` (positive = content moves
    right), a periodic shift by angle/360 · w columns with linear interpolation between the two nearest."""
    width = latents.shape[-1]
    shift = angle_deg / 360.0 * width
    whole = int(shift // 1)
    fraction = shift - whole
    moved = torch.roll(latents, whole, dims=-1)
    if fraction == 0:
        return moved
    return (1 - fraction) * moved + fraction * torch.roll(moved, 1, dims=-1)


def turned_pair_loss(prediction: torch.Tensor, target: torch.Tensor, angles_deg: list[float]) -> torch.Tensor:
    """DiT360's code's yaw loss, per sample [B]: the MSE between the prediction and the target both turned
    by the sample's angle (linear resampling). Equal to the plain MSE for turns by whole columns."""
    turned = [turn(p[None].float(), a) - turn(t[None].float(), a) for p, t, a in zip(prediction, target, angles_deg)]
    difference = torch.cat(turned)
    return difference.square().reshape(difference.shape[0], -1).mean(dim=1)
