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

``wrap`` (default True) wraps every convolution of the UNet and VAE horizontally (equirect canvases);
off for perspective views. Cost: one UNet call per step on the whole latent, plus one VAE encode (two
for 9-channel UNets).
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
        from ..backbones.wrap import wraparound

        super().enter_patches(stack)
        if self.method.wrap:
            stack.enter_context(wraparound(self.ctx.unet, self.ctx.vae))

    @property
    def inpainting_unet(self) -> bool:
        return int(self.ctx.unet.config.in_channels) == INPAINT_CHANNELS

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

        from ..backbones.vae import encode_images

        image = self._pixels(self.method.image, 3)
        mask = self._pixels(self.method.mask, 1)
        self.noise = noise / self.ctx.scheduler.init_noise_sigma  # unit Gaussian ε
        with torch.no_grad():
            self.known = encode_images(self.ctx.vae, image)
            self.mask = F.max_pool2d((mask > 0.5).to(noise.dtype), self.ctx.info.vae_scale_factor)
            self.masked = encode_images(self.ctx.vae, image * (mask < 0.5)) if self.inpainting_unet else None
        return noise

    def before_step(self, model, latents, t, i: int):
        if self.masked is not None:
            return latents
        noised = self.ctx.scheduler.add_noise(self.known, self.noise, torch.as_tensor([t]).reshape(1))
        return self.mask * latents + (1 - self.mask) * noised

    def predict(self, model, model_input, t, i: int):
        if self.masked is not None:
            model_input = torch.cat([model_input, self.mask.to(model_input.dtype),
                                     self.masked.to(model_input.dtype)], dim=1)
        return model(model_input, t, size_px=(self.ctx.height, self.ctx.width))

    def decode(self, latents) -> Decoded:
        if self.masked is None:
            latents = self.mask * latents + (1 - self.mask) * self.known
        return super().decode(latents)


class InpaintMethod(PanoramaMethod):
    """Regenerate ``mask`` of ``image``: masked latent blending, or a 9-channel inpainting UNet."""

    name = "inpaint"
    summary = "regenerate the masked part of a given image (API only; used by pano360 poles/outpaint)"
    options = (
        Option("image", None, "[B|1, 3, H, W] image in [-1, 1] to inpaint", kind="any"),
        Option("mask", None, "[B|1, 1, H, W] mask, 1 = regenerate", kind="any"),
        Option("wrap", True, "wraparound padding in the UNet and VAE (equirect canvases)", kind="bool", cli=False),
    )
    run_class = InpaintRun

    def check_options(self) -> None:
        if self.image is None or self.mask is None:
            raise InvalidInputError("method 'inpaint' needs image= and mask= tensors (Python API only)")
