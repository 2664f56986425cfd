"""Captions for a folder of panoramas (``pano360 caption FOLDER``) with a transformers image-to-text model.

Default model: BLIP-2 (``Salesforce/blip2-opt-2.7b``), as PanFusion/UniPano (BLIP-2 on the whole
equirect, prompt "a 360-degree view of") and MVDiffusion (BLIP-2 per perspective view) caption their
data. Any model id that ``AutoModelForImageTextToText`` loads works. ``tiny`` is a random ViT → GPT-2
captioner built in memory (for tests and offline smoke runs; its captions are gibberish).

Outputs, in the layout :mod:`pano360.training.datasets` reads:

* ``txt``: ``<stem>.txt`` beside each image, and with ``views`` ``<stem>_<deg>.txt`` for the 8 horizon
  views (yaw 0, 45, …, 315°, FoV 90°: MVDiffusion's per-view prompts);
* ``jsonl``: one ``metadata.jsonl`` at the folder root (``file_name``, ``text``, and ``view_texts``).

Existing captions are never replaced without ``overwrite``: those images are skipped (and counted).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._lazy import lazy_module
from .errors import InvalidInputError, ModelLoadError

torch = lazy_module("torch")

DEFAULT_CAPTIONER = "Salesforce/blip2-opt-2.7b"
TINY_CAPTIONER = "tiny"
VIEW_DEGREES = tuple(range(0, 360, 45))


class Captioner:
    """``captioner(images) -> captions`` for a list of PIL RGB images.

    ``prompt``: text the model continues (BLIP-2 style conditional captioning), stripped from the output.
    """

    def __init__(self, model, processor, tokenizer=None, prompt: str | None = None, max_new_tokens: int = 30,
                 device: torch.device | str = "cpu"):
        self.model, self.processor, self.prompt = model.eval(), processor, prompt
        self.tokenizer = tokenizer or getattr(processor, "tokenizer", None)
        self.max_new_tokens, self.device = max_new_tokens, torch.device(device)

    def __call__(self, images: list) -> list[str]:
        kwargs = {"images": images, "return_tensors": "pt"}
        if self.prompt:
            kwargs["text"] = [self.prompt] * len(images)
        inputs = self.processor(**kwargs)
        inputs = {k: (v.to(self.device, self.model.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in dict(inputs).items() if isinstance(v, torch.Tensor)}
        with torch.no_grad():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [_clean(text, self.prompt) for text in texts]


def _clean(text: str, prompt: str | None) -> str:
    text = " ".join(text.replace("</w>", " ").split())
    if prompt and text.lower().startswith(prompt.lower()):
        text = text[len(prompt):]
    return text.strip(" .,").strip()


class _TinyProcessor:
    """Resize to 32×32 and scale to [-1, 1] (the tiny captioner's whole image processor)."""

    def __init__(self, tokenizer, size: int = 32):
        self.tokenizer, self.size = tokenizer, size

    def __call__(self, images, return_tensors="pt", text=None):
        import numpy as np

        arrays = [np.asarray(image.convert("RGB").resize((self.size, self.size)), dtype=np.float32) for image in images]
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0
        return {"pixel_values": pixels}


def tiny_captioner(seed: int = 0, max_new_tokens: int = 12) -> Captioner:
    """A random ViT-encoder / GPT-2-decoder captioner (a few hundred kB) with the tiny CLIP tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, VisionEncoderDecoderModel, ViTConfig, ViTModel

    from .backbones.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    encoder = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=64))
    decoder = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                         add_cross_attention=True, bos_token_id=tokenizer.bos_token_id,
                                         eos_token_id=tokenizer.eos_token_id))
    model = VisionEncoderDecoderModel(encoder=encoder, decoder=decoder)
    model.config.decoder_start_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return Captioner(model, _TinyProcessor(tokenizer), tokenizer, max_new_tokens=max_new_tokens)


def load_captioner(model: str = DEFAULT_CAPTIONER, *, device: str = "auto", dtype: str = "auto",
                   prompt: str | None = None, max_new_tokens: int = 30, cache_dir: str | None = None,
                   local_files_only: bool = False) -> Captioner:
    """``tiny`` or a Hub id / folder of an image-to-text model (BLIP-2, GIT, Florence-style...)."""
    from .backbones.device import resolve_device, resolve_dtype

    if model == TINY_CAPTIONER:
        captioner = tiny_captioner(max_new_tokens=min(max_new_tokens, 12))
        captioner.prompt = None
        return captioner
    from transformers import AutoModelForImageTextToText, AutoProcessor

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        processor = AutoProcessor.from_pretrained(model, cache_dir=cache_dir, local_files_only=local_files_only)
        network = AutoModelForImageTextToText.from_pretrained(model, torch_dtype=torch_dtype, cache_dir=cache_dir,
                                                              local_files_only=local_files_only)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"could not load captioning model {model!r}: {error}".replace("\n", " ")) from error
    return Captioner(network.to(device), processor, prompt=prompt, max_new_tokens=max_new_tokens, device=device)


@dataclass
class CaptionSummary:
    written: list[str] = field(default_factory=list)  # image keys captioned now
    kept: list[str] = field(default_factory=list)  # images that already had captions
    files: list[Path] = field(default_factory=list)


def find_panoramas(folder: str | os.PathLike) -> list[Path]:
    """2:1 images below ``folder`` (the same rules as training data; other images are an error)."""
    from .training.datasets import open_dataset

    dataset = open_dataset(folder, default_caption="")
    return [record.path for record in dataset.records]


def horizon_views(image, size: int = 384):
    """The 8 horizon views (yaw 0, 45, ..., 315°, FoV 90°) of a PIL panorama, as PIL images."""
    import numpy as np
    from PIL import Image

    from .geometry import equirect_to_perspective

    pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    views = equirect_to_perspective(pixels[None], list(VIEW_DEGREES), 0.0, 90.0, (size, size))[0]
    arrays = (views.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


class LazyCaptioner:
    """A captioner loaded on its first call: a folder whose panoramas all have captions already never
    loads BLIP-2 (gigabytes, and a download unless ``--offline``)."""

    def __init__(self, load: Callable[[], Captioner]):
        self._load, self._captioner = load, None

    @property
    def loaded(self) -> bool:
        return self._captioner is not None

    def __call__(self, images):
        if self._captioner is None:
            self._captioner = self._load()
        return self._captioner(images)


def caption_folder(folder: str | os.PathLike, captioner: Captioner, *, views: bool = False, prefix: str = "",
                   output: str = "txt", overwrite: bool = False, batch_size: int = 4,
                   progress: bool = False) -> CaptionSummary:
    """Caption every panorama in ``folder`` (see the module docstring); returns what was done."""
    from PIL import Image

    from .io.atomic import atomic_write_text
    from .io.images import to_rgb

    if output not in ("txt", "jsonl"):
        raise InvalidInputError(f"caption output must be txt or jsonl, got {output!r}")
    root = Path(os.path.expanduser(str(folder)))
    images = find_panoramas(root)
    metadata_path = root / "metadata.jsonl"
    existing: dict[str, dict] = {}
    if output == "jsonl" and metadata_path.is_file():
        for number, line in enumerate(metadata_path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                    existing[row["file_name"]] = row
                except (ValueError, KeyError, TypeError):
                    raise InvalidInputError(f"{metadata_path}:{number} is not a JSON object with a \"file_name\"; "
                                            "fix or remove that line") from None
    summary = CaptionSummary()
    todo = []
    for path in images:
        key = path.relative_to(root).as_posix()
        has = key in existing if output == "jsonl" else path.with_suffix(".txt").is_file()
        (todo.append(path) if overwrite or not has else summary.kept.append(key))
    iterator = range(0, len(todo), batch_size)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="captioning", unit="batch")
    for start in iterator:
        chunk = todo[start:start + batch_size]
        pictures = []
        for path in chunk:
            with Image.open(path) as image:
                pictures.append(to_rgb(image))
        captions = [prefix + c for c in captioner(pictures)]
        view_captions = [[prefix + c for c in captioner(horizon_views(p))] for p in pictures] if views else None
        for i, path in enumerate(chunk):
            key = path.relative_to(root).as_posix()
            summary.written.append(key)
            if output == "txt":
                summary.files.append(atomic_write_text(path.with_suffix(".txt"), captions[i] + "\n", overwrite=True))
                for deg, text in zip(VIEW_DEGREES, view_captions[i] if views else ()):
                    summary.files.append(atomic_write_text(path.with_name(f"{path.stem}_{deg}.txt"), text + "\n",
                                                           overwrite=True))
            else:
                row = {"file_name": key, "text": captions[i]}
                if views:
                    row["view_texts"] = view_captions[i]
                existing[key] = row
    if output == "jsonl" and summary.written:
        body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in existing.values())
        summary.files.append(atomic_write_text(metadata_path, body, overwrite=True))
    return summary
