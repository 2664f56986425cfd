"""The JSON sidecar kept beside every generated image: all it takes to reproduce the run.

Naming: ``pano.png`` → ``pano.png.json`` (the image's full name plus ``.json``), so ``x.png`` and
``x.jpg`` in one folder keep separate sidecars. Sidecars written by pano360 0.1 (``pano.json``) are
still found by :func:`find_sidecar` / :func:`read_sidecar`, unless they record another image.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text


def sidecar_path(image_path: str | os.PathLike) -> Path:
    """Where the sidecar of an image is written: ``pano.png`` → ``pano.png.json``."""
    path = Path(image_path)
    return path.with_name(path.name + ".json")


def legacy_sidecar_path(image_path: str | os.PathLike) -> Path:
    """The sidecar name of pano360 0.1: ``pano.png`` → ``pano.json`` (read, never written)."""
    return Path(image_path).with_suffix(".json")


def sidecar_paths(image_path: str | os.PathLike) -> list[Path]:
    """Every name a sidecar of this image may have, current first (for "is this name taken?")."""
    return [sidecar_path(image_path), legacy_sidecar_path(image_path)]


def find_sidecar(image_path: str | os.PathLike) -> Path | None:
    """The sidecar of an image: ``pano.png.json``, else a 0.1-style ``pano.json`` unless that one
    records a different ``image_file`` (e.g. it belongs to ``pano.jpg``); None if there is none."""
    current = sidecar_path(image_path)
    if current.is_file():
        return current
    legacy = legacy_sidecar_path(image_path)
    if not legacy.is_file() or legacy == Path(image_path):
        return None
    try:
        record = json.loads(legacy.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    owner = record.get("image_file")
    return legacy if owner in (None, Path(image_path).name) else None


def library_versions() -> dict[str, str]:
    """Versions of the libraries that influence the output."""
    from importlib import metadata

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
    """Read the sidecar JSON of an image (see :func:`find_sidecar`); raises ``FileNotFoundError``
    naming the expected file when there is none."""
    path = find_sidecar(image_path)
    if path is None:
        raise FileNotFoundError(f"{image_path} has no sidecar ({sidecar_path(image_path).name} is missing)")
    return json.loads(path.read_text(encoding="utf-8"))


def directory_fingerprint(folder: str | os.PathLike) -> dict[str, Any]:
    """A content hash of a local model folder: SHA-256 over the sorted relative paths, sizes and
    SHA-256 digests of its files (hidden files and ``*.lock`` skipped), with the file count and total
    bytes. Two folders with the same files give the same ``sha256`` wherever they live."""
    root = Path(folder)
    digest = hashlib.sha256()
    count = total = 0
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = file.relative_to(root).as_posix()
        if any(part.startswith(".") for part in relative.split("/")) or relative.endswith(".lock"):
            continue
        size = file.stat().st_size
        digest.update(f"{relative}\0{size}\0{file_sha256(file)}\n".encode())
        count += 1
        total += size
    return {"sha256": digest.hexdigest(), "files": count, "bytes": total}
