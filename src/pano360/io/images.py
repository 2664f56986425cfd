"""Panorama image files: encode, tag with GPano XMP, write atomically, read the tags back."""

from __future__ import annotations

import io
import os
from pathlib import Path

from PIL import Image

from ..errors import InvalidInputError
from .atomic import atomic_write_bytes
from .xmp import build_gpano_xmp, embed_xmp, extract_xmp, parse_gpano_xmp, pano_geometry_for_size

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def image_format_for(path: str | os.PathLike) -> str:
    """Pillow format name for a path's extension; raises a clear error for unsupported ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise InvalidInputError(
            f"cannot write {Path(path).name!r}: use a .png, .jpg or .jpeg file name"
        )
    return IMAGE_FORMATS[suffix]


def encode_image(image: Image.Image, path: str | os.PathLike, jpeg_quality: int = 95) -> bytes:
    """Encode ``image`` in the format implied by ``path``'s extension (no metadata)."""
    image_format = image_format_for(path)
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.convert("RGB").save(buffer, format="JPEG", quality=jpeg_quality, subsampling=0)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def gpano_xmp_for_image(width: int, height: int, software: str = "pano360") -> str | None:
    """Complete GPano XMP for a generated panorama of this size, or None if taller than 2:1."""
    try:
        geometry = pano_geometry_for_size(width, height)
    except InvalidInputError:
        return None
    return build_gpano_xmp(geometry, software=software)


def save_panorama_image(
    image: Image.Image,
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    add_metadata: bool = True,
    software: str = "pano360",
    jpeg_quality: int = 95,
) -> Path:
    """Write ``image`` to ``path`` (PNG/JPEG by extension) with GPano XMP, atomically.

    Images taller than 2:1 get no GPano tags (they are not equirectangular panoramas).
    """
    data = encode_image(image, path, jpeg_quality=jpeg_quality)
    if add_metadata:
        xmp = gpano_xmp_for_image(image.width, image.height, software=software)
        if xmp is not None:
            data = embed_xmp(data, xmp)
    return atomic_write_bytes(path, data, overwrite=overwrite)


def read_panorama_metadata(path: str | os.PathLike) -> dict[str, object]:
    """GPano fields of a PNG or JPEG file as typed values ({} if it has none)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path} does not exist or is not a file")
    xmp = extract_xmp(path.read_bytes())
    return parse_gpano_xmp(xmp) if xmp else {}
