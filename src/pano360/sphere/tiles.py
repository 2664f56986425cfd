"""Tile grids on an equirectangular image or latent that wrap across the 0°/360° seam.

Units are whatever the caller uses (pixels or latent units); nothing here knows the difference.
A grid covers an ``H × W`` plane with tiles of ``tile = (th, tw)`` that overlap their neighbours by
at least ``overlap = (oh, ow)``:

* **Vertically** the axis is open (the top and bottom rows are the poles, not neighbours): tile
  tops run from 0 to ``H − th`` in equal steps (rounded to whole units).
* **Horizontally** the axis is closed when ``wrap`` (the default): ``k`` tile lefts are spread
  evenly over ``[0, W)`` and a tile that starts near the right edge takes its last columns from the
  left edge, so the seam is an ordinary interior overlap. A tile as wide as the image is one tile
  whose own convolutions must wrap (:func:`pano360.backbones.wrap.wraparound`).

**Blend weights** (:meth:`TileGrid.weight`) are separable linear ramps over each overlap with a
neighbour, rising from the neighbour's side: inside an overlap of ``v`` units the two tiles weigh
``(j + 0.5)/v`` and ``1 − (j + 0.5)/v``. The weights of all tiles sum to exactly 1 at every position
(a partition of unity; no column is covered by three tiles, which :meth:`TileGrid.make` checks), so
a blended result is ``Σ_i w_i · tile_i`` with no division, and can be finalised row of tiles by row
of tiles (:meth:`TileGrid.rows`): memory is bounded by one row of tiles, not by the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from ..errors import InvalidInputError


@dataclass(frozen=True)
class Tile:
    """One tile: rows ``[top, top + height)``, columns ``left, left + 1, …`` modulo the plane width."""

    top: int
    left: int
    height: int
    width: int
    row: int  # index of its row of tiles
    column: int  # index within that row


def axis_starts(length: int, tile: int, overlap: int, wrap: bool) -> list[int]:
    """Tile starts along one axis (see the module docstring); ``tile`` is clipped to ``length``."""
    tile = min(tile, length)
    if wrap:
        if tile >= length:
            return [0]
        count = math.ceil(length / (tile - overlap))
        return [round(i * length / count) for i in range(count)]
    if tile >= length:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _overlaps(starts: list[int], tile: int, length: int, wrap: bool) -> list[tuple[int, int]]:
    """Per tile, (overlap with the previous tile, overlap with the next), in units; 0 at open ends."""
    count = len(starts)
    if count == 1:
        return [(0, 0)]
    result = []
    for i, start in enumerate(starts):
        if wrap:
            previous = starts[i - 1] - (length if i == 0 else 0)
            following = starts[(i + 1) % count] + (length if i == count - 1 else 0)
        else:
            previous = starts[i - 1] if i > 0 else None
            following = starts[i + 1] if i < count - 1 else None
        before = 0 if previous is None else previous + tile - start
        after = 0 if following is None else start + tile - following
        result.append((before, after))
    return result


def ramp(size: int, before: int, after: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """1-D blend weights [size]: rising over the first ``before`` units, falling over the last ``after``."""
    weight = torch.ones(size, device=device, dtype=torch.float64)
    position = torch.arange(size, device=device, dtype=torch.float64) + 0.5
    if before:
        weight = torch.where(position < before, position / before, weight)
    if after:
        weight = torch.where(position > size - after, (size - position) / after, weight)
    return weight.to(dtype)


@dataclass(frozen=True)
class TileGrid:
    """Tiles covering an ``size = (H, W)`` plane; build with :meth:`make`."""

    size: tuple[int, int]
    tile: tuple[int, int]
    wrap: bool
    tops: tuple[int, ...]
    lefts: tuple[int, ...]

    @classmethod
    def make(cls, size: tuple[int, int], tile: int | tuple[int, int], overlap: int | tuple[int, int],
             wrap: bool = True) -> TileGrid:
        """The grid for a ``size`` plane, tiles of ``tile`` overlapping by at least ``overlap``.

        Raises :class:`InvalidInputError` when the overlap is not between 0 and half a tile (two
        overlaps of one tile must not meet, so that the weights stay a partition of unity).
        """
        height, width = size
        th, tw = (tile, tile) if isinstance(tile, int) else tile
        oh, ow = (overlap, overlap) if isinstance(overlap, int) else overlap
        th, tw = min(th, height), min(tw, width)
        for name, value, limit in (("vertical", oh, th), ("horizontal", ow, tw)):
            if value < 1 or 2 * value > limit:
                raise InvalidInputError(
                    f"tile overlap must be at least 1 and at most half a tile; got {name} overlap {value} for "
                    f"tiles of {limit}"
                )
        tops = axis_starts(height, th, oh, False)
        lefts = axis_starts(width, tw, ow, wrap)
        grid = cls((height, width), (th, tw), wrap, tuple(tops), tuple(lefts))
        for overlaps, limit in ((grid._row_overlaps, th), (grid._column_overlaps, tw)):
            if any(before + after > limit or min(before, after) < 0 for before, after in overlaps):
                raise InvalidInputError(f"tiles of {th}x{tw} cannot cover {height}x{width} with overlap {oh}x{ow}; "
                                        "use a smaller overlap")
        return grid

    def scaled(self, factor: int) -> TileGrid:
        """The same tiles in units ``factor`` times smaller (latent grid → pixel grid with 8)."""
        return TileGrid((self.size[0] * factor, self.size[1] * factor), (self.tile[0] * factor, self.tile[1] * factor),
                        self.wrap, tuple(t * factor for t in self.tops), tuple(left * factor for left in self.lefts))

    @cached_property
    def _row_overlaps(self) -> list[tuple[int, int]]:
        return _overlaps(list(self.tops), self.tile[0], self.size[0], False)

    @cached_property
    def _column_overlaps(self) -> list[tuple[int, int]]:
        return _overlaps(list(self.lefts), self.tile[1], self.size[1], self.wrap)

    @property
    def tiles(self) -> list[Tile]:
        """All tiles, row-major (top row first)."""
        return [tile for row in self.rows() for tile in row]

    def rows(self) -> list[list[Tile]]:
        """Tiles grouped by row of tiles, top to bottom."""
        th, tw = self.tile
        return [[Tile(top, left, th, tw, r, c) for c, left in enumerate(self.lefts)] for r, top in enumerate(self.tops)]

    def __len__(self) -> int:
        return len(self.tops) * len(self.lefts)

    @property
    def spans_width(self) -> bool:
        """True when one tile covers the whole width (its convolutions must wrap instead)."""
        return self.tile[1] >= self.size[1]

    def final_rows(self, row: int) -> int:
        """Rows of the plane that are complete once tile rows ``0..row`` are blended: ``[0, result)``."""
        return self.tops[row + 1] if row + 1 < len(self.tops) else self.size[0]

    def columns(self, tile: Tile, device=None) -> torch.Tensor:
        """Column indices [tw] of ``tile`` in the plane (wrapped modulo W)."""
        return (tile.left + torch.arange(tile.width, device=device)) % self.size[1]

    def crop(self, tensor: torch.Tensor, tile: Tile) -> torch.Tensor:
        """``tensor[..., rows, columns]`` of ``tile`` from a [..., H, W] tensor (a copy when it wraps)."""
        rows = tensor[..., tile.top:tile.top + tile.height, :]
        if tile.left + tile.width <= self.size[1]:
            return rows[..., tile.left:tile.left + tile.width]
        return rows.index_select(-1, self.columns(tile, tensor.device))

    def weight(self, tile: Tile, device=None, dtype=torch.float32) -> torch.Tensor:
        """Blend weights [th, tw] of ``tile`` (the weights of all tiles sum to 1 everywhere)."""
        (before_y, after_y), (before_x, after_x) = self._row_overlaps[tile.row], self._column_overlaps[tile.column]
        wy = ramp(tile.height, before_y, after_y, device, dtype)
        wx = ramp(tile.width, before_x, after_x, device, dtype)
        return wy[:, None] * wx[None, :]

    def add(self, out: torch.Tensor, values: torch.Tensor, tile: Tile, row_offset: int = 0) -> None:
        """``out[..., rows − row_offset, columns] += values`` (wrapping), in place; values [..., th, tw]."""
        top = tile.top - row_offset
        target = out[..., top:top + tile.height, :]
        if tile.left + tile.width <= self.size[1]:
            target[..., tile.left:tile.left + tile.width] += values
        else:
            target.index_add_(target.ndim - 1, self.columns(tile, out.device), values)
