"""Numbers checked where they leave: non-finite tensors stop the work with one line naming the likely cause.

A NaN or infinity in latents, decoded images, losses or weights is never passed on as a result: an
all-black image or an adapter of NaN weights reported as success is worse than an error. Callers
name what was checked and the likely causes, e.g.::

    check_finite(latents, "latents after step 3", hint="a LoRA/adapter scale or --guidance too large")

Options that cannot be finite (``--lora-scale nan``) are refused earlier, where they enter
(:func:`check_finite_number`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import Pano360Error

__all__ = ["NonFiniteError", "check_finite", "check_finite_number", "first_non_finite"]


class NonFiniteError(Pano360Error, ArithmeticError):
    """A computed value (loss, latent, image, weight) became NaN or infinite."""


def is_finite(tensor: Any) -> bool:
    import torch

    if not isinstance(tensor, torch.Tensor) or not (tensor.is_floating_point() or tensor.is_complex()):
        return True
    return bool(torch.isfinite(tensor).all())


def check_finite(tensor: Any, what: str, hint: str = "") -> Any:
    """Return ``tensor`` if every value is finite; else raise :class:`NonFiniteError` (one line)."""
    if not is_finite(tensor):
        import torch

        count = int((~torch.isfinite(tensor)).sum())
        cause = f"; likely cause: {hint}" if hint else ""
        raise NonFiniteError(f"{what} became non-finite ({count} of {tensor.numel()} values NaN or infinite), so "
                             f"nothing is written{cause}")
    return tensor


def first_non_finite(state: Mapping[str, Any]) -> str | None:
    """Name of the first tensor in ``state`` with a NaN or infinite value, or None."""
    for name, value in state.items():
        if not is_finite(value):
            return name
    return None


def check_finite_number(value: Any, flag: str) -> Any:
    """Refuse NaN and infinities for a numeric option (``flag`` as the user wrote it)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
        from .errors import InvalidInputError

        raise InvalidInputError(f"{flag} must be a finite number, got {value}")
    return value


def generation_hint(generator: Any, guidance_scale: float | None = None) -> str:
    """The likely causes of a non-finite generation, from what is loaded (LoRAs and their scales,
    adapters, half precision) and the options."""
    causes = []
    backbone = getattr(generator, "backbone", None)
    for entry in getattr(backbone, "loras", None) or []:
        causes.append(f"LoRA {entry.get('source')} at scale {entry.get('scale')} (try --lora-scale 0.5, or check "
                      "that the LoRA file is not damaged)")
    for adapter in getattr(generator, "adapters", None) or []:
        causes.append(f"adapter {getattr(adapter, 'kind', type(adapter).__name__)} (check its weights)")
    dtype = str(getattr(generator, "dtype", ""))
    if "float16" in dtype and "bfloat16" not in dtype:
        causes.append("fp16 overflow (try --dtype fp32 or bf16)")
    if guidance_scale is not None and guidance_scale > 30:
        causes.append(f"--guidance {guidance_scale:g} is very large (7.5 is typical)")
    if not causes:
        causes.append("the model weights (a damaged checkpoint?) or a method option far outside its range")
    return "; or ".join(causes)
