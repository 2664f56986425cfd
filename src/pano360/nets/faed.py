"""PanFusion's panorama autoencoder for FAED (Fréchet AutoEncoder Distance).

Architecture (PanFusion ``models/faed/modules.py``, originally from BIPS): every convolution pads
its input *circularly along the width* and with zeros along the height, then convolves without
padding. Blocks:

* ``ConvBlock``: conv → BatchNorm → ReLU;
* ``ResBlock``: conv → BN → ReLU → conv → BN, plus the input (no ReLU after the sum);
* encoder: 9x9 conv 3→32, then ResBlock(k) and a stride-2 4x4 ConvBlock five times
  (32→64→128→128→128→128 with ResBlock kernels 9, 7, 5, 3, 3), then a 3x3 ``fuse`` conv:
  [B, 3, H, W] → [B, 128, H/32, W/32];
* decoder (only needed so the checkpoint loads strictly): five bilinear x2 upsamplings with ConvBlocks
  and ResBlocks (kernels 3, 5, 7, 9), a 9x9 output conv and tanh.

Checkpoint: PanFusion's ``faed.ckpt`` is a Lightning checkpoint whose ``state_dict`` holds
``net.encoder.*`` and ``net.decoder.*`` keys (``FAED.net`` is the autoencoder).

Features (PanFusion ``FrechetAutoEncoderDistance.get_activation``): uint8 panorama → ``x/127.5 - 1`` →
encoder → mean over the width → each of the H/32 rows weighted by cos(latitude) with latitudes
``linspace(+pi/2, -pi/2, H/32)`` → flattened to 128·H/32 = 4H values (2048 at 512x1024).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from .weights import fetch_weights, load_checkpoint, load_matching_state_dict

__all__ = ["FAEDEncoder", "PanoAutoEncoder", "faed_features"]


class CircularConv(nn.Module):
    """Pad ``padding`` columns circularly and ``padding`` rows with zeros, then an unpadded conv."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.padding = padding
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.padding
        if p:
            x = F.pad(x, (0, 0, p, p))  # zeros above and below
            x = torch.cat([x[..., -p:], x, x[..., :p]], dim=-1)  # wrap around horizontally
        return self.conv2d(x)


class ConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.conv1 = CircularConv(in_channels, out_channels, kernel_size, stride, padding)
        self.batchnorm1 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.batchnorm1(self.conv1(x)))


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int):
        super().__init__()
        padding = kernel_size // 2
        self.conv1 = CircularConv(channels, channels, kernel_size, 1, padding)
        self.batchnorm1 = nn.BatchNorm2d(channels)
        self.conv2 = CircularConv(channels, channels, kernel_size, 1, padding)
        self.batchnorm2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.batchnorm1(self.conv1(x)))
        return self.batchnorm2(self.conv2(out)) + x


class FAEDEncoder(nn.Module):
    """[B, 3, H, W] in [-1, 1] → [B, 128, H/32, W/32]."""

    def __init__(self):
        super().__init__()
        self.downconv1_rgb = CircularConv(3, 32, 9, 1, 4)
        self.downres1_rgb = ResBlock(32, 9)
        self.downconv2_rgb = ConvBlock(32, 64, 4, 2, 1)
        self.downres2_rgb = ResBlock(64, 7)
        self.downconv3_rgb = ConvBlock(64, 128, 4, 2, 1)
        self.downres3_rgb = ResBlock(128, 5)
        self.downconv4_rgb = ConvBlock(128, 128, 4, 2, 1)
        self.downres4_rgb = ResBlock(128, 3)
        self.downconv5_rgb = ConvBlock(128, 128, 4, 2, 1)
        self.downres5_rgb = ResBlock(128, 3)
        self.downconv6_rgb = ConvBlock(128, 128, 4, 2, 1)
        self.fuse = CircularConv(128, 128, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :3]
        for i in range(1, 6):
            x = getattr(self, f"downconv{i}_rgb")(x)
            x = getattr(self, f"downres{i}_rgb")(x)
        return self.fuse(self.downconv6_rgb(x))


class FAEDDecoder(nn.Module):
    """[B, 128, h, w] → [B, 3, 32h, 32w] in [-1, 1]."""

    def __init__(self):
        super().__init__()
        for level, (cin, cout, kernel) in zip(range(2, 6), [(128, 128, 3), (128, 128, 5), (128, 64, 7), (64, 32, 9)]):
            setattr(self, f"upconv{level}_rgb", ConvBlock(cin, cout, 3, 1, 1))
            setattr(self, f"upres{level}_rgb", ResBlock(cout, kernel))
        self.outconv_rgb = CircularConv(32, 3, 9, 1, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x = up(x)[:, :128]
        for level in range(2, 6):
            x = getattr(self, f"upres{level}_rgb")(getattr(self, f"upconv{level}_rgb")(x))
            x = up(x)
        return torch.tanh(self.outconv_rgb(x))


class PanoAutoEncoder(nn.Module):
    """The whole autoencoder (``encoder`` + ``decoder``), keys as in PanFusion's ``FAED.net``."""

    def __init__(self):
        super().__init__()
        self.encoder = FAEDEncoder()
        self.decoder = FAEDDecoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    @classmethod
    def from_checkpoint(cls, weights_dir: str | os.PathLike | None = None, path: str | os.PathLike | None = None):
        """Load ``faed.ckpt`` (Lightning: ``state_dict`` with ``net.`` keys; a bare state dict works too)."""
        path = path or fetch_weights("faed", weights_dir)
        checkpoint = load_checkpoint(path)
        state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else checkpoint
        prefix = "net." if any(k.startswith("net.") for k in state) else ""
        model = cls()
        load_matching_state_dict(model, state, source=str(path), prefix=prefix)
        return model.requires_grad_(False).eval()

    @classmethod
    def random(cls, seed: int = 0) -> PanoAutoEncoder:
        """Random weights (tests and smoke runs), seeded."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls()
        return model.requires_grad_(False).eval()


def faed_features(encoder: FAEDEncoder, images: torch.Tensor) -> torch.Tensor:
    """Latitude-weighted FAED features [B, 4H] of 0..255 panoramas [B, 3, H, W] (H divisible by 32)."""
    x = images.to(torch.float32) / 127.5 - 1
    x = x.to(next(encoder.parameters()).dtype)
    features = encoder(x).float().mean(dim=3)  # [B, 128, H/32]
    rows = features.shape[-1]
    weight = torch.cos(torch.linspace(math.pi / 2, -math.pi / 2, rows, device=features.device))
    return (features * weight).reshape(features.shape[0], -1)
