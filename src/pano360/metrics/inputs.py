"""Reading the folders and prompts an evaluation runs on, with one-line errors for bad input."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._lazy import lazy_module
from ..errors import InvalidInputError

torch = lazy_module("torch")

__all__ = ["IMAGE_SUFFIXES", "ImageSet", "load_image_folder", "load_prompts", "parse_size"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass
class ImageSet:
    """Images of one folder, all the same size: ``images`` is uint8 [N, 3, H, W] on the CPU."""

    folder: Path
    names: list[str]
    images: torch.Tensor
    original_size: tuple[int, int]  # (H, W) before any --size resize
    resized: bool = False
    prompts: list[str | None] = field(default_factory=list)
    view_prompts: list[list[str] | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def is_full_sphere(self) -> bool:
        height, width = self.size
        return width == 2 * height


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"512x1024"`` → (512, 1024) as (H, W)."""
    if text is None:
        return None
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise InvalidInputError(f"--size must be HEIGHTxWIDTH like 512x1024, not {text!r}") from None
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"--size must be positive, got {text!r}")
    return height, width


def _resize(image, size: tuple[int, int]):
    """PIL resize to (H, W): box filter (area average, like OpenCV INTER_AREA) when shrinking, else bicubic."""
    from PIL import Image

    height, width = size
    shrinking = width <= image.width and height <= image.height
    return image.resize((width, height), Image.BOX if shrinking else Image.BICUBIC)


def load_image_folder(
    folder: str | os.PathLike, role: str = "generated", size: tuple[int, int] | None = None, progress: bool = False
) -> ImageSet:
    """All images of ``folder`` (sorted by name) as one uint8 tensor; ``size`` (H, W) resizes them.

    Errors: a missing folder, one without images, an unreadable file, or (without ``size``) images of
    different sizes.
    """
    from tqdm.auto import tqdm

    from ..io.images import read_image

    root = Path(folder)
    if not root.is_dir():
        raise InvalidInputError(f"{role} folder {root} does not exist or is not a folder")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidInputError(
            f"{role} folder {root} has no images ({', '.join(IMAGE_SUFFIXES)}); point it at the folder of panoramas"
        )
    arrays, sizes = [], {}
    for path in tqdm(files, desc=f"reading {role}", disable=None if progress else True, leave=False):
        image = read_image(path, f"{role} image").convert("RGB")  # truncated/corrupt files: one-line error
        sizes.setdefault((image.height, image.width), path.name)
        if size is not None and (image.height, image.width) != size:
            image = _resize(image, size)
        arrays.append(np.asarray(image, dtype=np.uint8))
    if size is None and len(sizes) > 1:
        (size_a, name_a), (size_b, name_b) = list(sizes.items())[:2]
        raise InvalidInputError(
            f"{role} images have different sizes ({name_a} is {size_a[1]}x{size_a[0]}, {name_b} is "
            f"{size_b[1]}x{size_b[0]}); pass --size HEIGHTxWIDTH to resize them all, e.g. --size 512x1024"
        )
    original = next(iter(sizes))
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(root, [p.name for p in files], images, original, resized=size is not None and original != size)


def _sidecar_prompt(image_path: Path) -> str | None:
    from ..io.sidecar import find_sidecar

    sidecar = find_sidecar(image_path)  # <image>.json, or a 0.1-style <stem>.json of this image
    if sidecar is None:
        return None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    prompt = record.get("prompt") if isinstance(record, dict) else None
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompt = prompt[0]
    return prompt if isinstance(prompt, str) else None


def load_prompts(images: ImageSet, prompts_file: str | os.PathLike | None = None) -> str:
    """Fill ``images.prompts`` / ``images.view_prompts``; returns where the prompts came from.

    ``prompts_file``: ``.txt`` with one prompt per line in the images' sorted order, or ``.json``
    mapping an image's file name (or stem) to a prompt string or to ``{"prompt": str, "views": [8 str]}``
    (per-view captions for the 8 horizon views, yaw 0, 45, ..., 315). Without a file, each image's
    pano360 sidecar (``<image>.png.json``, key ``"prompt"``) is used when present.
    """
    count = len(images)
    prompts: list[str | None] = [None] * count
    views: list[list[str] | None] = [None] * count
    if prompts_file is None:
        for i, name in enumerate(images.names):
            prompts[i] = _sidecar_prompt(images.folder / name)
        source = "sidecar JSON files" if any(p is not None for p in prompts) else "none"
    else:
        path = Path(prompts_file)
        if not path.is_file():
            raise InvalidInputError(f"prompts file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            try:
                mapping = json.loads(text)
            except ValueError as error:
                raise InvalidInputError(f"prompts file {path} is not valid JSON ({error})") from None
            if not isinstance(mapping, dict):
                raise InvalidInputError(f"prompts file {path} must hold an object mapping image names to prompts")
            for i, name in enumerate(images.names):
                entry = mapping.get(name, mapping.get(Path(name).stem))
                if isinstance(entry, dict):
                    view_list = entry.get("views")
                    if view_list is not None and (
                        not isinstance(view_list, list) or len(view_list) != 8 or not all(isinstance(v, str) for v in view_list)
                    ):
                        raise InvalidInputError(f"prompts file {path}: 'views' of {name} must be a list of 8 strings")
                    views[i] = view_list
                    entry = entry.get("prompt")
                if entry is not None and not isinstance(entry, str):
                    raise InvalidInputError(f"prompts file {path}: the prompt of {name} must be a string")
                prompts[i] = entry
        else:
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if len(lines) != count:
                raise InvalidInputError(
                    f"prompts file {path} has {len(lines)} non-empty lines but {images.folder} has {count} images; "
                    f"give one prompt per image, in file-name order (or use a .json mapping)"
                )
            prompts = list(lines)
        source = str(path)
    images.prompts = prompts
    images.view_prompts = views
    return source
