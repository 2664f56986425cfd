"""Overlapping window grids on a panorama latent: placement, batched crops with wrap, accumulation.

All sizes here are in **latent units** (pixels / 8) unless a name ends in ``_px``. A grid is a list of
window origins ``(top, left)``; every window has the same ``size = (height, width)``. Windows never
wrap vertically (the top and bottom of a panorama are the poles, not neighbours); with
``loop_closure`` they wrap horizontally, so a window that starts ``k`` columns before the right edge
takes its last ``size[1] - k`` columns from the left edge.

Grid rule (MultiDiffusion / SyncDiffusion / diffusers' panorama pipeline), per axis of length ``L``,
window ``n`` and stride ``s``:

* open axis: origins ``0, s, 2s, …, L - n``; ``(L - n)`` must be a multiple of ``s`` (otherwise the last
  columns would be covered by no window; the references then leave them at 0);
* closed (wrapping) horizontal axis: origins ``0, s, …, L - s``, i.e. *every* wrap offset, so the seam
  is covered exactly as often as the interior; ``L`` must be a multiple of ``s``.

Windows are ordered row-major (top row first), as in the references, so "the middle window"
(``len(grid) // 2``) is the same one they use as SyncDiffusion's anchor.

Crops and accumulation use index tensors, so all windows are cut from (and added back into) the
latent in one gather / one ``index_add_`` whatever their number, wrap included.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from .._lazy import lazy_module
from ..errors import InvalidInputError

torch = lazy_module("torch")


def axis_origins(length: int, window: int, stride: int, wrap: bool = False) -> list[int]:
    """Window origins along one axis of ``length`` latent units (see the module docstring)."""
    if wrap:
        return list(range(0, length, stride))
    return list(range(0, length - window + 1, stride))


def check_axis(length: int, window: int, stride: int, wrap: bool, axis: str, scale: int = 8,
               window_name: str = "window", stride_name: str = "stride") -> None:
    """Raise :class:`InvalidInputError` (with the fix) unless the windows tile the axis exactly.

    ``length``/``window``/``stride`` in latent units; ``scale`` (pixels per latent) is only used to
    word the message in pixels too.
    """
    dimension = "width" if axis == "horizontal" else "height"
    for name, value in ((window_name, window), (stride_name, stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInputError(f"{axis} {name} must be a whole number of latent units >= 1, got {value!r}")
    if window > length:
        raise InvalidInputError(
            f"{axis} {window_name} ({window} latents = {window * scale} px) is larger than the panorama {dimension} "
            f"({length} latents = {length * scale} px); use a {window_name} <= {length} or a {dimension} >= "
            f"{window * scale} px"
        )
    if window == length and not wrap:
        return  # one window spans the axis: the stride does not matter
    if stride > window:
        raise InvalidInputError(
            f"{axis} {stride_name} ({stride}) is larger than the {window_name} ({window}): some latents would "
            f"be covered by no window; use a {stride_name} <= {window}"
        )
    span = length if wrap else length - window
    if span % stride:
        lower = length - span % stride
        upper = lower + stride
        what = "the panorama" if wrap else f"the panorama minus the {window_name} ({span} latents)"
        raise InvalidInputError(
            f"{axis} {stride_name} {stride} does not divide {what}, so some latents would be covered by no window; "
            f"use a {dimension} of {lower * scale} or {upper * scale} px, or a {stride_name} that divides {span}"
        )


@dataclass(frozen=True)
class WindowGrid:
    """Windows of ``size`` latents at ``origins`` on a ``latent_size`` latent, wrapping horizontally if
    ``wrap``.

    ``latent_size = (h, w)``, ``size = (wh, ww)``, ``origins = ((top, left), ...)``, all latent units.
    """

    latent_size: tuple[int, int]
    size: tuple[int, int]
    origins: tuple[tuple[int, int], ...]
    wrap: bool = False

    @classmethod
    def make(cls, latent_size: tuple[int, int], size: tuple[int, int], stride: tuple[int, int],
             wrap: bool = False, check: bool = True) -> WindowGrid:
        """The regular grid (row-major). ``check`` raises if the windows do not cover every latent
        exactly (see :func:`check_axis`)."""
        (h, w), (wh, ww), (sh, sw) = latent_size, size, stride
        if check:
            check_axis(h, wh, sh, False, "vertical")
            check_axis(w, ww, sw, wrap, "horizontal")
        origins = tuple((top, left) for top in axis_origins(h, wh, sh) for left in axis_origins(w, ww, sw, wrap))
        return cls((h, w), (wh, ww), origins, wrap)

    def __len__(self) -> int:
        return len(self.origins)

    def subset(self, indices) -> WindowGrid:
        return WindowGrid(self.latent_size, self.size, tuple(self.origins[i] for i in indices), self.wrap)

    # --- index tensors (CPU; moved on use) --------------------------------------------------
    @cached_property
    def _rows_cols(self) -> tuple[torch.Tensor, torch.Tensor]:
        (h, w), (wh, ww) = self.latent_size, self.size
        tops = torch.tensor([o[0] for o in self.origins])
        lefts = torch.tensor([o[1] for o in self.origins])
        rows = tops[:, None] + torch.arange(wh)[None]  # [N, wh]
        cols = lefts[:, None] + torch.arange(ww)[None]  # [N, ww]
        if self.wrap:
            cols = cols % w
        if rows.max() >= h or cols.max() >= w:
            raise ValueError("a window reaches outside the latent; build grids with WindowGrid.make")
        return rows, cols

    def flat_index(self, scale: int = 1) -> torch.Tensor:
        """[N, wh·s, ww·s] indices into the flattened (h·s)×(w·s) plane (``scale`` s: 1 for latents,
        8 for pixels)."""
        rows, cols = self._rows_cols
        if scale != 1:
            rows = (rows[:, :, None] * scale + torch.arange(scale)).flatten(1)
            cols = (cols[:, :, None] * scale + torch.arange(scale)).flatten(1)
        width = self.latent_size[1] * scale
        return rows[:, :, None] * width + cols[:, None, :]

    def coverage(self, device=None, dtype=None) -> torch.Tensor:
        """How many windows cover each latent: [h, w] (float32 unless ``dtype``)."""
        h, w = self.latent_size
        dtype = dtype or torch.float32
        count = torch.zeros(h * w, dtype=dtype, device=device)
        index = self.flat_index().flatten().to(device)
        count.index_add_(0, index, torch.ones(index.numel(), dtype=dtype, device=device))
        return count.view(h, w)

    # --- crops and accumulation ---------------------------------------------------------------
    def crop(self, tensor: torch.Tensor, scale: int = 1) -> torch.Tensor:
        """Every window of ``tensor`` [B, C, h·s, w·s] → [B, N, C, wh·s, ww·s] (one gather; wraps if ``wrap``)."""
        b, c = tensor.shape[:2]
        index = self.flat_index(scale).to(tensor.device)
        n, hh, ww = index.shape
        return tensor.flatten(2)[:, :, index.flatten()].view(b, c, n, hh, ww).transpose(1, 2)

    def accumulate(self, windows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Sum windows [B, N, C, wh, ww] back into a [B, C, h, w] latent (``out`` if given)."""
        b, c = windows.shape[0], windows.shape[2]
        h, w = self.latent_size
        if out is None:
            out = torch.zeros(b, c, h, w, dtype=windows.dtype, device=windows.device)
        index = self.flat_index().to(windows.device).flatten()
        flat = out.view(b, c, h * w)
        flat.index_add_(2, index, windows.transpose(1, 2).reshape(b, c, -1))
        return out

    def average(self, windows: torch.Tensor) -> torch.Tensor:
        """Per-latent mean of the windows [B, N, C, wh, ww] covering it → [B, C, h, w]."""
        total = self.accumulate(windows)
        count = self.coverage(device=windows.device, dtype=windows.dtype)
        return torch.where(count > 0, total / count.clamp(min=1), total)


def in_batches(count: int, batch_size: int, run) -> tuple[list, int]:
    """``run(start, stop)`` over ``[0, count)`` in batches of ``batch_size``; returns (results, size used).

    Windows are independent, so fewer per call gives the same result: a batch that runs out of GPU
    memory is retried with half as many (down to 1, then the error propagates), and the smaller size
    is used from then on. Callers keep the returned size for their next calls.
    """
    results, start = [], 0
    while start < count:
        stop = min(count, start + batch_size)
        try:
            results.append(run(start, stop))
        except torch.OutOfMemoryError:
            if batch_size == 1:
                raise
            batch_size //= 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start = stop
    return results, batch_size
