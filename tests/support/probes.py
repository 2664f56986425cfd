"""Simulated unwritable folders for tests: the tests run as root, which ignores permission bits."""

from __future__ import annotations

import tempfile
from pathlib import Path


def make_folder_unwritable(monkeypatch, folder: Path, errno: int = 13, reason: str = "Permission denied") -> None:
    """Make pano360's write probe (a temporary file) fail in ``folder``, as on a read-only mount."""
    real = tempfile.mkstemp

    def probe(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == folder:
            raise OSError(errno, reason)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", probe)
