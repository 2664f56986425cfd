"""``inpaint``: regenerate the masked part of a given image in the shared loop (API only).

Used by the full-sphere tools (:mod:`pano360.sphere`: pole caps, a photo's surroundings), available to
anyone through ``generator(prompt, method="inpaint", image=..., mask=...)``. ``image`` is
[B|1, 3, H, W] in [-1, 1] and ``mask`` [B|1, 1, H, W] with **1 = regenerate**; H and W are the
generation's size. The pixel mask is max-pooled to latents (a latent is regenerated as soon as one of
its 8×8 pixels is).

* 4-channel UNet: **masked latent blending**. Before each step at timestep t the kept latents are
  replaced by the known latents noised to t with this run's own noise ε,
  ``x_t ← m·x_t + (1 − m)·add_noise(x0, ε, t)``; the final latents keep ``x0`` where m = 0.
* 9-channel inpainting UNet (SD 1/2/SDXL inpainting checkpoints): the UNet input is the noisy latent,
  the latent mask and the latents of the masked image (``image · (mask < 0.5)``), as diffusers'
  inpainting pipelines build it; no blending.
* FLUX.1 Fill: the transformer takes the latents of the masked image (``image · (1 − mask)``) and the
  pixel mask folded into ``vae_scale²`` channels per latent, packed beside the noisy latent's tokens,
  as ``FluxFillPipeline`` builds them; no blending.

Transformers with plain text-to-image weights (FLUX, SD3, Qwen-Image) use the masked blending with the
flow-matching noising x_t = (1 − σ)·x0 + σ·ε. ``wrap`` (default True) closes the seam (the family's
seam: wraparound convolutions, or periodic positions and the wrapped VAE); off for perspective views.
Cost: one denoiser call per step on the whole latent, plus one VAE encode (two for 9-channel UNets
and FLUX Fill).
"""

from __future__ import annotations

from .._lazy import lazy_module
from ..errors import InvalidInputError
from ..options import Option
from .base import Decoded, MethodRun, PanoramaMethod

torch = lazy_module("torch")
INPAINT_CHANNELS = 9


class InpaintRun(MethodRun):
    method: InpaintMethod

    def enter_patches(self, stack) -> None:
        super().enter_patches(stack)
        if self.method.wrap:
            stack.enter_context(self.ctx.contract.seam(self.ctx.backbone))

    @property
    def inpainting_unet(self) -> bool:
        return not self.ctx.info.is_dit and int(self.ctx.unet.config.in_channels) == INPAINT_CHANNELS

    @property
    def fill_transformer(self) -> bool:
        """A FLUX Fill transformer: more input channels than its output (the packed mask and masked image)."""
        config = self.ctx.unet.config
        return self.ctx.info.family == "flux" and int(config.in_channels) > int(config.get("out_channels") or 0) > 0

    def _pixels(self, value, channels: int):
        batch, height, width = self.ctx.batch_size, self.ctx.height, self.ctx.width
        value = torch.as_tensor(value)
        if value.ndim == 3:
            value = value[None]
        if value.ndim != 4 or value.shape[1] != channels or tuple(value.shape[-2:]) != (height, width) or \
                value.shape[0] not in (1, batch):
            raise InvalidInputError(f"inpaint: expected a [1 or {batch}, {channels}, {height}, {width}] tensor, got "
                                    f"{tuple(value.shape)}")
        return value.to(device=self.ctx.unet.device, dtype=self.ctx.unet.dtype).expand(batch, -1, -1, -1)

    def init_latents(self, noise):
        import torch.nn.functional as F

        from ..backbones.parameterization import initial_noise_scale
        from ..backbones.vae import encode_images

        image = self._pixels(self.method.image, 3)
        mask = self._pixels(self.method.mask, 1)
        self.noise = noise / initial_noise_scale(self.ctx.scheduler)  # unit Gaussian ε
        factor = self.ctx.info.vae_scale_factor
        self.fill = None
        with torch.no_grad():
            self.known = encode_images(self.ctx.vae, image)
            self.mask = F.max_pool2d((mask > 0.5).to(noise.dtype), factor)
            self.masked = encode_images(self.ctx.vae, image * (mask < 0.5)) if self.inpainting_unet else None
            if self.fill_transformer:
                binary = (mask > 0.5).to(noise.dtype)
                masked = encode_images(self.ctx.vae, image * (1 - binary))
                folded = F.pixel_unshuffle(binary, factor)  # [B, f², h, w]: channel dy·f + dx, as FLUX Fill
                self.fill = torch.cat([masked, folded], dim=1)
        return noise

    @property
    def blends(self) -> bool:
        """Masked latent blending (a plain text-to-image denoiser)."""
        return self.masked is None and self.fill is None

    def before_step(self, model, latents, t, i: int):
        from ..backbones.parameterization import add_noise

        if not self.blends:
            return latents
        noised = add_noise(self.ctx.scheduler, self.known, self.noise, torch.as_tensor([t]).reshape(1))
        return self.mask * latents + (1 - self.mask) * noised

    def predict(self, model, model_input, t, i: int):
        if self.masked is not None:
            model_input = torch.cat([model_input, self.mask.to(model_input.dtype),
                                     self.masked.to(model_input.dtype)], dim=1)
        if self.fill is not None:
            return model(model_input, t, size_px=(self.ctx.height, self.ctx.width), fill=self.fill)
        return model(model_input, t, size_px=(self.ctx.height, self.ctx.width))

    def decode(self, latents) -> Decoded:
        if self.blends:
            latents = self.mask * latents + (1 - self.mask) * self.known
        return super().decode(latents)


class InpaintMethod(PanoramaMethod):
    """Regenerate ``mask`` of ``image``: masked latent blending, or a 9-channel inpainting UNet."""

    name = "inpaint"
    summary = "regenerate the masked part of a given image (API only; used by pano360 poles/outpaint)"
    options = (
        Option("image", None, "[B|1, 3, H, W] image in [-1, 1] to inpaint", kind="any"),
        Option("mask", None, "[B|1, 1, H, W] mask, 1 = regenerate", kind="any"),
        Option("wrap", True, "close the seam in the denoiser and VAE (equirect canvases)", kind="bool", cli=False),
    )
    run_class = InpaintRun

    def check_options(self) -> None:
        if self.image is None or self.mask is None:
            raise InvalidInputError("method 'inpaint' needs image= and mask= tensors (Python API only)")
