"""LoRAs (with scales) and textual-inversion embeddings on a loaded backbone.

LoRAs load through diffusers' ``load_lora_weights``, which reads the diffusers/peft format and the
common community formats (kohya ``lora_unet_…``/``lora_te_…`` keys, A1111). Embeddings accept:

* the single-encoder forms diffusers reads (A1111 ``.pt`` with ``string_to_param``, ``emb_params``,
  diffusers ``{token: tensor}``), and
* SDXL two-encoder files holding one tensor per text encoder: pivotal-tuning ``embeddings.pti`` from
  Replicate's cog-sdxl trainer (keys ``text_encoders_0``/``text_encoders_1``, tokens ``<s0><s1>``…) and
  diffusers' advanced trainer (keys ``clip_l``/``clip_g``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..errors import InvalidInputError, ModelLoadError
from .loading import HUB_ID, Backbone

TWO_ENCODER_KEYS = (("text_encoders_0", "text_encoders_1"), ("clip_l", "clip_g"))


def check_adapter_path(path: str, what: str = "LoRA") -> None:
    """Raise before any loading if ``path`` looks like a file path but does not exist."""
    expanded = Path(os.path.expanduser(path))
    if expanded.exists():
        return
    if what == "LoRA" and HUB_ID.match(path) and not expanded.suffix:
        return  # a Hub repo id, resolved at load time
    raise InvalidInputError(f"{what} file {path!r} does not exist; check the path")


def load_loras(backbone: Backbone, loras: list[tuple[str, float]], *, weight_names: list[str | None] | None = None,
               cache_dir=None, local_files_only=False, token=None) -> None:
    """Load each ``(path_or_repo, scale)`` as its own adapter and activate them all with their scales."""
    if not loras:
        return
    pipe = backbone.pipe
    names, scales = [], []
    for index, (source, scale) in enumerate(loras):
        check_adapter_path(source)
        name = f"lora{index}"
        weight_name = weight_names[index] if weight_names else None
        path = os.path.expanduser(source)
        kwargs = {}
        if Path(path).is_file():
            kwargs["weight_name"] = Path(path).name
            path = str(Path(path).parent)
        elif weight_name:
            kwargs["weight_name"] = weight_name
        try:
            pipe.load_lora_weights(path, adapter_name=name, cache_dir=cache_dir,
                                   local_files_only=local_files_only, token=token, **kwargs)
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(
                f"could not load LoRA {source!r}: {error}. Is it a LoRA for this {backbone.info.family} model?"
                .replace("\n", " ")
            ) from error
        names.append(name)
        scales.append(float(scale))
        backbone.loras.append({"source": source, "scale": float(scale), "adapter": name})
    pipe.set_adapters(names, adapter_weights=scales)


def set_lora_scales(backbone: Backbone, scales: list[float]) -> None:
    """Change the scales of the loaded LoRAs (in load order) without reloading them."""
    names = [entry["adapter"] for entry in backbone.loras]
    if len(scales) != len(names):
        raise InvalidInputError(f"{len(names)} LoRA(s) are loaded but {len(scales)} scale(s) were given")
    backbone.pipe.set_adapters(names, adapter_weights=[float(s) for s in scales])
    for entry, scale in zip(backbone.loras, scales):
        entry["scale"] = float(scale)


def _read_embedding_file(path: Path) -> dict:
    if path.suffix.lower() in (".safetensors", ".pti") :
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception:
            if path.suffix.lower() == ".safetensors":
                raise
    return torch.load(path, map_location="cpu", weights_only=True)


def _split_tokens(token: str | None, count: int, default_stem: str) -> list[str]:
    """Tokens for ``count`` vectors: ``"<s0><s1>"`` splits into its parts; a stem gets numbered."""
    if token:
        parts = re.findall(r"<[^<>]+>", token)
        if len(parts) == count and "".join(parts) == token:
            return parts
        if count == 1:
            return [token]
        return [token] + [f"{token}_{i}" for i in range(1, count)]
    return [f"<{default_stem}{i}>" for i in range(count)]


def load_embedding(backbone: Backbone, source: str, token: str | None = None) -> list[str]:
    """Load a textual-inversion embedding; returns the tokens to write in prompts."""
    check_adapter_path(source, what="embedding")
    path = Path(os.path.expanduser(source))
    pipe = backbone.pipe
    if not hasattr(pipe, "load_textual_inversion"):
        raise ModelLoadError(f"textual-inversion embeddings load into CLIP text encoders of SD/SDXL models; this "
                             f"{backbone.info.family} pipeline takes none: drop --embedding {source}")
    try:
        state = _read_embedding_file(path)
    except Exception as error:
        raise ModelLoadError(f"could not read embedding {source!r}: {error}".replace("\n", " ")) from error
    two_encoder = next((keys for keys in TWO_ENCODER_KEYS if all(k in state for k in keys)), None)
    try:
        if two_encoder:
            if not backbone.info.is_sdxl:
                raise ModelLoadError(
                    f"embedding {source!r} holds one tensor per SDXL text encoder; load it with an SDXL model"
                )
            first, second = (state[k] for k in two_encoder)
            tokens = _split_tokens(token, first.shape[0], default_stem="s")
            pipe.load_textual_inversion(first, token=tokens, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
            pipe.load_textual_inversion(second, token=tokens, text_encoder=pipe.text_encoder_2,
                                        tokenizer=pipe.tokenizer_2)
        else:
            tokens = _load_single_encoder_embedding(pipe, path, state, token)
    except ValueError as error:
        raise ModelLoadError(f"could not load embedding {source!r}: {error}".replace("\n", " ")) from error
    backbone.embeddings.append({"source": source, "tokens": tokens})
    return tokens


def _load_single_encoder_embedding(pipe, path: Path, state: dict, token: str | None) -> list[str]:
    vectors = _single_encoder_vectors(state)
    width = vectors.shape[-1]
    encoders = [(pipe.text_encoder, pipe.tokenizer)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        encoders.append((pipe.text_encoder_2, pipe.tokenizer_2))
    matching = [pair for pair in encoders if pair[0].get_input_embeddings().weight.shape[-1] == width]
    if not matching:
        raise ModelLoadError(
            f"embedding {path.name!r} has vectors of width {width}, which no text encoder of this model uses; "
            "it was trained for another model family"
        )
    text_encoder, tokenizer = matching[0]
    tokens = _split_tokens(token or _stored_token(state) or f"<{path.stem}>", vectors.shape[0], path.stem)
    pipe.load_textual_inversion(vectors, token=tokens, text_encoder=text_encoder, tokenizer=tokenizer)
    return tokens


def _single_encoder_vectors(state: dict) -> torch.Tensor:
    """The [n_vectors, width] tensor of a single-encoder embedding file in any common layout."""
    if "string_to_param" in state:  # A1111 .pt
        tensor = next(iter(state["string_to_param"].values()))
    elif "emb_params" in state:  # A1111 safetensors
        tensor = state["emb_params"]
    elif len(state) == 1:  # diffusers {token: tensor}
        tensor = next(iter(state.values()))
    else:
        raise ModelLoadError(f"unrecognised embedding layout with keys {sorted(state)[:6]}")
    return tensor.reshape(-1, tensor.shape[-1]).float()


def _stored_token(state: dict) -> str | None:
    if "string_to_param" in state or "emb_params" in state:
        name = state.get("name")
        return f"<{name}>" if isinstance(name, str) else None
    if len(state) == 1:
        return next(iter(state))
    return None
