"""Nested state (optimizer, LR schedule, RNG generators) in a file that cannot run code.

A pickle can execute anything when it is read, and checkpoint folders are shared and downloaded like
adapters. So training state is stored as one ``.safetensors`` file: every tensor and numpy array is a
safetensors tensor, and the structure around them (dicts with any plain keys, lists, tuples, numbers,
strings, ``None``) is a JSON document in the file's metadata. Reading it back parses JSON and tensors
only; nothing in the file names a Python callable.

Old pano360 checkpoints (``training_state.pt``, ``rng_state_<rank>.pt``, pickles) are read with
``torch.load(weights_only=True)`` and an explicit allow-list of the numpy types that an RNG state holds
(:func:`load_legacy_pickle`); anything else in them is refused with one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidInputError

__all__ = ["dumps_state", "load_legacy_pickle", "load_state_file", "loads_state"]

_META_KEY = "pano360_state"
_FORMAT = "pano360-state-1"


def _encode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        key = str(len(tensors))
        tensors[key] = value.detach().cpu().contiguous()
        return {"t": key}
    if isinstance(value, np.ndarray):
        key = str(len(tensors))
        array = np.ascontiguousarray(value)
        if array.dtype == np.uint32:  # e.g. the MT19937 key; stored widened, restored exactly
            tensors[key] = torch.from_numpy(array.astype(np.int64))
        else:
            tensors[key] = torch.from_numpy(array.copy())
        return {"a": key, "dtype": array.dtype.str}
    if isinstance(value, np.generic):
        return _encode(value.item(), tensors)
    if isinstance(value, dict):
        return {"d": [[_encode(k, tensors), _encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"u": [_encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return {"l": [_encode(v, tensors) for v in value]}
    if isinstance(value, float):
        return {"f": repr(value)}  # keeps inf/nan and every bit of the value
    if value is None or isinstance(value, (bool, int, str)):
        return {"v": value}
    raise TypeError(f"cannot store a {type(value).__name__} in a training state file")


def _decode(node: Any, tensors: dict[str, torch.Tensor], source: str) -> Any:
    if not isinstance(node, dict) or len(node) not in (1, 2):
        raise InvalidInputError(f"{source} is not a pano360 training state (unexpected entry); delete it or "
                                "resume from another checkpoint")
    if "t" in node:
        return tensors[node["t"]]
    if "a" in node:
        return tensors[node["a"]].numpy().astype(np.dtype(node["dtype"]))
    if "d" in node:
        return {_decode(k, tensors, source): _decode(v, tensors, source) for k, v in node["d"]}
    if "u" in node:
        return tuple(_decode(v, tensors, source) for v in node["u"])
    if "l" in node:
        return [_decode(v, tensors, source) for v in node["l"]]
    if "f" in node:
        return float(node["f"])
    if "v" in node and (node["v"] is None or isinstance(node["v"], (bool, int, str))):
        return node["v"]
    raise InvalidInputError(f"{source} is not a pano360 training state (unexpected entry); delete it or "
                            "resume from another checkpoint")


def dumps_state(state: Any) -> bytes:
    """``state`` (nested dicts/lists/tuples of tensors, numpy arrays and plain values) as safetensors bytes."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(state, tensors)
    # safetensors refuses tensors that share memory; every entry is its own copy
    tensors = {k: v.clone() for k, v in tensors.items()}
    return save(tensors, metadata={"format": _FORMAT, _META_KEY: json.dumps(skeleton)})


def loads_state(data: bytes, source: str = "training state") -> Any:
    """Inverse of :func:`dumps_state`; one-line :class:`InvalidInputError` for anything else."""
    import struct

    from safetensors.torch import load

    try:
        (length,) = struct.unpack("<Q", data[:8])
        metadata = json.loads(data[8:8 + length]).get("__metadata__") or {}
        if metadata.get("format") != _FORMAT:
            raise ValueError("no pano360 state in this safetensors file")
        skeleton = json.loads(metadata[_META_KEY])
        tensors = load(data)
    except Exception as error:  # noqa: BLE001 (truncated, empty, not safetensors, no metadata)
        raise InvalidInputError(f"{source} is truncated or not a pano360 training state ({type(error).__name__}); "
                                "resume from another checkpoint or delete this one") from None
    return _decode(skeleton, tensors, source)


def load_state_file(path: str | os.PathLike) -> Any:
    """Read a file written from :func:`dumps_state`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidInputError(f"cannot read {path}: {(error.strerror or str(error)).lower()}") from None
    return loads_state(data, str(path))


def _numpy_allow_list() -> list:
    """The globals a pickled numpy RNG state names (array reconstruction and dtypes): data, not code."""
    allowed: list = [np.ndarray, np.dtype]
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    allowed.append(_reconstruct)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        allowed += [getattr(dtypes, name) for name in ("UInt32DType", "Int64DType", "Float64DType", "UInt8DType")
                    if hasattr(dtypes, name)]
    return allowed


def load_legacy_pickle(path: str | os.PathLike) -> Any:
    """Read an old pano360 ``.pt`` state file with ``torch.load(weights_only=True)`` and the numpy
    allow-list; a file that names anything else (code) or is damaged is refused with one line."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_allow_list()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (any unpickling error: refused)
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        raise InvalidInputError(
            f"refusing {path}: an old pickled checkpoint file that cannot be read as plain data ({first}); "
            "it may run code, so it is not loaded; start the run again or resume from a checkpoint written "
            "by this pano360 version"
        ) from None
