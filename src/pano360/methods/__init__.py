"""Panorama methods and their registry.

``get_method("circular", wrap_vae=True)`` returns a configured method; :func:`available_methods` lists
the names: the built-in ones, those registered with :func:`register_method`, and those other packages
declare under the ``pano360.methods`` entry-point group (``name = "package.module:MethodClass"``). The
API and the CLI (``--method``, its options, ``--help``) offer every registered method. Torch-free.
"""

from __future__ import annotations

import importlib

from ..errors import InvalidInputError
from .base import Decoded, GenerationRequest, MethodRun, PanoramaMethod, RunContext

_BUILTIN = {
    "circular": "pano360.methods.circular:CircularMethod",
    "multidiffusion": "pano360.methods.multidiffusion:MultiDiffusionMethod",
    "syncdiffusion": "pano360.methods.syncdiffusion:SyncDiffusionMethod",
    "mvdiffusion": "pano360.methods.mvdiffusion:MVDiffusionMethod",
    "spot": "pano360.methods.spot:SpotMethod",
}
ENTRY_POINT_GROUP = "pano360.methods"
_REGISTERED: dict[str, type[PanoramaMethod]] = {}
_entry_points_loaded = False


def _load(path: str) -> type[PanoramaMethod]:
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _REGISTERED and entry.name not in _BUILTIN:
            register_method(entry.load())


def register_method(cls: type[PanoramaMethod], replace: bool = False) -> type[PanoramaMethod]:
    """Offer method ``cls`` (a :class:`PanoramaMethod` subclass with its own ``name``) in the API and the CLI.

    Usable as a decorator. Its CLI flags must agree in kind with other methods' flags of the same name.
    """
    if not (isinstance(cls, type) and issubclass(cls, PanoramaMethod)) or cls.name in ("", "base"):
        raise TypeError("register_method takes a PanoramaMethod subclass with its own `name`")
    if not replace and (cls.name in _REGISTERED or cls.name in _BUILTIN) and method_class(cls.name) is not cls:
        raise ValueError(f"a method named {cls.name!r} is registered already; pass replace=True to replace it")
    flags = cli_options([name for name in available_methods() if name != cls.name])
    for option in cls.option_specs().values():
        for other_method, other in flags.get(option.cli_flag, []):
            if option.cli and (other.kind, other.choices, other.switch) != (option.kind, option.choices, option.switch):
                raise ValueError(f"method {cls.name!r}: option {option.cli_flag} ({option.kind}) conflicts with "
                                 f"method {other_method!r}'s ({other.kind}); give it another flag")
    _REGISTERED[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    _load_entry_points()
    return list(dict.fromkeys([*_BUILTIN, *_REGISTERED]))


def method_class(name: str) -> type[PanoramaMethod]:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in _BUILTIN:
        return _load(_BUILTIN[name])
    _load_entry_points()
    if name in _REGISTERED:
        return _REGISTERED[name]
    raise InvalidInputError(f"unknown method {name!r}; choose one of: {', '.join(available_methods())}")


def get_method(name: str | PanoramaMethod, **options) -> PanoramaMethod:
    """A method instance from its name and options (or ``name`` itself, with ``options`` replaced)."""
    if isinstance(name, PanoramaMethod):
        return name.replace(**options) if options else name
    return method_class(name)(**options)


def cli_options(names: list[str] | None = None) -> dict[str, list]:
    """CLI flag → [(method name, Option)] over the given (default: all) methods, CLI options only."""
    flags: dict[str, list] = {}
    for name in names if names is not None else available_methods():
        for option in method_class(name).option_specs().values():
            if option.cli:
                flags.setdefault(option.cli_flag, []).append((name, option))
    return flags


__all__ = ["Decoded", "GenerationRequest", "MethodRun", "PanoramaMethod", "RunContext", "available_methods",
           "cli_options", "get_method", "method_class", "register_method"]
