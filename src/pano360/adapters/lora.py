"""LoRA on a chosen subset of a UNet's attention projections (``--adapter lora``).

Each targeted ``nn.Linear`` W (``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of the self-attention
``attn1`` and/or cross-attention ``attn2`` blocks) becomes ``W·x + (alpha / rank)·B·A·x`` with
A [rank, in] (Gaussian, std 1/rank, as diffusers' training scripts initialise peft LoRAs) and
B [out, rank] (zeros), so a fresh adapter leaves the UNet's output unchanged. The optional target
``conv`` adds LoRA to the UNet's convolutions too (``conv_in``, ``conv_out`` and every ResNet's
``conv1``/``conv2``; "LoCon"): A is a k×k convolution with the base's stride and padding (so
wraparound padding reaches it), B a 1×1 convolution; diffusers and peft load the same keys.

The adapter owns only A and B (``self.layers[<module path with "." → "-">]``). :meth:`attach` swaps
each target Linear for a :class:`LoRALinear` that holds the original Linear and the adapter's pair;
:meth:`detach` puts the original Linear objects back, so the UNet is restored exactly.

Saved folder: the pano360 files of :class:`~pano360.adapters.base.PanoramaAdapter` plus
``pytorch_lora_weights.safetensors`` in the diffusers/peft format (keys
``unet.<module path>.lora_A.weight`` / ``lora_B.weight``; ``transformer.<module path>…`` for a DiT, whose
attention blocks are found by name: ``attn`` / ``attn2`` of FLUX.1, SD3.x and Qwen-Image, image stream
only), which ``pano360 generate --lora FOLDER``
and diffusers' ``pipe.load_lora_weights(FOLDER)`` read. That file has no alpha entries (diffusers
then assumes alpha = rank), so the ``alpha / rank`` scale is folded into B there: both files give
the same network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..errors import InvalidInputError, ModelLoadError
from .base import PanoramaAdapter
from .flags import LoRAFlags

DIFFUSERS_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
PROJECTIONS = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
CONV = "conv"  # target name for the UNet's convolutions
CONV_NAMES = ("conv1", "conv2")  # ResNet convolutions; plus the UNet's top-level conv_in / conv_out
ATTENTIONS = {"self": ("attn1",), "cross": ("attn2",), "both": ("attn1", "attn2")}
#: attention blocks of the transformers (FLUX.1 double and single blocks, SD3 joint and SD3.5's second
#: attention, Qwen-Image): their image-stream projections to_q/to_k/to_v/to_out.0, as DiT360 and peft's
#: ``target_modules=["to_q", "to_k", "to_v", "to_out.0"]`` adapt them (FLUX's single blocks have no to_out)
DIT_ATTENTIONS = ("attn", "attn2")


def parse_targets(targets: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"q,k,v,o"`` (a comma list or list of q, k, v, o, conv) → the diffusers projection names in
    q k v o order, then ``"conv"`` if asked for."""
    names = [t.strip().lower() for t in (targets.split(",") if isinstance(targets, str) else targets)]
    names = [PROJECTIONS.get(n, n) if n in PROJECTIONS else n for n in names if n]
    allowed = set(PROJECTIONS.values()) | {CONV}
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise InvalidInputError(f"LoRA targets must be a comma list of q, k, v, o, conv (got {targets!r})")
    return [name for name in (*PROJECTIONS.values(), CONV) if name in names]


class LoRALinear(nn.Module):
    """``base(x) + scale · up(down(dropout(x)))``; ``base`` is the original (frozen) Linear or Conv2d."""

    def __init__(self, base: nn.Linear, pair: LoRAPair, scale: float, dropout: float = 0.0):
        super().__init__()
        self.base = base
        self.pair = pair
        self.scale = scale
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.scale == 0:
            return out
        low = self.pair.up(self.pair.down(self.dropout(x).to(self.pair.down.weight.dtype)))
        return out + (self.scale * low).to(out.dtype)


class LoRAPair(nn.Module):
    """The trainable matrices of one LoRA layer: ``down`` = A [rank, in], ``up`` = B [out, rank].

    ``shape`` is ``[in, out]`` for a Linear, ``[in, out, kernel, stride, padding]`` for a Conv2d (then A
    is a kernel×kernel convolution, B a 1×1 convolution).
    """

    def __init__(self, shape: list[int], rank: int):
        super().__init__()
        if len(shape) == 2:
            self.down = nn.Linear(shape[0], rank, bias=False)
            self.up = nn.Linear(rank, shape[1], bias=False)
        else:
            fan_in, fan_out, kernel, stride, padding = shape
            self.down = nn.Conv2d(fan_in, rank, kernel, stride, padding, bias=False)
            self.up = nn.Conv2d(rank, fan_out, 1, bias=False)
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)


