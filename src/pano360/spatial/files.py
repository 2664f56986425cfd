"""Depth map files: 16-bit PNG and float32 OpenEXR, written atomically with a sidecar.

* ``.exr``: one float32 channel ``Z`` (OpenEXR's name for depth), the radial distance itself, in the
  units the sidecar states; ZIP compression. Needs the ``OpenEXR`` package (``pip install pano360[3d]``).
* ``.png``: 16-bit greyscale, **linear in distance**: ``distance = value × scale`` with ``scale =
  max distance / 65535``. The scale is in the sidecar (``depth.png_scale``) and in a PNG text chunk
  (``pano360:depth_scale``), so the file alone is enough to read it back. Brighter = farther.

Both keep the sidecar convention of :mod:`pano360.io.sidecar` (``depth.png`` → ``depth.png.json``).
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..io.atomic import atomic_write_bytes, ensure_writable
from ..io.sidecar import find_sidecar, sidecar_path, write_sidecar

DEPTH_SUFFIXES = (".png", ".exr")
PNG_SCALE_KEY = "pano360:depth_scale"


def check_depth_suffix(path: str | os.PathLike, flag: str = "-o") -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in DEPTH_SUFFIXES:
        raise InvalidInputError(f"{flag} {Path(path).name}: a depth map is written as .png (16-bit) or .exr (float); "
                                "change the file name")
    if suffix == ".exr":
        require_openexr()
    return suffix


def require_openexr():
    try:
        import OpenEXR
    except ImportError:
        raise InvalidInputError("EXR files need the OpenEXR package: pip install 'pano360[3d]' (or pip install OpenEXR)") from None
    import OpenEXR

    return OpenEXR


def encode_exr(channels: dict[str, np.ndarray], *, half: bool = False, attributes: dict | None = None) -> bytes:
    """Encode float [H, W] channels as an OpenEXR file (ZIP compressed) and return its bytes."""
    OpenEXR = require_openexr()
    dtype = np.float16 if half else np.float32
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    header.update(attributes or {})
    data = {name: np.ascontiguousarray(array, dtype=dtype) for name, array in channels.items()}
    fd, tmp = tempfile.mkstemp(suffix=".exr")
    os.close(fd)
    try:
        with OpenEXR.File(header, data) as exr:
            exr.write(tmp)
        return Path(tmp).read_bytes()
    finally:
        os.unlink(tmp)


def decode_exr(path: str | os.PathLike) -> dict[str, np.ndarray]:
    OpenEXR = require_openexr()
    with OpenEXR.File(os.fspath(path), separate_channels=True) as exr:
        return {name: np.array(channel.pixels) for name, channel in exr.channels().items()}


def encode_depth_png(depth: np.ndarray) -> tuple[bytes, float]:
    """[H, W] distances → (16-bit PNG bytes, scale per step) with the scale in a text chunk."""
    from PIL import Image, PngImagePlugin

    peak = float(depth.max())
    scale = peak / 65535.0 if peak > 0 else 1.0
    values = np.clip(np.round(depth / scale), 0, 65535).astype(np.uint16)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_SCALE_KEY, repr(scale))
    buffer = io.BytesIO()
    Image.fromarray(values, mode="I;16").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue(), scale


def write_depth(depth: Tensor, path: str | os.PathLike, *, overwrite: bool = False, record: dict | None = None) -> Path:
    """Write a depth map [H, W] (radial distance) as ``.png`` or ``.exr`` plus its sidecar, atomically;
    nothing is left behind if either write fails."""
    suffix = check_depth_suffix(path)
    path = Path(path)
    ensure_writable([path, sidecar_path(path)], overwrite)
    array = depth.detach().float().cpu().numpy()
    record = dict(record or {})
    if suffix == ".exr":
        data = encode_exr({"Z": array})
        record["encoding"] = "OpenEXR float32 channel Z = distance"
    else:
        data, scale = encode_depth_png(array)
        record["encoding"] = "16-bit PNG, distance = value * png_scale (linear, brighter = farther)"
        record["png_scale"] = scale
    written = atomic_write_bytes(path, data, overwrite=overwrite)
    try:
        write_sidecar(path, {"depth": record, "image_file": path.name, "size": list(array.shape)}, overwrite=overwrite)
    except BaseException:
        os.unlink(written)
        raise
    return written


def read_depth(path: str | os.PathLike) -> Tensor:
    """Read a depth map written by :func:`write_depth` (or any float EXR / 16-bit or 8-bit grey PNG, read
    as linear distance) → [H, W] float32."""
    from ..io.images import read_image

    path = Path(path)
    if path.suffix.lower() == ".exr":
        if not path.is_file():
            raise InvalidInputError(f"--depth {path} does not exist; check the path")
        try:
            channels = decode_exr(path)
        except (OSError, RuntimeError, ValueError) as error:
            raise InvalidInputError(f"--depth {path} is not a readable EXR file ({error}); re-export it") from None
        for name in ("Z", "Y", "R", "depth"):
            if name in channels:
                return torch.from_numpy(np.asarray(channels[name], dtype=np.float32).copy())
        first = next(iter(channels.values()))
        return torch.from_numpy(np.asarray(first, dtype=np.float32).copy())
    image = read_image(path, "--depth image", formats=("PNG",), raw=True)
    scale = image.info.get(PNG_SCALE_KEY)
    if scale is None:
        sidecar = find_sidecar(path)
        if sidecar is not None:
            import json

            try:
                scale = json.loads(sidecar.read_text(encoding="utf-8")).get("depth", {}).get("png_scale")
            except (OSError, ValueError, AttributeError):
                scale = None
    array = np.asarray(image if image.mode in ("I;16", "I", "L", "F") else image.convert("L"))
    values = torch.from_numpy(array.astype(np.float32))
    return values * float(scale) if scale is not None else values


def check_depth_matches(depth: Tensor, height: int, width: int, what: str = "--depth") -> Tensor:
    """The depth map must have the panorama's size (HEIGHTxWIDTH) and positive finite values."""
    if tuple(depth.shape) != (height, width):
        raise InvalidInputError(f"{what} is {depth.shape[0]}x{depth.shape[1]} (HxW) but the panorama is "
                                f"{height}x{width}; give the depth map made from this panorama")
    if not bool(torch.isfinite(depth).all()) or float(depth.max()) <= 0:
        raise InvalidInputError(f"{what} has no positive finite distances; give a depth map, not an image")
    return depth.clamp_min(float(depth[depth > 0].min()))
