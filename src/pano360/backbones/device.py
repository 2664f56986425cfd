"""Choosing the device and dtype: ``"auto"`` picks CUDA, then Apple MPS, then the CPU."""

from __future__ import annotations

import torch

from ..errors import InvalidInputError

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → cuda if available, else mps, else cpu; otherwise the named device, checked."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        raise InvalidInputError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError("device 'mps' was asked for but Apple MPS is not available; use --device cpu")
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"``/None → fp16 on CUDA/MPS, fp32 on the CPU; else the named dtype (fp32, fp16, bf16)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if dtype not in DTYPES:
        raise InvalidInputError(f"unknown dtype {dtype!r}; use auto, fp32, fp16 or bf16")
    return DTYPES[dtype]


def resolve_channels_last(value: bool | str | None, device: torch.device) -> bool:
    """``"auto"``/None → channels-last on the CPU only; otherwise the boolean given.

    Channels-last (NHWC) convolutions are much faster on CPUs with oneDNN (measured in
    docs/benchmarks.md: UNet about 1.2×, VAE decode up to 2×); GPU gains depend on the card and dtype
    and are not measured here, so GPUs keep the default layout unless asked for.
    """
    if value is None or value == "auto":
        return device.type == "cpu"
    if isinstance(value, bool):
        return value
    raise InvalidInputError(f"channels_last must be 'auto', True or False, got {value!r}")


def apply_memory_format(channels_last: bool, *modules) -> None:
    """Put the 4-D weights of ``modules`` (None entries skipped) in channels-last or the default layout.

    Only the memory layout changes (results agree to float rounding); already converted weights are
    left alone, so this is cheap to call before every generation.
    """
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for module in modules:
        if module is not None:
            module.to(memory_format=memory_format)
