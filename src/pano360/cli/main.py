"""``pano360`` entry point: builds the sub-command parsers and turns user errors into one-line messages.

Each sub-command lives in its own module ``pano360.cli.<name>`` exposing
``register(subparsers) -> argparse.ArgumentParser`` that sets ``func=run`` on its parser, where
``run(args) -> int`` returns the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from .. import __version__
from ..errors import Pano360Error

SUBCOMMANDS = ["generate", "info", "convert", "depth", "view", "eval", "train", "caption", "batch", "serve", "poles",
               "outpaint", "upscale", "inpaint", "qkvo"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows an option's default once (unless its help already says it, or it has none) and keeps
    hand-made line breaks in descriptions.

    Model ids such as ``stabilityai/stable-diffusion-2-base`` are never broken at their hyphens.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default in (None, False, [], argparse.SUPPRESS) or "default" in text.lower() or action.nargs == 0:
            return text
        return text + " (default: %(default)s)"

    def _split_lines(self, text, width):
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser(command: str | None = "all") -> argparse.ArgumentParser:
    """The ``pano360`` parser. ``command``: ``"all"`` builds every sub-command's full parser; a name
    builds only that one fully; None builds none (each sub-command is then its one help line, which
    is all ``pano360 --help`` shows). Sub-command modules import nothing heavy, and the full parsers
    are built only where needed, so ``--help`` answers without importing torch."""
    from .parsing import ArgumentParser  # one-line argparse errors ending in "see --help"

    parser = ArgumentParser(
        prog="pano360",
        description="Seamless 360° panoramas from text with Stable Diffusion-family models. "
        "Sizes are written HEIGHTxWIDTH (pixels) everywhere.",
        epilog="Run 'pano360 COMMAND --help' for the options of a command.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"pano360 {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"pano360.cli.{name}")
        if command in ("all", name) or not hasattr(module, "HELP"):
            module.register(subparsers)
        else:
            subparsers.add_parser(name, help=module.HELP, add_help=False)
    return parser


def _command_in(argv: list[str]) -> str | None:
    """The sub-command named in ``argv`` (the first word that is one), or None."""
    for token in argv:
        if token in SUBCOMMANDS:
            return token
        if not token.startswith("-"):
            return None
    return None


def main(argv: list[str] | None = None) -> int:
    # transformers warns about optional image processors on import; nothing a pano360 user can act on.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # bitsandbytes (imported by diffusers whenever it is installed) warns on CPUs that an optional kernel
    # package is missing; its own torch fallback runs --quantize nf4 correctly, so there is nothing to do
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(argv))
    args = parser.parse_args(argv)
    args.argv = argv  # what the user typed: tells a given flag from a default (generate --from)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except Pano360Error as error:
        print(f"pano360 {args.command}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"pano360 {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
