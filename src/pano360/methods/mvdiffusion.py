"""``mvdiffusion``: 8 perspective views denoised jointly, talking through correspondence-aware attention.

MVDiffusion (Tang et al., NeurIPS 2023) keeps SD 2 frozen and adds correspondence-aware attention
(CAA) blocks between its blocks (:mod:`pano360.adapters.mvdiffusion`); the blocks come from an adapter:
the released ``pano.ckpt`` on ``stabilityai/stable-diffusion-2-base``, ``pano_outpaint.ckpt`` on
``stabilityai/stable-diffusion-2-inpainting`` or a folder written by ``pano360 train``.

* Latents are [B, V, 4, h, w]: view i looks at yaw 360·i/V (45·i for the default 8 views, the
  reference's order), pitch 0, with a 90° FoV, at the backbone's native view size.
* Prompts: one for all views, or one per view (``prompt=[...V]``, CLI ``--view-prompts FILE`` with V
  lines); each view's cross-attention sees only its own prompt, the CAA sees no text.
* Guidance: all views of all images, unconditional and conditional, in one UNet batch.
* Decoding: per view; the views are stitched onto a ``height``×``width`` (2:1) equirect canvas with the
  reference's tent weights (0 at a view's side edges, 1 at its centre column, constant vertically)
  through :func:`pano360.geometry.perspective_to_equirect`, and the output is the band the views
  cover (rows 540:1508 of 2048×4096 for the reference rig), tagged as a GPano cropped area.
* Outpainting (``image=PHOTO``, 9-channel inpainting UNet): view 0 is the photo, resized and centre-
  cropped to the view size; the UNet input is [noisy latent (4), mask (1), masked-image latent (4)]
  with mask 0 for view 0 and 1 for the others, as in the reference. With ``paste_back`` (default) the
  output keeps the photo: view 0 is the photo and it is pasted into the panorama with a feathered border.

Cost per step: one UNet call on B·V·2 view latents; the CAA adds 12% FLOPs to the plain UNet here (the
reference's arithmetic: 35%), see ``docs/benchmarks.md``.
"""

from __future__ import annotations

import math
import os
from typing import ClassVar

from .._lazy import lazy_module
from ..errors import InvalidInputError
from ..options import Option
from .base import Decoded, MethodRun, PanoramaMethod

torch = lazy_module("torch")


def read_view_prompts(path: str, views: int) -> list[str]:
    """The non-empty lines of a text file, exactly one prompt per view (view 0 first)."""
    from ..io.textfiles import read_prompt_lines

    return read_prompt_lines(path, "view prompts file", count=views, unit="view")


def tent_weights(height: int, width: int):
    """[height, width] horizontal tent: 0 at both side edges, 1 at the centre (the reference's blend)."""
    half = width // 2
    row = torch.cat([torch.linspace(0, 1, half), torch.linspace(1, 0, width - half)])
    return row.expand(height, width)


