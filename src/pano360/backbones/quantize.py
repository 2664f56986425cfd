"""A frozen transformer stored in fewer bits, for sampling and for QLoRA-style adapter training.

* ``fp8``: every weight diffusers' layerwise casting stores (all but norms, embedders' positional
  tables and the input/output projections it skips) is kept in ``float8_e4m3fn`` and cast to the compute
  dtype one layer at a time during the forward pass (``ModelMixin.enable_layerwise_casting``). Any
  device; 1 byte per stored weight.
* ``nf4``: every ``nn.Linear`` becomes a bitsandbytes ``Linear4bit`` holding 4-bit NormalFloat codes
  in blocks of 64 weights, with QLoRA's double quantization (each block's absmax as an 8-bit code, one
  fp32 scale per 256 blocks): 4 + 8/64 + 32/(64·256) ≈ 4.127 bits per weight. The weights are quantized
  when the module moves to its device (CPU or CUDA); the forward pass dequantizes one weight at a time
  into ``compute_dtype``. Biases and every non-Linear parameter stay in the load dtype.

Gradients still flow through a quantized layer to its input, so a LoRA (or UniPano) wrapper around it
trains in fp32 while the base stays frozen in 8 or 4 bits. :func:`quantized_weight_bytes` gives the
stored size without quantizing (works on the ``meta`` device), for memory estimates.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInputError

QUANTIZATIONS = ("none", "fp8", "nf4")
NF4_BLOCK = 64  # weights per absmax (bitsandbytes' 4-bit default)
NF4_DOUBLE_QUANT_BLOCK = 256  # absmax codes per fp32 scale (double quantization)
NF4_BITS_PER_WEIGHT = 4 + 8 / NF4_BLOCK + 32 / (NF4_BLOCK * NF4_DOUBLE_QUANT_BLOCK)


def _check_known(quantize: str) -> None:
    if quantize not in QUANTIZATIONS:
        raise InvalidInputError(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")


def check_quantize(quantize: str) -> None:
    """One line naming the fix when ``quantize`` is unknown, or is ``nf4`` without bitsandbytes (before loading)."""
    _check_known(quantize)
    if quantize == "nf4":
        _bitsandbytes()


def unet_model_error(model: str, family: str | None = None) -> InvalidInputError:
    """The one line for ``--quantize`` on an SD/SDXL (UNet) model."""
    kind = f"{family} UNet model" if family else "UNet model"
    return InvalidInputError(f"--quantize stores a FLUX/SD3/Qwen-Image transformer in fewer bits; {model!r} is a "
                             f"{kind}: drop --quantize (use --dtype fp16)")


def _bitsandbytes():
    try:
        import bitsandbytes
    except ImportError:
        raise InvalidInputError("--quantize nf4 needs bitsandbytes: pip install bitsandbytes (or use --quantize "
                                "fp8, which needs nothing)") from None
    return bitsandbytes


def quantize_module(module: nn.Module, quantize: str, compute_dtype: torch.dtype) -> nn.Module:
    """Store ``module``'s weights as ``quantize`` says (``"none"`` leaves it as is); returns ``module``.

    ``fp8`` converts in place; ``nf4`` replaces the Linears in place and quantizes on the module's next
    ``.to(device)`` (call it: :func:`pano360.backbones.loading.load_backbone` does). A module is
    quantized once: a second call raises.
    """
    check_quantize(quantize)
    if quantize != "none" and getattr(module, "_pano360_quantized", None):
        raise InvalidInputError(f"this model is already stored in {module._pano360_quantized}")
    if quantize == "fp8":
        module.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=compute_dtype)
        for child in module.modules():  # LoRAs loaded later (peft) take this dtype, not float8
            if getattr(getattr(child, "weight", None), "dtype", None) == torch.float8_e4m3fn:
                child.compute_dtype = compute_dtype
    elif quantize == "nf4":
        _replace_linears_nf4(module, compute_dtype)
    if quantize != "none":
        module._pano360_quantized = quantize
    return module


def _replace_linears_nf4(module: nn.Module, compute_dtype: torch.dtype) -> None:
    bnb = _bitsandbytes()
    targets = [(name, child) for name, child in module.named_modules()
               if isinstance(child, nn.Linear) and not isinstance(child, bnb.nn.Linear4bit)]
    for name, linear in targets:
        quantized = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                                      device="meta")
        # unquantized codes until the next .to(device): bitsandbytes quantizes a Params4bit as it moves
        quantized.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, compress_statistics=True,
                                             quant_type="nf4", blocksize=NF4_BLOCK)
        if linear.bias is not None:
            quantized.bias = nn.Parameter(linear.bias.data, requires_grad=False)
        quantized.requires_grad_(False)
        parent_name, _, child_name = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child_name, quantized)


def materialise(module: nn.Module, device) -> nn.Module:
    """Move ``module`` to ``device``, computing the NF4 codes of weights not quantized yet, one layer at a
    time. A CPU target with a GPU present quantizes on the GPU and moves the codes back (seconds instead of
    minutes for 12 B weights: the CPU path quantizes about 20 M weights/s per core)."""
    device = torch.device(device)
    if getattr(module, "_pano360_quantized", None) == "nf4":
        quantize_on = torch.device("cuda") if device.type == "cpu" and torch.cuda.is_available() else device
        for child in module.modules():
            weight = getattr(child, "weight", None)
            if type(weight).__name__ == "Params4bit" and not weight.bnb_quantized:
                child.weight = weight._quantize(quantize_on)
                if quantize_on != device:
                    child.to(device)
    return module.to(device)


def is_nf4_quantized(module: nn.Module) -> bool:
    """True when every NF4 weight of ``module`` holds its 4-bit codes (after :func:`materialise`)."""
    weights = [getattr(m, "weight", None) for m in module.modules()]
    found = [w for w in weights if type(w).__name__ == "Params4bit"]
    return bool(found) and all(w.bnb_quantized for w in found)


def quantized_weight_bytes(module: nn.Module, quantize: str, load_dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of ``module``'s parameters stored as ``quantize`` would store them, computed from shapes
    (``module`` may live on ``meta`` and is not changed): NF4 Linears at :data:`NF4_BITS_PER_WEIGHT`
    (rounded as bitsandbytes pads: whole bytes of codes, whole blocks), fp8 weights at 1 byte, the rest
    in ``load_dtype``."""
    _check_known(quantize)
    element = torch.empty((), dtype=load_dtype).element_size()
    total = 0
    if quantize == "fp8":
        stored = _fp8_stored_parameters(module)
        for name, parameter in module.named_parameters():
            total += parameter.numel() * (1 if name in stored else element)
        return total
    for _name, parameter in module.named_parameters():
        total += parameter.numel() * element
    if quantize == "nf4":
        for child in module.modules():
            if isinstance(child, nn.Linear):
                count = child.in_features * child.out_features
                total += nf4_weight_bytes(count) - count * element
    return total


