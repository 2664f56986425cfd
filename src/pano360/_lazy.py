"""``lazy_module("torch")``: a module object that imports the real module on first attribute access.

Method modules and the option declarations are imported to build the CLI's ``--help`` and the method
list; importing torch there would cost over a second. They bind ``torch = lazy_module("torch")`` and
use it inside functions only, so torch is imported when a method actually runs.
"""

from __future__ import annotations

import importlib
import types


class _LazyModule(types.ModuleType):
    def __getattr__(self, attribute: str):
        module = importlib.import_module(self.__name__)
        return getattr(module, attribute)


def lazy_module(name: str) -> types.ModuleType:
    """A stand-in for ``import name`` that defers the import to the first attribute access."""
    return _LazyModule(name)
