"""The result of a generation: images, final latents and every parameter, savable with 360 metadata."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .io.images import image_format_for, save_panorama_image
from .io.paths import check_output_targets, save_with_fallback
from .io.sidecar import sidecar_path, sidecar_paths, write_sidecar


@dataclass
class PanoramaOutput:
    """What :class:`~pano360.PanoramaGenerator` returns.

    Attributes:
        images: ``output_type="pil"``: list of ``PIL.Image``; ``"np"``: float32 array [B, H, W, 3] in
            [0, 1]; ``"pt"``: tensor [B, 3, H, W] in [0, 1]; ``"latent"``: None.
        latents: final latents [B, *latent shape] (on the CPU, float32): [B, 4, H/8, W/8] for equirect
            methods, [B, V, 4, h, w] for multi-view methods.
        parameters: everything needed to reproduce the run (prompt, sizes, seeds, model ids/hashes,
            method options, versions); ``parameters["seeds"][i]`` is image i's seed.
    """

    images: Any
    latents: torch.Tensor
    parameters: dict[str, Any] = field(default_factory=dict)
    views: Any = None  # multi-view methods: per image, the V view images in the output type

    def pil_images(self) -> list:
        """The images as PIL images whatever the output type (decoding is not redone)."""
        from PIL import Image

        if self.images is None:
            raise ValueError("this output holds latents only (output_type='latent'); decode them first")
        if isinstance(self.images, list):
            return self.images
        array = self.images
        if isinstance(array, torch.Tensor):
            array = array.permute(0, 2, 3, 1).cpu().numpy()
        return [Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)) for a in array]

    def save(self, path: str | os.PathLike, *, overwrite: bool = False, metadata: bool = True,
             jpeg_quality: int = 95, fallback: bool = False) -> list[Path]:
        """Write each image (PNG/JPEG by extension, with GPano XMP) and its JSON sidecar.

        One image goes to ``path``; several go to ``stem_0.ext``, ``stem_1.ext``, … Every target
        (image and sidecar ``<image>.json``) is checked first (folder writable, names free), so either
        all files are written or none is replaced. With ``fallback`` (the CLI), a write that still
        fails (disk full, folder gone) puts the files into a fallback folder instead and prints where
        (:func:`pano360.io.paths.save_with_fallback`); the returned paths say where they went.
        """
        path = Path(path)
        image_format_for(path)  # clear error for an unsupported extension before any work
        images = self.pil_images()
        if not fallback:
            return self._write(path, images, overwrite, metadata, jpeg_quality)

        def taken(candidate: Path) -> bool:
            return any(p.exists() for t in self._targets(candidate, len(images)) for p in (t, *sidecar_paths(t)))

        written, _ = save_with_fallback(
            lambda target: self._write(target, images, overwrite, metadata, jpeg_quality), path, taken=taken,
        )
        return written

    @staticmethod
    def _targets(path: Path, count: int) -> list[Path]:
        if count == 1:
            return [path]
        return [path.with_name(f"{path.stem}_{i}{path.suffix}") for i in range(count)]

    def _write(self, path: Path, images: list, overwrite: bool, metadata: bool, jpeg_quality: int) -> list[Path]:
        targets = self._targets(path, len(images))
        check_output_targets([p for t in targets for p in (t, sidecar_path(t))], overwrite)
        software = f"pano360 {self.parameters.get('versions', {}).get('pano360', '')}".strip()
        for index, (image, target) in enumerate(zip(images, targets)):
            record = dict(self.parameters)
            seeds = record.pop("seeds", None)
            if seeds is not None:
                record["seed"] = seeds[index]
                record["image_index"] = index
            record["image_file"] = target.name
            # the file's own pixels: "height"/"width" are the generation's canvas (what --from re-runs), which
            # differs for a method that returns a band (mvdiffusion: 240x1024 of a 512x1024 canvas)
            record["image_height"], record["image_width"] = image.height, image.width
            save_panorama_image(image, target, overwrite=overwrite, add_metadata=metadata,
                                software=software, jpeg_quality=jpeg_quality)
            write_sidecar(target, record, overwrite=overwrite)
        return targets
