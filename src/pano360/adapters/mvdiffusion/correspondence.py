"""Where each view's pixels land in its two ring neighbours, per UNet level, computed once per rig.

For query view i and neighbour j ∈ [(i − 1) mod V, (i + 1) mod V] (that order: slots 0–8 come from
the left neighbour, 9–17 from the right one), at a feature map of h×w taken from an H×W view
(s = H // h image pixels per feature pixel), the reference (digest §2) does:

1. H_{i→j} = K_j·R_j⁻¹·R_i·K_i⁻¹, evaluated left to right as batched [1, 3, 3] matmuls with
   ``torch.inverse`` (the float32 rounding of this chain reaches the positional encoding);
2. query feature pixel k sits at image pixel s·k + s//2; its correspondence is the dehomogenised
   H_{i→j}·[x, y, 1]ᵀ, in neighbour-feature units u = x′/s − 0.5;
3. nine taps u + (dx, dy), dx outer, dy inner (slot 3·(dx + 1) + (dy + 1)), bilinear with
   ``align_corners=True`` at u/(w − 1)·2 − 1, zero padding;
4. a tap is valid iff 0 < p < W (and H) in image pixels, p = (u + 0.5)·s;
5. its displacement δ = (dehom(H_{j→i}·[p, 1]) − (s·k + s//2)) / s in query-feature pixels, with
   H_{j→i} = K_i·R_i⁻¹·R_j·K_j⁻¹.

:func:`level_geometry` reproduces that arithmetic operation by operation, vectorised over views,
neighbours and taps, and evaluates correspondences only at the subsampled pixels (bit-identical to
the reference's full-resolution grid, which it then subsamples).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .cameras import Cameras

TAPS = 9  # 3×3 neighbourhood per neighbour
SLOTS = 2 * TAPS  # keys per query pixel


def neighbour_indices(views: int) -> Tensor:
    """[V, 2] long: the left ((i − 1) mod V) and right ((i + 1) mod V) neighbour of each view."""
    index = torch.arange(views)
    return torch.stack([(index - 1) % views, (index + 1) % views], dim=1)


def _chain(K_a: Tensor, R_a: Tensor, K_b: Tensor, R_b: Tensor) -> Tensor:
    """K_a·R_a⁻¹·R_b·K_b⁻¹ for [n, 3, 3] batches, as the reference evaluates it (batch 1 per pair)."""
    out = []
    for n in range(K_a.shape[0]):
        out.append((K_a[n:n + 1] @ torch.inverse(R_a[n:n + 1]) @ R_b[n:n + 1] @ torch.inverse(K_b[n:n + 1]))[0])
    return torch.stack(out)


def homographies(cameras: Cameras) -> tuple[Tensor, Tensor]:
    """(forward, backward) float32 [V, 2, 3, 3]: H_{i→j} maps view-i pixels into neighbour j, H_{j→i} back."""
    source = neighbour_indices(len(cameras))
    K, R = cameras.K, cameras.R
    i = torch.arange(len(cameras)).repeat_interleave(2)
    j = source.reshape(-1)
    forward = _chain(K[j], R[j], K[i], R[i]).view(len(cameras), 2, 3, 3)
    backward = _chain(K[i], R[i], K[j], R[j]).view(len(cameras), 2, 3, 3)
    return forward, backward


@dataclass
class LevelGeometry:
    """The sampling plan of one feature size for one rig (tensors on ``device``, float32).

    Attributes:
        source: [V·2] long, the neighbour view of each (query view, neighbour slot) pair.
        grid: [V·2, 9·h, w, 2] normalised ``grid_sample`` coordinates in the neighbour (taps stacked
            along the height: tap t occupies rows t·h … (t + 1)·h − 1).
        valid: [V, h, w, 18, 1] 1.0 for taps inside the neighbour image, 0.0 outside.
        delta: [V, h, w, 18, 2] displacement of each tap from the query pixel, query-feature pixels.
        index, weights: [V·h·w·18, 4] the bilinear corners of each tap as rows of the views' flattened
            pixels (view j, pixel (y, x) → j·h·w + y·w + x) and their weights (``grid_sample``'s
            bilinear weights with ``align_corners=True``, 0 for corners outside the image, times the
            tap's validity), for ``embedding_bag``.
    """

    views: int
    height: int
    width: int
    source: Tensor
    grid: Tensor
    valid: Tensor
    delta: Tensor
    index: Tensor
    weights: Tensor
    _encodings: dict = field(default_factory=dict, repr=False)
    _group_index: dict = field(default_factory=dict, repr=False)

    def bag_index(self, groups: int) -> Tensor:
        """``index`` for ``groups`` stacked groups of views [G·V·h·w·18, 4] (offset by the group's rows)."""
        if groups not in self._group_index:
            offsets = torch.arange(groups, device=self.index.device) * (self.views * self.height * self.width)
            self._group_index[groups] = (self.index[None] + offsets[:, None, None]).reshape(-1, 4)
        return self._group_index[groups]

    def bag_weights(self, groups: int, dtype: torch.dtype) -> Tensor:
        """``weights`` repeated for ``groups`` groups [G·V·h·w·18, 4] in ``dtype``."""
        key = (groups, dtype)
        if key not in self._group_index:
            self._group_index[key] = self.weights.to(dtype).repeat(groups, 1)
        return self._group_index[key]

    def masked_encoding(self, encoder, dtype: torch.dtype) -> Tensor:
        """γ(δ)·valid [V, h, w, 18, d] for a positional encoder, cached per (band count, dtype, device);
        the bands are a function of their count (checkpoints with other bands are rejected on loading)."""
        bands = encoder.freq_bands
        key = (bands.shape[-1], dtype, str(bands.device))
        if key not in self._encodings:
            with torch.no_grad():
                self._encodings[key] = (encoder(self.delta.to(bands.device)) * self.valid.to(bands.device)).to(dtype)
        return self._encodings[key]


def level_geometry(cameras: Cameras, height: int, width: int, device=None) -> LevelGeometry:
    """The correspondence plan for features of ``height``×``width`` from ``cameras``' views (float32)."""
    views = len(cameras)
    image_h, image_w = cameras.height, cameras.width
    scale = image_h // height  # the reference's query_scale and key_scale (square views)
    if scale < 1 or image_w // width != scale:
        raise ValueError(f"feature map {height}×{width} does not divide the {image_h}×{image_w} views evenly")
    forward, backward = homographies(cameras)

    # query pixel centres s·k + s//2 as float32 homogeneous points [3, h·w] (x varies fastest)
    ys, xs = torch.meshgrid(torch.arange(height) * scale + scale // 2, torch.arange(width) * scale + scale // 2,
                            indexing="ij")
    xy = torch.stack([xs, ys], dim=-1).to(torch.float32)  # [h, w, 2]
    points = torch.cat([xy, torch.ones(height, width, 1)], dim=-1).reshape(-1, 3).T  # [3, h·w]

    pairs = forward.reshape(-1, 3, 3)  # [V·2, 3, 3]
    mapped = pairs @ points[None].expand(pairs.shape[0], 3, -1)  # [V·2, 3, h·w]
    corr = (mapped[:, :2] / mapped[:, 2:]).permute(0, 2, 1).reshape(-1, height, width, 2)
    u = corr / scale - 0.5  # neighbour-feature units

    taps, grids = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            shifted = u.clone()
            shifted[..., 0] = shifted[..., 0] + dx
            shifted[..., 1] = shifted[..., 1] + dy
            taps.append((shifted + 0.5) * scale)  # image pixels in the neighbour
            grid = shifted.clone()
            grid[..., 0] = grid[..., 0] / (width - 1) * 2 - 1
            grid[..., 1] = grid[..., 1] / (height - 1) * 2 - 1
            grids.append(grid)
    taps = torch.stack(taps, dim=1)  # [V·2, 9, h, w, 2]
    grid = torch.cat(grids, dim=1)  # [V·2, 9·h, w, 2]
    valid = (taps[..., 0] > 0) * (taps[..., 0] < image_w) * (taps[..., 1] > 0) * (taps[..., 1] < image_h)

    homogeneous = torch.cat([taps, torch.ones(*taps.shape[:-1], 1)], dim=-1)  # [V·2, 9, h, w, 3]
    back = backward.reshape(-1, 3, 3) @ homogeneous.reshape(pairs.shape[0], -1, 3).transpose(1, 2)  # [V·2, 3, 9·h·w]
    back = back.transpose(1, 2).reshape(taps.shape[:-1] + (3,))
    back = back[..., :2] / back[..., 2:]
    delta = (back - xy) / scale  # [V·2, 9, h, w, 2]

    def query_major(t: Tensor) -> Tensor:  # [V·2, 9, h, w, ...] -> [V, h, w, 18, ...]
        t = t.reshape(views, SLOTS, height, width, *t.shape[4:])
        return t.movedim(1, 3).contiguous()

    index, weights = bilinear_corners(grid, neighbour_indices(views).reshape(-1), height, width)
    weights = weights * query_major(valid.to(torch.float32)).reshape(-1, 1)
    return LevelGeometry(
        views=views, height=height, width=width, index=index.to(device), weights=weights.to(device),
        source=neighbour_indices(views).reshape(-1).to(device),
        grid=grid.to(device),
        valid=query_major(valid.to(torch.float32))[..., None].to(device),
        delta=query_major(delta).to(device),
    )


def bilinear_corners(grid: Tensor, source: Tensor, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Corner rows and weights [V·h·w·18, 4] of ``grid`` [V·2, 9·h, w, 2] (query-major order), as
    ``grid_sample(bilinear, zeros, align_corners=True)`` computes them from normalised coordinates."""
    pairs = grid.shape[0]
    taps = grid.view(pairs, TAPS, height, width, 2)
    ix = ((taps[..., 0] + 1) / 2) * (width - 1)
    iy = ((taps[..., 1] + 1) / 2) * (height - 1)
    ix, iy = ix.clamp(-2, width + 1), iy.clamp(-2, height + 1)  # far-away taps: all corners outside
    x0, y0 = torch.floor(ix), torch.floor(iy)
    x1, y1 = x0 + 1, y0 + 1
    corners = [(x0, y0, (x1 - ix) * (y1 - iy)), (x1, y0, (ix - x0) * (y1 - iy)),
               (x0, y1, (x1 - ix) * (iy - y0)), (x1, y1, (ix - x0) * (iy - y0))]
    rows, weights = [], []
    base = (source * height * width).view(pairs, 1, 1, 1)
    for cx, cy, weight in corners:
        inside = (cx >= 0) & (cx <= width - 1) & (cy >= 0) & (cy <= height - 1)
        row = base + cy.clamp(0, height - 1).long() * width + cx.clamp(0, width - 1).long()
        rows.append(row)
        weights.append(weight * inside)
    views = pairs // 2

    def query_major(t: Tensor) -> Tensor:  # [V·2, 9, h, w, 4] -> [V·h·w·18, 4]
        return t.reshape(views, SLOTS, height, width, 4).movedim(1, 3).reshape(-1, 4)

    return query_major(torch.stack(rows, -1)), query_major(torch.stack(weights, -1))


class CorrespondenceCache:
    """Level geometries by (rig, feature size, device); a few rigs are kept (least recently used out)."""

    def __init__(self, max_rigs: int = 4):
        self.max_rigs = max_rigs
        self._rigs: dict[tuple, dict] = {}

    def get(self, cameras: Cameras, height: int, width: int, device) -> LevelGeometry:
        rig_key = cameras.key()
        levels = self._rigs.pop(rig_key, None) or {}
        self._rigs[rig_key] = levels  # most recently used last
        while len(self._rigs) > self.max_rigs:
            self._rigs.pop(next(iter(self._rigs)))
        key = (height, width, str(torch.device(device)))
        if key not in levels:
            levels[key] = level_geometry(cameras, height, width, device)
        return levels[key]

    def clear(self) -> None:
        self._rigs.clear()

    def __len__(self) -> int:
        return sum(len(levels) for levels in self._rigs.values())
