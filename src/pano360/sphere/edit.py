"""Paint-to-edit: regenerate the masked part of an equirect panorama, keep the rest bit-exact.

:func:`inpaint_panorama` is the API behind ``pano360 inpaint PANO MASK "prompt"`` and the studio's
paint mode. The masked region is denoised by :func:`pano360.sphere.inpaint.inpaint` with wraparound
padding (the left and right edges are neighbours, so a mask across the seam is one region), then
the result is composited: every pixel outside the mask is copied from the input image, so the
unpainted pixels are exactly the input's (the VAE round trip never touches them).

Masks: white (> 127 in grey, or opaque alpha for an RGBA mask) = regenerate, black = keep; the same
size as the panorama, or any size with the same 2:1 shape (resized with nearest neighbour).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..errors import InvalidInputError


def read_mask(mask, height: int, width: int, what: str = "mask") -> np.ndarray:
    """A mask (path, PIL image or array) as a bool array [height, width] (True = regenerate).

    One line for a mask of another shape, an empty mask, or one that covers everything it cannot
    keep anything of (that is allowed: the whole image is regenerated)."""
    from PIL import Image

    if isinstance(mask, (str, os.PathLike)):
        from ..io.export import open_image

        mask = open_image(mask, what)
    if isinstance(mask, Image.Image):
        if mask.mode in ("RGBA", "LA", "PA") or "transparency" in mask.info:
            array = np.asarray(mask.convert("RGBA"))
            # a painted layer: opaque where painted; an opaque black/white mask: its grey value
            opaque = array[..., 3] > 127
            grey = np.asarray(mask.convert("L")) > 127
            mask = opaque & grey if (array[..., 3] == 255).all() else opaque
        else:
            mask = np.asarray(mask.convert("L")) > 127
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise InvalidInputError(f"the {what} must be a 2-D image, got shape {tuple(mask.shape)}")
    mask = mask > (127 if mask.dtype == np.uint8 else 0.5) if mask.dtype != bool else mask
    if mask.shape != (height, width):
        mh, mw = mask.shape
        if mh * width != mw * height:
            raise InvalidInputError(f"the {what} is {mh}x{mw} (HxW) but the panorama is {height}x{width}; "
                                    "paint the mask on this panorama (same size or the same shape)")
        rows = (np.arange(height) * mh) // height
        cols = (np.arange(width) * mw) // width
        mask = mask[rows][:, cols]
    if not mask.any():
        raise InvalidInputError(f"the {what} is empty: paint (white) the region to regenerate")
    return mask


def check_inpaint_size(height: int, width: int, multiple: int = 8) -> None:
    """Model-free check of the panorama size (HEIGHTxWIDTH): a multiple of ``multiple`` pixels, at least 2:1."""
    if height % multiple or width % multiple:
        raise InvalidInputError(f"the panorama is {height}x{width} (HxW); inpainting needs both sides to be a "
                                f"multiple of {multiple} pixels for this model (resize or crop it)")
    if width < 2 * height:
        raise InvalidInputError(f"the panorama is {height}x{width} (HxW); an equirect panorama is at least twice "
                                "as wide as it is high")


def inpaint_panorama(
    model,
    panorama,
    mask,
    prompt: str,
    *,
    negative_prompt: str | None = None,
    num_inference_steps: int = 30,
    guidance_scale: float = 7.5,
    seed: int | None = 0,
    scheduler: str | None = None,
    progress: Callable[[int], None] | None = None,
):
    """Regenerate the ``mask`` (white = new) of ``panorama`` from ``prompt``; returns a PIL RGB image.

    Args:
        model: a :class:`~pano360.PanoramaGenerator` or a diffusers SD/SDXL pipeline (text-to-image:
            masked latent blending; an inpainting checkpoint: its 9-channel UNet).
        panorama: path or PIL image of the equirect panorama (W >= 2H).
        mask: path, PIL image or array (see :func:`read_mask`).
        prompt / negative_prompt / num_inference_steps / guidance_scale / seed / scheduler: sampling.
        progress: ``progress(i)`` after each denoising step (raise from it to cancel).

    Pixels outside the mask are copied from ``panorama`` unchanged (bit-exact).
    """
    import torch
    from PIL import Image

    from ..backbones.loading import family_info
    from ..io.export import open_image
    from ..validation import check_guidance, check_steps
    from .inpaint import inpaint

    check_steps(num_inference_steps)
    check_guidance(guidance_scale)
    if not isinstance(prompt, str):
        raise InvalidInputError("the prompt must be text")
    image = panorama if isinstance(panorama, Image.Image) else open_image(panorama, "panorama")
    image = image.convert("RGB")
    pipe = getattr(model, "pipe", model)
    check_inpaint_size(image.height, image.width, family_info(pipe).pixel_multiple)
    keep = read_mask(mask, image.height, image.width)
    original = np.asarray(image)
    tensor = torch.from_numpy(original.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    regenerate = torch.from_numpy(keep.astype(np.float32))[None, None]
    with torch.no_grad():
        result = inpaint(
            pipe, tensor, regenerate, prompt, negative_prompt=negative_prompt, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, scheduler=scheduler, seed=seed, wrap=True,
            progress=progress,
        )
    generated = ((result[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    composite = np.where(keep[..., None], generated, original)  # unpainted pixels: the input's, exactly
    return Image.fromarray(np.ascontiguousarray(composite), "RGB")


__all__ = ["check_inpaint_size", "inpaint_panorama", "read_mask"]
