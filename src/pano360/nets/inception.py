"""The FID InceptionV3: TensorFlow's 2015-12-05 Inception graph as pytorch-fid / torch-fidelity rebuild it.

The weights are the official port ``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's release; the
same file, same digest prefix, is torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``),
loaded by its key names (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, …,
``fc.weight`` [1008, 2048]).

The graph is torchvision's Inception3 with the TensorFlow quirks those libraries patch in:

* every conv has no bias and is followed by BatchNorm(eps=0.001) and ReLU;
* the average-pool branches of the 35x35 (``Mixed_5*``), 17x17 (``Mixed_6b-e``) and first 8x8
  (``Mixed_7b``) blocks exclude padding from the average (``count_include_pad=False``);
* the last block (``Mixed_7c``) pools its pool branch with a 3x3 *max* pool;
* outputs: the 2048-d global-average "pool3" features (FID, KID, GIQA) and the 1008-way logits without
  the fc bias, "logits_unbiased" (Inception Score, as torch-fidelity and torchmetrics compute it).

Pre-processing, chosen with ``resize=`` (input: uint8-valued images [B, 3, H, W] in 0..255):

``"tf1"`` (default; torch-fidelity, hence torchmetrics, hence PanFusion/UniPano's EvalPanoGen)
    float32 → bilinear resize to 299x299 exactly as TensorFlow 1.x ``resize_bilinear`` with
    ``align_corners=False`` (source = destination · in/out, no half-pixel offset, upper neighbour
    clamped to the border) → ``(x - 128) / 128``.
``"pytorch-fid"`` (pytorch-fid, GIQA)
    ``x / 255`` → ``F.interpolate(size=299, mode="bilinear", align_corners=False)`` → ``2x - 1``.
``"clean"`` (clean-fid, used for SyncDiffusion's FID/KID)
    each channel as a float32 PIL image resized with PIL's bicubic filter to 299x299, clipped to
    [0, 255] → ``(x - 128) / 128``. clean-fid runs a TorchScript export of the same TensorFlow graph;
    this module runs the PyTorch port of it, so features agree to float32 round-off, not bit for bit.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .weights import fetch_weights, load_checkpoint, load_matching_state_dict

__all__ = ["RESIZE_MODES", "FIDInceptionV3", "resize_pil_bicubic", "resize_tf1_bilinear"]

RESIZE_MODES = ("tf1", "pytorch-fid", "clean")
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):  # 35x35 blocks Mixed_5b/c/d
    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool_no_pad(x)),
            ],
            dim=1,
        )


class InceptionB(nn.Module):  # grid reduction 35 -> 17, Mixed_6a
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            dim=1,
        )


class InceptionC(nn.Module):  # 17x17 blocks Mixed_6b..6e with factorised 7x7 convs
    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))),
                double,
                self.branch_pool(_avg_pool_no_pad(x)),
            ],
            dim=1,
        )


class InceptionD(nn.Module):  # grid reduction 17 -> 8, Mixed_7a
    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seven = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            seven = layer(seven)
        return torch.cat(
            [self.branch3x3_2(self.branch3x3_1(x)), seven, F.max_pool2d(x, kernel_size=3, stride=2)], dim=1
        )


class InceptionE(nn.Module):  # 8x8 blocks; Mixed_7b averages its pool branch, Mixed_7c max-pools it
    def __init__(self, in_channels: int, max_pool_branch: bool):
        super().__init__()
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch3x3_1(x)
        double = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        if self.max_pool_branch:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_no_pad(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(single),
                self.branch3x3_2b(single),
                self.branch3x3dbl_3a(double),
                self.branch3x3dbl_3b(double),
                self.branch_pool(pooled),
            ],
            dim=1,
        )


def resize_tf1_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow 1.x ``resize_bilinear(align_corners=False)`` of float images [B, C, H, W].

    Output pixel i samples source coordinate ``i * in/out`` (no half-pixel centres): the floor and the
    next pixel (clamped to the last one), blended linearly; rows, then columns, in float32.
    """
    out_h, out_w = size
    in_h, in_w = x.shape[-2:]

    def axis(out_n: int, in_n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        position = torch.arange(out_n, dtype=torch.float32, device=x.device) * torch.tensor(
            in_n / out_n, dtype=torch.float32
        )
        low = position.long()
        high = (low + 1).clamp_max(in_n - 1)
        return low, high, position - low.float()

    y0, y1, dy = axis(out_h, in_h)
    x0, x1, dx = axis(out_w, in_w)
    top = x[..., y0, :]
    bottom = x[..., y1, :]
    top = top[..., x0] + (top[..., x1] - top[..., x0]) * dx
    bottom = bottom[..., x0] + (bottom[..., x1] - bottom[..., x0]) * dx
    return top + (bottom - top) * dy.view(-1, 1)


def resize_pil_bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """clean-fid's resize: every channel as a float32 PIL image, bicubic to ``size``, clipped to [0, 255]."""
    from PIL import Image

    out_h, out_w = size
    array = x.detach().to("cpu", torch.float32).numpy()
    result = np.empty(array.shape[:2] + (out_h, out_w), dtype=np.float32)
    for b in range(array.shape[0]):
        for c in range(array.shape[1]):
            channel = Image.fromarray(array[b, c], mode="F").resize((out_w, out_h), resample=Image.BICUBIC)
            result[b, c] = np.asarray(channel).clip(0, 255)
    return torch.from_numpy(result).to(x.device)


class FIDInceptionV3(nn.Module):
    """FID InceptionV3. ``forward(images)`` → ``(pool3 [B, 2048], logits_unbiased [B, 1008])``, float32.

    ``images``: [B, 3, H, W] with values 0..255 (uint8 or float). ``pretrained=False`` gives random
    weights (tests, smoke runs); otherwise the official file is fetched (see :mod:`.weights`).
    ``input_size`` other than 299 is allowed only with random weights, to make smoke tests fast.
    """

    def __init__(
        self,
        resize: str = "tf1",
        weights_dir: str | os.PathLike | None = None,
        pretrained: bool = True,
        input_size: int = INPUT_SIZE,
    ):
        super().__init__()
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, not {resize!r}")
        if input_size != INPUT_SIZE and (pretrained or input_size < 75):
            raise ValueError("the FID Inception is defined at 299x299; other input sizes (>= 75) are only for "
                             "random-weight smoke tests")
        self.resize = resize
        self.input_size = input_size
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool_branch=False)
        self.Mixed_7c = InceptionE(2048, max_pool_branch=True)
        self.fc = nn.Linear(2048, 1008)
        if pretrained:
            path = fetch_weights("inception_fid", weights_dir)
            load_matching_state_dict(self, load_checkpoint(path), source=str(path))
        else:
            self._random_init(seed=0)
        self.requires_grad_(False)
        self.eval()

    def _random_init(self, seed: int) -> None:
        """Seeded He-normal convs and unit batch norms: random, but activations stay O(1) through the net."""
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, nn.Conv2d):
                    fan_in = module.weight[0].numel()
                    module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=generator) / 2048**0.5)
            self.fc.bias.zero_()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """0..255 images [B, 3, H, W] → 299x299 network input in [-1, 1] (see the module docstring)."""
        x = images.to(torch.float32)
        size = (self.input_size, self.input_size)
        if self.resize == "tf1":
            return (resize_tf1_bilinear(x, size) - 128) / 128
        if self.resize == "pytorch-fid":
            return 2 * F.interpolate(x / 255, size=size, mode="bilinear", align_corners=False) - 1
        return (resize_pil_bicubic(x, size) - 128) / 128

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocess(images).to(self.fc.weight.dtype)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        pool = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        logits_unbiased = pool @ self.fc.weight.T
        return pool.float(), logits_unbiased.float()