def nf4_weight_bytes(count: int) -> int:
    """Bytes bitsandbytes holds for ``count`` weights in NF4 with double quantization: the packed codes
    (two per byte), one 8-bit absmax code per 64-weight block, and per 256 such codes one fp32 scale plus
    the absmax mean (fp32)."""
    blocks = -(-count // NF4_BLOCK)
    groups = -(-blocks // NF4_DOUBLE_QUANT_BLOCK)
    return -(-count // 2) + blocks + groups * 4 + 4


def _fp8_stored_parameters(module: nn.Module) -> set[str]:
    """Names of the parameters diffusers' layerwise casting stores in fp8 (it skips norms, positional
    embeddings and ``proj_in``/``proj_out`` by name pattern, and modules other than its supported layers)."""
    import re

    from diffusers.hooks.layerwise_casting import (
        _GO_LC_SUPPORTED_PYTORCH_LAYERS,
        DEFAULT_SKIP_MODULES_PATTERN,
    )

    patterns = tuple(DEFAULT_SKIP_MODULES_PATTERN) + tuple(getattr(module, "_keep_in_fp32_modules", None) or ()) \
        + tuple(getattr(module, "_skip_layerwise_casting_patterns", None) or ())
    stored = set()
    for name, child in module.named_modules():
        if not isinstance(child, _GO_LC_SUPPORTED_PYTORCH_LAYERS):
            continue
        if any(re.search(pattern, name) for pattern in patterns):
            continue
        stored.update(f"{name}.{p}" if name else p for p, _ in child.named_parameters(recurse=False))
    return stored


def largest_linear_bytes(module: nn.Module, dtype: torch.dtype = torch.bfloat16) -> int:
    """Bytes of the largest Linear weight in ``dtype``: the working copy a quantized layer dequantizes
    (or upcasts) while it runs."""
    element = torch.empty((), dtype=dtype).element_size()
    sizes = [m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear)]
    return max(sizes, default=0) * element
