"""Validation panoramas during training, generated through the normal :class:`PanoramaGenerator`.

The in-training adapter is already attached to the UNet the generator uses (LoRA-style adapters sit
inside it), so what is saved is exactly what ``pano360 generate --lora OUT`` would make at this step.
Files: ``OUT/validation/step-<step>/<k>.png`` with GPano 360 metadata and ``<k>.txt`` (the prompt).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..io.atomic import atomic_write_text
from ..io.images import save_panorama_image
from .report import VALIDATION


def generate_validation(pipe, adapter, config, step: int, output: Path) -> list[Path]:
    """One panorama per ``config.validation_prompts`` (seed ``validation_seed + k``); returns the files."""
    from ..generator import PanoramaGenerator

    generator = PanoramaGenerator.from_pipe(pipe, name=config.model)
    folder = Path(output) / VALIDATION / f"step-{step:06d}"
    method = getattr(adapter, "method", None) or "circular"
    written = []
    with torch.no_grad():
        for k, prompt in enumerate(config.validation_prompts):
            result = generator(prompt, method=method, height=config.resolution, width=2 * config.resolution,
                               num_inference_steps=config.validation_steps,
                               guidance_scale=config.validation_guidance, seed=config.validation_seed + k,
                               progress=False)
            path = folder / f"{k:02d}.png"
            save_panorama_image(result.images[0], path, overwrite=True, software="pano360 train")
            atomic_write_text(path.with_suffix(".txt"), prompt + "\n", overwrite=True)
            written.append(path)
    return written
