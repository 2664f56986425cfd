"""Atomic, no-clobber file writes.

A file appears at its final path complete or not at all: data goes to a temporary file in the same
folder, is flushed to disk, then moved into place. Without ``overwrite`` an existing file is never
replaced (the final step is a hard link, which fails if the name exists).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import OutputExistsError, Pano360Error

_SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DiskFullError(Pano360Error, OSError):
    """A write failed because the disk (or quota, or file size limit) is full; nothing partial is left."""

    def __str__(self) -> str:  # the one line, without OSError's "[Errno 28]" prefix
        return self.strerror or super().__str__()


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f} MB" if count >= 100_000 else f"{count} bytes"


def disk_full_error(path: str | os.PathLike, needed: int | None, error: OSError) -> DiskFullError:
    """The one-line error for a write to ``path`` that ran out of space (``needed`` bytes, if known)."""
    path = Path(path)
    try:
        free = shutil.disk_usage(_existing_parent(path)).free
        free_text = f", {_megabytes(free)} free"
    except OSError:
        free_text = ""
    need_text = f"needs {_megabytes(needed)}" if needed is not None else "needs more space"
    reason = (error.strerror or os.strerror(error.errno or errno.ENOSPC)).lower()
    return DiskFullError(error.errno or errno.ENOSPC,
                         f"cannot write {path}: {reason} ({need_text}{free_text}); nothing was left there; free "
                         f"some space or choose another output location")


def is_disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in _SPACE_ERRORS


def _existing_parent(path: Path) -> Path:
    probe = path.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return probe


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
    """Write ``data`` to ``path`` atomically; refuse to replace an existing file unless ``overwrite``.

    A full disk raises :class:`DiskFullError` (one line: the path, the space needed and free) and
    leaves no temporary file behind."""
    path = Path(path)
    try:
        return _atomic_write(path, data, overwrite)
    except OSError as error:
        if is_disk_full(error) and not isinstance(error, DiskFullError):
            raise disk_full_error(path, len(data), error) from None
        raise


def _atomic_write(path: Path, data: bytes, overwrite: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ensure_writable([path], overwrite)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual file mode
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
