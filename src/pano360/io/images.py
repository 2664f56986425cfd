"""Panorama image files: encode, tag with GPano XMP, write atomically, read the tags back."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidInputError
from .atomic import atomic_write_bytes
from .xmp import build_gpano_xmp, embed_xmp, extract_xmp, pano_geometry_for_size, parse_gpano_xmp

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
READABLE_FORMATS = ("PNG", "JPEG", "WEBP")


def read_image(path: str | os.PathLike, what: str = "image", formats: tuple[str, ...] = READABLE_FORMATS,
               raw: bool = False) -> Image.Image:
    """Open and fully decode an image file, or raise one :class:`InvalidInputError` line naming the fix.

    Every command that reads an image goes through here, so a missing file, a folder, a text file
    named ``.png``, a truncated or corrupt PNG/JPEG (found by decoding every pixel, not only the
    header), an unsupported format and a decompression bomb are all caught the same way. ``what``
    names the input in the message (``"--depth image"``, ``"panorama"``). The returned image is
    loaded into memory (the file is closed) and keeps its ``format`` (``"PNG"``, ``"JPEG"``, ...). Colour
    images come back in 8 bits per channel (:func:`to_8bit`); ``raw`` keeps the file's own mode (16-bit
    depth maps, float images).
    """
    from PIL import ImageFile, UnidentifiedImageError

    text = os.fspath(path)
    path = Path(os.path.expanduser(text))
    if not path.exists():
        raise InvalidInputError(f"{what} {text} does not exist; check the path")
    if path.is_dir():
        raise InvalidInputError(f"{what} {text} is a folder, not a file; give an image file (PNG or JPEG)")
    if not path.is_file():
        raise InvalidInputError(f"{what} {text} is not a regular file; give a PNG or JPEG file")
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone relaxed Pillow globally; truncated files must still fail
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with Image.open(path) as image:
            image.load()
            image_format = image.format
            loaded = image.copy()
    except UnidentifiedImageError:
        raise InvalidInputError(f"{what} {text} is not an image file (unrecognised content); give a PNG or JPEG") from None
    except PermissionError:
        raise InvalidInputError(f"{what} {text} cannot be read (permission denied); check its permissions") from None
    except Image.DecompressionBombError:
        raise InvalidInputError(f"{what} {text} has too many pixels to open safely; resize it first") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # truncated or corrupt data
        reason = (str(error).splitlines() or [type(error).__name__])[0] or type(error).__name__
        raise InvalidInputError(f"{what} {text} is truncated or corrupt and could not be decoded ({reason}); re-export or replace it") from None
    if image_format not in formats:
        raise InvalidInputError(f"{what} {text} is a {image_format} image; give {' or '.join(formats)}")
    if not raw:
        loaded = to_8bit(loaded)  # 16-bit, float, palette, CMYK ... read faithfully, not clipped
    loaded.format = image_format
    return loaded


_HIGH_DEPTH = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` in an 8-bit mode (``L``, ``LA``, ``RGB`` or ``RGBA``) with its tones kept.

    Pillow's own ``convert`` clips 16-bit and 32-bit grey (``I;16``, ``I``) at 255, so a 16-bit PNG
    came out white, and float images (``F``) in [0, 1] came out black. Here 16-bit values are scaled
    by 255/65535, 32-bit integers by their range (0-255 stays as is, up to 65535 is read as 16-bit),
    floats in [0, 1] by 255; palette, CMYK, YCbCr, LAB, HSV and bilevel images become RGB(A) or L,
    keeping transparency. The format attribute is kept."""
    mode = image.mode
    converted: Image.Image
    if mode in _HIGH_DEPTH:
        array = np.asarray(image, dtype=np.float64)
        top = float(array.max()) if array.size else 0.0
        if mode.startswith("I;16"):
            scale = 255.0 / 65535.0
        elif mode == "F":
            scale = 255.0 if top <= 1.0 else (1.0 if top <= 255.0 else 255.0 / top)
        else:
            scale = 1.0 if top <= 255.0 else (255.0 / 65535.0 if top <= 65535.0 else 255.0 / top)
        array = np.clip(np.round(np.nan_to_num(array) * scale), 0, 255).astype(np.uint8)
        converted = Image.fromarray(array, mode="L")
    elif mode in ("L", "RGB", "RGBA", "LA"):
        return image
    elif mode in ("PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        converted = image.convert("RGBA")
    elif mode == "1":
        converted = image.convert("L")
    elif mode == "LAB":
        from PIL import ImageCms

        converted = ImageCms.applyTransform(image, ImageCms.buildTransformFromOpenProfiles(
            ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"))
    else:  # P, CMYK, YCbCr, HSV, RGBX
        converted = image.convert("RGB")
    converted.format = image.format
    converted.info = dict(image.info)
    return converted


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB, tones kept (see :func:`to_8bit`)."""
    return to_8bit(image).convert("RGB")


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
    try:
        xmp = extract_xmp(path.read_bytes())
        return parse_gpano_xmp(xmp) if xmp else {}
    except (ValueError, SyntaxError, IndexError, UnicodeDecodeError) as error:  # ET.ParseError is a SyntaxError
        raise InvalidInputError(f"{path} has a broken XMP packet ({error}); re-tag it with "
                                "pano360 convert --add-metadata") from None
