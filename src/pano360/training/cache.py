"""From records to model tensors: cached (or per-step) VAE latents and text embeddings, and batches.

:class:`LatentCache` encodes every panorama and its mirror image once, with the VAE encoder wrapped
(:func:`pano360.backbones.wrap.wraparound`), at the training size; a sample's yaw roll is then a roll
of the cached latent by ``roll_px / 8`` columns, which equals encoding the rolled image because the
wrapped encoder is equivariant to whole-latent-column rolls. :class:`TextCache` encodes each distinct
caption (and the empty prompt used for caption dropout) once. Latents are the posterior mean
(``encode_images(sample=False)``) in both modes, so a run with ``cache=False`` (VAE and text encoder
run every step, as in diffusers' scripts) draws exactly the same training signal as a cached run.

:class:`BatchBuilder` turns sample positions into a :class:`TrainingBatch`; adapters that need
perspective views (MVDiffusion) get them through :class:`ViewRequest`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..backbones.conditioning import encode_prompts
from ..backbones.vae import encode_images
from ..backbones.wrap import wraparound
from .augment import Augmentation, AugmentConfig, apply_roll_to_latent, apply_to_image
from .datasets import VIEW_DEGREES, PanoramaDataset
from .sampler import SampleOrder


@dataclass(frozen=True)
class ViewRequest:
    """Perspective views an adapter trains on, rendered from each augmented panorama.

    ``yaw_deg`` (one per view), ``pitch_deg``, ``fov_deg`` (horizontal) in degrees; ``size_px`` the
    square view edge in pixels. Captions per view: the panorama's per-view caption nearest in yaw
    (MVDiffusion's rule), or the panorama caption when it has none.
    """

    yaw_deg: tuple[float, ...] = tuple(float(d) for d in VIEW_DEGREES)
    pitch_deg: float = 0.0
    fov_deg: float = 90.0
    size_px: int = 256


@dataclass
class TrainingBatch:
    """One process's micro-batch, on the training device.

    ``latents`` [B, C, h, w] scaled equirect latents (float32); ``embeds`` [B, L, D] and, for SDXL,
    ``pooled`` [B, P]; ``size_px`` (H, W) pixels of the panorama (SDXL time ids); ``positions`` the
    sample positions (keys of the per-sample noise). With a :class:`ViewRequest`: ``view_latents``
    [B, V, C, s/8, s/8], ``view_embeds`` [B, V, L, D] (``view_pooled`` [B, V, P]) and
    ``view_yaw_deg`` [B, V], the yaw of each view in the augmented panorama's frame.
    """

    latents: torch.Tensor
    embeds: torch.Tensor
    pooled: torch.Tensor | None
    size_px: tuple[int, int]
    positions: list[int]
    captions: list[str]
    view_latents: torch.Tensor | None = None
    view_embeds: torch.Tensor | None = None
    view_pooled: torch.Tensor | None = None
    view_yaw_deg: torch.Tensor | None = None
    mask: torch.Tensor | None = None  # [B, L] text mask (Qwen-Image), 1 = a real token


def _pad_tokens(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """[N, L, ...] zero-padded along L to ``length``."""
    if tensor.shape[1] == length:
        return tensor
    pad = torch.zeros(tensor.shape[0], length - tensor.shape[1], *tensor.shape[2:], dtype=tensor.dtype,
                      device=tensor.device)
    return torch.cat([tensor, pad], dim=1)


class TextCache:
    """Embeddings of a fixed set of captions, encoded once (``cache=False``: encoded on every lookup).

    Encoded through the pipeline's family (:func:`pano360.backbones.conditioning.encode_prompts`): CLIP
    for SD, CLIP + T5 (pooled and sequence) for FLUX/SD3, Qwen2.5-VL with its text mask for Qwen-Image.
    Variable-length embeddings (Qwen-Image) are zero-padded to one length with the mask 0 there.
    """

    def __init__(self, pipe, captions: list[str], device, cache: bool = True, chunk: int = 32):
        self.pipe, self.device, self.cache = pipe, device, cache
        self.table: dict[str, int] = {}
        self.embeds = self.pooled = self.mask = None
        if cache:
            unique = sorted(set(captions) | {""})
            self.table = {caption: i for i, caption in enumerate(unique)}
            parts = [self._encode(unique[i:i + chunk]) for i in range(0, len(unique), chunk)]
            length = max(p[0].shape[1] for p in parts)
            self.embeds = torch.cat([_pad_tokens(p[0], length) for p in parts]).cpu()
            self.pooled = None if parts[0][1] is None else torch.cat([p[1] for p in parts]).cpu()
            self.mask = None if parts[0][2] is None else torch.cat([_pad_tokens(p[2], length) for p in parts]).cpu()

    def _encode(self, prompts: list[str]):
        text = encode_prompts(self.pipe, prompts, guidance=False, device=self.device)
        return text.embeds, text.pooled, text.mask

    def lookup_all(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """[N, L, D] embeddings, [N, P] pooled (or None) and [N, L] mask (or None), on the device."""
        if not self.cache:
            return self._encode(prompts)
        index = torch.tensor([self.table[p] for p in prompts])
        pooled = None if self.pooled is None else self.pooled[index].to(self.device)
        mask = None if self.mask is None else self.mask[index].to(self.device)
        return self.embeds[index].to(self.device), pooled, mask

    def lookup(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[N, L, D] embeddings (and [N, P] pooled or None) of ``prompts``, on the device."""
        embeds, pooled, _ = self.lookup_all(prompts)
        return embeds, pooled


class LatentCache:
    """Scaled latents of every panorama and of its mirror image, [C, h, w] each (CPU, float32)."""

    def __init__(self, vae, dataset: PanoramaDataset, height: int, batch_size: int = 4, progress: bool = False):
        self.latents: list[torch.Tensor] = []
        self.flipped: list[torch.Tensor] = []
        indices = range(len(dataset))
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc="caching latents", unit="pano")
        pending: list[torch.Tensor] = []
        with torch.no_grad(), wraparound(vae):
            for i in indices:
                pending.append(dataset.load(i, height))
                if len(pending) == batch_size or i == len(dataset) - 1:
                    self._encode(vae, pending)
                    pending = []

    def _encode(self, vae, images: list[torch.Tensor]) -> None:
        stack = torch.stack(images)
        latents = encode_images(vae, torch.cat([stack, stack.flip(-1)]), batch_size=len(images)).float().cpu()
        self.latents.extend(latents[: len(images)])
        self.flipped.extend(latents[len(images):])

    def get(self, index: int, aug: Augmentation, vae_factor: int = 8) -> torch.Tensor:
        source = self.flipped[index] if aug.flip else self.latents[index]
        return apply_roll_to_latent(source, aug, vae_factor)


