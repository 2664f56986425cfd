"""Test support: seam measurements on panoramas (shared by the method tests)."""

import numpy as np
import torch


def column_jumps(image):
    """Mean absolute difference between neighbouring pixel columns [W-1] and across the seam."""
    interior = np.abs(np.diff(image, axis=1)).mean(axis=(0, 2))
    seam = np.abs(image[:, 0] - image[:, -1]).mean()
    return interior, seam


def smooth_latents(seed, height, width):
    """Low-frequency latents, periodic across the width, unit variance [1, 4, height, width] (latent units).

    Random tiny models turn white noise into white-noise-like images whose neighbouring columns are
    as different as any two columns, so no seam could be seen; smooth latents give smooth panoramas in
    which a seam stands out.
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(height).float()[:, None]
    x = torch.arange(width).float()[None]
    latents = torch.zeros(1, 4, height, width)
    for channel in range(4):
        for kx in (1, 2):
            for ky in (0, 1):
                phase = torch.rand(2, generator=gen) * 2 * torch.pi
                latents[0, channel] += torch.cos(2 * torch.pi * kx * x / width + phase[0]) * torch.cos(
                    torch.pi * ky * (y + 0.5) / height + phase[1])
    return latents / latents.std()
