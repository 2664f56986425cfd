"""``pano360 generate --from SIDECAR.json``: re-run a recorded generation.

The sidecar's values fill the arguments; every flag given on the command line overrides them
(``--from a.png.json --seed 7`` re-runs with another seed). Torch-free.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

DTYPE_FLAGS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}

# sidecar key → generate argument (dest)
SIMPLE_KEYS = {
    "prompt": "prompt", "negative_prompt": "negative_prompt", "method": "method", "height": "height", "width": "width",
    "num_inference_steps": "steps", "guidance_scale": "guidance", "scheduler": "scheduler", "eta": "eta",
    "seed": "seed", "controlnet_conditioning_scale": "controlnet_scale", "control_image": "depth",
}


def read_sidecar_file(path: str | os.PathLike) -> dict[str, Any]:
    """A sidecar's record from its JSON path, or from the image it belongs to; one-line errors."""
    from ..io.sidecar import find_sidecar

    path = Path(os.path.expanduser(os.fspath(path)))
    if path.suffix.lower() != ".json":
        found = find_sidecar(path)
        if found is None:
            raise InvalidInputError(f"--from {path}: no sidecar JSON found beside it; give the .json file")
        path = found
    if not path.is_file():
        raise InvalidInputError(f"--from {path} does not exist or is not a file; give a pano360 sidecar .json")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise InvalidInputError(f"--from {path} is not readable JSON ({error}); give a pano360 sidecar") from None
    if not isinstance(record, dict) or "prompt" not in record or "method" not in record:
        raise InvalidInputError(f"--from {path} is not a pano360 sidecar (no prompt/method recorded)")
    return record


def sidecar_arguments(record: dict[str, Any]) -> dict[str, Any]:
    """``generate`` arguments (dest → value) that reproduce a sidecar's run.

    Method options come back under their option names; the model is the recorded local path for
    folders and files (so a moved working directory still finds it), else the name.
    """
    values: dict[str, Any] = {}
    for key, dest in SIMPLE_KEYS.items():
        if record.get(key) is not None:
            values[dest] = record[key]
    if isinstance(values.get("prompt"), list):  # a multi-prompt batch: its sidecars hold one image each
        values["prompt"] = values["prompt"][0]
    if isinstance(values.get("negative_prompt"), list):
        values["negative_prompt"] = values["negative_prompt"][0]
    if record.get("preset"):
        values["preset"] = record["preset"]
    model = record.get("model") or {}
    if isinstance(model, dict) and model.get("name"):
        values["model"] = model["path"] if model.get("kind") in ("folder", "single_file") and model.get("path") \
            else model["name"]
    for key in ("unet", "transformer"):  # a replaced denoiser (a 360 fine-tune)
        entry = record.get(key) or {}
        if isinstance(entry, dict) and entry.get("name"):
            values[key] = entry["path"] if entry.get("kind") in ("folder", "single_file") and entry.get("path") \
                else entry["name"]
    if record.get("true_cfg_scale") is not None:
        values["true_cfg_scale"] = record["true_cfg_scale"]
    controlnet = record.get("controlnet") or {}
    if isinstance(controlnet, dict) and controlnet.get("name"):
        values["controlnet"] = controlnet.get("path") if controlnet.get("kind") in ("folder", "single_file") \
            and controlnet.get("path") else controlnet["name"]
    loras = record.get("loras") or []
    if loras:
        values["lora"] = [entry["source"] for entry in loras]
        values["lora_scale"] = [float(entry.get("scale", 1.0)) for entry in loras]
    embeddings = record.get("embeddings") or []
    if embeddings:
        values["embedding"] = [entry["source"] for entry in embeddings]
        values["embedding_token"] = ["".join(entry.get("tokens") or []) or None for entry in embeddings]
    if record.get("dtype") in DTYPE_FLAGS:
        values["dtype"] = DTYPE_FLAGS[record["dtype"]]
    for name, value in (record.get("method_options") or {}).items():
        values.setdefault(name, value)
    return values


def apply_sidecar(args: argparse.Namespace, values: dict[str, Any], given: set[str]) -> list[str]:
    """Set every recorded value the command line did not give; returns the names of those that
    have no argument here (recorded options of a method this version does not know)."""
    unknown = []
    for dest, value in values.items():
        if dest in given:
            continue
        if hasattr(args, dest):
            setattr(args, dest, value)
        else:
            unknown.append(dest)
    return unknown
