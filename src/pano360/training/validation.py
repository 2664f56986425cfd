"""Validation panoramas during training, generated through the normal :class:`PanoramaGenerator`.

The in-training adapter is detached from the UNet, handed to the generator as a loaded panorama adapter
(which attaches it for each run and detaches it afterwards, as ``pano360 generate --adapter OUT`` would),
and attached again for training; its weights stay in their training dtype. Files:
``OUT/validation/step-<step>/<k>.png`` with GPano 360 metadata and ``<k>.txt`` (the prompt).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..io.atomic import atomic_write_text
from ..io.images import save_panorama_image
from .report import VALIDATION


def generate_validation(pipe, adapter, config, step: int, output: Path) -> list[Path]:
    """One panorama per ``config.validation_prompts`` (seed ``validation_seed + k``); returns the files.

    ``adapter`` must be detached from ``pipe.unet`` by the caller (see :func:`with_adapter_detached`)."""
    from ..generator import PanoramaGenerator

    # channels_last=False: keep the layout training uses (a switch changes float rounding of later steps)
    generator = PanoramaGenerator.from_pipe(pipe, name=config.model, channels_last=False)
    generator.adapters.append(adapter)  # not load_adapter(): that would cast it to the UNet's dtype
    generator.adapter_sources.append({"source": f"training step {step}", "kind": adapter.kind})
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
