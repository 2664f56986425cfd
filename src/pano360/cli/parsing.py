"""Argument parsing in the user's words: one-line errors, and which flags a user actually gave.

Torch-free, so ``pano360 --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line plus where to look, instead of the whole usage:
    ``pano360 generate: error: argument --steps: invalid int value: 'abc' (see 'pano360 generate --help')``.
    Sub-parsers made by ``add_subparsers`` inherit the class."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register("type", float, finite_float)  # every type=float option refuses nan and inf

    def error(self, message: str):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def finite_float(text: str) -> float:
    """``float`` for the command line, but ``nan``/``inf`` (which ``float`` accepts) are refused: no
    option of pano360 means anything when it is not finite."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def option_dests(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{"--steps": "steps", "-o": "output", ...}``: every option string of ``parser`` and its dest."""
    return {option: action.dest for action in parser._actions for option in action.option_strings}


def given_options(dests: dict[str, str], argv: list[str]) -> set[str]:
    """``dest`` names of the options that appear in ``argv`` (``--steps 5``, ``--steps=5``, or an
    unambiguous abbreviation, as argparse accepts them), to tell "given" from "left at its default".
    ``dests`` comes from :func:`option_dests`."""
    given = set()
    for token in argv:
        if token == "--":
            break
        if not token.startswith("-") or token == "-":
            continue
        name = token.split("=", 1)[0]
        if name in dests:
            given.add(dests[name])
            continue
        if name.startswith("--"):
            matches = {dest for option, dest in dests.items() if option.startswith(name)}
            if len(matches) == 1:
                given |= matches
    return given


def print_error(command: str | None, error: BaseException) -> None:
    """The CLI's one error line on stderr (newlines in a message are folded)."""
    text = " ".join(str(error).split())
    print(f"pano360{' ' + command if command else ''}: error: {text}", file=sys.stderr)
