"""The JSON sidecar kept beside every generated image: all it takes to reproduce the run."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text


def sidecar_path(image_path: str | os.PathLike) -> Path:
    """``pano.png`` → ``pano.json``."""
    return Path(image_path).with_suffix(".json")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that influence the output."""
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for name in ("pano360", "torch", "diffusers", "transformers", "peft", "safetensors", "numpy", "pillow"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """SHA-256 hex digest of a file, read in 4 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return repr(value)


def write_sidecar(image_path: str | os.PathLike, record: dict[str, Any], overwrite: bool = False) -> Path:
    """Write ``record`` as pretty JSON beside ``image_path`` (atomic, no clobber unless asked)."""
    text = json.dumps(_jsonable(record), indent=2, sort_keys=False) + "\n"
    return atomic_write_text(sidecar_path(image_path), text, overwrite=overwrite)


def read_sidecar(image_path: str | os.PathLike) -> dict[str, Any]:
    """Read the sidecar JSON of an image."""
    return json.loads(sidecar_path(image_path).read_text(encoding="utf-8"))
