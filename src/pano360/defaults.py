"""Defaults and names the CLI needs before any heavy import (torch-free, so ``--help`` stays fast).

The modules that use them (``backbones.loading``, ``backbones.tiny``) import them from here, so each
value lives in one place.
"""

from __future__ import annotations

DEFAULT_PRESET = "sdxl-360"
"""What ``pano360 generate`` and ``PanoramaGenerator.from_pretrained()`` load when neither a model nor a
preset is named: a true equirectangular model (ProGamerGov/sdxl-360-diffusion's UNet on SDXL base, with its
trigger phrase; ``docs/models.md`` says why). ``--model stabilityai/stable-diffusion-2-base`` is SD 2 base."""

DEFAULT_MODEL = "stabilityai/stable-diffusion-2-base"
"""The model the other tools use when none is named (train, qkvo, batch, serve, poles/outpaint/upscale),
and ``--model`` for SD 2 base in ``pano360 generate``."""

DEFAULT_OUTPUT_DIR = "outputs"
"""Where ``pano360 generate`` writes when ``-o`` is not given."""

TINY_UNET_MODELS = {"tiny": "sd1", "tiny-sd1": "sd1", "tiny-sd2": "sd2", "tiny-sdxl": "sdxl"}
TINY_DIT_MODELS = {"tiny-flux": "flux", "tiny-flux-schnell": "flux", "tiny-flux-fill": "flux", "tiny-sd3": "sd3",
                   "tiny-sd35": "sd3", "tiny-qwen": "qwen-image", "tiny-flux2": "flux2"}
TINY_MODEL_NAMES = {**TINY_UNET_MODELS, **TINY_DIT_MODELS}
"""Built-in random test models (offline, milliseconds to build) → the family they imitate."""

DIT_BASE_MODELS = {"flux": "black-forest-labs/FLUX.1-dev", "sd3": "stabilityai/stable-diffusion-3.5-medium",
                   "qwen-image": "Qwen/Qwen-Image", "flux2": "black-forest-labs/FLUX.2-klein-4B"}
"""The diffusers repository whose text encoders, VAE and configs a transformer-only checkpoint (a
single ``.safetensors``/``.gguf`` file, or ``--transformer``) is combined with, per family."""

TINY_NATIVE_SIZE = 128
"""Native square size in pixels of the tiny models (UNet sample size 16 × VAE factor 8)."""

NATIVE_SIZES = {"sd1": 512, "sd2": 512, "sdxl": 1024, "flux": 1024, "sd3": 1024, "qwen-image": 1024,
                "flux2": 1024}
"""Native square size in pixels per family (SD 2 768-v checkpoints: 768, read from the model)."""


def native_height_for(model: str) -> int:
    """The default panorama height for a ``--model`` argument, without loading it: the tiny models'
    size, 1024 for names that say SDXL, else 512 (the real value is read from the model later)."""
    name = str(model).strip().lower()
    if name in TINY_MODEL_NAMES:
        return TINY_NATIVE_SIZE
    if "xl" in name:
        return NATIVE_SIZES["sdxl"]
    return NATIVE_SIZES["sd2"]


FAMILY_DEFAULTS = {"sd1": (50, 7.5), "sd2": (50, 7.5), "sdxl": (50, 7.5), "flux": (28, 3.5), "sd3": (28, 7.0),
                   "qwen-image": (50, 4.0), "flux2": (50, 4.0)}
"""(steps, guidance scale) per family when neither the user nor a preset gives them: each family's
diffusers pipeline defaults (FLUX's guidance is its embedded value; Qwen-Image's its true CFG scale)."""
