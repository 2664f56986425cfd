"""Wraparound ("circular") padding: the left and right edges of every feature map meet.

Every ``nn.Conv2d`` inside the given modules pads horizontally with the columns from the other side
(circular) and vertically with zeros, instead of zeros all round. This covers the UNet, the VAE
encoder and decoder, a ControlNet, and the low-rank convolutions that peft adds for LoRAs, because
they are all ``nn.Conv2d`` instances found by walking the module tree. The one manual pad in SD
models, the VAE encoder's asymmetric ``(0, 1, 0, 1)`` zero pad before each stride-2 ``Downsample2D``
convolution, is made circular too: its right-hand column becomes the first column.

Attention, GroupNorm, nearest-neighbour upsampling and the time/text embeddings commute with
horizontal rolls, so a fully wrapped UNet is exactly equivariant to rolls by multiples of its total
downsampling factor, and a wrapped VAE decoder to rolls by one latent column (= 8 pixels).

The patch is reversible and idempotent: :func:`enable_wraparound` installs it, :func:`disable_wraparound`
restores the modules exactly, and :func:`wraparound` does both around a ``with`` block. It changes no
parameter and no attribute that other code reads (``conv.padding`` keeps its value), so LoRA layers
created while the patch is active copy the right padding. Works in any dtype.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

_PATCH = "_pano360_wrap"  # attribute marking a patched module


def _padding_pairs(conv: nn.Conv2d) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding, in pixels, equivalent to the conv's ``padding`` setting."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return 0, 0, 0, 0
        # "same": total = dilation·(k−1), the extra pixel goes right/bottom as in PyTorch.
        total_h = conv.dilation[0] * (conv.kernel_size[0] - 1)
        total_w = conv.dilation[1] * (conv.kernel_size[1] - 1)
        return total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2
    pad_h, pad_w = conv.padding
    return pad_w, pad_w, pad_h, pad_h


def _wrap_columns(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """[..., W] → [..., left + W + right]: the last ``left`` columns before, the first ``right`` after
    (any rank: 5-D video-VAE maps too).

    ``F.pad``'s circular mode for NCHW maps (fastest there); for channels-last maps ``torch.cat``,
    which keeps the layout (``F.pad`` returns an NCHW copy, about 4× slower, and the next convolution
    converts back).
    """
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    if x.dim() == 4 and (not channels_last or max(left, right) > x.shape[-1]):  # (too wide: F.pad explains)
        return F.pad(x, (left, right, 0, 0), mode="circular")
    parts = ([x[..., x.shape[-1] - left:]] if left else []) + [x] + ([x[..., :right]] if right else [])
    return torch.cat(parts, dim=-1)


def _wrapped_conv_forward(self: nn.Conv2d, input: torch.Tensor, weight: torch.Tensor, bias):
    left, right, top, bottom = _padding_pairs(self)
    if left or right:
        input = _wrap_columns(input, left, right)
    if top == bottom:  # the usual case: the convolution itself zero-pads rows (no extra copy)
        return F.conv2d(input, weight, bias, self.stride, (top, 0), self.dilation, self.groups)
    input = F.pad(input, (0, 0, top, bottom), mode="constant", value=0.0)
    return F.conv2d(input, weight, bias, self.stride, 0, self.dilation, self.groups)


def _append_first_column(module: nn.Module, args: tuple):
    """Pre-hook for an encoder ``Downsample2D``: its zero right pad then lands on a wrapped column.

    The stride-2, 3×3, padding-0 convolution after the ``(0, 1, 0, 1)`` pad reads columns
    2j..2j+2; for the last output column that is W−2, W−1 and the pad. Appending column 0 first
    makes that pad column the wrapped one (the zero column added after it is never read for even W).
    """
    hidden_states, *rest = args
    return (torch.cat([hidden_states, hidden_states[..., :1]], dim=-1), *rest)


def _is_padless_downsample(module: nn.Module) -> bool:
    """SD's encoder ``Downsample2D`` (manual (0, 1, 0, 1) pad) or a ``ZeroPad2d((0, 1, 0, 1))`` before a
    stride-2 convolution (Qwen-Image's VAE ``Resample``)."""
    if isinstance(module, nn.ZeroPad2d):
        return tuple(module.padding) == (0, 1, 0, 1)
    return (
        type(module).__name__ == "Downsample2D"
        and getattr(module, "use_conv", False)
        and getattr(module, "padding", None) == 0
    )


def _is_causal_conv3d(module: nn.Module) -> bool:
    """A video VAE's causal 3-D convolution that pads by hand (``_padding`` = (left, right, top, bottom,
    front, back), as in Qwen-Image's / Wan's VAE)."""
    return isinstance(module, nn.Conv3d) and isinstance(getattr(module, "_padding", None), tuple)


def _wrap_causal_inputs(module: nn.Module, args: tuple, kwargs: dict):
    """Pre-hook of a patched causal Conv3d: wrap the width of its input (and of its time cache)."""
    left, right = module._pano360_wrap_columns
    args = list(args)
    if args:
        args[0] = _wrap_columns(args[0], left, right)
    cache = kwargs.get("cache_x", args[1] if len(args) > 1 else None)
    if cache is not None:
        cache = _wrap_columns(cache, left, right)
        if "cache_x" in kwargs:
            kwargs["cache_x"] = cache
        else:
            args[1] = cache
    return tuple(args), kwargs


def _patchable(modules: Iterable[nn.Module | None]) -> Iterator[nn.Module]:
    seen: set[int] = set()
    for root in modules:
        if root is None:
            continue
        for module in root.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            if (isinstance(module, nn.Conv2d) and module.padding_mode == "zeros" or _is_padless_downsample(module)
                    or _is_causal_conv3d(module)):
                yield module


def enable_wraparound(*modules: nn.Module | None) -> int:
    """Patch every Conv2d (and padless Downsample2D) below ``modules`` to wrap horizontally.

    Idempotent: already patched layers are left alone. ``None`` entries are skipped so optional
    components can be passed directly. Returns the number of layers newly patched.
    """
    patched = 0
    for module in _patchable(modules):
        if hasattr(module, _PATCH):
            continue
        if isinstance(module, nn.Conv2d):
            module._conv_forward = types.MethodType(_wrapped_conv_forward, module)
            setattr(module, _PATCH, None)
        elif _is_causal_conv3d(module):
            left, right, *rest = module._padding
            module._pano360_wrap_columns = (left, right)
            module._padding = (0, 0, *rest)  # instance attribute: the width pad is now the wrap
            setattr(module, _PATCH, module.register_forward_pre_hook(_wrap_causal_inputs, with_kwargs=True))
        else:
            setattr(module, _PATCH, module.register_forward_pre_hook(_append_first_column))
        patched += 1
    return patched


def disable_wraparound(*modules: nn.Module | None) -> int:
    """Undo :func:`enable_wraparound` below ``modules``; returns the number of layers restored."""
    restored = 0
    for module in _patchable(modules):
        if hasattr(module, _PATCH):
            _unpatch(module)
            restored += 1
    return restored


def _unpatch(module: nn.Module) -> None:
    handle = getattr(module, _PATCH)
    if handle is None:
        del module._conv_forward  # falls back to the class method
    else:
        handle.remove()
    if hasattr(module, "_pano360_wrap_columns"):
        left, right = module._pano360_wrap_columns
        module._padding = (left, right, *module._padding[2:])
        del module._pano360_wrap_columns
    delattr(module, _PATCH)


def is_wrapped(module: nn.Module) -> bool:
    """True if any layer below ``module`` is currently patched."""
    return any(hasattr(m, _PATCH) for m in module.modules())


@contextlib.contextmanager
def wraparound(*modules: nn.Module | None, enabled: bool = True):
    """``with wraparound(unet, vae, controlnet):`` wraps inside the block and restores afterwards.

    Layers that were already wrapped before the block stay wrapped after it.
    """
    if not enabled:
        yield
        return
    already = {id(m) for m in _patchable(modules) if hasattr(m, _PATCH)}
    enable_wraparound(*modules)
    try:
        yield
    finally:
        for module in _patchable(modules):
            if id(module) not in already and hasattr(module, _PATCH):
                _unpatch(module)


def total_downsampling(unet: nn.Module) -> int:
    """Total spatial downsampling of a diffusers UNet (2 ** number of downsampling blocks)."""
    blocks = getattr(unet, "down_blocks", [])
    return 2 ** sum(1 for block in blocks if getattr(block, "downsamplers", None))
