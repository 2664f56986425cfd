"""SyncDiffusion's coherence metrics between crops of one panorama: Intra-LPIPS and Intra-Style-L.

Both cut the panorama into non-overlapping square crops at a stride of the crop size
(:func:`~pano360.metrics.views.grid_crops`; 512 px, i.e. six crops of a 512x3072 panorama) and compare
all unordered pairs of crops (``itertools.combinations``). Lower means the crops look more alike.

* Intra-LPIPS (``eval_intra_lpips.py``): LPIPS-VGG (v0.1) on crops in [-1, 1]; the mean over pairs per
  panorama. The VGG features of every crop are computed once and reused for all its pairs.
* Intra-Style-L (``eval_style_loss.py``): the panorama resized so its shorter side is the crop size
  (torchvision ``Resize(512)``: PIL bilinear; skipped when it already is), ImageNet mean/std
  normalisation, VGG19 conv1_1, conv1_2, conv2_1, conv2_2, conv3_1 outputs *before* their ReLU
  (``features`` 0, 2, 5, 7, 10), Gram matrices ``F Fᵀ / (C·H·W)``, per pair the sum over the five
  layers of the mean squared Gram difference; per panorama the **sum** over pairs (as the original).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..nets.lpips import LPIPS
from ..nets.vgg import Trunk
from .views import grid_crops

__all__ = ["STYLE_TAPS", "gram_matrix", "intra_lpips", "intra_style_loss"]

STYLE_TAPS = [0, 2, 5, 7, 10]
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _pairs(count: int) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(count), 2))


@torch.no_grad()
def intra_lpips(image: torch.Tensor, lpips: LPIPS, crop: int, device="cpu") -> float:
    """Mean LPIPS over all pairs of ``crop``-px crops of one uint8 panorama [3, H, W]."""
    crops = torch.stack(grid_crops(image, crop)).to(device)
    if crops.shape[0] < 2:
        raise ValueError(f"a {tuple(image.shape[-2:])} panorama has fewer than two {crop}-px crops")
    features = lpips.features(crops.to(torch.float32) / 255.0 * 2 - 1)
    heads = [head.weight.float().view(1, -1, 1, 1) for head in lpips.heads]
    values = []
    for i, j in _pairs(crops.shape[0]):
        total = 0.0
        for feature, weight in zip(features, heads):
            total += float(((feature[i] - feature[j]) ** 2 * weight[0]).sum(dim=0).mean())
        values.append(total)
    return float(np.mean(values))


def gram_matrix(feature: torch.Tensor) -> torch.Tensor:
    """Gram matrix of one feature map [C, H, W] (or [1, C, H, W]): ``F Fᵀ / (C·H·W)``, float32."""
    feature = feature.float().reshape(feature.shape[-3], -1)
    return feature @ feature.T / feature.numel()


def _resize_shorter_side(image: torch.Tensor, size: int) -> torch.Tensor:
    from PIL import Image

    height, width = image.shape[-2:]
    if min(height, width) == size:
        return image
    if height <= width:
        new_h, new_w = size, int(size * width / height)
    else:
        new_h, new_w = int(size * height / width), size
    pil = Image.fromarray(image.permute(1, 2, 0).cpu().numpy())
    resized = pil.resize((new_w, new_h), Image.BILINEAR)
    return torch.from_numpy(np.asarray(resized).copy()).permute(2, 0, 1)


@torch.no_grad()
def intra_style_loss(image: torch.Tensor, vgg19: Trunk, crop: int, device="cpu") -> float:
    """Sum over all crop pairs of the VGG19 Gram (style) loss, for one uint8 panorama [3, H, W]."""
    resized = _resize_shorter_side(image, crop)
    crops = torch.stack(grid_crops(resized, crop)).to(device)
    if crops.shape[0] < 2:
        raise ValueError(f"a {tuple(image.shape[-2:])} panorama has fewer than two {crop}-px crops")
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)
    dtype = vgg19.features[0].weight.dtype
    x = ((crops.to(torch.float32) / 255.0 - mean) / std).to(dtype)
    grams = [[gram_matrix(f[0]) for f in vgg19(x[k:k + 1], STYLE_TAPS)] for k in range(x.shape[0])]
    total = 0.0
    for i, j in _pairs(len(grams)):
        total += sum(float(torch.mean((grams[j][layer] - grams[i][layer]) ** 2)) for layer in range(len(STYLE_TAPS)))
    return total
