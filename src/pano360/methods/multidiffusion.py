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

from .._lazy import lazy_module
from ..options import Option
from .base import Decoded, MethodRun, PanoramaMethod
from .windows import WindowGrid, check_axis, in_batches

torch = lazy_module("torch")

DECODE_WRAP_MODES = ("conv", "pad", "none")
DIFFUSERS_DECODE_PADDING = 8  # latent columns diffusers' panorama pipeline pads with (circular_padding=True)


def make_grid(method, latent_height: int, latent_width: int, native: int | None, scale: int = 8) -> WindowGrid:
    """The window grid of ``method`` (window/stride/loop_closure options) on a latent of that size
    (latent units); ``native`` is the model's native size in latent units (the default window),
    ``scale`` pixels per latent (for messages). Raises InvalidInputError unless every latent is covered."""
    if method.window is not None:
        size = method.window
    else:
        size = (min(native, latent_height), min(native, latent_width))
    check_axis(latent_height, size[0], method.stride[0], False, "vertical", scale)
    check_axis(latent_width, size[1], method.stride[1], method.loop_closure, "horizontal", scale)
    return WindowGrid.make((latent_height, latent_width), size, method.stride, wrap=method.loop_closure, check=False)


class MultiDiffusionRun(MethodRun):
    """State of one MultiDiffusion generation: the window grid, the per-window control crops and the
    number of windows per UNet call that fits (halved on out-of-memory, then kept)."""

    method: MultiDiffusionMethod

    def __init__(self, method, ctx):
        super().__init__(method, ctx)
        factor = ctx.info.vae_scale_factor
        self.grid = make_grid(method, ctx.latent_height, ctx.latent_width, ctx.info.native_size // factor, factor)
        self.window_size_px = tuple(s * factor for s in self.grid.size)
        self.view_batch_size = method.view_batch_size
        self._window_controls = None

    def resolved(self) -> dict:
        """The window grid this run uses: window and stride in latent units, the number of windows."""
        return {"window": list(self.grid.size), "window_px": list(self.window_size_px),
                "stride": list(self.method.stride), "num_windows": len(self.grid)}

    def window_controls(self):
        """The control image cut per window: [B, N, 3, 8·wh, 8·ww] (wrapped at the seam), or None."""
        if self.ctx.control_image is None:
            return None
        if self._window_controls is None:
            self._window_controls = self.grid.crop(self.ctx.control_image, scale=self.ctx.info.vae_scale_factor)
        return self._window_controls

    def all_pairs(self) -> list[tuple[int, int]]:
        """(image b, window n) for every window of every image, image-major."""
        return [(b, n) for b in range(self.ctx.batch_size) for n in range(len(self.grid))]

    def predict_windows(self, model, windows, t, pairs=None, batch_size: int | None = None):
        """Guided predictions for window latents.

        ``windows``: [M, C, wh, ww] scaled model inputs, one per ``pairs[m] = (image b, window n)``
        (default: all B·N windows in order). Returns [M, C, wh, ww]; runs ``batch_size`` windows
        (default: the run's ``view_batch_size``, which an out-of-memory halving lowers) per call.
        Gradients flow if enabled by the caller.
        """
        pairs = self.all_pairs() if pairs is None else pairs
        controls = self.window_controls()
        keep = batch_size is None  # an explicit size is the caller's (the sync pass keeps its own)

        def run(start: int, stop: int):
            chunk = pairs[start:stop]
            images = torch.tensor([b for b, _ in chunk])
            control = None if controls is None else torch.stack([controls[b, n] for b, n in chunk])
            return model(windows[start:stop], t, units=images, control=control, size_px=self.window_size_px)

        outputs, working_size = in_batches(len(pairs), batch_size or self.view_batch_size, run)
        if keep:
            self.view_batch_size = working_size
        return torch.cat(outputs)

    def predict(self, model, model_input, t, i: int):
        windows = self.grid.crop(model_input)  # [B, N, C, wh, ww]
        b, n = windows.shape[:2]
        outputs = self.predict_windows(model, windows.flatten(0, 1), t)
        return self.grid.average(outputs.view(b, n, *outputs.shape[1:]))

    def decode(self, latents) -> Decoded:
        from ..backbones.vae import decode_latents
        from ..backbones.wrap import wraparound

        vae = self.ctx.vae
        mode = self.method.decode_wrap if self.method.loop_closure else "none"
        if mode == "pad":
            return Decoded(decode_latents(vae, latents, wrap_padding=DIFFUSERS_DECODE_PADDING))
        with wraparound(vae, enabled=mode == "conv"):
            return Decoded(decode_latents(vae, latents))


WINDOW_OPTION = Option("window", None, "window size in latent units (pixels / 8), one number or H,W (default: the "
                       "model's native size, 64 for SD 1/2, 128 for SDXL, clipped to the panorama)",
                       kind="pair", none_ok=True, metavar="N|H,W")
STRIDE_OPTION = Option("stride", (8, 8), "distance between window origins in latent units, one number or V,H; it must "
                       "divide width/8 with loop closure (else width/8 - window) and height/8 - window",
                       kind="pair", metavar="N|V,H")


class MultiDiffusionMethod(PanoramaMethod):
    """Overlapping native-size windows whose predictions are averaged every step."""

    name = "multidiffusion"
    size_family = "windows"
    summary = "overlapping native-size windows, predictions averaged every step; loop closure across the seam"
    options = (
        WINDOW_OPTION,
        STRIDE_OPTION,
        Option("loop_closure", True, "windows also wrap across the left/right seam, at every offset", kind="bool"),
        Option("decode_wrap", "conv", "with loop closure: conv = wrap every VAE convolution (exactly periodic "
               "pixels); pad = decode with 8 wrapped latent columns a side and crop them (diffusers' "
               "circular_padding); none = plain decode", kind="choice", choices=DECODE_WRAP_MODES),
        Option("view_batch_size", 8, "windows per UNet call (memory vs speed, same result; halved on out-of-memory)",
               kind="int", minimum=1),
    )
    run_class = MultiDiffusionRun

    def denoiser_positions(self, request, native_latent: int, latent_factor: int) -> int:
        """``view_batch_size`` windows of the window size (native by default) per call."""
        window = self.window if self.window is not None else (native_latent, native_latent)
        window = window if isinstance(window, tuple) else (window, window)
        rows = min(window[0], request.height // latent_factor)
        return self.view_batch_size * rows * min(window[1], request.width // latent_factor)

    def check(self, request) -> None:
        if self.window is not None:
            make_grid(self, request.height // 8, request.width // 8, native=None)
        elif self.loop_closure:  # the default window depends on the model, but wrap strides only on the width
            check_axis(request.width // 8, request.width // 8, self.stride[1], True, "horizontal")

    def check_for_model(self, request, info, scheduler_name, adapters=()) -> None:
        super().check_for_model(request, info, scheduler_name, adapters)
        factor = info.vae_scale_factor
        make_grid(self, request.height // factor, request.width // factor, info.native_size // factor, factor)
