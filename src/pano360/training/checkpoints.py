"""Training checkpoints: everything needed to continue a run exactly, every N steps, last K kept.

``OUT/checkpoints/checkpoint-<step>/`` holds the adapter folder files (so a checkpoint can be used as
an adapter, ``--lora OUT/checkpoints/checkpoint-000500``), ``training_state.pt`` (optimizer, LR
schedule, gradient scaler, step, samples seen) and ``rng_state_<rank>.pt`` per process (torch, numpy,
Python generators: only the LoRA dropout and nothing else draws from them, since every sample's
draws come from :func:`pano360.training.augment.sample_generator`). A checkpoint is written into a
temporary folder and renamed into place, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInputError

CHECKPOINTS = "checkpoints"
STATE_NAME = "training_state.pt"
_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_folder(output: str | os.PathLike, step: int) -> Path:
    return Path(output) / CHECKPOINTS / f"checkpoint-{step:06d}"


def list_checkpoints(output: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of the complete checkpoints under ``output``, oldest first."""
    root = Path(output) / CHECKPOINTS
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _PATTERN.match(child.name)
            if match and (child / STATE_NAME).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def resolve_resume(resume: str | None, output: str | os.PathLike) -> Path | None:
    """``latest`` → the newest checkpoint in ``output`` (None if there is none yet); a path → that
    checkpoint folder (checked)."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output)
        return found[-1][1] if found else None
    path = Path(os.path.expanduser(resume))
    if not (path / STATE_NAME).is_file():
        raise InvalidInputError(f"--resume {resume!r} is not a checkpoint folder (no {STATE_NAME}); give "
                                f"'latest' or a folder like {checkpoint_folder(output, 500)}")
    return path


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(output, step: int, adapter, state: dict, metadata: dict, limit: int | None,
                    is_main: bool, rank: int, wait) -> Path:
    """Write checkpoint ``step`` (main process: adapter + state; every process: its RNG state), then
    delete the oldest ones beyond ``limit``. ``wait`` is a barrier across processes."""
    final = checkpoint_folder(output, step)
    staging = final.with_name(final.name + ".tmp")
    if is_main:
        shutil.rmtree(staging, ignore_errors=True)
        adapter.save(staging, metadata)
        torch.save(state, staging / STATE_NAME)
    wait()
    torch.save(rng_state(), staging / f"rng_state_{rank}.pt")
    wait()
    if is_main:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging, final)
        if limit is not None:
            for _, old in list_checkpoints(output)[:-limit]:
                shutil.rmtree(old, ignore_errors=True)
    wait()
    return final


def load_checkpoint(folder: Path, adapter, rank: int) -> dict:
    """Load the adapter weights into ``adapter`` and this process's RNG state; returns the training
    state (optimizer etc., for the caller to apply)."""
    from safetensors.torch import load_file

    from ..adapters.base import WEIGHTS_NAME, load_strict

    load_strict(adapter, load_file(str(folder / WEIGHTS_NAME)), str(folder))
    state = torch.load(folder / STATE_NAME, map_location="cpu", weights_only=False)
    rng_file = folder / f"rng_state_{rank}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return state
