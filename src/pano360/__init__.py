"""pano360: seamless 360° panoramas from text with Stable Diffusion-family models.

Quick start::

    import pano360
    gen = pano360.PanoramaGenerator.from_pretrained("stabilityai/stable-diffusion-2-base")
    out = gen("a cozy cabin interior, warm light", method="circular", height=512, width=1024)
    out.save("cabin.png")          # PNG with GPano XMP + cabin.json sidecar

Heavy modules (torch, diffusers) are imported on first use, so ``import pano360`` and the CLI's
``--help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "PanoramaGenerator": ("pano360.generator", "PanoramaGenerator"),
    "PanoramaOutput": ("pano360.output", "PanoramaOutput"),
    "available_methods": ("pano360.methods", "available_methods"),
    "get_method": ("pano360.methods", "get_method"),
    "register_method": ("pano360.methods", "register_method"),
    "PanoramaMethod": ("pano360.methods.base", "PanoramaMethod"),
    "MethodRun": ("pano360.methods.base", "MethodRun"),
    "Option": ("pano360.options", "Option"),
    "Preset": ("pano360.presets", "Preset"),
    "register_preset": ("pano360.presets", "register_preset"),
    "load_adapter": ("pano360.adapters", "load_adapter"),
    "inpaint_panorama": ("pano360.sphere.edit", "inpaint_panorama"),
    "wraparound": ("pano360.backbones.wrap", "wraparound"),
    "enable_wraparound": ("pano360.backbones.wrap", "enable_wraparound"),
    "disable_wraparound": ("pano360.backbones.wrap", "disable_wraparound"),
    "estimate_depth": ("pano360.spatial.depth", "estimate_depth"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        return getattr(importlib.import_module(module_name), attribute)
    raise AttributeError(f"module 'pano360' has no attribute {name!r}")
