"""Running big models on small GPUs: CPU offload, tiled decoding, and an optional compiled UNet.

Offload (through accelerate's hooks, the mechanism behind diffusers' ``enable_model_cpu_offload`` and
``enable_sequential_cpu_offload``), for the modules pano360 calls itself (text encoders, UNet,
ControlNet, VAE), which diffusers' pipeline-level switches do not know about:

* ``"model"``: every module lives in CPU memory and moves to the GPU whole when it is called; the
  module called before it moves back (text encoders → UNet/ControlNet → VAE). The GPU holds one model
  at a time: the UNet's weights (1.7 GB for SD 2 in fp16, 5.1 GB for SDXL) plus activations. A step
  costs no transfer once the UNet is resident (it stays until the VAE is called).
* ``"sequential"``: weights stay on the CPU and each layer's weights are copied to the GPU for its own
  call: the least GPU memory (about one layer's weights), many transfers per step (slow).

Results do not change: the same weights run the same operations, only their location moves.

:func:`auto_memory_plan` picks offload and tiled decoding from the free GPU memory. ``compile``:
:class:`CompiledNetwork` wraps ``torch.compile`` of the UNet and falls back to the eager UNet (with
one warning) where compilation is unsupported. The wraparound patch replaces ``conv._conv_forward``
on the module instances; a compiled graph traced without it would silently skip the wrap, so the
compiled callable is keyed by the patch state: one compiled function per wrap state, each traced
with the modules as they are when it first runs.
"""

from __future__ import annotations

import types
import warnings
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError

OFFLOAD_MODES = ("none", "model", "sequential", "auto")


def _modules_in_order(backbone) -> list:
    """Text encoders, denoiser (UNet or transformer), ControlNet, VAE: the order of calls in one generation."""
    pipe = backbone.pipe
    names = ("text_encoder", "text_encoder_2", "text_encoder_3", "unet", "transformer")
    modules = [getattr(pipe, n, None) for n in names] + [getattr(backbone, "controlnet", None), pipe.vae]
    return [m for m in modules if m is not None]


def enable_offload(backbone, mode: str, device: torch.device | str) -> None:
    """Attach accelerate offload hooks (``mode`` "model" or "sequential") to the backbone's modules; they
    run on ``device``. Idempotent per mode; use :func:`disable_offload` to undo."""
    from accelerate import cpu_offload, cpu_offload_with_hook

    if mode not in ("model", "sequential"):
        raise InvalidInputError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {mode!r}")
    current = getattr(backbone, "offload", None)
    if current == mode:
        return
    if current is not None:
        disable_offload(backbone)
    device = torch.device(device)
    modules = _modules_in_order(backbone)
    if mode == "model":
        hook = None
        for module in modules:
            module.to("cpu")
            _, hook = cpu_offload_with_hook(module, execution_device=device, prev_module_hook=hook)
    else:
        for module in modules:
            module.to("cpu")
            cpu_offload(module, execution_device=device, offload_buffers=True)
    backbone.offload = mode
    backbone.execution_device = device


def disable_offload(backbone, device: torch.device | str | None = None) -> None:
    """Remove the offload hooks; the modules end up on ``device`` (default: the execution device)."""
    from accelerate.hooks import remove_hook_from_module

    if getattr(backbone, "offload", None) is None:
        return
    device = torch.device(device) if device is not None else backbone.execution_device
    for module in _modules_in_order(backbone):
        remove_hook_from_module(module, recurse=True)
        module.to(device)
    backbone.offload = None
    backbone.execution_device = None


def execution_device(backbone) -> torch.device | None:
    """Where an offloaded backbone computes, or None when it is not offloaded."""
    return getattr(backbone, "execution_device", None)


# --- automatic choice ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryPlan:
    offload: str  # "none" | "model" | "sequential"
    tiled_decode: bool
    reason: str


def module_bytes(*modules) -> int:
    return sum(p.numel() * p.element_size() for m in modules if m is not None for p in m.parameters())


