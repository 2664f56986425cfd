"""Files: panorama images with 360 metadata, sidecars, atomic writes."""

from .atomic import atomic_write_bytes, atomic_write_text, ensure_writable
from .images import read_panorama_metadata, save_panorama_image
from .sidecar import library_versions, read_sidecar, sidecar_path, write_sidecar
from .xmp import PanoGeometry, build_gpano_xmp, parse_gpano_xmp, pano_geometry_for_size

__all__ = [
    "PanoGeometry",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_gpano_xmp",
    "ensure_writable",
    "library_versions",
    "pano_geometry_for_size",
    "parse_gpano_xmp",
    "read_panorama_metadata",
    "read_sidecar",
    "save_panorama_image",
    "sidecar_path",
    "write_sidecar",
]
