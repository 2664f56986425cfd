"""Measures for the acceptance checks of full-sphere outputs: the wrap seam and the cube-face edges.

Both compare a step across a boundary with the typical step between neighbouring pixels inside, so
they are scale-free: about 1 (seam) or "edge ≤ interior" (cube faces) for a seamless image, larger
when a boundary shows.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..geometry import equirect_to_cubemap
from ..geometry.cubemap import _pad_faces


def seam_ratio(images: Tensor) -> float:
    """mean |first column − last column| / mean |column x+1 − column x| over the interior, for
    images [B, C, H, W] (any value range; uint8 is converted to float)."""
    x = images.double()
    seam = (x[..., 0] - x[..., -1]).abs().mean()
    interior = (x[..., 1:] - x[..., :-1]).abs().mean()
    return float(seam / interior.clamp_min(1e-12))


def cube_seam_discontinuity(equirect: Tensor, face_size: int, faces=("U", "D")) -> tuple[float, float]:
    """(mean |step| across the four edges of the given cube faces, mean |step| between adjacent texels
    inside those faces), both per channel value, from the panorama's cubemap (texel centres; corners
    of the edge rings excluded). A seam shows as the first being clearly larger than the second."""
    cube = equirect_to_cubemap(equirect, face_size, layout="stack")  # [B, 6, C, s, s]
    padded = _pad_faces(cube, 1)
    names = ("F", "R", "B", "L", "U", "D")
    edge_steps, inner_steps = [], []
    for name in faces:
        f = names.index(name)
        face, ring = cube[:, f], padded[:, f]
        inner = slice(1, face_size - 1)
        edge_steps += [
            (ring[..., 0, 1:-1][..., inner] - face[..., 0, inner]).abs().flatten(),
            (ring[..., -1, 1:-1][..., inner] - face[..., -1, inner]).abs().flatten(),
            (ring[..., 1:-1, 0][..., inner] - face[..., inner, 0]).abs().flatten(),
            (ring[..., 1:-1, -1][..., inner] - face[..., inner, -1]).abs().flatten(),
        ]
        inner_steps += [(face[..., :, 1:] - face[..., :, :-1]).abs().flatten(),
                        (face[..., 1:, :] - face[..., :-1, :]).abs().flatten()]
    return float(torch.cat(edge_steps).float().mean()), float(torch.cat(inner_steps).float().mean())