def decode_peak_bytes(height: int, width: int, dtype_bytes: int, vae_widths=(128, 256, 512, 512)) -> int:
    """Rough peak of an untiled SD VAE decode of an H×W px image: about three maps of the widest
    high-resolution level alive at once (measured ratio, docs/benchmarks.md)."""
    level_bytes = max(c * (height // 2 ** k) * (width // 2 ** k) for k, c in enumerate(reversed(vae_widths)))
    return 3 * level_bytes * dtype_bytes


def auto_memory_plan(backbone, height: int, width: int, free_bytes: int | None, dtype_bytes: int = 2) -> MemoryPlan:
    """Offload and tiled decoding for a generation of H×W px given ``free_bytes`` of GPU memory
    (None: not a GPU, nothing to save). Keeps 20 % of the free memory as headroom."""
    if free_bytes is None:
        return MemoryPlan("none", False, "not on a GPU")
    budget = 0.8 * free_bytes
    pipe = backbone.pipe
    unet = module_bytes(backbone.denoiser, getattr(backbone, "controlnet", None))
    everything = unet + module_bytes(getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None),
                                     getattr(pipe, "text_encoder_3", None), pipe.vae)
    widths = tuple(pipe.vae.config.get("block_out_channels", None) or (128, 256, 512, 512))
    decode = decode_peak_bytes(height, width, dtype_bytes, widths)
    tiled = decode > budget / 2
    working = unet * 0.5  # activations of a batched UNet call are of the order of half its weights at 64² windows
    if everything + working <= budget:
        return MemoryPlan("none", tiled, "all models fit")
    if unet + working <= budget:
        return MemoryPlan("model", tiled, "the UNet fits, not all models at once")
    return MemoryPlan("sequential", True, "the UNet alone does not fit")


# --- torch.compile -------------------------------------------------------------------------------------
class CompiledNetwork:
    """``torch.compile`` of a UNet that stays correct under the wraparound patch.

    Calls go to a compiled function per wrap state of the UNet (one traced plain, one wrapped), so a
    graph traced without wrapped convolutions is never reused with them or vice versa. If compiling
    fails (no compiler, unsupported backend or platform), one warning is given and the eager UNet is
    used from then on. ``backend`` and ``mode`` go to ``torch.compile``.
    """

    def __init__(self, network, backend: str = "inductor", mode: str | None = None):
        self.network = network
        self.backend, self.mode = backend, mode
        self._compiled: dict[bool, object] = {}
        self.failed: str | None = None

    def __getattr__(self, name):  # config, dtype, device, ... of the UNet
        return getattr(self.__dict__["network"], name)

    def _for_state(self, wrapped: bool):
        if wrapped not in self._compiled:
            network = self.network

            def call(*args, **kwargs):
                return network(*args, **kwargs)

            # a code object of its own per state: dynamo caches compiled graphs per code object
            code = call.__code__.replace(co_name=f"pano360_unet_{'wrapped' if wrapped else 'plain'}")
            call = types.FunctionType(code, call.__globals__, code.co_name, call.__defaults__, call.__closure__)
            self._compiled[wrapped] = torch.compile(call, backend=self.backend, mode=self.mode, dynamic=False)
        return self._compiled[wrapped]

    def __call__(self, *args, **kwargs):
        if self.failed is not None:
            return self.network(*args, **kwargs)
        from .wrap import is_wrapped

        wrapped = isinstance(self.network, torch.nn.Module) and is_wrapped(self.network)
        try:
            return self._for_state(wrapped)(*args, **kwargs)
        except Exception as error:
            if not _is_compile_failure(error):
                raise
            self.failed = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]
            warnings.warn(f"torch.compile of the UNet is not available here ({self.failed}); running it eagerly",
                          RuntimeWarning, stacklevel=2)
            return self.network(*args, **kwargs)


def _is_compile_failure(error: Exception) -> bool:
    try:
        from torch._dynamo.exc import BackendCompilerFailed, TorchRuntimeError, Unsupported
    except Exception:  # pragma: no cover - very old torch
        return True
    if isinstance(error, (BackendCompilerFailed, Unsupported, TorchRuntimeError)):
        return True
    text = f"{type(error).__name__} {error}".lower()
    return any(word in text for word in ("compile", "inductor", "triton", "dynamo", "c++", "cpp"))


def compile_supported() -> bool:
    """Whether ``torch.compile`` exists at all (Python and platform)."""
    return hasattr(torch, "compile")
