"""The released MVDiffusion checkpoints (``pano.ckpt``, ``pano_outpaint.ckpt``): reading and key mapping.

They are PyTorch Lightning checkpoints whose ``state_dict`` holds the whole reference ``PanoGenerator``
(digest §6), saved with diffusers 0.16 and transformers 4.28:

============================================  =================================================
``mv_base_model.cp_blocks_encoder.<i>.*``      CAA blocks after down block i
``mv_base_model.cp_blocks_mid.*``              CAA block inside the mid block
``mv_base_model.cp_blocks_decoder.<i>.*``      CAA blocks after up block i
``mv_base_model.unet.*``                       the frozen SD 2 UNet (4 input channels for ``pano.ckpt``,
                                               9 for the inpainting UNet of ``pano_outpaint.ckpt``)
``vae.*``                                      the SD 2 VAE, mid-block attention under the old names
                                               ``query/key/value/proj_attn``
``text_encoder.*``                             the OpenCLIP-H text tower in float16, with
                                               ``text_model.embeddings.position_ids``
============================================  =================================================

Files are read with ``torch.load(weights_only=True, mmap=True)``: nothing in them is executed.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from ...errors import ModelLoadError

PREFIX = "mv_base_model."
CAA_PREFIX = PREFIX + "cp_blocks_"
UNET_PREFIX = PREFIX + "unet."
SD2_BASE = "stabilityai/stable-diffusion-2-base"
SD2_INPAINTING = "stabilityai/stable-diffusion-2-inpainting"
DOWNLOADS = "https://github.com/Tangshitao/MVDiffusion#model-zoo"  # the reference README's Dropbox links
VAE_RENAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def matches_reference_keys(keys) -> bool:
    """True for a reference MVDiffusion checkpoint (it has ``mv_base_model.cp_blocks_*`` tensors)."""
    return any(str(key).startswith(CAA_PREFIX) for key in keys)


def read_state(source) -> dict[str, torch.Tensor]:
    """The flat state dict of a checkpoint path (Lightning ``{"state_dict": ...}`` or flat) or of a dict."""
    if isinstance(source, dict):
        state = source
    else:
        path = Path(os.path.expanduser(str(source)))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except (pickle.UnpicklingError, RuntimeError) as error:
            raise ModelLoadError(f"could not read {str(source)!r} as a weights-only checkpoint "
                                 f"({type(error).__name__}: {str(error).splitlines()[0]})") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelLoadError(f"{source!r} holds no state dict")
    return state


def base_for_in_channels(in_channels: int) -> str:
    """The base model a reference checkpoint needs, from its UNet's input channels (9: inpainting)."""
    return SD2_INPAINTING if in_channels == 9 else SD2_BASE


def rename_vae_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers ≤ 0.17 VAE attention names → current ones (``query`` → ``to_q`` … ``proj_attn`` → ``to_out.0``);
    1×1-conv attention weights [c, c, 1, 1] become Linear weights [c, c]."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if "attentions" in parts and len(parts) >= 2 and parts[-2] in VAE_RENAMES:
            key = ".".join(parts[:-2] + [VAE_RENAMES[parts[-2]], parts[-1]])
            if value.ndim == 4 and parts[-1] == "weight":
                value = value[:, :, 0, 0]
        out[key] = value
    return out


def split_state(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{"caa", "unet", "vae", "text_encoder"} → state dicts under current diffusers/transformers names."""
    parts: dict[str, dict[str, torch.Tensor]] = {"caa": {}, "unet": {}, "vae": {}, "text_encoder": {}}
    for key, value in state.items():
        if key.startswith(CAA_PREFIX):
            parts["caa"][key[len(PREFIX):]] = value
        elif key.startswith(UNET_PREFIX):
            parts["unet"][key[len(UNET_PREFIX):]] = value
        elif key.startswith("vae."):
            parts["vae"][key[len("vae."):]] = value
        elif key.startswith("text_encoder."):
            name = key[len("text_encoder."):]
            if not name.endswith("embeddings.position_ids"):  # a buffer modern transformers no longer saves
                parts["text_encoder"][name] = value
    parts["vae"] = rename_vae_keys(parts["vae"])
    return parts


def block_widths(caa: dict[str, torch.Tensor]) -> tuple[list[int], int, list[int]]:
    """(encoder widths, mid width, decoder widths) of the CAA blocks in a ``cp_blocks_*`` state dict."""
    def width(name: str) -> int:
        key = f"{name}.transformer.norm1.weight"
        if key not in caa:
            raise ModelLoadError(f"MVDiffusion checkpoint lacks {PREFIX}{key}")
        return int(caa[key].shape[0])

    def indices(group: str) -> list[int]:
        found = {int(key.split(".")[1]) for key in caa if key.startswith(group + ".")}
        if found != set(range(len(found))):
            raise ModelLoadError(f"MVDiffusion checkpoint has {group} blocks {sorted(found)}; expected 0…n−1")
        return sorted(found)

    encoder = [width(f"cp_blocks_encoder.{i}") for i in indices("cp_blocks_encoder")]
    decoder = [width(f"cp_blocks_decoder.{i}") for i in indices("cp_blocks_decoder")]
    return encoder, width("cp_blocks_mid"), decoder


def _old_vae_key(key: str) -> str:
    for old, new in VAE_RENAMES.items():
        if ".attentions." in key and f".{new}." in key:
            return key.replace(f".{new}.", f".{old}.")
    return key


def fit_prefix(state: dict[str, torch.Tensor], own_keys, prefix: str = "text_model.") -> dict[str, torch.Tensor]:
    """Drop ``prefix`` from the keys when the target model's own keys lack it (transformers ≥ 5 CLIP text
    models are no longer wrapped in ``text_model``)."""
    own = set(own_keys)
    if any(k.startswith(prefix) for k in own) or not all(k.startswith(prefix) for k in state):
        return state
    return {k[len(prefix):]: v for k, v in state.items()}


def reference_state_dict(adapter, unet=None, vae=None, text_encoder=None) -> dict[str, torch.Tensor]:
    """A state dict in the released checkpoints' layout (for tests and for exporting trained blocks):
    the adapter's blocks under ``mv_base_model.``, optionally the UNet, the VAE (old attention names)
    and the text encoder (float16, with ``position_ids``)."""
    state = {PREFIX + key: value for key, value in adapter.state_dict().items()}
    if unet is not None:
        state.update({UNET_PREFIX + key: value for key, value in unet.state_dict().items()})
    if vae is not None:
        state.update({"vae." + _old_vae_key(key): value for key, value in vae.state_dict().items()})
    if text_encoder is not None:
        for key, value in text_encoder.state_dict().items():
            key = key if key.startswith("text_model.") else "text_model." + key  # transformers 4.28 layout
            state["text_encoder." + key] = value.half() if value.is_floating_point() else value
        positions = text_encoder.config.max_position_embeddings
        state["text_encoder.text_model.embeddings.position_ids"] = torch.arange(positions)[None]
    return state