def _layer_shape(module: nn.Module) -> list[int] | None:
    if isinstance(module, nn.Linear):
        return [module.in_features, module.out_features]
    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.kernel_size[0] == module.kernel_size[1] \
            and not isinstance(module.padding, str) and module.padding[0] == module.padding[1] \
            and module.stride[0] == module.stride[1] and module.dilation == (1, 1):
        return [module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0], module.padding[0]]
    return None


def _is_transformer(network: nn.Module) -> bool:
    """True for a DiT denoiser (FLUX, SD3, Qwen-Image transformers), False for a UNet."""
    return "Transformer" in type(network).__name__ and not hasattr(network, "up_blocks")


def _get(root: nn.Module, path: str) -> nn.Module:
    return root.get_submodule(path)


def _set(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    if isinstance(parent, (nn.ModuleList, nn.Sequential)) and name.isdigit():
        parent[int(name)] = module
    else:
        setattr(parent, name, module)


class LoRAAdapter(LoRAFlags, PanoramaAdapter):
    """LoRA on attention projections.

    Args (kept in ``config``):
        layers: {module path in the UNet: [in_features, out_features]} of the targeted Linears. Built by
            :meth:`for_unet` from the targets below; stored so a saved adapter rebuilds without a UNet.
        rank: r, the inner width of each pair.
        alpha: the scale is ``alpha / rank`` (diffusers' scripts default alpha = rank).
        targets: projection names (``to_q``, ``to_k``, ``to_v``, ``to_out.0``); attention: ``self``,
            ``cross`` or ``both``; dropout: LoRA input dropout during training.
    """

    kind: ClassVar[str] = "lora"
    method: ClassVar[str | None] = None

    def __init__(self, layers: dict[str, list[int]], rank: int = 4, alpha: float | None = None,
                 targets: list[str] | None = None, attention: str = "both", dropout: float = 0.0,
                 prefix: str = "unet"):
        alpha = float(rank if alpha is None else alpha)
        config = {"layers": {k: list(v) for k, v in layers.items()}, "rank": int(rank), "alpha": alpha,
                  "targets": list(targets or PROJECTIONS.values()), "attention": attention, "dropout": float(dropout)}
        if prefix != "unet":  # a transformer's LoRA: its diffusers keys start with "transformer."
            config["prefix"] = prefix
        super().__init__(**config)
        if rank < 1:
            raise InvalidInputError(f"LoRA rank must be at least 1, got {rank}")
        if not layers:
            raise InvalidInputError("the LoRA targets match no attention projection of this UNet")
        self.scale = alpha / rank
        self.layers = nn.ModuleDict({
            path.replace(".", "-"): LoRAPair(list(shape), int(rank)) for path, shape in sorted(layers.items())
        })
        self._attached: dict[str, nn.Module] = {}  # path -> original layer while attached
        self._wrappers: dict[str, LoRALinear] = {}

    # --- construction -----------------------------------------------------------------------
    @staticmethod
    def target_paths(unet: nn.Module, targets: list[str], attention: str = "both") -> dict[str, list[int]]:
        """{path: [in, out]} of the ``targets`` projections in the ``attention`` blocks of ``unet``."""
        if attention not in ATTENTIONS:
            raise InvalidInputError(f"LoRA attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
        blocks = ATTENTIONS[attention]
        if _is_transformer(unet):
            blocks = DIT_ATTENTIONS
        found = {}
        for name, module in unet.named_modules():
            last = name.rsplit(".", 1)[-1]
            if CONV in targets and (last in CONV_NAMES and ".resnets." in f".{name}" or name in ("conv_in", "conv_out")):
                shape = _layer_shape(module.base if isinstance(module, LoRALinear) else module)
                if shape is not None and len(shape) == 5:
                    found[name] = shape
            if last not in blocks or not hasattr(module, "to_q"):
                continue
            for target in targets:
                if target == CONV:
                    continue
                path = f"{name}.{target}"
                try:
                    linear = module.get_submodule(target)
                except AttributeError:  # FLUX single blocks: no to_out (their proj_out mixes MLP and attention)
                    continue
                if isinstance(linear, LoRALinear):
                    linear = linear.base
                if isinstance(linear, nn.Linear):
                    found[path] = [linear.in_features, linear.out_features]
        return found

    @classmethod
    def for_unet(cls, unet: nn.Module, rank: int = 4, alpha: float | None = None,
                 targets: str | list[str] = "q,k,v,o", attention: str = "both", dropout: float = 0.0,
                 seed: int | None = None) -> LoRAAdapter:
        """A fresh adapter for ``unet`` (``seed`` fixes the random A matrices)."""
        names = parse_targets(targets)
        layers = cls.target_paths(unet, names, attention)
        if seed is not None:
            torch.manual_seed(seed)
        return cls(layers=layers, rank=rank, alpha=alpha, targets=names, attention=attention, dropout=dropout,
                   prefix="transformer" if _is_transformer(unet) else "unet")

    @classmethod
    def check_training_options(cls, options: dict) -> None:
        """Model-free checks of the LoRA flags (run before any model loads)."""
        parse_targets(options.get("lora_targets", "q,k,v,o"))
        if int(options.get("rank", 4)) < 1:
            raise InvalidInputError(f"--rank must be at least 1, got {options.get('rank')}")
        if not 0.0 <= float(options.get("lora_dropout", 0.0) or 0.0) < 1.0:
            raise InvalidInputError("--lora-dropout must be in [0, 1)")

    @classmethod
    def for_training(cls, unet: nn.Module, options: dict, seed: int) -> LoRAAdapter:
        """The trainer's door: ``--rank``, ``--lora-alpha``, ``--lora-targets``, ``--lora-attention``,
        ``--lora-dropout``."""
        return cls.for_unet(unet, rank=int(options.get("rank", 4)), alpha=options.get("lora_alpha"),
                            targets=options.get("lora_targets", "q,k,v,o"),
                            attention=options.get("lora_attention", "both"),
                            dropout=float(options.get("lora_dropout", 0.0) or 0.0), seed=seed)

    # --- wiring -------------------------------------------------------------------------------
    def check_backbone(self, unet: nn.Module) -> None:
        for path, shape in self.config["layers"].items():
            try:
                module = _get(unet, path)
            except AttributeError:
                raise ModelLoadError(f"this LoRA was trained for another UNet: it has no layer {path}") from None
            base = module.base if isinstance(module, LoRALinear) else module
            if _layer_shape(base) != list(shape):
                raise ModelLoadError(f"this LoRA was trained for another UNet: layer {path} has a different shape")

    def attach(self, unet: nn.Module) -> nn.Module:
        """Swap each target Linear for a :class:`LoRALinear` (idempotent); returns ``unet``."""
        if self._attached:
            return unet
        self.check_backbone(unet)
        for path in self.config["layers"]:
            base = _get(unet, path)
            pair = self.layers[path.replace(".", "-")]
            pair.to(device=base.weight.device)
            self._attached[path] = base
            self._wrappers[path] = LoRALinear(base, pair, self.scale, self.config["dropout"])
            _set(unet, path, self._wrappers[path])
        return unet

    def detach(self, unet: nn.Module) -> None:
        for path, base in self._attached.items():
            _set(unet, path, base)
        self._attached, self._wrappers = {}, {}

    def set_scale(self, scale: float) -> None:
        """Multiply the LoRA branch by ``scale`` (1 = as trained, 0 = the base UNet exactly)."""
        self.scale = float(scale) * self.config["alpha"] / self.config["rank"]
        for path in self._attached:
            self._wrappers[path].scale = self.scale

    # --- files ------------------------------------------------------------------------------------
    def diffusers_state_dict(self) -> dict[str, torch.Tensor]:
        """The diffusers/peft LoRA keys (``unet.<path>.lora_A.weight`` / ``lora_B.weight``), scale folded
        into B so that a loader assuming alpha = rank builds the same network."""
        state = {}
        factor = self.config["alpha"] / self.config["rank"]
        prefix = self.config.get("prefix", "unet")
        for path in self.config["layers"]:
            pair = self.layers[path.replace(".", "-")]
            state[f"{prefix}.{path}.lora_A.weight"] = pair.down.weight.detach().float().cpu().contiguous()
            state[f"{prefix}.{path}.lora_B.weight"] = (pair.up.weight.detach().float() * factor).cpu().contiguous()
        return state

    def save(self, folder: str | os.PathLike, metadata: dict | None = None) -> Path:
        from safetensors.torch import save as save_bytes

        from ..io.atomic import atomic_write_bytes

        folder = super().save(folder, metadata)
        atomic_write_bytes(folder / DIFFUSERS_WEIGHTS_NAME,
                           save_bytes(self.diffusers_state_dict(), metadata={"format": "pt"}), overwrite=True)
        return folder

