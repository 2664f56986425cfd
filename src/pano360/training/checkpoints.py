"""Training checkpoints: everything needed to continue a run exactly, every N steps, last K kept.

``OUT/checkpoints/checkpoint-<step>/`` holds the adapter folder files (so a checkpoint can be used as
an adapter, ``--lora OUT/checkpoints/checkpoint-000500``), ``training_state.safetensors`` (optimizer,
LR schedule, gradient scaler, step, samples seen) and ``rng_state_<rank>.safetensors`` per process
(torch, numpy, Python generators: only the LoRA dropout and nothing else draws from them, since every
sample's draws come from :func:`pano360.training.augment.sample_generator`). State files hold tensors
and a JSON structure (:mod:`pano360.io.safestate`), never a pickle, so resuming a downloaded
checkpoint cannot run code; old ``.pt`` state files are read weights-only or refused with one line.
A checkpoint is written into a temporary folder and renamed into place, so a crash or a full disk
never leaves half a checkpoint (the staging folder is removed again), and non-finite adapter weights
are never saved.
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
STATE_NAME = "training_state.safetensors"
LEGACY_STATE_NAME = "training_state.pt"  # pano360 before issue 24: a pickle, read weights-only
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
            if match and ((child / STATE_NAME).is_file() or (child / LEGACY_STATE_NAME).is_file()):
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
    if not ((path / STATE_NAME).is_file() or (path / LEGACY_STATE_NAME).is_file()):
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


def _rng_name(rank: int) -> str:
    return f"rng_state_{rank}.safetensors"


def save_checkpoint(output, step: int, adapter, state: dict, metadata: dict, limit: int | None,
                    is_main: bool, rank: int, wait) -> Path:
    """Write checkpoint ``step`` (main process: adapter + state; every process: its RNG state), then
    delete the oldest ones beyond ``limit``. ``wait`` is a barrier across processes.

    Refuses (one line, nothing written) adapter weights that are not finite; a failed write (full
    disk) removes the staging folder and raises the one-line error of :mod:`pano360.io.atomic`."""
    from ..io.atomic import atomic_write_bytes
    from ..io.safestate import dumps_state
    from ..numerics import NonFiniteError, first_non_finite

    final = checkpoint_folder(output, step)
    staging = final.with_name(final.name + ".tmp")
    bad = first_non_finite(adapter.state_dict())
    if bad is not None:
        raise NonFiniteError(f"adapter weight {bad} is not finite at step {step}; the checkpoint is not saved "
                             "(the last good one is kept); lower --learning-rate or check the options")
    try:
        if is_main:
            shutil.rmtree(staging, ignore_errors=True)
            adapter.save(staging, metadata)
            atomic_write_bytes(staging / STATE_NAME, dumps_state(state), overwrite=True)
        wait()
        atomic_write_bytes(staging / _rng_name(rank), dumps_state(rng_state()), overwrite=True)
        wait()
        if is_main:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            if limit is not None:
                for _, old in list_checkpoints(output)[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    wait()
    return final


def load_checkpoint(folder: Path, adapter, rank: int) -> dict:
    """Load the adapter weights into ``adapter`` and this process's RNG state; returns the training
    state (optimizer etc., for the caller to apply). Every file is read without running code; a
    missing, truncated or foreign file is refused with one line."""
    from ..adapters.base import WEIGHTS_NAME, load_strict, read_weights
    from ..io.safestate import load_legacy_pickle, load_state_file

    load_strict(adapter, read_weights(folder / WEIGHTS_NAME), str(folder))
    if (folder / STATE_NAME).is_file():
        state = load_state_file(folder / STATE_NAME)
    else:
        state = load_legacy_pickle(folder / LEGACY_STATE_NAME)
    if not isinstance(state, dict) or not {"optimizer", "lr_scheduler", "step"} <= set(state):
        raise InvalidInputError(f"{folder} holds no complete training state; resume from another checkpoint")
    rng_file, legacy_rng = folder / _rng_name(rank), folder / f"rng_state_{rank}.pt"
    if rng_file.is_file():
        rng = load_state_file(rng_file)
    elif legacy_rng.is_file():
        rng = load_legacy_pickle(legacy_rng)
    else:
        rng = None
    if rng is not None:
        try:
            set_rng_state(rng)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise InvalidInputError(f"the RNG state in {folder} is damaged ({type(error).__name__}); resume from "
                                    "another checkpoint") from None
    return state
