"""Shortcuts to a loaded backbone's components, shared by the generator and by run contexts. Torch-free."""

from __future__ import annotations

from typing import Any


class BackboneComponents:
    """Shortcuts to the components of the object's ``backbone`` (shared by the generator and run contexts).

    ``unet`` is the denoiser, whatever the family: the UNet of SD 1/2/SDXL or the transformer of a DiT
    (the name stays for the many UNet-era callers; ``denoiser`` says the same). ``vae`` has the image VAE
    interface of :mod:`pano360.backbones.vae` for every family; ``contract`` is the family's
    :class:`~pano360.backbones.family.BackboneFamily`.
    """

    backbone: Any  # pano360.backbones.loading.Backbone

    @property
    def pipe(self):
        return self.backbone.pipe

    @property
    def unet(self):
        return self.backbone.denoiser

    @property
    def denoiser(self):
        return self.backbone.denoiser

    @property
    def vae(self):
        return self.backbone.vae

    @property
    def controlnet(self):
        return self.backbone.controlnet

    @property
    def info(self):
        return self.backbone.info

    @property
    def contract(self):
        return self.backbone.contract
