"""Output paths: checked before any work, and a rescue when a write still fails afterwards.

* :func:`check_output_target` answers, without writing anything, "can this file be written here?":
  its folder exists or can be created, is writable (probed with a temporary file that is removed
  again, so read-only mounts, ACLs and root-owned folders are caught alike), and the name is free
  (or ``overwrite``). Every command that writes calls it before loading a model or reading pixels.
* :func:`save_with_fallback` runs a write and, if it fails with an OS error after the work is done
  (disk full, folder removed or made read-only meanwhile), writes the same files into a fallback
  folder and says where, so a generated result is never lost.
* :func:`slugify` turns a prompt into a readable file name, keeping non-ASCII letters.

Torch-free: importing this module is cheap.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from ..errors import InvalidInputError, OutputExistsError

__all__ = ["FALLBACK_ENV", "check_output_folder", "check_output_target", "check_output_targets",
           "fallback_folders", "save_with_fallback", "slugify"]

FALLBACK_ENV = "PANO360_FALLBACK_DIR"
NAME_MAX_BYTES = 255  # longest file name (in bytes) on ext4, APFS, NTFS (in UTF-16 units), ...

T = TypeVar("T")


def _first_existing(folder: Path) -> Path:
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    return probe


def _probe_writable(folder: Path) -> OSError | None:
    """Create and remove a temporary file in ``folder``; the error, or None if that worked."""
    try:
        fd, name = tempfile.mkstemp(prefix=".pano360-probe-", dir=folder)
    except OSError as error:
        return error
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass
    return None


def check_output_folder(folder: str | os.PathLike, flag: str = "output folder") -> Path:
    """Raise a one-line :class:`InvalidInputError` unless ``folder`` exists or can be created, and is
    writable. Nothing is created: the nearest existing ancestor is probed instead."""
    folder = Path(os.path.expanduser(os.fspath(folder))) if os.fspath(folder) else Path(".")
    existing = _first_existing(folder)
    if not existing.is_dir():
        raise InvalidInputError(
            f"cannot create the {flag} {folder}: {existing} is a file, not a folder; choose another location"
        )
    error = _probe_writable(existing)
    if error is not None:
        reason = os.strerror(error.errno) if error.errno else type(error).__name__
        if error.errno in (errno.ENOENT, errno.EROFS, errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL):
            # the folder exists, yet no file can be created in it: /proc, /sys, a read-only mount
            reason = ("it is on a read-only file system" if error.errno == errno.EROFS else
                      "it does not accept new files (a virtual or special file system such as /proc)")
        where = "" if existing == folder else f" (its nearest existing folder {existing})"
        raise InvalidInputError(
            f"cannot write into the {flag} {folder}{where}: {reason.lower()}; choose a writable location"
        )
    return folder


def check_output_target(path: str | os.PathLike, overwrite: bool = False, flag: str = "output") -> Path:
    """Check that a file can be written at ``path`` before any work starts; returns the path.

    Errors (one line naming the fix): ``path`` is a folder, its name is too long for the file
    system, its folder cannot be created or written, or the file exists and ``overwrite`` is false
    (:class:`~pano360.errors.OutputExistsError`). Writes nothing.
    """
    text = os.fspath(path)
    if not text or text.endswith(("/", os.sep)):
        raise InvalidInputError(f"{flag} {text!r} names a folder; give a file name, e.g. {text or './'}out.png")
    path = Path(os.path.expanduser(text))
    if len(os.fsencode(path.name)) > NAME_MAX_BYTES:
        raise InvalidInputError(
            f"{flag} file name is {len(os.fsencode(path.name))} bytes, longer than the file system allows "
            f"({NAME_MAX_BYTES}); choose a shorter name"
        )
    if path.is_dir():
        raise InvalidInputError(f"{flag} {path} is a folder; give a file name inside it, e.g. {path / path.name}.png")
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another output path or pass --overwrite (overwrite=True)")
    check_output_folder(path.parent, flag=f"folder of {flag}")
    return path


def check_output_targets(paths: Iterable[str | os.PathLike], overwrite: bool = False, flag: str = "output") -> list[Path]:
    """:func:`check_output_target` for several files, plus: no two of them have the same path."""
    checked = [check_output_target(p, overwrite, flag) for p in paths]
    seen: set[Path] = set()
    for path in checked:
        key = Path(os.path.abspath(path))
        if key in seen:
            raise InvalidInputError(f"two outputs would both be written to {path}; give different names")
        seen.add(key)
    return checked


def fallback_folders() -> list[Path]:
    """Where :func:`save_with_fallback` tries to rescue a result, in order: ``$PANO360_FALLBACK_DIR``,
    ``./pano360-rescued`` and ``<temp dir>/pano360-rescued``."""
    folders = []
    if os.environ.get(FALLBACK_ENV):
        folders.append(Path(os.path.expanduser(os.environ[FALLBACK_ENV])))
    folders += [Path.cwd() / "pano360-rescued", Path(tempfile.gettempdir()) / "pano360-rescued"]
    return folders


def _free_name(folder: Path, name: str, taken: Callable[[Path], bool]) -> Path:
    candidate = folder / name
    stem, suffix = Path(name).stem, Path(name).suffix
    counter = 1
    while taken(candidate):
        candidate = folder / f"{stem}-{counter}{suffix}"
        counter += 1
    return candidate


def save_with_fallback(
    write: Callable[[Path], T],
    path: str | os.PathLike,
    *,
    taken: Callable[[Path], bool] | None = None,
    folders: Iterable[str | os.PathLike] | None = None,
    warn: Callable[[str], None] | None = None,
) -> tuple[T, Path]:
    """Run ``write(path)``; if it raises an ``OSError`` (including a file that appeared meanwhile) or
    the folder check's :class:`InvalidInputError`,
    run ``write(fallback)`` with the same file name in the first fallback folder that works.

    Args:
        write: writes everything that belongs to ``path`` (e.g. the image and its sidecar) and
            returns what the caller needs (e.g. the paths written).
        taken: ``taken(candidate)`` is true when a fallback name is not free (default: the file
            exists); a counter is appended until it is free.
        folders: fallback folders (default: :func:`fallback_folders`).
        warn: receives the one-line message saying where the result went (default: stderr).

    Returns ``(write's result, the path actually used)``. Re-raises the first error if every
    fallback fails too.
    """
    path = Path(path)
    try:
        return write(path), path
    except (OSError, InvalidInputError) as first:  # InvalidInputError: the pre-write folder check
        if isinstance(first, OutputExistsError):
            reason = "the file appeared meanwhile"
        elif isinstance(first, InvalidInputError):
            reason = str(first).split(";")[0]
        else:
            reason = (first.strerror or (str(first).splitlines() or [type(first).__name__])[0]).lower()
        taken = taken or (lambda p: p.exists())
        for folder in [Path(f) for f in (folders if folders is not None else fallback_folders())]:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                target = _free_name(folder, path.name, taken)
                result = write(target)
            except (OSError, InvalidInputError):
                continue
            message = f"pano360: could not write {path} ({reason}); the result was saved to {target} instead"
            (warn or (lambda text: print(text, file=sys.stderr, flush=True)))(message)
            return result, target
        raise


_SEPARATORS = re.compile(r"[\W_]+", re.UNICODE)


def slugify(text: str, limit: int = 40, default: str = "panorama") -> str:
    """A readable file-name stem for ``text``: lower case, words joined by ``-``, at most ``limit``
    characters and 120 UTF-8 bytes; non-ASCII letters are kept (``"Tōkyō 夜景"`` → ``"tōkyō-夜景"``),
    everything else (punctuation, emoji, path separators) becomes ``-``. ``default`` when nothing is left.
    """
    normalised = unicodedata.normalize("NFKC", str(text)).lower()
    slug = _SEPARATORS.sub("-", normalised).strip("-")
    slug = slug[:limit]
    while len(slug.encode("utf-8")) > 120:
        slug = slug[:-1]
    slug = slug.rstrip("-")
    if not slug or slug in (".", ".."):
        return default
    return slug

