"""Full-sphere operations on a loaded pipeline: pole refinement and photo → 360° outpainting.

Both take a diffusers SD/SDXL pipeline (``generator.pipe``, or an inpainting pipeline from
:func:`pano360.backbones.loading.load_inpainting_backbone`) and images [B, 3, H, W] in [-1, 1], and
run :func:`pano360.sphere.inpaint.inpaint` on geometry from :mod:`.poles` and :mod:`.placement`.
All checks that need no model run first (:func:`check_pole_request`, :func:`check_outpaint_request`),
so the CLI calls them before it loads anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InvalidInputError
from .inpaint import inpaint
from .placement import Placement, check_fov, check_photo_size, paste_back, place_photo
from .poles import PoleSettings, band_to_sphere, blend_poles, pole_view_mask, pole_views, settings_for


@dataclass(frozen=True)
class Sampling:
    """Denoising settings shared by the sphere operations (as in ``pano360 generate``)."""

    num_inference_steps: int = 30
    guidance_scale: float = 7.5
    scheduler: str | None = None  # None: the model's default (ddim for SD, flow_euler for transformers)
    seed: int | None = 0
    negative_prompt: str | None = None


def _facts(pipe):
    from ..backbones.loading import family_info

    return family_info(pipe)


def _native_size(pipe) -> int:
    return _facts(pipe).native_size


def _check_latent_multiple(pipe, height: int, width: int, what: str) -> None:
    step = _facts(pipe).pixel_multiple
    if height % step or width % step:
        raise InvalidInputError(f"{what} {height}x{width} must be a multiple of {step} pixels for this model")


def check_pole_request(height: int, width: int, settings: PoleSettings) -> PoleSettings:
    """Model-free checks of a pole refinement of a ``height × width`` panorama; returns the settings
    actually used (the cap widened for a band)."""
    return settings_for(height, width, settings)


def refine_poles(
    pipe,
    panorama: Tensor,
    prompt: str,
    settings: PoleSettings | None = None,
    sampling: Sampling | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Regenerate the zenith and nadir caps of ``panorama`` [B, 3, H, W] in [-1, 1] (2:1, or a wider
    band, which comes back as a full 2:1 sphere [B, 3, W/2, W]); see :mod:`pano360.sphere.poles`."""
    sampling = sampling or Sampling()
    height, width = panorama.shape[-2:]
    settings = check_pole_request(height, width, settings or PoleSettings())
    view_size = settings.view_size or _native_size(pipe)
    _check_latent_multiple(pipe, view_size, view_size, "pole view size")
    sphere = band_to_sphere(panorama.float())
    batch, poles = sphere.shape[0], len(settings.poles)
    views = pole_views(sphere, settings, view_size).clamp(-1, 1)  # [B, P, 3, s, s]
    mask = pole_view_mask(settings, view_size, sphere.device)
    regenerated = inpaint(
        pipe, views.flatten(0, 1), mask, prompt, negative_prompt=sampling.negative_prompt,
        num_inference_steps=sampling.num_inference_steps, guidance_scale=sampling.guidance_scale,
        scheduler=sampling.scheduler, seed=sampling.seed, wrap=False, progress=progress,
    ).to(sphere.device)
    return blend_poles(sphere, regenerated.view(batch, poles, *regenerated.shape[1:]), settings)


def check_outpaint_request(photo_hw: tuple[int, int], placement: Placement, out_hw: tuple[int, int]) -> None:
    """Model-free checks of photo → 360°: photo size, FoV, pitch, output size (2:1, multiple of 16)."""
    check_photo_size(photo_hw[1], photo_hw[0])
    check_fov(placement.fov_deg)
    if not -90.0 <= placement.pitch_deg <= 90.0:
        raise InvalidInputError(f"pitch must be between -90 and 90 degrees, got {placement.pitch_deg:g}")
    if placement.feather_px < 0:
        raise InvalidInputError(f"feather must be >= 0 pixels, got {placement.feather_px:g}")
    height, width = out_hw
    if width != 2 * height or height % 8:
        raise InvalidInputError(
            f"the output must be a full 2:1 sphere with a height that is a multiple of 8, got {height}x{width}; "
            "e.g. --height 512 (1024x512)"
        )


