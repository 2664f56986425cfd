"""From panorama to 3D: 360° depth, meshes, point clouds, stereo 360 pairs and HDR files.

Public API (heavy libraries load on first use)::

    result = estimate_depth("pano.png")                 # DepthResult: depth [H, W] radial distance
    result.save("pano_depth.exr")                       # or .png (16-bit); sidecar records the units
    convert_panorama("pano.png", "mesh", "pano.glb")    # depth, mesh, pointcloud, stereo, hdr, exr

See ``docs/spatial.md`` for the conventions (frame, units, file encodings, stereo layout).
"""

from __future__ import annotations

_LAZY = {
    "estimate_depth": ("pano360.spatial.depth", "estimate_depth"),
    "load_depth_model": ("pano360.spatial.depth", "load_depth_model"),
    "DepthResult": ("pano360.spatial.depth", "DepthResult"),
    "DEFAULT_DEPTH_MODEL": ("pano360.spatial.depth", "DEFAULT_DEPTH_MODEL"),
    "read_depth": ("pano360.spatial.files", "read_depth"),
    "write_depth": ("pano360.spatial.files", "write_depth"),
    "build_mesh": ("pano360.spatial.mesh", "build_mesh"),
    "write_mesh": ("pano360.spatial.mesh", "write_mesh"),
    "write_pointcloud": ("pano360.spatial.mesh", "write_pointcloud"),
    "render_stereo": ("pano360.spatial.stereo", "render_stereo"),
    "write_stereo": ("pano360.spatial.stereo", "write_stereo"),
    "write_hdr": ("pano360.spatial.hdr", "write_hdr"),
    "merge_exposures": ("pano360.spatial.hdr", "merge_exposures"),
    "convert_panorama": ("pano360.spatial.convert", "convert_panorama"),
    "CONVERSIONS": ("pano360.spatial.convert", "CONVERSIONS"),
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        return getattr(importlib.import_module(module_name), attribute)
    raise AttributeError(f"module 'pano360.spatial' has no attribute {name!r}")
