"""Batch manifests: one append-only JSONL log per rank, merged into ``DIR/manifest.jsonl``.

Each process appends one record per job it handles to ``DIR/manifest.d/rank<R>-of<N>.jsonl`` and
fsyncs it, so a record that was written survives a crash. A process killed mid-line leaves at most
one partial last line; it is ignored when reading and cut off when the log is opened again.

The merged manifest has one line per job of the batch, in job order, with the latest record of that
job from any log (``pending`` for jobs nobody has recorded yet). It is rewritten atomically, so
readers always see a complete file. Records::

    {"job": "<id>", "index": 3, "status": "done" | "skipped" | "failed" | "pending",
     "file": "<name>.png", "reason": "<why it failed>", "prompt": ..., "seed": ..., "rank": 0,
     "source": "jobs.jsonl:4", "seconds": 1.2, "time": "2026-12-01T08:00:00+0000"}

``skipped`` means finished by an earlier run (its files were checked and kept).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_text

MANIFEST_NAME = "manifest.jsonl"
LOG_FOLDER = "manifest.d"
STATUSES = ("done", "skipped", "failed", "pending")


def log_path(out_dir: str | os.PathLike, rank: int, world_size: int) -> Path:
    return Path(out_dir) / LOG_FOLDER / f"rank{rank}-of{world_size}.jsonl"


class ManifestLog:
    """Append-only, fsynced JSONL log of one process."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_partial_line(self.path)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for appends

    def append(self, record: dict[str, Any]) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "clock": time.time()} | record
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _cut_partial_line(path: Path) -> None:
    """Remove an unterminated last line (a write cut short by a kill)."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The complete records of a JSONL log (a partial or unreadable line is skipped)."""
    records = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "job" in record:
            records.append(record)
    return records


def all_log_records(out_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of every rank's log in ``out_dir``, oldest first."""
    folder = Path(out_dir) / LOG_FOLDER
    records = [r for path in sorted(folder.glob("rank*.jsonl")) for r in read_records(path)]
    return sorted(records, key=lambda r: r.get("clock", 0.0))


def remove_stale_temporaries(out_dir: str | os.PathLike, older_than_s: float = 60.0) -> None:
    """Remove the temporary files of manifest merges cut short by a kill. A merge takes milliseconds,
    so only files older than ``older_than_s`` go: another rank may be merging right now."""
    now = time.time()
    for path in Path(out_dir).glob(f".{MANIFEST_NAME}.*.tmp"):
        try:
            if now - path.stat().st_mtime > older_than_s:
                path.unlink()
        except OSError:
            pass


def merge_manifest(out_dir: str | os.PathLike, jobs: Iterable[dict[str, Any]]) -> Path:
    """Write ``out_dir/manifest.jsonl``: for each job (``{"job", "index", "prompt", "seed", ...}`` in
    order), its latest logged record, or a ``pending`` record. Atomic; returns the path."""
    latest: dict[str, dict[str, Any]] = {}
    for record in all_log_records(out_dir):
        latest[record["job"]] = record
    lines = []
    for job in jobs:
        record = dict(latest.get(job["job"], {"status": "pending"}))
        record.pop("clock", None)
        lines.append(json.dumps(job | record, ensure_ascii=False))
    return atomic_write_text(Path(out_dir) / MANIFEST_NAME, "".join(line + "\n" for line in lines), overwrite=True)


def count_statuses(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for record in records:
        counts[record.get("status", "pending")] = counts.get(record.get("status", "pending"), 0) + 1
    return counts
