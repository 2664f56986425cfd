"""Typed, self-describing options: declared once, validated once, shown in ``--help``.

A method (or any configurable piece) lists its :class:`Option` objects; each carries its type, default,
help text and CLI flag. :func:`coerce` checks and normalises a value given through the Python API (or a
preset), :meth:`Option.parse_cli` turns a command-line string into a value first. The ``generate``
sub-command builds its arguments and ``--help`` from these declarations, so a new method's options
reach the CLI without touching it. Torch-free: imported to build ``--help``.

Kinds: ``int`` and ``float`` (with ``minimum``), ``bool`` (CLI ``on``/``off``, or a bare ``--flag`` with
``switch=True``), ``choice`` (one of ``choices``), ``pair`` (a whole number or ``(vertical,
horizontal)``, normalised to a tuple; CLI ``N`` or ``H,W``), ``int_or_auto``, ``str``, ``path`` and
``any`` (a Python object such as a module: API only, never on the CLI).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInputError

KINDS = ("int", "float", "bool", "choice", "pair", "int_or_auto", "str", "path", "any")
_TRUE = {"on", "true", "yes", "1"}
_FALSE = {"off", "false", "no", "0"}


@dataclass(frozen=True)
class Option:
    """One option: ``name`` (Python), ``default``, ``help`` (say the unit: pixels, latent units, degrees).

    ``none_ok``: None is a valid value (its meaning belongs in the help, e.g. "None = the model's native
    size"). ``flag``: the CLI flag (default ``--name-with-dashes``); ``cli=False`` keeps it API-only.
    """

    name: str
    default: Any
    help: str
    kind: str = "any"
    choices: tuple = ()
    minimum: float | None = None
    none_ok: bool = False
    cli: bool = True
    flag: str | None = None
    metavar: str | None = None
    switch: bool = False  # bool given as a bare --flag (True when present)
    objects_ok: bool = False  # str/path options: the Python API may also pass an object (e.g. a module)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"option {self.name}: unknown kind {self.kind!r}")
        if self.kind == "any" and self.cli:
            object.__setattr__(self, "cli", False)

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def with_default(self, default: Any, help: str | None = None) -> Option:
        """The same option with another default (a subclass's), optionally another help text."""
        return dataclasses.replace(self, default=default, help=help or self.help)

    # --- values -------------------------------------------------------------------------------
    def _fail(self, requirement: str, value: Any) -> InvalidInputError:
        where = f" ({self.cli_flag})" if self.cli else ""
        return InvalidInputError(f"{self.name}{where} must be {requirement}, got {value!r}")

    def coerce(self, value: Any) -> Any:
        """``value`` checked and normalised (pairs become tuples); raises InvalidInputError naming the fix."""
        if value is None:
            if self.none_ok or self.default is None:
                return None
            raise self._fail(self.requirement(), value)
        kind = self.kind
        if kind in ("int", "int_or_auto"):
            if kind == "int_or_auto" and value == "auto":
                return "auto"
            if isinstance(value, bool) or not isinstance(value, int) or (self.minimum is not None
                                                                         and value < self.minimum):
                raise self._fail(self.requirement(), value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                    self.minimum is not None and value < self.minimum):
                raise self._fail(self.requirement(), value)
            return float(value)
        if kind == "bool":
            if not isinstance(value, bool):
                raise self._fail("True or False (CLI: on or off)", value)
            return value
        if kind == "choice":
            if value not in self.choices:
                raise self._fail(f"one of {', '.join(map(str, self.choices))}", value)
            return value
        if kind == "pair":
            pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
            if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < (self.minimum or 1)
                                     for v in pair):
                raise self._fail(self.requirement(), value)
            return pair
        if kind in ("str", "path"):
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
            if self.objects_ok and not isinstance(value, str):
                return value
            if not isinstance(value, str) or not value.strip():
                raise self._fail(self.requirement(), value)
            return value
        return value

    def requirement(self) -> str:
        """What a valid value is, in words."""
        low = self.minimum
        return {
            "int": f"a whole number >= {low:g}" if low is not None else "a whole number",
            "int_or_auto": f"'auto' or a whole number >= {low:g}" if low is not None else "'auto' or a whole number",
            "float": f"a finite number >= {low:g}" if low is not None else "a finite number",
            "bool": "True or False (CLI: on or off)",
            "choice": f"one of {', '.join(map(str, self.choices))}",
            "pair": "a whole number >= 1 or two of them (vertical, horizontal; CLI: N or H,W)",
            "str": "a non-empty text", "path": "a file or folder path", "any": "a value",
        }[self.kind] + (" or None" if self.none_ok else "")

    def parse_cli(self, text: str) -> Any:
        """A command-line string → a value of this option's kind (then :meth:`coerce` checks it)."""
        kind = self.kind
        try:
            if kind in ("int", "int_or_auto"):
                return "auto" if kind == "int_or_auto" and text.strip().lower() == "auto" else int(text)
            if kind == "float":
                return float(text)
            if kind == "bool":
                word = text.strip().lower()
                if word in _TRUE or word in _FALSE:
                    return word in _TRUE
                raise ValueError(text)
            if kind == "pair":
                parts = [int(p) for p in text.replace("x", ",").split(",")]
                return parts[0] if len(parts) == 1 else tuple(parts)
        except ValueError:
            raise self._fail(self.requirement(), text) from None
        return text

    def describe(self, value: Any) -> Any:
        """A JSON-friendly record of a value (objects by class name), for sidecars."""
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if self.kind == "pair" and len(value) == 2 and value[0] == value[1]:
            return value[0]  # recorded as it is usually given: one number
        if isinstance(value, (tuple, list)):
            return [self.describe(v) for v in value]
        return f"<{type(value).__module__}.{type(value).__name__}>"


def merged_options(cls: type, attribute: str = "options") -> dict[str, Option]:
    """The options of ``cls`` and its bases by name; a subclass's declaration of a name wins."""
    merged: dict[str, Option] = {}
    for klass in reversed(cls.__mro__):
        for option in klass.__dict__.get(attribute, ()):
            merged[option.name] = option
    return merged


def coerce_all(specs: dict[str, Option], values: dict[str, Any], owner: str) -> dict[str, Any]:
    """Every option's value (given or default), checked; unknown names raise naming the valid ones."""
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise InvalidInputError(
            f"{owner} has no option(s) {', '.join(unknown)}; its options are: {', '.join(specs) or '(none)'}")
    return {name: spec.coerce(values.get(name, spec.default)) for name, spec in specs.items()}
