"""``spot``: shifted non-overlapping windows (SpotDiffusion), a cheap coherent 360° method.

SpotDiffusion (Frolov et al. 2024) denoises a wide latent with windows that tile it *without
overlap*, and moves the tiling by a random offset at every step so that no window border stays in
place: over the steps each latent column sees its neighbours through many different windows, which
is what keeps the panorama coherent, at a fraction of MultiDiffusion's cost. For a 360° panorama the
shift is a horizontal *roll* (wrap): the windows of step ``i`` start at ``offset_i + k · window``
(modulo the width), so the left/right seam is an ordinary column, inside a window at every step
whose offset is not 0 and never treated differently from any other column.

Cost per step: ``width / window`` window predictions per image (the UNet at its native size),
against ``width / stride`` for MultiDiffusion with loop closure: 1/8 of MultiDiffusion's UNet calls
at SD's window 64 and stride 8 (512×2048 px: 4 windows instead of 32). Rows are tiled without shift
(the poles are not neighbours), so the height must be a whole number of windows.

The offsets come from their own generator, seeded from the first image's seed (``shift_seed``
overrides it), so they never consume the sampler's random numbers. The roll happens inside
:meth:`SpotRun.predict` (the contract's rule for methods that change coordinates): the scheduler
always steps in the panorama's own frame. The final decode wraps the VAE (``decode_wrap``).
"""

from __future__ import annotations

from .._lazy import lazy_module
from ..errors import InvalidInputError
from ..options import Option
from .base import MethodRun, PanoramaMethod
from .multidiffusion import DECODE_WRAP_MODES, WINDOW_OPTION, MultiDiffusionRun
from .windows import WindowGrid

torch = lazy_module("torch")


def spot_grid(method, latent_height: int, latent_width: int, native: int | None, scale: int = 8) -> WindowGrid:
    """Non-overlapping windows tiling the latent (latent units); raises InvalidInputError naming the fix."""
    if method.window is not None:
        size = method.window
    else:
        size = (min(native, latent_height), min(native, latent_width))
    for axis, length, window in (("height", latent_height, size[0]), ("width", latent_width, size[1])):
        if window > length:
            raise InvalidInputError(f"spot window {axis} ({window} latents = {window * scale} px) is larger than the "
                                    f"panorama {axis} ({length * scale} px); use a smaller --window or a larger --{axis}")
        if length % window:
            lower = length - length % window
            raise InvalidInputError(
                f"spot windows tile the panorama without overlap, so the {axis} ({length * scale} px) must be a "
                f"multiple of the window {axis} ({window * scale} px); use a {axis} of {lower * scale} or "
                f"{(lower + window) * scale} px, or another --window")
    return WindowGrid.make((latent_height, latent_width), size, size, wrap=True, check=False)


class SpotRun(MultiDiffusionRun):
    """One SpotDiffusion generation: the tiling, and one horizontal offset (latent columns) per step."""

    method: SpotMethod

    def __init__(self, method, ctx):
        MethodRun.__init__(self, method, ctx)
        factor = ctx.info.vae_scale_factor
        self.grid = spot_grid(method, ctx.latent_height, ctx.latent_width, ctx.info.native_size // factor, factor)
        self.window_size_px = tuple(s * factor for s in self.grid.size)
        self.view_batch_size = method.view_batch_size
        self._window_controls = None
        steps = len(ctx.scheduler.timesteps)
        if method.shift:
            seed = method.shift_seed
            if seed is None:
                seed = ctx.generators[0].initial_seed() if ctx.generators else 0
            generator = torch.Generator().manual_seed(int(seed) + 1)
            self.offsets = [int(v) for v in torch.randint(0, self.grid.size[1], (steps,), generator=generator)]
        else:
            self.offsets = [0] * steps

    def resolved(self) -> dict:
        """The tiling this run uses (latent units) and the offset of every step (latent columns)."""
        return {"window": list(self.grid.size), "window_px": list(self.window_size_px),
                "num_windows": len(self.grid), "offsets": list(self.offsets)}

    def predict(self, model, model_input, t, i: int):
        """Roll left by this step's offset, predict the non-overlapping windows, roll back."""
        offset = self.offsets[i % len(self.offsets)]
        rolled = model_input.roll(-offset, dims=-1) if offset else model_input
        if self.ctx.control_image is not None:
            factor = self.ctx.info.vae_scale_factor
            control = self.ctx.control_image.roll(-offset * factor, dims=-1) if offset else self.ctx.control_image
            self._window_controls = self.grid.crop(control, scale=factor)
        windows = self.grid.crop(rolled)  # [B, N, C, wh, ww], no overlap: each latent in exactly one window
        b, n = windows.shape[:2]
        outputs = self.predict_windows(model, windows.flatten(0, 1), t)
        merged = self.grid.accumulate(outputs.view(b, n, *outputs.shape[1:]))
        return merged.roll(offset, dims=-1) if offset else merged


class SpotMethod(PanoramaMethod):
    """Non-overlapping native-size windows, shifted (rolled, with wrap) by a random offset every step."""

    name = "spot"
    size_family = "windows"
    summary = ("SpotDiffusion: non-overlapping windows rolled by a random offset every step (wrap); about "
               "window/stride times cheaper than multidiffusion")
    loop_closure = True  # the roll always wraps: spot is a 360° method
    options = (
        WINDOW_OPTION,
        Option("shift", True, "roll the window tiling by a random offset every step (off: fixed tiles, visible "
               "borders; for comparison only)", kind="bool"),
        Option("shift_seed", None, "seed of the offsets (default: the first image's seed)", kind="int", minimum=0,
               none_ok=True),
        Option("decode_wrap", "conv", "conv = wrap every VAE convolution (exactly periodic pixels); pad = decode with "
               "8 wrapped latent columns a side and crop them; none = plain decode", kind="choice",
               choices=DECODE_WRAP_MODES),
        Option("view_batch_size", 8, "windows per UNet call (memory vs speed, same result; halved on out-of-memory)",
               kind="int", minimum=1),
    )
    run_class = SpotRun

    def denoiser_positions(self, request, native_latent: int, latent_factor: int) -> int:
        """Non-overlapping windows tile the panorama: ``view_batch_size`` windows per call."""
        window = self.window if self.window is not None else (native_latent, native_latent)
        window = window if isinstance(window, tuple) else (window, window)
        height, width = request.height // latent_factor, request.width // latent_factor
        windows = request.batch_size * max(1, height // max(1, window[0])) * max(1, width // max(1, window[1]))
        return min(windows, self.view_batch_size) * min(window[0], height) * min(window[1], width)

    def check(self, request) -> None:
        if self.window is not None:
            spot_grid(self, request.height // 8, request.width // 8, native=None)

    def check_for_model(self, request, info, scheduler_name, adapters=()) -> None:
        super().check_for_model(request, info, scheduler_name, adapters)
        factor = info.vae_scale_factor
        spot_grid(self, request.height // factor, request.width // factor, info.native_size // factor, factor)
