"""Panorama methods: how one noise prediction for the whole panorama is made.

``get_method("circular", wrap_vae=True)`` returns a configured method; :func:`available_methods`
lists the names. Each method is a small dataclass in its own module (see :mod:`.base`).
"""

from __future__ import annotations

import dataclasses
import importlib

from ..errors import InvalidInputError
from .base import GenerationContext, PanoramaMethod, unknown_option_error

_REGISTRY = {
    "circular": ("pano360.methods.circular", "CircularMethod"),
    "multidiffusion": ("pano360.methods.multidiffusion", "MultiDiffusionMethod"),
    "syncdiffusion": ("pano360.methods.syncdiffusion", "SyncDiffusionMethod"),
}


def available_methods() -> list[str]:
    return list(_REGISTRY)


def method_class(name: str) -> type[PanoramaMethod]:
    if name not in _REGISTRY:
        raise InvalidInputError(f"unknown method {name!r}; choose one of: {', '.join(_REGISTRY)}")
    module_name, class_name = _REGISTRY[name]
    return getattr(importlib.import_module(module_name), class_name)


def get_method(name: str | PanoramaMethod, **options) -> PanoramaMethod:
    """A method instance from its name and options (or ``name`` itself if already a method)."""
    if isinstance(name, PanoramaMethod):
        if options:
            return dataclasses.replace(name, **options)
        return name
    cls = method_class(name)
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = set(options) - set(valid)
    if unknown:
        raise unknown_option_error(name, unknown, valid)
    return cls(**options)


__all__ = ["GenerationContext", "PanoramaMethod", "available_methods", "get_method", "method_class"]
