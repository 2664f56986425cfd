"""VGG16, VGG19 and AlexNet convolutional trunks with torchvision's layer indices and key names.

torchvision cannot be imported here, so the ``features`` part of its classification networks is
rebuilt layer for layer: the same ``nn.Sequential`` indices, hence the same state-dict keys
(``features.<i>.weight`` / ``.bias``). The official weight files (``vgg16-397923af.pth``,
``vgg19-dcbb9e9d.pth``, ``alexnet-owt-7be5be79.pth``) load into it directly; their ``classifier.*``
keys are not needed for perceptual features and are skipped.

Differences from torchvision that do not change any output: ReLUs are not in-place (callers read
pre-activation conv outputs), and there is no classifier head.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .weights import fetch_weights, load_checkpoint, load_matching_state_dict

# torchvision's VGG configurations ("D" = VGG16, "E" = VGG19): channels of 3x3 convs, "M" = 2x2 max pool.
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}
TRUNKS = ("vgg16", "vgg19", "alexnet")


def vgg_features(config: list[int | str]) -> nn.Sequential:
    """VGG ``features``: Conv3x3(pad 1) + ReLU per number, MaxPool2d(2, 2) per "M" (no batch norm)."""
    layers: list[nn.Module] = []
    channels = 3
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return nn.Sequential(*layers)


def alexnet_features() -> nn.Sequential:
    """torchvision's AlexNet ``features`` (the "one weird trick" variant: 64-192-384-256-256 channels)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
    )


class Trunk(nn.Module):
    """A torchvision-compatible convolutional trunk: ``self.features`` holds the layers.

    ``forward(x, taps)`` runs ``features`` up to the largest index in ``taps`` and returns the output
    of each tapped layer index, in order. Input: [B, 3, H, W], ImageNet-normalised by the caller.
    """

    def __init__(self, arch: str):
        super().__init__()
        if arch not in TRUNKS:
            raise ValueError(f"unknown trunk {arch!r}; use one of {TRUNKS}")
        self.arch = arch
        self.features = alexnet_features() if arch == "alexnet" else vgg_features(VGG_CONFIGS[arch])

    def forward(self, x: torch.Tensor, taps: list[int]) -> list[torch.Tensor]:
        wanted = sorted(set(taps))
        outputs: dict[int, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in wanted:
                outputs[index] = x
                if index == wanted[-1]:
                    break
        return [outputs[t] for t in taps]

    def load_torchvision(self, weights_dir: str | os.PathLike | None = None) -> Trunk:
        """Load the official torchvision file (``features.*`` keys; ``classifier.*`` skipped)."""
        path = fetch_weights(self.arch, weights_dir)
        load_matching_state_dict(
            self, load_checkpoint(path), source=str(path), ignore=lambda key: key.startswith("classifier.")
        )
        return self


def build_trunk(arch: str, pretrained: bool = True, weights_dir: str | os.PathLike | None = None) -> Trunk:
    """A frozen trunk in eval mode, with the official weights unless ``pretrained=False`` (random init)."""
    trunk = Trunk(arch)
    if pretrained:
        trunk.load_torchvision(weights_dir)
    trunk.requires_grad_(False)
    return trunk.eval()
