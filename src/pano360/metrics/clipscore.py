"""CLIP score as torchmetrics' ``CLIPScore`` defines it: ``max(100 · cos(image, text), 0)`` per image.

The image goes through the CLIP processor (shortest side to 224, centre crop 224x224), so on a 2:1
panorama only about the central 180° of longitude is seen; that is PanFusion's "CS" on the panorama.
"""

from __future__ import annotations

import numpy as np
import torch

from ..nets.clip import ClipBundle

__all__ = ["clip_scores"]


def clip_scores(bundle: ClipBundle, images: torch.Tensor, texts: list[str], device="cpu", batch_size: int = 32) -> np.ndarray:
    """Per-image CLIP scores of uint8 images [N, 3, H, W] against ``texts`` (one per image) → [N]."""
    if len(texts) != images.shape[0]:
        raise ValueError(f"{len(texts)} texts for {images.shape[0]} images")
    scores = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size]
        arrays = [image.permute(1, 2, 0).cpu().numpy() for image in batch]
        image_features = bundle.image_embeddings(arrays, device=device)
        text_features = bundle.text_embeddings(texts[start:start + batch_size], device=device)
        scores.append((100 * (image_features * text_features).sum(dim=-1)).clamp(min=0).cpu().numpy())
    return np.concatenate(scores).astype(np.float64)
