"""Discontinuity Score (DS) at the left/right wrap seam (Christensen et al., ECCV 2024).

For a border ``a`` the paper defines, on the horizontal Scharr response ``â`` of a strip across the
border (columns 0..5, the border between columns 2 and 3)::

    DS(a) = 1/(2L) · sum_y ( |â(2, y)| / (|â(1, y)| + c) + |â(3, y)| / (|â(4, y)| + c) )

i.e. the gradient on the two columns whose 3x3 kernel straddles the border, relative to the gradient
one column further in, averaged over the border's L rows; an image's score is ``L / H_E · sum_i DS(a_i)``
over its borders, which for an equirectangular panorama's single wrap border (L = H_E = H) is DS(a).

Implementation details (this module's choices, stated because the paper's summary does not fix them):
grey = 0.2989 R + 0.5870 G + 0.1140 B on [0, 1]; Scharr kernel [[3,0,-3],[10,0,-10],[3,0,-3]] / 16
(a unit step gives a response of 1); zero padding above and below; c = 0.1 (PanoEval's constant). The
strip is the last 3 columns followed by the first 3, so DS is low (< 1) for a panorama that wraps
smoothly and grows with the size of a jump at the seam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["discontinuity_score", "seam_strip"]

_GREY = (0.2989, 0.5870, 0.1140)
_SCHARR_X = torch.tensor([[3.0, 0.0, -3.0], [10.0, 0.0, -10.0], [3.0, 0.0, -3.0]]) / 16.0


def seam_strip(images: torch.Tensor, half_width: int = 3) -> torch.Tensor:
    """Grey strip across the wrap seam: last ``half_width`` columns, then the first ones → [B, 1, H, 2w]."""
    x = images.to(torch.float32)
    if not images.is_floating_point():
        x = x / 255.0
    grey = sum(w * x[:, c] for c, w in enumerate(_GREY)).unsqueeze(1)
    return torch.cat([grey[..., -half_width:], grey[..., :half_width]], dim=-1)


def discontinuity_score(images: torch.Tensor, c: float = 0.1) -> torch.Tensor:
    """DS of each panorama [B, 3, H, W] (uint8 0..255 or float 0..1) → float32 [B]; lower is better."""
    strip = seam_strip(images)
    response = F.conv2d(strip, _SCHARR_X.to(strip.device).view(1, 1, 3, 3), padding=1).abs()[:, 0]
    ratio = response[..., 2] / (response[..., 1] + c) + response[..., 3] / (response[..., 4] + c)
    return ratio.sum(dim=-1) / (2 * strip.shape[-2])