def _nearest_view_caption(captions: tuple[str, ...], yaw_in_sample: float, aug: Augmentation,
                          width_px: int) -> str:
    """Caption of the original panorama's canonical view nearest to what a view at ``yaw_in_sample``
    sees after ``aug`` (mirror, then roll right by roll_px: yaw φ shows original yaw ±(φ − ρ))."""
    rho = aug.roll_px / width_px * 360.0
    original = -(yaw_in_sample - rho) if aug.flip else yaw_in_sample - rho
    step = 360.0 / len(captions)
    return captions[round(original / step) % len(captions)]


class BatchBuilder:
    """Sample positions → :class:`TrainingBatch` (augmented, encoded or looked up in the caches)."""

    def __init__(self, dataset: PanoramaDataset, pipe, height: int, augment: AugmentConfig, seed: int, device,
                 cache: bool = True, views: ViewRequest | None = None, shuffle: bool = True,
                 progress: bool = False, vae=None):
        """``vae``: the image VAE to encode with (``backbone.vae``: Qwen-Image's ``FrameVAE``); default
        ``pipe.vae``."""
        from ..backbones.vae import vae_scale_factor

        self.dataset, self.pipe, self.height, self.width = dataset, pipe, int(height), 2 * int(height)
        self.augment, self.seed, self.device, self.views = augment, int(seed), device, views
        self.vae = pipe.vae if vae is None else vae
        self.vae_factor = vae_scale_factor(self.vae)
        self.order = SampleOrder(len(dataset), seed, shuffle)
        prompts = list(dataset.captions)
        if views is not None:
            prompts += [c for r in dataset.records for c in (r.view_captions or ())]
        self.text = TextCache(pipe, prompts, device, cache=cache)
        self.latents = LatentCache(self.vae, dataset, height, progress=progress) if cache else None

    def _image_latent(self, index: int, aug: Augmentation) -> torch.Tensor:
        if self.latents is not None:
            return self.latents.get(index, aug, self.vae_factor)
        image = apply_to_image(self.dataset.load(index, self.height), aug)
        with torch.no_grad(), wraparound(self.vae):
            return encode_images(self.vae, image[None])[0].float().cpu()

    def build(self, positions: list[int]) -> TrainingBatch:
        latents, captions, augs, indices = [], [], [], []
        for position in positions:
            index = self.order.index(position)
            aug = self.augment.draw(self.seed, position, self.width)
            latents.append(self._image_latent(index, aug))
            captions.append("" if aug.drop_caption else self.dataset.records[index].caption or "")
            augs.append(aug)
            indices.append(index)
        embeds, pooled, mask = self.text.lookup_all(captions)
        batch = TrainingBatch(torch.stack(latents).to(self.device), embeds, pooled, (self.height, self.width),
                              list(positions), captions, mask=mask)
        if self.views is not None:
            self._add_views(batch, indices, augs)
        return batch

    def _add_views(self, batch: TrainingBatch, indices: list[int], augs: list[Augmentation]) -> None:
        from ..geometry import equirect_to_perspective

        request = self.views
        yaw = torch.tensor(request.yaw_deg, dtype=torch.float64)
        latents, prompts = [], []
        for index, aug in zip(indices, augs):
            image = apply_to_image(self.dataset.load(index, self.height), aug)
            views = equirect_to_perspective(image[None], yaw, request.pitch_deg, request.fov_deg,
                                            (request.size_px, request.size_px))[0]  # [V, 3, s, s]
            with torch.no_grad():
                latents.append(encode_images(self.pipe.vae, views, batch_size=len(views)).float())
            record = self.dataset.records[index]
            for view_yaw in request.yaw_deg:
                if aug.drop_caption:
                    prompts.append("")
                elif record.view_captions:
                    prompts.append(_nearest_view_caption(record.view_captions, view_yaw, aug, self.width))
                else:
                    prompts.append(record.caption or "")
        count = len(request.yaw_deg)
        embeds, pooled = self.text.lookup(prompts) if self.text.cache and all(p in self.text.table for p in prompts) \
            else TextCache(self.pipe, [], self.device, cache=False).lookup(prompts)
        batch.view_latents = torch.stack(latents).to(self.device)
        batch.view_embeds = embeds.reshape(len(indices), count, *embeds.shape[1:])
        batch.view_pooled = None if pooled is None else pooled.reshape(len(indices), count, -1)
        batch.view_yaw_deg = yaw.float().expand(len(indices), count).clone()
