"""Checks on generation arguments that need no model: run them before anything expensive.

Each check raises :class:`~pano360.errors.InvalidInputError` with one line that says what to change.
Sizes are in pixels unless a name says otherwise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from .defaults import NATIVE_SIZES
from .errors import InvalidInputError

PIXELS_PER_LATENT = 8


API_NAMES = {"height": "height", "width": "width", "num_inference_steps": "num_inference_steps",
             "guidance_scale": "guidance_scale", "num_images_per_prompt": "num_images_per_prompt", "seed": "seed",
             "eta": "eta"}
"""How the checks name each value by default: the Python API's argument names."""

CLI_FLAGS = {"height": "--height", "width": "--width", "num_inference_steps": "--steps",
             "guidance_scale": "--guidance", "num_images_per_prompt": "--num-images", "seed": "--seed", "eta": "--eta"}
"""The same values as ``pano360 generate`` calls them: pass ``flags=CLI_FLAGS`` from the CLI."""


def check_size(height: int, width: int, flags: dict[str, str] = API_NAMES) -> None:
    """Height and width: positive multiples of 8 pixels, height ≤ width."""
    for key, value in (("height", height), ("width", width)):
        name = flags[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInputError(f"{name} must be a whole number of pixels, got {value!r}")
        if value <= 0:
            raise InvalidInputError(f"{name} must be positive, got {value}")
        if value % PIXELS_PER_LATENT:
            lower = max(PIXELS_PER_LATENT, value - value % PIXELS_PER_LATENT)
            raise InvalidInputError(
                f"{name} must be a multiple of 8 pixels (one latent column), got {value}; use {lower} or {lower + 8}"
            )
    if height > width:
        raise InvalidInputError(
            f"{flags['height']} ({height}) is greater than {flags['width']} ({width}); a 360° panorama is at least as "
            f"wide as it is high: use width >= height (2:1, e.g. {height}x{2 * height} HxW, for a full sphere)"
        )


def check_steps(num_inference_steps: int, name: str = "the number of steps") -> None:
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise InvalidInputError(f"{name} must be a whole number >= 1, got {num_inference_steps!r}")


def check_guidance(guidance_scale: float, name: str = "guidance scale") -> None:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or \
            not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise InvalidInputError(
            f"{name} must be a finite number >= 0 (1 disables guidance; 7.5 is typical), got {guidance_scale!r}"
        )


def check_existing_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` must be an existing file; returns it expanded."""
    expanded = Path(os.path.expanduser(str(path)))
    if not expanded.is_file():
        raise InvalidInputError(f"{what} {str(path)!r} does not exist or is not a file; check the path")
    return expanded


def check_finite(value: float, name: str) -> None:
    """A real number (not NaN or infinite: argparse's ``type=float`` accepts ``nan`` and ``inf``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")


def check_nonnegative(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")


def check_generation_args(
    *, height: int, width: int, num_inference_steps: int, guidance_scale: float, num_images_per_prompt: int = 1,
    flags: dict[str, str] = API_NAMES,
) -> None:
    """All model-free checks of :meth:`PanoramaGenerator.__call__` arguments; messages name the
    values as ``flags`` does (:data:`API_NAMES`, or :data:`CLI_FLAGS` from the CLI)."""
    check_size(height, width, flags)
    check_steps(num_inference_steps, "the number of steps" if flags is API_NAMES else flags["num_inference_steps"])
    check_guidance(guidance_scale, "guidance scale" if flags is API_NAMES else flags["guidance_scale"])
    if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise InvalidInputError(f"{flags['num_images_per_prompt']} must be a whole number >= 1, got {num_images_per_prompt!r}")


# --- prompts and seeds (Python API types) --------------------------------------------------------

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes 64-bit seeds


def check_prompts(prompt, name: str = "prompt") -> list:
    """``prompt``: a str or a non-empty list/tuple whose items are str (or, for multi-view methods,
    non-empty lists of str: one prompt per view) → the list; anything else is an error (a number or
    None would otherwise be encoded as its repr, or fail deep in the tokenizer)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            raise InvalidInputError(f"{name} is an empty list; give at least one prompt")
        for index, item in enumerate(prompt):
            views = item if isinstance(item, (list, tuple)) and item else [item]
            for view, text in enumerate(views):
                if not isinstance(text, str):
                    where = f"{name}[{index}]" + (f"[{view}]" if views is item else "")
                    raise InvalidInputError(
                        f"{where} is a {type(text).__name__} ({text!r}); every prompt must be a str"
                    )
        return list(prompt)
    raise InvalidInputError(f"{name} must be a str or a list of str, got {type(prompt).__name__} ({prompt!r})")


def check_seed(seed, count: int = 1, flag: str = "seed") -> None:
    """``seed``: a whole number in 0..2**64-1, with room for ``count`` consecutive seeds (image i uses
    ``seed + i``), or a list of such numbers. None (random) passes."""
    if seed is None:
        return
    seeds = list(seed) if isinstance(seed, (list, tuple)) else [seed]
    for value in seeds:
        if isinstance(value, bool) or not isinstance(value, int) and not _is_integer_like(value):
            raise InvalidInputError(f"{flag} must be a whole number, got {type(value).__name__} ({value!r})")
        value = int(value)
        if value < 0 or value > MAX_SEED:
            raise InvalidInputError(f"{flag} must be between 0 and 2**64-1 = {MAX_SEED}, got {value}")
    if not isinstance(seed, (list, tuple)) and count > 1 and int(seed) + count - 1 > MAX_SEED:
        raise InvalidInputError(
            f"{flag} {int(seed)} + {count - 1} (one seed per image) exceeds 2**64-1; use a seed <= {MAX_SEED - count + 1}"
        )


def _is_integer_like(value) -> bool:
    """numpy integers and other ``numbers.Integral`` (not floats, not strings)."""
    import numbers

    return isinstance(value, numbers.Integral)


# --- sizes: defaults, limits per method family, memory ---------------------------------------------

MAX_SIDE = 16384
"""Longest panorama side in pixels for every method (2048 latent units)."""

MAX_PIXELS: dict[str, int] = {
    "full": 2048 * 4096,     # circular (and other whole-panorama UNet methods): attention cost grows with area²
    "windows": 1024 * 16384,  # multidiffusion, syncdiffusion: native-size windows, time grows with area
}
"""Largest panorama (height × width, pixels) per method family; beyond it a run is refused unless the
user allows it (``--allow-large`` / ``allow_large=True``). ``full`` runs the UNet on the whole
latent, ``windows`` on native-size windows."""

METHOD_FAMILIES: dict[str, str] = {"circular": "full", "multidiffusion": "windows", "syncdiffusion": "windows"}


def method_family(method) -> str:
    """``"full"`` or ``"windows"`` for a method name or object: its ``size_family`` attribute when it
    declares one, else :data:`METHOD_FAMILIES`, else ``"full"`` (the stricter limit)."""
    declared = getattr(method, "size_family", None)
    if declared in MAX_PIXELS:
        return declared
    name = method if isinstance(method, str) else getattr(method, "name", "")
    return METHOD_FAMILIES.get(name, "full")


def resolve_size(height, width, native_height: int, flags: tuple[str, str] = ("--height", "--width")) -> tuple[int, int]:
    """Fill defaults: ``height`` None → ``native_height``, ``width`` None → 2 × height (a full sphere).
    Zero or negative values are errors (they used to fall back to the default silently)."""
    for flag, value in zip(flags, (height, width)):
        if value is not None and not isinstance(value, bool) and isinstance(value, int) and value <= 0:
            raise InvalidInputError(
                f"{flag} must be a positive number of pixels, got {value}; omit it for the model's native "
                f"size ({native_height}x{2 * native_height})"
            )
    height = native_height if height is None else height
    width = 2 * height if width is None and isinstance(height, int) else width
    return height, width


def check_size_limit(height: int, width: int, method="circular", allow_large: bool = False,
                     flag: str = "--allow-large") -> None:
    """Refuse sizes beyond :data:`MAX_SIDE` or the method family's :data:`MAX_PIXELS` at once, naming
    the limit and the fix (a smaller size, a windowed method, or ``flag``)."""
    if allow_large:
        return
    family = method_family(method)
    name = method if isinstance(method, str) else getattr(method, "name", "this method")
    if max(height, width) > MAX_SIDE:
        raise InvalidInputError(
            f"{height}x{width} (HxW) exceeds the largest side pano360 allows ({MAX_SIDE} px); use --height/"
            f"--width <= {MAX_SIDE}, or pass {flag} if you know the run fits"
        )
    limit = MAX_PIXELS[family]
    if height * width > limit:
        fit_width = max(8, (limit // height) // 8 * 8)
        hint = "; a windowed method (--method multidiffusion) allows more" if family == "full" else ""
        raise InvalidInputError(
            f"{height}x{width} (HxW) is {height * width / 1e6:.1f} MP, above the {limit / 1e6:.1f} MP limit of {name}; "
            f"use e.g. {height}x{min(fit_width, width)}{hint}, or pass {flag} if you know the run fits"
        )


PARAMETERS = {"sd1": 1.07e9, "sd2": 1.30e9, "sdxl": 3.47e9, "flux": 16.9e9, "sd3": 7.7e9, "qwen-image": 28.8e9,
              "flux2": 8.0e9}
"""Parameters of denoiser + text encoder(s) + VAE per family (SD 1.5: 860M + 123M + 84M; SD 2: 865M +
354M + 84M; SDXL: 2.57B + 817M + 84M; FLUX.1: 11.9B + T5-XXL 4.76B + CLIP-L 123M + 84M; SD3 medium:
2.03B + T5 4.76B + CLIPs 0.82B + 84M; Qwen-Image: 20.4B + Qwen2.5-VL-7B 8.29B + 127M; FLUX.2 [klein] 4B:
about 3.9B + Qwen3-4B 4.0B + 84M). A quantized or
offloaded model needs less; pass ``parameters`` (bytes are parameters × ``dtype_bytes``)."""
DENOISER_PARAMETERS = {"flux": 11.9e9, "sd3": 2.03e9, "qwen-image": 20.43e9, "flux2": 3.88e9}
"""Parameters of the transformer alone per DiT family (the part ``--quantize`` stores in fewer bits)."""
QUANTIZED_BYTES_PER_PARAMETER = {
    "fp8": {"flux": 1.273, "sd3": 1.333, "qwen-image": 1.001, "flux2": 1.005},
    "nf4": {"flux": 0.516, "sd3": 0.517, "qwen-image": 0.516, "flux2": 0.516},
}
"""Bytes per transformer parameter as :mod:`pano360.backbones.quantize` stores it, from
``quantized_weight_bytes`` on the full-size configs (fp8 keeps diffusers' skipped norm/embedding layers
in bf16: FLUX's and SD3's AdaLN modulation; nf4 is 4.127 bits per Linear weight plus the bf16 rest)."""
UNET_ELEMENTS_PER_LATENT = {"sd1": 30_000, "sd2": 30_000, "sdxl": 45_000, "flux": 12_000, "sd3": 8_000,
                            "qwen-image": 12_000, "flux2": 12_000}
"""Peak denoiser activation elements per latent position and batch entry (memory-efficient attention;
a DiT token covers 2 × 2 latents with a hidden width of 1536-3072)."""
VAE_ELEMENTS_PER_PIXEL = 2_000
"""Peak VAE-decoder activation elements per output pixel (the decoder's full-resolution stages)."""
VAE_GRAD_ELEMENTS_PER_PIXEL = 9_000
"""SyncDiffusion: activations kept for the backward pass of a window decode, per window pixel."""


@dataclass(frozen=True)
class MemoryEstimate:
    """A coarse peak-memory estimate of a run, in bytes (see :func:`estimate_memory`)."""

    weights: int
    unet: int
    vae: int
    extra: int = 0

    @property
    def total(self) -> int:
        return int(1.1 * (self.weights + max(self.unet + self.extra, self.vae)))  # + allocator slack

    def describe(self) -> str:
        gib = 2**30
        return (f"about {self.total / gib:.1f} GiB (weights {self.weights / gib:.1f}, UNet {self.unet / gib:.1f}, "
                f"VAE decode {self.vae / gib:.1f}" + (f", sync gradients {self.extra / gib:.1f}" if self.extra else "")
                + ")")


def estimate_memory(
    height: int, width: int, *, family: str = "sd2", method="circular", dtype_bytes: int = 2, batch_size: int = 1,
    guidance: bool = True, window: int | None = None, view_batch_size: int = 8, sync_batch_size: int = 0,
    parameters: float | None = None, positions: int | None = None, quantize: str = "none",
) -> MemoryEstimate:
    """Peak memory of one generation, from sizes alone (no model needed).

    Model: weights (``parameters`` or :data:`PARAMETERS` × ``dtype_bytes``) plus the larger of the
    UNet call (latent positions per call × :data:`UNET_ELEMENTS_PER_LATENT`, doubled with guidance;
    ``windows`` methods call it on ``view_batch_size`` windows of ``window``² latents, ``full``
    methods on the whole h×w latent) and the VAE decode of the panorama(s) (pixels ×
    :data:`VAE_ELEMENTS_PER_PIXEL`), plus SyncDiffusion's window decodes with gradient
    (``sync_batch_size`` windows × window pixels × :data:`VAE_GRAD_ELEMENTS_PER_PIXEL`), plus 10 %.
    Coarse by design (within a factor of ~2): it exists to refuse runs that cannot fit at once, not
    to plan tight ones. ``height``/``width`` in pixels; ``window`` in latent units (default: native).
    ``positions``: the latent positions of the method's largest denoiser call as the method declares
    them (:meth:`pano360.methods.base.PanoramaMethod.denoiser_positions`), instead of the rule above.
    ``quantize`` (``fp8``/``nf4``, DiT families): the transformer's weights at
    :data:`QUANTIZED_BYTES_PER_PARAMETER`, the rest and all activations at ``dtype_bytes``.
    """
    params = parameters if parameters is not None else PARAMETERS.get(family, PARAMETERS["sd2"])
    weights = params * dtype_bytes
    if quantize != "none" and parameters is None and family in DENOISER_PARAMETERS:
        denoiser = DENOISER_PARAMETERS[family]
        weights = (params - denoiser) * dtype_bytes + denoiser * QUANTIZED_BYTES_PER_PARAMETER[quantize][family]
    latent_h, latent_w = height // PIXELS_PER_LATENT, width // PIXELS_PER_LATENT
    cfg = 2 if guidance else 1
    per_latent = UNET_ELEMENTS_PER_LATENT.get(family, 30_000)
    if positions is not None:
        pass  # the method's own count
    elif method_family(method) == "windows":
        window = window or NATIVE_SIZES.get(family, 512) // PIXELS_PER_LATENT
        positions = view_batch_size * min(window, latent_h) * min(window, latent_w)  # one batched window call
    else:
        positions = batch_size * latent_h * latent_w
    unet = int(positions * cfg * per_latent * dtype_bytes)
    vae_bytes = 4 if family == "sdxl" else dtype_bytes  # the SDXL VAE is upcast to float32
    vae = int(batch_size * height * width * VAE_ELEMENTS_PER_PIXEL * vae_bytes)
    extra = 0
    if sync_batch_size:
        window_px = (window or NATIVE_SIZES.get(family, 512) // PIXELS_PER_LATENT) * PIXELS_PER_LATENT
        extra = int(sync_batch_size * window_px * window_px * VAE_GRAD_ELEMENTS_PER_PIXEL * dtype_bytes)
    return MemoryEstimate(weights=int(weights), unet=unet, vae=vae, extra=extra)


def available_memory(device) -> int | None:
    """Bytes a run on ``device`` may use: free GPU memory for ``cuda`` (torch is imported only then),
    available RAM (``MemAvailable``) for ``cpu``; None when unknown (e.g. ``mps``)."""
    text = str(device)
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        index = int(text.split(":")[1]) if ":" in text else torch.cuda.current_device()
        free, _total = torch.cuda.mem_get_info(index)
        return int(free)
    if text == "cpu":
        try:
            with open("/proc/meminfo", encoding="ascii") as handle:
                for line in handle:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_memory(estimate: MemoryEstimate, available: int | None, device: str = "the device",
                 allow_large: bool = False, flag: str = "--allow-large") -> None:
    """Refuse a run whose estimate exceeds the memory ``available`` (bytes) on ``device``."""
    if allow_large or available is None or estimate.total <= available:
        return
    raise InvalidInputError(
        f"this run needs {estimate.describe()}, but {device} has {available / 2**30:.1f} GiB free; use a smaller "
        f"--height/--width or --num-images, fp16 (--dtype fp16), or pass {flag} if you know it fits"
    )


# --- scheduler-dependent values ---------------------------------------------------------------------

SCHEDULERS_WITH_ETA = ("ddim",)
"""Schedulers whose step takes DDIM's eta (pano360's names); for the others eta means nothing."""


def check_eta(eta: float, scheduler: str, flag: str = "--eta") -> None:
    """eta in [0, 1] (beyond 1 the DDIM variance is negative: NaNs), and only for a scheduler that has it."""
    check_nonnegative(eta, flag)
    if eta > 1:
        raise InvalidInputError(f"{flag} must be between 0 (deterministic) and 1 (DDPM-like), got {eta:g}")
    if eta and scheduler not in SCHEDULERS_WITH_ETA:
        raise InvalidInputError(
            f"{flag} {eta:g} has no effect with scheduler {scheduler}; use --scheduler "
            f"{' or '.join(SCHEDULERS_WITH_ETA)}, or drop {flag}"
        )


# What every SD 1.x/2.x/SDXL scheduler config says; a CLI check before the model's own config is read.
SD_SCHEDULER_DEFAULTS = {"num_train_timesteps": 1000, "timestep_spacing": "leading", "steps_offset": 1}


def max_inference_steps(config) -> int:
    """The most inference steps a diffusers scheduler with ``config`` can take: ``num_train_timesteps``,
    less the steps whose "leading" timesteps (``i * (T // n) + steps_offset``) would pass T - 1."""
    train = int(config.get("num_train_timesteps", 1000) or 1000)
    if config.get("timestep_spacing", "leading") != "leading":
        return train
    offset = int(config.get("steps_offset", 0) or 0)
    n = train
    while n > 1 and (n - 1) * (train // n) + offset > train - 1:
        n -= 1
    return n


def check_steps_for_scheduler(num_inference_steps: int, train_steps, flag: str = "--steps") -> None:
    """A scheduler cannot take more inference steps than the model was trained with (usually 1000), nor
    (for "leading" spacing with ``steps_offset``) the steps that would index past its last timestep.

    ``train_steps``: the training steps (an int), or the scheduler's config (a mapping)."""
    if isinstance(train_steps, int):
        limit = train = train_steps
    else:
        limit, train = max_inference_steps(train_steps), int(train_steps.get("num_train_timesteps", 1000) or 1000)
    if num_inference_steps > train:
        raise InvalidInputError(
            f"{flag} {num_inference_steps} exceeds the scheduler's {train} training steps; use {flag} "
            f"<= {limit} (20-50 is typical)"
        )
    if num_inference_steps > limit:
        raise InvalidInputError(
            f"{flag} {num_inference_steps} is more than this scheduler can run (its timesteps start at an offset "
            f"of {train_steps.get('steps_offset')}); use {flag} <= {limit} (20-50 is typical)"
        )
