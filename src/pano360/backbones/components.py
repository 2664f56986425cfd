"""Shortcuts to a loaded backbone's components, shared by the generator and by run contexts. Torch-free."""

from __future__ import annotations

from typing import Any


class BackboneComponents:
    """Shortcuts to the components of the object's ``backbone`` (shared by the generator and run contexts)."""

    backbone: Any  # pano360.backbones.loading.Backbone

    @property
    def pipe(self):
        return self.backbone.pipe

    @property
    def unet(self):
        return self.backbone.pipe.unet

    @property
    def vae(self):
        return self.backbone.pipe.vae

    @property
    def controlnet(self):
        return self.backbone.controlnet

    @property
    def info(self):
        return self.backbone.info
