"""CLIP for CLIP score: transformers' ``CLIPModel`` with its tokenizer and PIL image processor.

PanFusion and SyncDiffusion score with torchmetrics' ``CLIPScore("openai/clip-vit-base-patch16")``,
which is transformers' CLIP plus its processor: shortest side resized to 224 (PIL bicubic), centre
crop 224x224, CLIP mean/std normalisation; text tokenised to at most 77 tokens. The weights come from
the Hugging Face hub cache, or offline from ``<weights_dir>/clip-vit-base-patch16`` (a folder written by
``save_pretrained`` or ``hf download openai/clip-vit-base-patch16 --local-dir ...``).

:func:`tiny_random_clip` builds a small random CLIP with a byte-level tokenizer and a 32-px processor,
for tests and smoke runs: it needs no file at all.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError

__all__ = ["CLIP_MODEL_ID", "ClipBundle", "load_clip", "tiny_random_clip"]

CLIP_MODEL_ID = "openai/clip-vit-base-patch16"


@dataclass
class ClipBundle:
    """A CLIP model with the tokenizer and image processor that belong to it."""

    model: Any  # transformers.CLIPModel
    tokenizer: Any
    processor: Any  # CLIPImageProcessorPil (the PIL path: no torchvision needed)
    name: str

    @torch.no_grad()
    def image_embeddings(self, images: list, device: torch.device | str = "cpu") -> torch.Tensor:
        """Unit-norm image embeddings [N, D] of uint8 HxWx3 numpy images."""
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        dtype = next(self.model.parameters()).dtype
        out = self.model.get_image_features(pixel_values=pixels.to(device=device, dtype=dtype))
        features = out if isinstance(out, torch.Tensor) else out.pooler_output
        features = features.float()
        return features / features.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """Unit-norm text embeddings [N, D]; texts longer than 77 tokens are truncated (as torchmetrics does)."""
        max_length = min(77, self.model.config.text_config.max_position_embeddings)
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out = self.model.get_text_features(
            input_ids=tokens["input_ids"].to(device), attention_mask=tokens["attention_mask"].to(device)
        )
        features = out if isinstance(out, torch.Tensor) else out.pooler_output
        features = features.float()
        return features / features.norm(dim=-1, keepdim=True)


def _image_processor_class():
    try:
        from transformers import CLIPImageProcessorPil  # transformers >= 5: the PIL backend by name

        return CLIPImageProcessorPil
    except ImportError:  # transformers 4.x: the default processor is the PIL one
        from transformers import CLIPImageProcessor

        return CLIPImageProcessor


def load_clip(
    weights_dir: str | os.PathLike | None = None,
    model_id: str = CLIP_MODEL_ID,
    device: torch.device | str = "cpu",
) -> ClipBundle:
    """Load CLIP from ``weights_dir`` (offline) or the Hugging Face cache/hub."""
    from transformers import AutoTokenizer, CLIPModel

    short = model_id.split("/")[-1]
    sources: list[str] = []
    if weights_dir is not None:
        root = Path(weights_dir).expanduser()
        for candidate in (root / short, root / model_id, root):
            if (candidate / "config.json").is_file():
                sources.append(str(candidate))
                break
        if not sources:
            raise ModelLoadError(
                f"CLIP {model_id} not found in --weights-dir {root} (looked for {root / short}/config.json); "
                f"on a machine with internet run: hf download {model_id} --local-dir {root / short}"
            )
    else:
        sources.append(model_id)
    source = sources[0]
    try:
        model = CLIPModel.from_pretrained(source).to(device).eval()
        tokenizer = AutoTokenizer.from_pretrained(source)
        processor = _image_processor_class().from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelLoadError(
            f"cannot load CLIP {model_id} from {source} ({str(error).splitlines()[0]}); download it with "
            f"'hf download {model_id} --local-dir WEIGHTS/{short}' and pass --weights-dir WEIGHTS"
        ) from error
    model.requires_grad_(False)
    return ClipBundle(model, tokenizer, processor, model_id)


def _byte_level_vocab() -> dict[str, int]:
    """GPT-2/CLIP byte-to-unicode alphabet, each symbol alone and as a word end, plus CLIP's specials."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in codes]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def tiny_random_clip(seed: int = 0, image_size: int = 32) -> ClipBundle:
    """A random CLIP (2 layers, width 32) with a character-level tokenizer; no files, no network."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab = _byte_level_vocab()
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"))
    bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
    config = CLIPConfig(
        text_config={
            "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
            "vocab_size": len(vocab), "max_position_embeddings": 77, "bos_token_id": bos, "eos_token_id": eos,
            "pad_token_id": eos, "projection_dim": 16,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
            "image_size": image_size, "patch_size": 8, "projection_dim": 16,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.requires_grad_(False)
    processor = _image_processor_class()(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return ClipBundle(model, tokenizer, processor, "tiny-random-clip")
