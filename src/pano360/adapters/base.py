"""The trainable-adapter contract: what a panorama adapter adds to a UNet, what trains, how it saves.

A :class:`PanoramaAdapter` is an ``nn.Module`` holding only the adapter's own weights (a LoRA's down/up
matrices, UniPano's experts and gates, MVDiffusion's correspondence-aware attention blocks). It is
*attached* to a frozen base UNet for sampling or training and *detached* afterwards, which restores
the UNet exactly. Training (``pano360 train --adapter KIND``) and sampling (``adapter=PATH``) use the
same object, so the two cannot disagree about where the adapter sits.

Saved form (a folder): ``adapter_config.json`` (``{"kind": ..., "config": {...}, "metadata": {...}}``)
beside the weights in ``adapter_model.safetensors``; an adapter kind may write extra files (the LoRA
adapter also writes the diffusers/peft LoRA file that ``--lora`` and ``load_lora_weights`` read).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import ModelLoadError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


@dataclass
class TrainingExample:
    """What the network is trained on for one micro-batch of B panoramas (``pano360 train``).

    ``latents`` [B, C, h, w] (one equirect latent per sample) or [B, V, C, h, w] (V views per sample,
    which share the sample's timestep, as in MVDiffusion); ``embeds`` [B, L, D] or [B, V, L, D];
    ``pooled`` [B, P] / [B, V, P] for SDXL; ``size_px`` (height, width) in pixels of what one latent
    shows (SDXL time ids); ``inputs``: extra tensors for the network with B (or B·V) rows, e.g. cameras.
    """

    latents: torch.Tensor
    embeds: torch.Tensor
    pooled: torch.Tensor | None = None
    size_px: tuple[int, int] | None = None
    inputs: dict = field(default_factory=dict)


class PanoramaAdapter(nn.Module):
    """Base class of trainable panorama adapters (subclasses: LoRA, UniPano, MVDiffusion).

    Subclasses set ``kind`` (the ``--adapter`` name), build their modules in ``__init__`` from keyword
    hyper-parameters (kept in ``self.config``, JSON-able) and implement :meth:`attach` / :meth:`detach`.
    """

    kind: ClassVar[str] = "adapter"
    #: Perspective views each training sample must also provide (a
    #: :class:`pano360.training.cache.ViewRequest`, e.g. MVDiffusion's 8 horizon views with per-view
    #: captions), or None when the adapter trains on equirect latents only.
    training_views: ClassVar[object | None] = None

    def __init__(self, **config: Any):
        super().__init__()
        self.config = dict(config)

    # --- wiring -------------------------------------------------------------------------------
    def attach(self, unet: nn.Module) -> nn.Module:
        """Add the adapter to ``unet`` (idempotent) and return the network to call with the UNet's
        signature: ``unet`` itself for adapters inside it, a wrapper for adapters around it."""
        raise NotImplementedError

    def detach(self, unet: nn.Module) -> None:
        """Remove the adapter from ``unet``, restoring its modules exactly."""
        raise NotImplementedError

    def check_backbone(self, unet: nn.Module) -> None:
        """Raise :class:`ModelLoadError` naming the right base model if ``unet`` does not fit."""

    # --- training -------------------------------------------------------------------------------
    @classmethod
    def add_training_arguments(cls, group) -> None:
        """Add this kind's ``pano360 train`` flags to an argparse group (name them ``--<kind>-…``;
        ``--rank`` is shared and owned by the trainer)."""

    @classmethod
    def for_training(cls, unet: nn.Module, options: dict, seed: int) -> PanoramaAdapter:
        """A fresh adapter for ``unet`` from the parsed training options (``vars(args)``); ``seed`` fixes
        its random initialisation."""
        raise NotImplementedError(f"adapter kind {cls.kind!r} cannot be trained by pano360 train")

    @classmethod
    def check_training_options(cls, options: dict) -> None:
        """Raise :class:`~pano360.errors.InvalidInputError` for bad flags of this kind (no model loaded)."""

    def training_example(self, batch) -> TrainingExample:
        """What the network trains on for a :class:`pano360.training.cache.TrainingBatch` (default: the
        equirect latents and captions; multi-view adapters use ``batch.view_latents`` etc.)."""
        return TrainingExample(batch.latents, batch.embeds, batch.pooled, batch.size_px)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates (default: all of the adapter's)."""
        return [p for p in self.parameters() if p.requires_grad]

    def auxiliary_loss(self) -> torch.Tensor | None:
        """Extra loss terms of the last forward pass with gradients (e.g. MoE balance losses), summed
        over layers, and cleared; None if the adapter has none."""
        return None

    # --- files ------------------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, metadata: dict | None = None) -> Path:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``folder`` (atomically)."""
        from safetensors.torch import save as save_bytes

        from ..io.atomic import atomic_write_bytes, atomic_write_text

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write_bytes(folder / WEIGHTS_NAME, save_bytes(state), overwrite=True)
        record = {"kind": self.kind, "config": self.config, "metadata": metadata or {}}
        atomic_write_text(folder / CONFIG_NAME, json.dumps(record, indent=2) + "\n", overwrite=True)
        return folder

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> PanoramaAdapter:
        """Build the adapter from a folder written by :meth:`save` (strict key check)."""
        folder = Path(folder)
        record = read_adapter_config(folder)
        if record["kind"] != cls.kind:
            raise ModelLoadError(f"{folder} holds a {record['kind']!r} adapter, not {cls.kind!r}")
        adapter = cls(**record.get("config", {}))
        load_strict(adapter, read_weights(folder / WEIGHTS_NAME), str(folder))
        return adapter


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file; one-line :class:`ModelLoadError` when it is missing,
    empty or truncated (safetensors never runs code)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path.parent} has no {path.name}; the adapter or checkpoint folder is incomplete "
                             "(copy it again or use another one)")
    try:
        return load_file(str(path))
    except Exception as error:  # noqa: BLE001 (SafetensorError, OSError: truncated, empty, not safetensors)
        raise ModelLoadError(f"{path} is truncated or not a safetensors file ({type(error).__name__}); copy the "
                             "folder again or use another one") from None


def read_adapter_config(folder: str | os.PathLike) -> dict:
    path = Path(folder) / CONFIG_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{folder} is not a pano360 adapter folder ({CONFIG_NAME} unreadable: {error})") from error
    if not isinstance(record, dict) or "kind" not in record:
        raise ModelLoadError(f"{path} has no adapter 'kind'; was it written by pano360 train?")
    return record


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``module.load_state_dict(state)`` with a one-line error naming missing/unexpected keys and shape
    mismatches (first few of each)."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} key(s) such as {', '.join(keys[:3])}")
        raise ModelLoadError(f"{source} does not fit this adapter: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)