def covered_rows(full_height: int, views: int, fov_deg: float) -> int:
    """Rows at the top (and bottom) of a ``full_height`` equirect that some view column does not reach.

    Between two views (180°/V off a view's axis) a 90°-tall view reaches latitude
    atan(tan(vfov/2)·cos(180°/V)); rounded up to a multiple of 4 pixels, which gives the reference's
    540 of 2048 rows for 8 views of 90°.
    """
    reach = math.degrees(math.atan(math.tan(math.radians(fov_deg) / 2) * math.cos(math.pi / views)))
    top = full_height * (90.0 - reach) / 180.0
    return min(full_height // 2 - 1, 4 * math.ceil(top / 4 - 1e-9))


def stitch_views(views, rig, out_hw, mode: str = "bicubic"):
    """Views [B, V, 3, h, w] → (equirect [B, 3, H, W], weight sum [B, 1, H, W]) with tent weights.

    Each view and its tent are projected on their own (``perspective_to_equirect``), and the panorama is
    Σ wᵢ·Iᵢ / Σ wᵢ; pixels no view weights are white (1.0), as in the reference.
    """
    from ..geometry import perspective_to_equirect

    batch, count, channels, height, width = views.shape
    tent = tent_weights(height, width).to(views)[None, None].expand(batch, 1, 1, height, width)
    numerator, total = 0, 0
    for v in range(count):
        stacked = torch.cat([views[:, v:v + 1], tent], dim=2)  # [B, 1, C + 1, h, w]
        angles = {k: t[v:v + 1] for k, t in rig.angles().items()}
        projected, covered = perspective_to_equirect(stacked, out_hw=out_hw, mode=mode, **angles)
        weight = projected[:, channels:] * (covered > 0)
        numerator = numerator + projected[:, :channels] * weight
        total = total + weight
    merged = numerator / total.clamp_min(1e-12)
    return torch.where(total > 0, merged, torch.ones_like(merged)), total


def load_photo(image, size: int):
    """A photo (path, PIL image, array or [3, H, W] tensor in [0, 1]) → [3, size, size] in [-1, 1]:
    the shorter side resized to ``size`` (bilinear, as ``cv2.resize``), then centre-cropped."""
    import numpy as np
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        from ..validation import check_existing_file

        with Image.open(check_existing_file(image, "image")) as opened:
            image = opened.convert("RGB")
    if isinstance(image, Image.Image):
        image = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    elif isinstance(image, np.ndarray):
        array = image.astype(np.float32)
        image = torch.from_numpy(array / 255.0 if array.max() > 1.0 else array).permute(2, 0, 1)
    image = torch.as_tensor(image, dtype=torch.float32)
    if image.ndim != 3 or image.shape[0] != 3:
        raise InvalidInputError(f"image must be an RGB picture, got a tensor of shape {tuple(image.shape)}")
    height, width = image.shape[-2:]
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    resized = torch.nn.functional.interpolate(image[None], size=(new_h, new_w), mode="bilinear",
                                              align_corners=False, antialias=False)[0]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return (resized[:, top:top + size, left:left + size] * 2 - 1).clamp(-1, 1)


def feather_mask(size: int, feather: float):
    """[size, size] paste weight: 1 inside, falling linearly to 0 over the outer ``feather`` fraction."""
    if feather <= 0:
        return torch.ones(size, size)
    coords = (torch.arange(size) + 0.5) / size
    edge = torch.minimum(coords, 1 - coords) / feather  # 0 at the border, ≥ 1 inside
    ramp = edge.clamp(0, 1)
    return torch.minimum(ramp[:, None], ramp[None, :])


class MVDiffusionRun(MethodRun):
    """One MVDiffusion generation: the rig, the cameras, the CAA network and (outpainting) the condition."""

    method: MVDiffusionMethod

    def __init__(self, method, ctx):
        super().__init__(method, ctx)
        from ..adapters.mvdiffusion import MVDiffusionAdapter, cameras_from_rig
        from ..geometry.rigs import horizon_ring

        self.adapter = next((a for a in ctx.adapters if isinstance(a, MVDiffusionAdapter)), None)
        if self.adapter is None:  # fresh_blocks: zero-initialised blocks, an exact identity (tiny models)
            self.adapter = MVDiffusionAdapter.for_unet(ctx.unet).to(device=ctx.unet.device, dtype=ctx.unet.dtype)
            ctx.adapters.append(self.adapter)  # this run's list: attached and detached with the others
        self.view_size = method.view_size or ctx.info.native_size
        factor = ctx.info.vae_scale_factor
        self.rig = horizon_ring(method.num_views, method.fov)
        self.cameras = cameras_from_rig(self.rig, self.view_size, self.view_size)
        self.latent_shape = (method.num_views, ctx.latent_channels, self.view_size // factor, self.view_size // factor)
        self.photo = None
        self.condition = None  # [B·V, 5, h, w]: mask and masked-image latent (outpainting)
        if self.adapter.components:  # a reference checkpoint's own UNet/VAE/text encoder, loaded once
            self.adapter.load_components({"unet": ctx.unet, "vae": ctx.vae,
                                          "text_encoder": getattr(ctx.pipe, "text_encoder", None)})
        if method.image is not None:
            self.photo = load_photo(method.image, self.view_size).to(ctx.unet.device)
            self.condition = self._outpaint_condition()

    def _outpaint_condition(self):
        """Mask (0 for view 0, 1 for the views to generate) and the masked views' latents (view 0 = the
        photo, the others 0 = mid-grey), encoded with a posterior sample as in the reference."""
        from ..backbones.vae import encode_images

        ctx = self.ctx
        views, _, h, w = self.latent_shape
        batch = ctx.batch_size
        masked = torch.zeros(batch, views, 3, self.view_size, self.view_size, device=self.photo.device)
        masked[:, 0] = self.photo
        latents = [encode_images(ctx.vae, masked[b], sample=True, generator=ctx.generators[b], batch_size=views)
                   for b in range(batch)]
        mask = torch.ones(batch, views, 1, h, w, device=self.photo.device)
        mask[:, 0] = 0
        condition = torch.cat([mask, torch.stack(latents).to(mask)], dim=2)
        return condition.flatten(0, 1).to(ctx.unet.dtype)

    def predict(self, model, model_input, t, i: int):
        batch, views = model_input.shape[:2]
        x = model_input.flatten(0, 1)  # [B·V, 4, h, w], each image's views contiguous
        if self.condition is not None:
            x = torch.cat([x, self.condition.to(x)], dim=1)
        output = model(x, t, size_px=(self.view_size, self.view_size), cameras=self.cameras)
        return output.view(batch, views, *output.shape[1:])

    def decode(self, latents) -> Decoded:
        from ..backbones.vae import decode_latents

        batch, views = latents.shape[:2]
        images = decode_latents(self.ctx.vae, latents.flatten(0, 1)).float()
        images = images.view(batch, views, *images.shape[1:]).clamp(-1, 1)
        height, width = self.ctx.height, self.ctx.width
        pano, _ = stitch_views(images, self.rig, (height, width))
        if self.photo is not None and self.method.paste_back:
            pano, images = self._paste_back(pano, images)
        top = covered_rows(height, views, self.method.fov)
        geometry = {"full_width": width, "full_height": height, "crop_top": top}
        return Decoded(pano[:, :, top:height - top], views=images, geometry=geometry)

    def _paste_back(self, pano, images):
        """View 0 becomes the photo; the photo replaces the panorama where it lies, feathered at its border."""
        from ..geometry import perspective_to_equirect

        size = self.view_size
        photo = self.photo.to(pano)
        weight = feather_mask(size, self.method.feather).to(pano)
        stacked = torch.cat([photo, weight[None]])[None, None].expand(pano.shape[0], 1, 4, size, size)
        angles = {k: t[:1] for k, t in self.rig.angles().items()}
        projected, covered = perspective_to_equirect(stacked, out_hw=pano.shape[-2:], mode="bicubic", **angles)
        alpha = (projected[:, 3:] * (covered > 0)).clamp(0, 1)
        pano = alpha * projected[:, :3] + (1 - alpha) * pano
        images = images.clone()
        images[:, 0] = photo
        return pano, images


class MVDiffusionMethod(PanoramaMethod):
    """V perspective views denoised jointly by a frozen UNet with correspondence-aware attention blocks."""

    name = "mvdiffusion"
    size_family = "windows"
    summary = "8 perspective views with correspondence-aware attention (needs --adapter pano.ckpt), stitched"
    options = (
        Option("num_views", 8, "number of views around the horizon (yaw 360·i/num_views degrees; the checkpoints "
               "were trained with 8)", kind="int", minimum=3),
        Option("fov", 90.0, "horizontal and vertical field of view of each view, degrees", kind="float", minimum=1.0),
        Option("view_size", None, "view size in pixels (None = the model's native size: 512 for SD 2)",
               kind="int", minimum=64, none_ok=True),
        Option("view_prompts", None, "text file with one prompt per view (line i = view i at yaw 360·i/num_views); "
               "replaces the prompt", kind="path", none_ok=True, metavar="FILE"),
        Option("image", None, "photo to outpaint into a panorama (view 0; needs pano_outpaint.ckpt on "
               "stabilityai/stable-diffusion-2-inpainting)", kind="path", none_ok=True, objects_ok=True,
               metavar="PHOTO"),
        Option("paste_back", True, "outpainting: keep the photo exactly (view 0 and its place in the panorama, "
               "feathered border)", kind="bool"),
        Option("feather", 0.05, "outpainting paste-back: width of the feathered border, fraction of the view "
               "size", kind="float", minimum=0.0),
        Option("fresh_blocks", False, "without an MVDiffusion adapter, start from zero-initialised attention "
               "blocks: an exact identity (each view denoised as by the plain UNet); on by default for the "
               "built-in tiny models, so they run offline", kind="bool"),
    )
    run_class = MVDiffusionRun
    tiny_defaults: ClassVar[dict] = {"fresh_blocks": True}  # tiny models: runs offline without a checkpoint

    def check_options(self) -> None:
        if self.fov >= 180:
            raise InvalidInputError(f"fov must be below 180 degrees, got {self.fov:g}")
        if self.view_size is not None and self.view_size % 64:
            raise InvalidInputError(f"view_size must be a multiple of 64 pixels, got {self.view_size}")
        if self.feather > 0.5:
            raise InvalidInputError(f"feather must be at most 0.5 (half the view), got {self.feather:g}")

    def prompt_units(self, prompt) -> list[list[str]]:
        """One prompt for all views (a string), one per view (a list of ``views`` strings) or, for several
        panoramas, a list of those; ``view_prompts`` (a file) replaces them for every image."""
        views = self.num_views
        if self.view_prompts is not None:
            count = 1 if isinstance(prompt, str) or not prompt or isinstance(prompt[0], str) else len(prompt)
            return [read_view_prompts(self.view_prompts, views) for _ in range(count)]
        if isinstance(prompt, str):
            return [[prompt] * views]
        prompts = list(prompt)
        if not prompts:
            raise InvalidInputError("give at least one prompt")
        if all(isinstance(p, str) for p in prompts):
            if len(prompts) != views:
                raise InvalidInputError(f"{len(prompts)} prompts for {views} views: give one prompt, one per view, "
                                        "or a list of per-view lists for several panoramas")
            return [prompts]
        units = []
        for entry in prompts:
            entry = [entry] * views if isinstance(entry, str) else list(entry)
            if len(entry) != views or not all(isinstance(p, str) for p in entry):
                raise InvalidInputError(f"each panorama needs one prompt or {views} (one per view), got {entry!r}")
            units.append(entry)
        return units

    def denoiser_positions(self, request, native_latent: int, latent_factor: int) -> int:
        """All views of every image in one call: views × view size²."""
        view = (self.view_size // latent_factor) if self.view_size else native_latent
        return request.batch_size * self.num_views * view * view

    def default_size(self, info) -> tuple[int, int]:
        """The reference's canvas: width = views × view size (4096 for 8 views of 512), height = width/2."""
        width = self.num_views * (self.view_size or info.native_size)
        return width // 2, width

    def check(self, request) -> None:
        if request.width != 2 * request.height:
            raise InvalidInputError(
                f"mvdiffusion stitches onto a full 2:1 equirect canvas and returns the band the views cover; "
                f"give width = 2 × height (e.g. {request.height}x{2 * request.height}, HEIGHTxWIDTH), got "
                f"{request.height}x{request.width}")
        if request.has_control:
            raise InvalidInputError("mvdiffusion takes no ControlNet image; drop --depth/control_image")
        if self.image is not None and isinstance(self.image, str):
            from ..validation import check_existing_file

            check_existing_file(self.image, "image")

    def check_for_family(self, request, family: str) -> None:
        from ..backbones.families import DIT_FAMILIES

        if family in DIT_FAMILIES:
            raise InvalidInputError(f"mvdiffusion's correspondence-aware attention blocks attach to an SD 2 UNet; this is "
                                    f"a {family} model: use --method circular, multidiffusion, spot or syncdiffusion")
        super().check_for_family(request, family)

    def check_for_model(self, request, info, scheduler_name, adapters=()) -> None:
        super().check_for_model(request, info, scheduler_name, adapters)
        from ..adapters.mvdiffusion import MVDiffusionAdapter
        from ..adapters.mvdiffusion.checkpoint import DOWNLOADS, SD2_BASE, SD2_INPAINTING

        blocks = [a for a in adapters if isinstance(a, MVDiffusionAdapter)]
        if not blocks and not self.fresh_blocks:
            raise InvalidInputError(
                f"mvdiffusion needs its correspondence-aware attention weights: pass adapter='pano.ckpt' "
                f"(CLI: --adapter pano.ckpt) on {SD2_BASE}, or an adapter folder from 'pano360 train "
                f"--adapter mvdiffusion'; the checkpoints are linked from {DOWNLOADS}")
        channels = blocks[0].config["in_channels"] if blocks else 4  # fresh blocks: a text-to-image UNet
        components = bool(blocks and blocks[0].components)
        if components and info.prediction_type != "epsilon":
            base = SD2_INPAINTING if channels == 9 else SD2_BASE
            raise InvalidInputError(f"this MVDiffusion checkpoint brings {base}'s ε-prediction weights but the "
                                    f"model's scheduler predicts {info.prediction_type}; load {base} (or pass "
                                    "prediction_type='epsilon', CLI --prediction-type epsilon)")
        if self.image is None and channels == 9:
            raise InvalidInputError("these MVDiffusion weights outpaint a photo (9-channel inpainting UNet): "
                                    "give image=PHOTO (CLI: --image PHOTO), or use pano.ckpt on " + SD2_BASE)
        if self.image is not None and channels != 9:
            raise InvalidInputError(f"outpainting a photo needs pano_outpaint.ckpt on {SD2_INPAINTING} "
                                    "(a 9-channel inpainting UNet); these weights generate from text only")
        size = self.view_size or info.native_size
        if size % (info.vae_scale_factor * info.unet_downsampling):
            raise InvalidInputError(f"view size {size} must be a multiple of "
                                    f"{info.vae_scale_factor * info.unet_downsampling} pixels for this model")
