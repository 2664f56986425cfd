"""LPIPS (Zhang et al. 2018), version 0.1, with VGG16 or AlexNet trunks: the ``lpips`` package's network.

Architecture, as in ``lpips.LPIPS(net=..., version="0.1")`` (lpips 0.1.4, used by SyncDiffusion):

1. inputs ``x, y`` in [-1, 1], scaled per channel: ``(x - shift) / scale`` with
   shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450);
2. trunk features at five ReLU outputs: VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
   (``features`` indices 3, 8, 15, 22, 29); AlexNet relu1..relu5 (indices 1, 4, 7, 9, 11);
3. each feature map unit-normalised over channels: ``f / (sqrt(sum_c f^2) + 1e-10)``;
4. squared difference, a learned 1x1 conv head without bias (``lin{k}.model.1.weight``, after a dropout
   that is inactive in eval mode), mean over the spatial positions, sum over the five layers.

Weights: the trunk from torchvision's ImageNet file, the heads from lpips' ``weights/v0.1/{vgg,alex}.pth``,
both by their original key names (see :mod:`pano360.nets.weights`).

Precision: the trunk runs in the module's dtype (fp32, or fp16/bf16 on a GPU after ``.to(dtype)``);
steps 3-4 always run in float32, because the sum of squared VGG activations overflows fp16. The
result is float32. Gradients flow to both inputs; the network's own parameters are frozen.
"""

from __future__ import annotations

import os
from typing import Protocol

import torch
from torch import nn

from .vgg import Trunk, build_trunk
from .weights import fetch_weights, load_checkpoint, load_matching_state_dict

__all__ = ["LPIPS", "LPIPS_CHANNELS", "LPIPS_TAPS", "PERCEPTUAL_NETS", "PerceptualDistance", "TinyPerceptual",
           "build_perceptual_net"]

LPIPS_TAPS = {"vgg": [3, 8, 15, 22, 29], "alex": [1, 4, 7, 9, 11]}
LPIPS_CHANNELS = {"vgg": [64, 128, 256, 512, 512], "alex": [64, 192, 384, 256, 256]}
_TRUNK_OF = {"vgg": "vgg16", "alex": "alexnet"}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class PerceptualDistance(Protocol):
    """What a perceptual loss must provide: ``distance(x, y) -> Tensor[B]`` for images in [-1, 1].

    Optional, for speed: ``features(y)`` and ``distance(features(x), features(y))`` with the same
    result. SyncDiffusion then computes the anchor's features once per step instead of per window.
    """

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


