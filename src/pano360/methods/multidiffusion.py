"""``multidiffusion``: overlapping windows at the model's native size, averaged every step.

MultiDiffusion (Bar-Tal et al. 2023) denoises a wide latent by cutting it into overlapping windows
(``window`` latents wide and high, ``stride`` apart), predicting each window with the UNet at the
size it was trained on, and averaging where windows overlap. The references (MultiDiffusion,
SyncDiffusion, diffusers' ``StableDiffusionPanoramaPipeline``) step every window with DDIM and
average the stepped windows; here the per-window *predictions* are averaged and the scheduler steps
once on the whole latent. For DDIM (any eta = 0 step that is affine in sample and prediction with
shared coefficients, ε or v) the two are identical, and averaging predictions works with every
scheduler, stateful ones included (diffusers has to save and restore scheduler state per window).

Loop closure (``loop_closure=True``, the default here): windows also start in the last ``window``
columns and wrap around to the left edge, at *every* stride offset, so the seam is covered exactly
as often as the interior (SyncDiffusion's loop closure leaves out the last offset). Rows never wrap.
The final VAE decode wraps too (``decode_wrap``), so pixels meet at the seam as latents do.

Cost per step: ``N`` window predictions (N = number of windows), batched ``view_batch_size`` windows
per UNet call, conditional and unconditional halves in the same call (see :mod:`pano360.backbones.guided`).
With a ControlNet each window gets its own crop of the control image (wrapped at the seam).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import InvalidInputError
from ..backbones.vae import decode_latents
from .base import GenerationContext, PanoramaMethod
from .windows import WindowGrid, in_batches

DECODE_WRAP_MODES = ("conv", "pad", "none")
DIFFUSERS_DECODE_PADDING = 8  # latent columns diffusers' panorama pipeline pads with (circular_padding=True)


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InvalidInputError(f"{name} must be one number or (vertical, horizontal), got {value!r}")
        pair = tuple(value)
    else:
        pair = (value, value)
    for v in pair:
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InvalidInputError(f"{name} must be a whole number of latent units >= 1 (pixels / 8), got {value!r}")
    return pair  # type: ignore[return-value]


def _describe(value: Any):
    """A JSON-friendly record of an option value (modules by class name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [_describe(v) for v in value]
    return f"<{type(value).__module__}.{type(value).__name__}>"


@dataclass
class MultiDiffusionMethod(PanoramaMethod):
    """Options (sizes in latent units = pixels / 8):

    * ``window`` (default: the backbone's native size, 64 for SD 1/2, 128 for SDXL, clipped to the
      panorama): window size, one number or ``(height, width)``.
    * ``stride`` (default 8): distance between window origins, one number or ``(vertical, horizontal)``.
      It must divide ``width - window`` (``width`` with loop closure) and ``height - window``.
    * ``loop_closure`` (default True): wrap windows across the left/right seam at every offset.
    * ``decode_wrap`` (default ``"conv"``, with loop closure only): ``"conv"`` wraps every VAE
      convolution (exactly periodic pixels); ``"pad"`` decodes with 8 wrapped latent columns on each
      side and crops them, as diffusers' ``circular_padding`` does; ``"none"`` decodes plainly.
    * ``view_batch_size`` (default 8): windows per UNet call (memory vs. speed; results do not change).
      A call that runs out of GPU memory is retried with half as many windows, and that size is kept.
    """

    name: ClassVar[str] = "multidiffusion"
    window: Any = None
    stride: Any = 8
    loop_closure: bool = True
    decode_wrap: str = "conv"
    view_batch_size: int = 8

    # --- checks ------------------------------------------------------------------------------
    def check_options(self, num_inference_steps: int | None = None) -> None:
        """Model-free checks of the options themselves."""
        if self.window is not None:
            _pair(self.window, "window")
        _pair(self.stride, "stride")
        if not isinstance(self.loop_closure, bool):
            raise InvalidInputError(f"loop_closure must be True or False, got {self.loop_closure!r}")
        if self.decode_wrap not in DECODE_WRAP_MODES:
            raise InvalidInputError(f"decode_wrap must be one of {', '.join(DECODE_WRAP_MODES)}, got {self.decode_wrap!r}")
        if not isinstance(self.view_batch_size, int) or isinstance(self.view_batch_size, bool) \
                or self.view_batch_size < 1:
            raise InvalidInputError(f"view_batch_size must be a whole number >= 1, got {self.view_batch_size!r}")

    def check_size(self, height: int, width: int) -> None:
        self.check_options()
        if self.window is not None:
            self.make_grid(height // 8, width // 8, native=None)
        elif self.loop_closure:  # the default window depends on the model, but wrap strides only on the width
            from .windows import check_axis

            check_axis(width // 8, width // 8, _pair(self.stride, "stride")[1], True, "horizontal")

    def check_for_model(self, height: int, width: int, info, num_inference_steps: int) -> None:
        self.check_options(num_inference_steps)
        factor = info.vae_scale_factor
        self.make_grid(height // factor, width // factor, native=info.native_size // factor, scale=factor)

    # --- the grid ----------------------------------------------------------------------------
    def window_size(self, latent_height: int, latent_width: int, native: int | None) -> tuple[int, int]:
        """The window in latent units: explicit, or the native size clipped to the panorama."""
        if self.window is not None:
            return _pair(self.window, "window")
        return min(native, latent_height), min(native, latent_width)

    def make_grid(self, latent_height: int, latent_width: int, native: int | None, scale: int = 8) -> WindowGrid:
        size = self.window_size(latent_height, latent_width, native)
        stride = _pair(self.stride, "stride")
        from .windows import check_axis

        check_axis(latent_height, size[0], stride[0], False, "vertical", scale)
        check_axis(latent_width, size[1], stride[1], self.loop_closure, "horizontal", scale)
        return WindowGrid.make((latent_height, latent_width), size, stride, wrap=self.loop_closure, check=False)

    def grid(self, ctx: GenerationContext) -> WindowGrid:
        """The window grid of this generation (built once, kept in ``ctx.extras``)."""
        if "window_grid" not in ctx.extras:
            factor = ctx.info.vae_scale_factor
            ctx.extras["window_grid"] = self.make_grid(ctx.latent_height, ctx.latent_width,
                                                       ctx.info.native_size // factor, scale=factor)
        return ctx.extras["window_grid"]

    # --- prediction ----------------------------------------------------------------------------
    def window_controls(self, ctx: GenerationContext) -> torch.Tensor | None:
        """The control image cut per window: [B, N, 3, 8·wh, 8·ww] (wrapped at the seam), or None."""
        if ctx.control_image is None:
            return None
        if "window_controls" not in ctx.extras:
            ctx.extras["window_controls"] = self.grid(ctx).crop(ctx.control_image, scale=ctx.info.vae_scale_factor)
        return ctx.extras["window_controls"]

    def predict_windows(self, ctx: GenerationContext, windows: torch.Tensor, t, pairs=None,
                        batch_size: int | None = None) -> torch.Tensor:
        """Guided predictions for window latents.

        ``windows``: [M, C, wh, ww] scaled model inputs, one per ``pairs[m] = (image b, window n)``
        (default: all B·N windows in order). Returns [M, C, wh, ww]; runs ``batch_size`` windows
        (default ``view_batch_size``) per UNet call. Gradients flow if enabled by the caller.
        """
        grid = self.grid(ctx)
        n_windows = len(grid)
        if pairs is None:
            pairs = [(b, n) for b in range(windows.shape[0] // n_windows) for n in range(n_windows)]
        controls = self.window_controls(ctx)
        size_px = tuple(s * ctx.info.vae_scale_factor for s in grid.size)
        remember = batch_size is None  # an explicit size is the caller's (the sync pass keeps its own)
        batch_size = batch_size or ctx.extras.get("view_batch_size") or self.view_batch_size

        def run(start: int, stop: int) -> torch.Tensor:
            chunk = pairs[start:stop]
            images = torch.tensor([b for b, _ in chunk], device=windows.device)
            control = None if controls is None else torch.stack([controls[b, n] for b, n in chunk])
            return ctx.denoiser(windows[start:stop], t, units=images, control=control, size_px=size_px)

        outputs, working_size = in_batches(len(pairs), batch_size, run)
        if remember:
            ctx.extras["view_batch_size"] = working_size
        return torch.cat(outputs)

    def predict(self, ctx: GenerationContext, latents: torch.Tensor, t, i: int) -> torch.Tensor:
        grid = self.grid(ctx)
        windows = grid.crop(latents)  # [B, N, C, wh, ww]
        b, n = windows.shape[:2]
        outputs = self.predict_windows(ctx, windows.flatten(0, 1), t)
        return grid.average(outputs.view(b, n, *outputs.shape[1:]))

    # --- decoding --------------------------------------------------------------------------------
    def decode(self, ctx: GenerationContext, latents: torch.Tensor) -> torch.Tensor:
        vae = ctx.pipe.vae
        if not self.loop_closure or self.decode_wrap == "none":
            return decode_latents(vae, latents)
        if self.decode_wrap == "pad":
            return decode_latents(vae, latents, wrap_padding=DIFFUSERS_DECODE_PADDING)
        from ..backbones.wrap import wraparound

        with wraparound(vae):
            return decode_latents(vae, latents)

    def options(self) -> dict:
        return {f.name: _describe(getattr(self, f.name)) for f in dataclasses.fields(self)}
