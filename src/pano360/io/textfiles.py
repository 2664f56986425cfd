"""Text inputs (prompt lists, jobs files) read faithfully, or refused with one line.

A binary file given where text is expected (an image passed as ``--view-prompts``, a zip as a jobs
file) is named as such instead of failing somewhere later with a decode traceback; a line count that
does not match what the lines are for is an error, never silently cut or padded. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InvalidInputError

__all__ = ["read_prompt_lines", "read_text"]


def read_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of ``path`` (a leading BOM dropped); one :class:`InvalidInputError` line when it
    is missing, a folder, unreadable, binary (NUL bytes) or not UTF-8. ``what`` names the input."""
    text_path = os.fspath(path)
    path = Path(os.path.expanduser(text_path))
    if not path.exists():
        raise InvalidInputError(f"{what} {text_path} does not exist; check the path")
    if path.is_dir():
        raise InvalidInputError(f"{what} {text_path} is a folder; give a text file")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidInputError(f"cannot read {what} {text_path}: {(error.strerror or str(error)).lower()}") from None
    if b"\x00" in data[:1_000_000]:
        raise InvalidInputError(f"{what} {text_path} is a binary file, not text; give a UTF-8 text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InvalidInputError(f"{what} {text_path} is not UTF-8 text (line {line}); save it as UTF-8") from None


def read_prompt_lines(path: str | os.PathLike, what: str, count: int | None = None, unit: str = "view") -> list[str]:
    """The non-empty lines of a text file, stripped; with ``count``, exactly that many are required
    (one per ``unit``), and a different number is an error naming both counts."""
    lines = [line.strip() for line in read_text(path, what).splitlines() if line.strip()]
    if count is not None and len(lines) != count:
        raise InvalidInputError(f"{what} {os.fspath(path)} has {len(lines)} prompt lines; give one line per {unit} "
                                f"({count}), no more and no fewer")
    return lines
