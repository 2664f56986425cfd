"""Checks on generation arguments that need no model: run them before anything expensive.

Each check raises :class:`~pano360.errors.InvalidInputError` with one line that says what to change.
Sizes are in pixels unless a name says otherwise.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import InvalidInputError

PIXELS_PER_LATENT = 8


def check_size(height: int, width: int) -> None:
    """Height and width: positive multiples of 8 pixels, height ≤ width."""
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidInputError(f"{name} must be a whole number of pixels, got {value!r}")
        if value <= 0:
            raise InvalidInputError(f"{name} must be positive, got {value}")
        if value % PIXELS_PER_LATENT:
            lower = max(PIXELS_PER_LATENT, value - value % PIXELS_PER_LATENT)
            raise InvalidInputError(
                f"{name} must be a multiple of 8 pixels (one latent column), got {value}; use {lower} or {lower + 8}"
            )
    if height > width:
        raise InvalidInputError(
            f"height ({height}) is greater than width ({width}); a 360° panorama is at least as wide as it is "
            f"high: use width >= height (2:1, e.g. {height}x{2 * height}, for a full sphere)"
        )


def check_steps(num_inference_steps: int) -> None:
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise InvalidInputError(f"the number of steps must be a whole number >= 1, got {num_inference_steps!r}")


def check_guidance(guidance_scale: float) -> None:
    if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise InvalidInputError(
            f"guidance scale must be a finite number >= 0 (1 disables guidance; 7.5 is typical), got {guidance_scale!r}"
        )


def check_existing_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` must be an existing file; returns it expanded."""
    expanded = Path(os.path.expanduser(str(path)))
    if not expanded.is_file():
        raise InvalidInputError(f"{what} {str(path)!r} does not exist or is not a file; check the path")
    return expanded


def check_nonnegative(value: float, name: str) -> None:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}")


def check_generation_args(
    *, height: int, width: int, num_inference_steps: int, guidance_scale: float, num_images_per_prompt: int = 1
) -> None:
    """All model-free checks of :meth:`PanoramaGenerator.__call__` arguments."""
    check_size(height, width)
    check_steps(num_inference_steps)
    check_guidance(guidance_scale)
    if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
        raise InvalidInputError(f"num_images_per_prompt must be >= 1, got {num_images_per_prompt!r}")
