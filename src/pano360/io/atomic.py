"""Atomic, no-clobber file writes.

A file appears at its final path complete or not at all: data goes to a temporary file in the same
folder, is flushed to disk, then moved into place. Without ``overwrite`` an existing file is never
replaced (the final step is a hard link, which fails if the name exists).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import OutputExistsError


def ensure_writable(paths: Iterable[str | os.PathLike], overwrite: bool) -> None:
    """Raise :class:`OutputExistsError` if any path exists and ``overwrite`` is false."""
    if overwrite:
        return
    for path in paths:
        if Path(path).exists():
            raise OutputExistsError(
                f"{path} already exists; choose another output path or pass --overwrite (overwrite=True)"
            )


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically; refuse to replace an existing file unless ``overwrite``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ensure_writable([path], overwrite)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp_name, path)
        else:
            try:
                os.link(tmp_name, path)  # fails if `path` appeared meanwhile: never clobbers
            except FileExistsError:
                raise OutputExistsError(
                    f"{path} already exists; choose another output path or pass --overwrite"
                ) from None
            except OSError:  # file system without hard links
                ensure_writable([path], overwrite=False)
                os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)