class NetLinLayer(nn.Module):
    """lpips' head: ``model = Sequential(Dropout(), Conv2d(C, 1, 1, bias=False))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, bias=False))


class LPIPS(nn.Module):
    """Learned perceptual distance. ``LPIPS(net="vgg"|"alex", weights_dir=None, pretrained=True)``.

    ``forward(x, y)``: x [B, 3, H, W] and y [B, 3, H, W] (or [1, 3, H, W], broadcast against x) in
    [-1, 1] → float32 distances [B]. ``pretrained=False`` builds random weights without reading any
    file (for tests). The module starts in eval mode with all parameters frozen.
    """

    def __init__(self, net: str = "vgg", weights_dir: str | os.PathLike | None = None, pretrained: bool = True):
        super().__init__()
        if net not in LPIPS_TAPS:
            raise ValueError(f"LPIPS net must be 'vgg' or 'alex', not {net!r}")
        self.net_name = net
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.net: Trunk = build_trunk(_TRUNK_OF[net], pretrained=pretrained, weights_dir=weights_dir)
        for k, channels in enumerate(LPIPS_CHANNELS[net]):
            setattr(self, f"lin{k}", NetLinLayer(channels))
        if pretrained:
            path = fetch_weights(f"lpips_{net}", weights_dir)
            heads = nn.ModuleDict({f"lin{k}": getattr(self, f"lin{k}") for k in range(5)})
            # lpips loads this file with strict=False; only its lin* keys are read here, all of them required
            load_matching_state_dict(heads, load_checkpoint(path), source=str(path),
                                     ignore=lambda key: not key.startswith("lin"))
        else:
            generator = torch.Generator().manual_seed(0)
            for k in range(5):  # lpips heads are non-negative; keep random ones so, too
                weight = getattr(self, f"lin{k}").model[1].weight
                with torch.no_grad():
                    weight.copy_(torch.rand(weight.shape, generator=generator) / weight.shape[1])
        self.requires_grad_(False)
        self.eval()

    @property
    def heads(self) -> list[nn.Conv2d]:
        return [getattr(self, f"lin{k}").model[1] for k in range(5)]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised float32 features at the five LPIPS layers of images in [-1, 1]."""
        dtype = self.net.features[0].weight.dtype
        scaled = (x.to(dtype) - self.shift.to(dtype)) / self.scale.to(dtype)
        outs = self.net(scaled, LPIPS_TAPS[self.net_name])
        normalised = []
        for feature in outs:
            feature = feature.float()
            norm = torch.sqrt(torch.sum(feature * feature, dim=1, keepdim=True))
            normalised.append(feature / (norm + 1e-10))
        return normalised

    def distance(self, fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS from :meth:`features` of both sides: lists of [B, C_k, h_k, w_k] (``fy`` may have B = 1).

        Lets a caller that compares many images with one target compute the target's features once.
        Returns float32 distances [B].
        """
        total = torch.zeros(fx[0].shape[0], dtype=torch.float32, device=fx[0].device)
        for a, b, head in zip(fx, fy, self.heads):
            diff = (a - b) ** 2
            if self.training:  # lpips applies dropout to the diffs in train mode
                diff = nn.functional.dropout(diff, p=0.5, training=True)
            weighted = (diff * head.weight.float().view(1, -1, 1, 1)).sum(dim=1)
            total = total + weighted.mean(dim=(1, 2))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if y.dim() == 3:
            y = y.unsqueeze(0)
        if x.shape[1:] != y.shape[1:] or (y.shape[0] not in (1, x.shape[0])):
            raise ValueError(f"LPIPS inputs must be [B,3,H,W] and [B or 1,3,H,W]; got {tuple(x.shape)}, {tuple(y.shape)}")
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
        if x.shape[0] == y.shape[0] and not needs_grad:
            # one trunk pass for both sides (faster without autograd; with it, a joint pass would also
            # backpropagate through the side that needs no gradient)
            both = self.features(torch.cat([x, y], dim=0))
            fx = [f[: x.shape[0]] for f in both]
            fy = [f[x.shape[0]:] for f in both]
        else:
            fx, fy = self.features(x), self.features(y)
        return self.distance(fx, fy)


# --- perceptual nets by name (SyncDiffusion's --perceptual-net) ---------------------------------------

PERCEPTUAL_NETS = {
    "lpips-vgg": "LPIPS v0.1 with VGG16 (SyncDiffusion's; files vgg16-397923af.pth + vgg.pth)",
    "lpips-alex": "LPIPS v0.1 with AlexNet (smaller; files alexnet-owt-7be5be79.pth + alex.pth)",
    "tiny-random": "a tiny random LPIPS-shaped net, no files (tiny test models and smoke runs; not a perceptual metric)",
}
"""Perceptual nets a SyncDiffusion run can use, by name. ``tiny-random`` needs no download, so tiny
models run offline; the LPIPS ones read their files from ``weights_dir`` when given (offline)."""

TINY_PERCEPTUAL_CHANNELS = (8, 16, 16)


class TinyPerceptual(nn.Module):
    """A tiny LPIPS-shaped distance with fixed random weights (seed 0), for tests and tiny models.

    Trunk: three 3×3 convolutions (3 → 8 → 16 → 16 channels, strides 1, 2, 2) with ReLUs, tapped
    after each; then exactly LPIPS' steps 3-4 (unit-normalised features, non-negative 1×1 heads,
    spatial mean, sum over taps). ``forward(x, y)``: [B, 3, H, W] and [B or 1, 3, H, W] in [-1, 1] →
    float32 [B]; ``features``/``distance`` as :class:`LPIPS`. About 4k parameters, frozen, eval mode.
    Deterministic: every instance has the same weights. It measures *a* smooth image distance, so the
    SyncDiffusion gradient path runs end to end, but its values mean nothing perceptually.
    """

    net_name = "tiny-random"

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        layers, previous = [], 3
        for index, channels in enumerate(TINY_PERCEPTUAL_CHANNELS):
            conv = nn.Conv2d(previous, channels, kernel_size=3, stride=1 if index == 0 else 2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) / (3 * previous) ** 0.5)
                conv.bias.zero_()
            layers.append(conv)
            previous = channels
        self.convs = nn.ModuleList(layers)
        self.heads_ = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in TINY_PERCEPTUAL_CHANNELS)
        with torch.no_grad():
            for head in self.heads_:
                head.weight.copy_(torch.rand(head.weight.shape, generator=generator) / head.weight.shape[1])
        self.requires_grad_(False)
        self.eval()

    @property
    def heads(self) -> list[nn.Conv2d]:
        return list(self.heads_)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised float32 features after each conv of images in [-1, 1]."""
        h = x.to(self.convs[0].weight.dtype)
        normalised = []
        for conv in self.convs:
            h = torch.relu(conv(h))
            feature = h.float()
            norm = torch.sqrt(torch.sum(feature * feature, dim=1, keepdim=True))
            normalised.append(feature / (norm + 1e-10))
        return normalised

    distance = LPIPS.distance  # LPIPS' steps 3-4 and input handling, on this trunk's features
    forward = LPIPS.forward


def build_perceptual_net(name: str = "lpips-vgg", weights_dir: str | os.PathLike | None = None) -> nn.Module:
    """The perceptual net called ``name`` (see :data:`PERCEPTUAL_NETS`), frozen, in eval mode, on the CPU.

    ``lpips-*`` read (or download once) their weight files, from ``weights_dir`` when given;
    ``tiny-random`` reads nothing. Unknown names raise ``ValueError`` listing the choices.
    """
    if name == "tiny-random":
        return TinyPerceptual()
    if name in ("lpips-vgg", "lpips-alex"):
        return LPIPS(net=name.split("-")[1], weights_dir=weights_dir)
    raise ValueError(f"unknown perceptual net {name!r}; choose one of: {', '.join(PERCEPTUAL_NETS)}")
