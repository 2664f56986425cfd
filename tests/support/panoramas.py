"""Synthetic training panoramas for the training tests: smooth, distinct, seamless 2:1 images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def panorama_array(index: int, height: int = 32) -> np.ndarray:
    """[H, 2H, 3] uint8: a horizontally periodic pattern different for each ``index``."""
    y, x = np.mgrid[0:height, 0:2 * height].astype(np.float64)
    phase = 2 * np.pi * x / (2 * height)
    red = 0.5 + 0.45 * np.sin((index + 1) * phase)
    green = 0.5 + 0.45 * np.cos(phase + index) * (y / height)
    blue = np.full_like(y, (index % 4) / 4 + 0.1)
    return (np.stack([red, green, blue], -1) * 255).round().astype(np.uint8)


def write_panoramas(folder: Path, count: int = 3, height: int = 32, captions: str = "txt",
                    suffix: str = ".png") -> list[Path]:
    """``count`` panoramas in ``folder`` with captions as .txt files, a metadata.jsonl, or none."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    paths, rows = [], []
    for i in range(count):
        path = folder / f"pano{i}{suffix}"
        Image.fromarray(panorama_array(i, height)).save(path)
        paths.append(path)
        if captions == "txt":
            path.with_suffix(".txt").write_text(f"panorama number {i}\n")
        rows.append({"file_name": path.name, "text": f"panorama number {i}"})
    if captions == "jsonl":
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths
