"""Argument parsing in the user's words: one-line errors, defaults shown once, re-runs from sidecars.

Torch-free, so ``pano360 --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import textwrap


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line plus where to look, instead of the whole usage:
    ``pano360 generate: error: argument --steps: invalid int value: 'abc' (see 'pano360 generate --help')``.
    Sub-parsers made by ``add_subparsers`` inherit the class."""

    def error(self, message: str):
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default once: appended as ``(default: X)`` unless the help text already
    says ``default`` or there is nothing to show (None, False, an empty list); keeps hand-made line
    breaks in descriptions; never breaks model ids such as ``stabilityai/stable-diffusion-2-base``
    at their hyphens."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or "%(default)" in text:
            return text
        if action.default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        if action.nargs == 0:  # store_true / version / help
            return text
        return text + " (default: %(default)s)"

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def given_options(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """``dest`` names of the options that appear in ``argv`` (``--steps 5``, ``--steps=5``, or an
    unambiguous abbreviation as argparse accepts it), to tell "given" from "left at its default"."""
    by_string = {}
    for action in parser._actions:
        for option in action.option_strings:
            by_string[option] = action.dest
    given = set()
    for token in argv:
        if token == "--":
            break
        if not token.startswith("-"):
            continue
        name = token.split("=", 1)[0]
        if name in by_string:
            given.add(by_string[name])
            continue
        matches = {dest for option, dest in by_string.items() if option.startswith(name) and name.startswith("--")}
        if len(matches) == 1:
            given |= matches
    return given


def print_error(command: str | None, error: BaseException) -> None:
    """The CLI's one error line on stderr (newlines in a message are folded)."""
    text = " ".join(str(error).split())
    print(f"pano360{' ' + command if command else ''}: error: {text}", file=sys.stderr)
