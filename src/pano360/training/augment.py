"""Panorama-correct augmentation: resize (never crop), yaw roll, horizontal flip, caption dropout.

A horizontal roll of an equirect image is a rotation of the sphere about the vertical axis (a yaw
change) and a left-right flip is a mirror: both give valid panoramas. Square crops, as in diffusers'
text-to-image scripts, do not, so the image is only ever resized to exactly H × 2H.

Every random choice for a sample is a pure function of ``(seed, position)``, where ``position`` is
the sample's place in the whole run's stream of samples (see :mod:`pano360.training.sampler`). That
makes resume exact and lets N processes with batch b draw exactly what one process with batch N·b
draws. Rolls are whole latent columns (multiples of the VAE factor, 8 pixels), so a roll applied to a
cached latent equals encoding the rolled image (the VAE encoder is wrapped).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError

# Streams of the per-sample random generator (so adding a draw never changes another one).
STREAM_AUGMENT, STREAM_NOISE = 1, 2


def sample_generator(seed: int, position: int, stream: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for sample ``position`` of a run seeded ``seed``, one per ``stream``."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(position), int(stream)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]) >> 1)


@dataclass(frozen=True)
class Augmentation:
    """What happens to one sample: mirror first, then roll right by ``roll_px`` pixels; caption dropped
    (replaced by the empty prompt) when ``drop_caption``."""

    roll_px: int = 0
    flip: bool = False
    drop_caption: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """``random_roll``: roll by a uniform multiple of ``roll_step_px`` (the VAE factor); ``random_flip``:
    mirror with probability 1/2; ``caption_dropout``: probability of the empty prompt."""

    random_roll: bool = True
    random_flip: bool = True
    caption_dropout: float = 0.2
    roll_step_px: int = 8

    def __post_init__(self):
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise InvalidInputError(f"caption dropout must be in [0, 1], got {self.caption_dropout}")

    def draw(self, seed: int, position: int, width_px: int) -> Augmentation:
        """The augmentation of sample ``position`` for a panorama ``width_px`` wide."""
        generator = sample_generator(seed, position, STREAM_AUGMENT)
        draws = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        steps = max(1, width_px // self.roll_step_px)
        roll = int(draws[0] * steps) * self.roll_step_px if self.random_roll else 0
        return Augmentation(roll_px=roll, flip=self.random_flip and draws[1] < 0.5,
                            drop_caption=draws[2] < self.caption_dropout)


def apply_to_image(image: torch.Tensor, aug: Augmentation) -> torch.Tensor:
    """[..., 3, H, W] pixels → mirrored (if ``aug.flip``) then rolled right by ``aug.roll_px``."""
    if aug.flip:
        image = image.flip(-1)
    return torch.roll(image, aug.roll_px, dims=-1) if aug.roll_px else image


def apply_roll_to_latent(latent: torch.Tensor, aug: Augmentation, vae_factor: int = 8) -> torch.Tensor:
    """Roll a latent [..., C, h, w] of the (already mirrored, if ``aug.flip``) image by ``roll_px / f``
    columns: equal to encoding the rolled image with a wrapped VAE encoder."""
    if aug.roll_px % vae_factor:
        raise ValueError(f"roll of {aug.roll_px} px is not a whole number of latent columns ({vae_factor} px)")
    columns = aug.roll_px // vae_factor
    return torch.roll(latent, columns, dims=-1) if columns else latent


def resize_panorama(image, height: int) -> torch.Tensor:
    """PIL RGB image (2:1) → [3, height, 2·height] float32 in [-1, 1] (Lanczos; aspect kept, no crop)."""
    from PIL import Image

    width, image_height = image.size
    if width != 2 * image_height:
        raise InvalidInputError(f"a {image_height}x{width} image is not a 2:1 equirectangular panorama")
    if image.size != (2 * height, height):
        image = image.resize((2 * height, height), Image.Resampling.LANCZOS)
    array = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).div(127.5).sub(1.0).contiguous()