def outpaint_photo(
    pipe,
    photo: Tensor,
    prompt: str,
    placement: Placement,
    out_hw: tuple[int, int] | None = None,
    *,
    refine: bool = True,
    pole_settings: PoleSettings | None = None,
    sampling: Sampling | None = None,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """One photo [1, 3, h, w] in [-1, 1] → a full 2:1 panorama [1, 3, H, W] in [-1, 1].

    The photo is projected to its place (:func:`~pano360.sphere.placement.place_photo`), everything
    it does not cover is inpainted with wraparound padding, the poles are refined (``refine``), and
    the photo's resampled pixels are pasted back exactly, fading over ``placement.feather_px``
    photo pixels inside its border.
    """
    sampling = sampling or Sampling()
    out_hw = out_hw or (_native_size(pipe), 2 * _native_size(pipe))
    check_outpaint_request(tuple(photo.shape[-2:]), placement, out_hw)
    _check_latent_multiple(pipe, *out_hw, "panorama size")
    photo = photo.float()
    canvas, covered, alpha = place_photo(photo, out_hw, placement)
    with torch.no_grad():
        panorama = inpaint(
            pipe, canvas * covered, 1 - covered, prompt, negative_prompt=sampling.negative_prompt,
            num_inference_steps=sampling.num_inference_steps, guidance_scale=sampling.guidance_scale,
            scheduler=sampling.scheduler, seed=sampling.seed, wrap=True, progress=progress,
        ).to(photo.device)
        if refine:
            panorama = refine_poles(pipe, paste_back(panorama, canvas, alpha), prompt, pole_settings, sampling)
        return paste_back(panorama, canvas, alpha)


def finish_output(output, pipe, prompt: str, *, refine: bool = False, upscale: int | None = None,
                  negative_prompt: str | None = None, num_inference_steps: int = 30, guidance_scale: float = 7.5,
                  quiet: bool = True) -> None:
    """``generate --refine-poles / --upscale N``: refine the poles of (then upscale) every image of a
    :class:`~pano360.output.PanoramaOutput` in place, with the model that made it; the operations
    and their settings are added to ``output.parameters``. ``num_inference_steps``/``guidance_scale``
    are the generation's (the upscale redoes its last 30 %)."""
    import numpy as np
    from PIL import Image

    from .upscale import UpscaleSettings, upscale_panorama

    images = output.pil_images()
    seeds = output.parameters.get("seeds") or [0] * len(images)
    finished = []
    for image, seed in zip(images, seeds):
        if refine:
            tensor = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
            sampling = Sampling(num_inference_steps, guidance_scale, seed=seed, negative_prompt=negative_prompt)
            refined = refine_poles(pipe, tensor[None], prompt, sampling=sampling)
            array = ((refined[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
            image = Image.fromarray(array)
        if upscale:
            settings = UpscaleSettings(num_inference_steps=num_inference_steps, guidance_scale=guidance_scale, seed=seed)
            image = Image.fromarray(upscale_panorama(pipe, np.asarray(image.convert("RGB")), prompt, scale=upscale,
                                                     settings=settings, negative_prompt=negative_prompt))
        finished.append(image)
    output.images = finished
    if refine:
        output.parameters["refine_poles"] = PoleSettings().__dict__ | {"steps": num_inference_steps}
    if upscale:
        output.parameters["upscale"] = {"scale": upscale, **UpscaleSettings(num_inference_steps=num_inference_steps,
                                                                            guidance_scale=guidance_scale).__dict__}
    output.parameters["height"], output.parameters["width"] = finished[0].height, finished[0].width


def outpaint_image(pipe, photo, prompt: str, *, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                   fov_deg: float | None = None, roll_deg: float = 0.0, feather_px: float = 8.0,
                   height: int | None = None, refine: bool = True, sampling: Sampling | None = None):
    """:func:`outpaint_photo` for PIL images or image paths: returns the panorama as a PIL image.

    ``fov_deg`` None reads the horizontal FoV from the photo's EXIF focal length (one clear error when
    it has none)."""
    import numpy as np
    from PIL import Image

    from ..io.export import open_image
    from .placement import fov_from_exif

    image = photo if isinstance(photo, Image.Image) else open_image(photo)
    if fov_deg is None:
        fov_deg = fov_from_exif(image)
        if fov_deg is None:
            raise InvalidInputError("the photo's EXIF has no focal length; give its horizontal field of view (fov_deg)")
    tensor = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    placement = Placement(yaw_deg, pitch_deg, fov_deg, roll_deg, feather_px)
    out_hw = (height, 2 * height) if height else None
    result = outpaint_photo(pipe, tensor, prompt, placement, out_hw, refine=refine, sampling=sampling)
    array = ((result[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
    return Image.fromarray(array)
