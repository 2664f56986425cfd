"""Files: panorama images with 360 metadata, sidecars, atomic writes."""

from .atomic import atomic_write_bytes, atomic_write_text, ensure_writable
from .images import read_image, read_panorama_metadata, save_panorama_image
from .paths import check_output_target, check_output_targets, save_with_fallback, slugify
from .sidecar import find_sidecar, library_versions, read_sidecar, sidecar_path, write_sidecar
from .xmp import PanoGeometry, build_gpano_xmp, pano_geometry_for_size, parse_gpano_xmp

__all__ = [
    "PanoGeometry",
    "atomic_write_bytes",
    "atomic_write_text",
    "build_gpano_xmp",
    "check_output_target",
    "check_output_targets",
    "ensure_writable",
    "find_sidecar",
    "library_versions",
    "pano_geometry_for_size",
    "parse_gpano_xmp",
    "read_image",
    "read_panorama_metadata",
    "read_sidecar",
    "save_panorama_image",
    "save_with_fallback",
    "sidecar_path",
    "slugify",
    "write_sidecar",
]
