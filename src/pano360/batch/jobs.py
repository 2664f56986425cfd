"""Batch jobs: read a jobs file (text, JSONL or CSV) into normalised job records, and shard them by rank.

A *job* is one panorama: a prompt, one seed and every option that changes the image. Its id is a hash
of that normalised record, so the same job gets the same id (and the same output file name) on every
run, on every machine, whatever line of the file it came from. That is what makes a batch resumable:
a finished job is recognised by its file and the job id in its sidecar.

Job keys use the Python API's argument names (``prompt``, ``negative_prompt``, ``height``, ``width``,
``num_inference_steps``, ``guidance_scale``, ``seed``, ``method``, ``preset``, ``scheduler``, ``eta``,
``model``, ``options`` {method options}); CLI-style aliases are accepted (``steps``, ``guidance``,
``negative``, ``size`` = ``"HxW"``, dashes for underscores), and ``exports`` (3D outputs written beside
the image: depth, mesh, pointcloud, stereo, hdr, exr; see ``batch/exports.py``) with ``depth_model``. Any other
key is a method option
(``stride``, ``window``, ``sync_weight`` ...), checked by the method when the job runs.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..io.paths import slugify

#: keys of a job that are not method options, with the type each is normalised to
GENERATION_KEYS: dict[str, type] = {
    "prompt": str,
    "negative_prompt": str,
    "height": int,
    "width": int,
    "num_inference_steps": int,
    "guidance_scale": float,
    "seed": int,
    "method": str,
    "preset": str,
    "scheduler": str,
    "eta": float,
}
#: keys that choose the loaded model: jobs are grouped by them so each model loads once per process
MODEL_KEYS: dict[str, type] = {"model": str, "lora": list, "lora_scale": list, "adapter": str}
ALIASES = {
    "steps": "num_inference_steps",
    "guidance": "guidance_scale",
    "negative": "negative_prompt",
    "loras": "lora",
    "lora_scales": "lora_scale",
}
#: keys that describe how to expand one line into jobs; they are not part of a job
EXPANSION_KEYS = ("seeds", "repeat", "size")

JOB_ID_LENGTH = 16


@dataclass(frozen=True)
class Job:
    """One panorama to make.

    Attributes:
        id: hex hash of :attr:`spec` (stable across runs and machines).
        spec: the normalised job: generation keys, model keys and ``options`` (method options), with
            every value JSON-typed; this is what is hashed and recorded in the sidecar.
        index: position in the expanded job list (file order); for messages and sharding.
        source: where it came from, e.g. ``jobs.jsonl:3`` (line 3).
    """

    id: str
    spec: dict[str, Any]
    index: int
    source: str

    @property
    def prompt(self) -> str:
        return self.spec["prompt"]

    @property
    def seed(self) -> int:
        return self.spec["seed"]

    @property
    def model_group(self) -> str:
        """Jobs with the same model group share one loaded model."""
        return json.dumps({key: self.spec.get(key) for key in MODEL_KEYS}, sort_keys=True)

    @property
    def file_stem(self) -> str:
        """Output file name without extension: ``<prompt-slug>-s<seed>-<id[:8]>``."""
        return f"{slugify(self.prompt)}-s{self.seed}-{self.id[:8]}"


@dataclass
class JobError:
    """A line that could not become a job: recorded as failed, the batch goes on."""

    source: str
    reason: str
    id: str = ""
    spec: dict[str, Any] = field(default_factory=dict)


def job_id(spec: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a normalised job, first 16 hex digits."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:JOB_ID_LENGTH]


# --- reading a jobs file ----------------------------------------------------------------------------

def read_job_lines(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """The raw entries of a jobs file as ``(source, dict)``, by extension:

    - ``.jsonl`` / ``.ndjson``: one JSON object per line (or a bare JSON string = a prompt);
    - ``.csv``: a header row naming the keys, one job per row (empty cells are left out);
    - anything else (``.txt``): one prompt per line.

    Blank lines and lines starting with ``#`` are skipped (not in CSV). A JSONL line that is not valid
    JSON becomes an entry with a ``"_error"`` key, so it is reported as a failed job.
    """
    from ..io.textfiles import read_text

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"jobs file {path} does not exist or is not a file; check the path")
    text = read_text(path, "jobs file")  # binary or non-UTF-8 files: one line
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, text)
    entries: list[tuple[str, dict[str, Any]]] = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        source = f"{path.name}:{line_number}"
        if suffix in (".jsonl", ".ndjson"):
            try:
                value = json.loads(stripped, parse_constant=_refuse_constant)
            except json.JSONDecodeError as error:
                entries.append((source, {"_error": f"not valid JSON ({error.msg} at column {error.colno})"}))
                continue
            except ValueError as error:  # NaN / Infinity: not JSON, and never a usable number
                entries.append((source, {"_error": f"not valid JSON ({error})"}))
                continue
            if isinstance(value, str):
                value = {"prompt": value}
            if not isinstance(value, dict):
                entries.append((source, {"_error": "each JSONL line must be an object like {\"prompt\": ...}"}))
                continue
            entries.append((source, value))
        else:
            entries.append((source, {"prompt": stripped}))
    return entries


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _read_csv(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    """Strict CSV: an unterminated quote, a row with more cells than the header, or a stray quote
    inside a cell is an error naming the line, instead of a silently garbled prompt."""
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as error:
        raise InvalidInputError(f"{path.name}:1: not valid CSV ({error}); fix the header row") from None
    names = [name.strip() for name in header or []]
    if not names or "prompt" not in names:
        raise InvalidInputError(f"{path.name}: the first CSV row must name the columns and include 'prompt'")
    entries: list[tuple[str, dict[str, Any]]] = []
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise InvalidInputError(f"{path.name}:{start}: not valid CSV ({error}); close the quote or write a quote "
                                    'inside a quoted cell as ""') from None
        if len(row) > len(names):
            raise InvalidInputError(f"{path.name}:{start}: {len(row)} cells for {len(names)} columns; quote cells "
                                    "that contain commas, or add the column to the header")
        entry = {key: _csv_value(value) for key, value in zip(names, row) if value not in (None, "")}
        if entry:
            entries.append((f"{path.name}:{start}", entry))
    return entries


def _csv_value(text: str) -> Any:
    """CSV cells are strings; numbers, booleans and JSON objects/lists are read as such."""
    text = text.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            value = cast(text)
        except ValueError:
            continue
        return value if math.isfinite(value) else text  # nan and inf stay text (and fail as numbers later)
    return text


# --- normalising ------------------------------------------------------------------------------------

def parse_seeds(value: Any) -> list[int]:
    """Seeds from ``5``, ``"0-9"`` (inclusive range), ``"1,4,9"`` or a list of ints."""
    if isinstance(value, bool):
        raise InvalidInputError(f"seeds must be whole numbers, got {value!r}")
    if isinstance(value, int):
        return [value]
    if isinstance(value, (list, tuple)):
        return [seed for item in value for seed in parse_seeds(item)]
    if isinstance(value, str):
        seeds: list[int] = []
        for part in value.replace(" ", "").split(","):
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not match:
                raise InvalidInputError(f"cannot read seeds {value!r}; write e.g. 7, 0-9 or 1,4,9")
            first, last = int(match.group(1)), int(match.group(2) or match.group(1))
            if last < first:
                raise InvalidInputError(f"seed range {part!r} runs backwards; write the smaller seed first")
            if last - first >= 100_000:
                raise InvalidInputError(f"seed range {part!r} has more than 100000 seeds; split the batch")
            seeds.extend(range(first, last + 1))
        return seeds
    raise InvalidInputError(f"seeds must be whole numbers, got {value!r}")


def _canonical_key(key: str) -> str:
    key = key.strip().replace("-", "_")
    return ALIASES.get(key, key)


def _typed(key: str, value: Any, kind: type) -> Any:
    if value is None:
        return None
    if kind is list:
        return list(value) if isinstance(value, (list, tuple)) else [value]
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise InvalidInputError(f"{key} must be a whole number, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{key} must be a whole number, got {value!r}") from None
    if kind is float:
        if isinstance(value, bool):
            raise InvalidInputError(f"{key} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{key} must be a number, got {value!r}") from None
    if not isinstance(value, str):
        raise InvalidInputError(f"{key} must be text, got {value!r}")
    return value


def expand_entry(entry: dict[str, Any], defaults: dict[str, Any], repeat: int = 1) -> list[dict[str, Any]]:
    """One raw entry (+ the batch defaults) → its normalised job specs, one per seed.

    Seeds: the entry's ``seeds`` (range or list) if given; otherwise ``repeat`` seeds starting at the
    entry's ``seed`` (default: the batch's seed, 0 if none), i.e. ``seed, seed+1, …``. Raises
    :class:`InvalidInputError` for a bad key type or a missing prompt.
    """
    if "_error" in entry:
        raise InvalidInputError(entry["_error"])
    if any(_canonical_key(k) in ("seed", "seeds") for k in entry):  # the job's own seeds win over batch seeds
        defaults = {k: v for k, v in defaults.items() if _canonical_key(k) not in ("seed", "seeds")}
    merged: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for source in (defaults, entry):
        for raw_key, value in source.items():
            key = _canonical_key(raw_key)
            if key == "options":
                if not isinstance(value, dict):
                    raise InvalidInputError("'options' must be an object of method options, e.g. {\"stride\": 8}")
                options.update({_canonical_key(k): v for k, v in value.items()})
            elif key in GENERATION_KEYS or key in MODEL_KEYS or key in EXPANSION_KEYS or key in ("exports", "depth_model"):
                merged[key] = value
            else:
                options[key] = value
    if "size" in merged:
        size = merged.pop("size")
        match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", str(size))
        if not match:
            raise InvalidInputError(f"size must be HEIGHTxWIDTH in pixels, e.g. 512x1024, got {size!r}")
        merged.setdefault("height", int(match.group(1)))
        merged.setdefault("width", int(match.group(2)))
    prompt = merged.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInputError("every job needs a non-empty 'prompt'")
    spec: dict[str, Any] = {}
    for key, kind in (GENERATION_KEYS | MODEL_KEYS).items():
        value = _typed(key, merged.get(key), kind)
        if value is not None:
            spec[key] = value
    spec["prompt"] = prompt.strip()
    spec["options"] = {key: options[key] for key in sorted(options)}
    if merged.get("exports"):  # 3D outputs (batch/exports.py); absent keeps older job ids unchanged
        from .exports import normalise_exports

        spec["exports"] = normalise_exports(merged["exports"])
    if merged.get("depth_model"):
        spec["depth_model"] = _typed("depth_model", merged["depth_model"], str)
    repeat = _typed("repeat", merged.get("repeat", repeat), int)
    if repeat < 1:
        raise InvalidInputError(f"repeat must be at least 1, got {repeat}")
    if merged.get("seeds") is not None:
        seeds = parse_seeds(merged["seeds"])
    else:
        base = spec.get("seed", 0)
        seeds = [base + r for r in range(repeat)]
    if not seeds:
        raise InvalidInputError("the seed list is empty")
    return [spec | {"seed": seed} for seed in seeds]


def load_jobs(path: str | os.PathLike, defaults: dict[str, Any] | None = None,
              repeat: int = 1) -> tuple[list[Job], list[JobError]]:
    """Read and normalise a jobs file.

    Returns the jobs (duplicates — same id — kept once, at their first position) and the entries that
    could not be read, each with its reason. ``defaults`` (e.g. from the CLI) fill what a job leaves out.
    """
    defaults = {key: value for key, value in (defaults or {}).items() if value is not None}
    jobs: list[Job] = []
    errors: list[JobError] = []
    seen: set[str] = set()
    for source, entry in read_job_lines(path):
        try:
            specs = expand_entry(entry, defaults, repeat)
        except InvalidInputError as error:
            raw = {k: v for k, v in entry.items() if k != "_error"}
            errors.append(JobError(source, str(error), id=job_id({"invalid": raw, "source": source}), spec=raw))
            continue
        for spec in specs:
            identifier = job_id(spec)
            if identifier in seen:
                continue
            seen.add(identifier)
            jobs.append(Job(identifier, spec, len(jobs), source))
    return jobs, errors


# --- sharding -----------------------------------------------------------------------------------------

def shard(jobs: list[Job], rank: int, world_size: int) -> list[Job]:
    """The jobs of process ``rank`` out of ``world_size``, grouped by model.

    Within each model group (in order of first appearance) the jobs are dealt round-robin: the group's
    j-th job goes to rank ``j % world_size``. Every job goes to exactly one rank, the split depends only
    on the job list and ``world_size`` (stable across restarts), and each rank gets a balanced share of
    every model it has to load.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise InvalidInputError(f"rank {rank} is not in 0..{world_size - 1}")
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.model_group, []).append(job)
    return [job for group in groups.values() for j, job in enumerate(group) if j % world_size == rank]


def process_rank() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from the launcher's environment (``accelerate launch``,
    ``torchrun``; also SLURM), ``(0, 1, 0)`` for a plain process."""
    env = os.environ
    rank = env.get("RANK", env.get("SLURM_PROCID", "0"))
    world = env.get("WORLD_SIZE", env.get("SLURM_NTASKS", "1"))
    local = env.get("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
    try:
        return int(rank), int(world), int(local)
    except ValueError:
        raise InvalidInputError(f"cannot read the process rank from RANK={rank!r} WORLD_SIZE={world!r}") from None
