"""HDR files of a panorama for image-based lighting: OpenEXR (float) and Radiance ``.hdr`` (RGBE).

Colour: the 8-bit panorama is sRGB-encoded; it is decoded with the sRGB transfer curve (IEC 61966-2-1)
to **linear Rec.709 / sRGB primaries, D65 white** (scene-linear, what Blender, Unreal and Unity expect
for an HDRI), optionally scaled by 2^``exposure_ev``. The EXR says so in its ``chromaticities``
attribute and the Radiance header in its ``PRIMARIES=`` line.

**This is not measured radiance.** A generated panorama is a display-referred 8-bit picture: values
clip at 1.0, so the sun or a lamp is as bright as a white wall. Putting it in an HDR container makes it
loadable as an environment light, with plausible colours and soft lighting, but its dynamic range is
still that of the LDR image. Several exposures of one scene (:func:`merge_exposures`) widen the range
as far as those exposures reach.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..io.atomic import atomic_write_bytes

HDR_SUFFIXES = (".hdr", ".exr")
REC709_CHROMATICITIES = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)


def srgb_to_linear(image: Tensor) -> Tensor:
    """sRGB-encoded values in [0, 1] → linear light (same shape)."""
    return torch.where(image <= 0.04045, image / 12.92, ((image + 0.055) / 1.055) ** 2.4)


def merge_exposures(images: Sequence[Tensor], ev: Sequence[float]) -> Tensor:
    """Merge differently exposed sRGB panoramas [1, 3, H, W] (same scene, same framing) into linear
    radiance [1, 3, H, W] relative to exposure EV 0.

    ``ev[k]``: exposure of image k in stops relative to the reference (+1 = twice the light captured).
    Each linearised pixel is divided by 2^ev and averaged with a hat weight 4·z·(1 − z) on the encoded
    value z, so clipped and near-black pixels count little (Debevec & Malik style, with the sRGB curve
    as the known response).
    """
    if len(images) != len(ev) or not images:
        raise InvalidInputError(f"give one --ev per exposure: {len(images)} images, {len(ev)} EV values")
    shape = tuple(images[0].shape)
    total = torch.zeros(shape)
    weight = torch.zeros(shape)
    for image, stops in zip(images, ev):
        if tuple(image.shape) != shape:
            raise InvalidInputError(f"exposures must have one size; got {image.shape[-2]}x{image.shape[-1]} and "
                                    f"{shape[-2]}x{shape[-1]} (HxW)")
        z = image.float().clamp(0, 1)
        w = (4.0 * z * (1.0 - z)).clamp_min(1e-4)
        total += w * srgb_to_linear(z) / (2.0 ** float(stops))
        weight += w
    return total / weight


def encode_radiance(linear: np.ndarray) -> bytes:
    """[H, W, 3] float linear → Radiance RGBE bytes (flat scanlines, which every reader accepts)."""
    height, width, _ = linear.shape
    rgb = np.clip(linear.astype(np.float64), 0, None)
    peak = rgb.max(-1)
    mantissa, exponent = np.frexp(peak)
    scale = np.where(peak > 1e-32, mantissa * 256.0 / np.where(peak > 1e-32, peak, 1.0), 0.0)
    out = np.zeros((height, width, 4), np.uint8)
    out[..., :3] = np.clip(np.floor(rgb * scale[..., None]), 0, 255).astype(np.uint8)
    out[..., 3] = np.where(peak > 1e-32, exponent + 128, 0).astype(np.uint8)
    header = (b"#?RADIANCE\n# written by pano360: scene-linear Rec.709 primaries, D65 white\n"
              b"PRIMARIES= 0.640 0.330 0.300 0.600 0.150 0.060 0.3127 0.3290\n"
              b"FORMAT=32-bit_rle_rgbe\n\n" + f"-Y {height} +X {width}\n".encode())
    return header + out.tobytes()


def decode_radiance(data: bytes) -> np.ndarray:
    """Radiance bytes written by :func:`encode_radiance` (flat scanlines) → [H, W, 3] float32."""
    _head, _, rest = data.partition(b"\n\n")
    size_line, _, body = rest.partition(b"\n")
    parts = size_line.split()
    height, width = int(parts[1]), int(parts[3])
    rgbe = np.frombuffer(body, np.uint8)[: height * width * 4].reshape(height, width, 4).astype(np.float64)
    factor = np.where(rgbe[..., 3] > 0, np.ldexp(1.0, rgbe[..., 3].astype(int) - 136), 0.0)
    return ((rgbe[..., :3] + 0.5) * factor[..., None] * (rgbe[..., 3:] > 0)).astype(np.float32)


def hdr_bytes(linear: Tensor, suffix: str, half: bool = False) -> bytes:
    """[1, 3, H, W] linear → file bytes for ``.hdr`` or ``.exr``."""
    array = linear[0].permute(1, 2, 0).float().cpu().numpy()
    if suffix == ".hdr":
        return encode_radiance(array)
    from .files import encode_exr

    return encode_exr({"R": array[..., 0], "G": array[..., 1], "B": array[..., 2]}, half=half,
                      attributes={"chromaticities": REC709_CHROMATICITIES})


def check_hdr_suffix(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in HDR_SUFFIXES:
        raise InvalidInputError(f"{Path(path).name}: an HDR panorama is written as .hdr (Radiance) or .exr "
                                "(OpenEXR); change the file name")
    if suffix == ".exr":
        from .files import require_openexr

        require_openexr()
    return suffix


def write_hdr(pano: Tensor, path: str | os.PathLike, *, exposure_ev: float = 0.0, linear: bool = False,
              half: bool = False, overwrite: bool = False) -> Path:
    """Write a panorama [1, 3, H, W] as ``.hdr`` or ``.exr`` (scene-linear Rec.709), atomically.

    ``linear``: the input is already linear (e.g. from :func:`merge_exposures`); otherwise it is sRGB
    in [0, 1] and is decoded. ``exposure_ev`` scales by 2^ev. ``half``: 16-bit float EXR channels.
    """
    suffix = check_hdr_suffix(path)
    values = pano[:, :3].float() if linear else srgb_to_linear(pano[:, :3].float().clamp(0, 1))
    values = values * (2.0 ** float(exposure_ev))
    return atomic_write_bytes(path, hdr_bytes(values, suffix, half=half), overwrite=overwrite)

