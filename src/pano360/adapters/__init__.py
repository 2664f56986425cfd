"""Trainable panorama adapters behind one contract (:class:`~pano360.adapters.base.PanoramaAdapter`).

Kinds: ``lora`` (LoRA on a subset of the attention projections), ``unipano`` (LoRA on W_v and a
mixture of LoRA experts on W_o), ``mvdiffusion`` (correspondence-aware attention blocks between the
UNet's blocks). Each lives in its own module and is listed in :data:`ADAPTER_KINDS`.

:func:`load_adapter` is the one loading door: a pano360 adapter folder (``adapter_config.json`` names
its kind) or a reference code's checkpoint file, recognised by its key names.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

ADAPTER_KINDS: dict[str, str] = {  # kind -> "module:ClassName"; one line per adapter module
    "lora": "pano360.adapters.lora:LoRAAdapter",
    "mvdiffusion": "pano360.adapters.mvdiffusion:MVDiffusionAdapter",
    "unipano": "pano360.adapters.unipano:UniPanoAdapter",
}


def adapter_class(kind: str):
    from ..errors import InvalidInputError

    if kind not in ADAPTER_KINDS:
        raise InvalidInputError(f"unknown adapter kind {kind!r}; choose one of: {', '.join(ADAPTER_KINDS) or '(none)'}")
    module_name, class_name = ADAPTER_KINDS[kind].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_adapter(path: str | os.PathLike):
    """A trained panorama adapter from a pano360 adapter folder or a reference checkpoint file."""
    from ..errors import InvalidInputError, ModelLoadError
    from .base import CONFIG_NAME, read_adapter_config

    source = Path(os.path.expanduser(str(path)))
    if source.is_dir():
        if not (source / CONFIG_NAME).is_file():
            raise InvalidInputError(f"adapter folder {str(path)!r} has no {CONFIG_NAME}; give a folder written by "
                                    "'pano360 train' or a reference checkpoint file")
        return adapter_class(read_adapter_config(source)["kind"]).from_folder(source)
    if not source.is_file():
        raise InvalidInputError(f"adapter {str(path)!r} does not exist; give an adapter folder or a checkpoint file")
    from ..backbones.loading import read_checkpoint_keys

    try:
        keys = read_checkpoint_keys(source)
    except Exception as error:
        raise ModelLoadError(f"could not read adapter checkpoint {str(path)!r} ({type(error).__name__}: {error}); "
                             "give a .ckpt/.safetensors file or a pano360 adapter folder") from error
    for kind in ADAPTER_KINDS:
        cls = adapter_class(kind)
        matches = getattr(cls, "matches_reference_keys", None)
        if matches is not None and matches(keys):
            return cls.from_reference_checkpoint(source)
    raise ModelLoadError(f"{str(path)!r} is not a checkpoint of a known panorama adapter "
                         f"({', '.join(ADAPTER_KINDS) or 'none registered'}); its first keys are "
                         f"{', '.join(sorted(keys)[:3])}")
