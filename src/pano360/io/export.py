"""Exports of an existing panorama file: cube faces, a cross, a face strip, perspective views, and
GPano tagging in place.

Every export writes all its files or none: outputs are checked before any work starts (no clobbering
without ``overwrite``), each file is written atomically, and if anything fails midway the files
already written by that call are removed again.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InvalidInputError
from .atomic import atomic_write_bytes, ensure_writable
from .images import IMAGE_FORMATS, encode_image, read_image
from .paths import check_output_folder
from .xmp import JPEG_XMP_HEADER, PNG_XMP_KEYWORD, build_gpano_xmp, embed_xmp, pano_geometry_for_size

FORMAT_SUFFIX = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg"}


# --- reading ----------------------------------------------------------------------------------------

def open_image(path: str | os.PathLike, what: str = "panorama") -> Image.Image:
    """Open and fully decode an image file (:func:`pano360.io.images.read_image`): every failure,
    truncated and corrupt files included, becomes a one-line :class:`InvalidInputError`."""
    return read_image(path, what, formats=("PNG", "JPEG"))


def check_panorama_size(width: int, height: int, path: str | os.PathLike = "image") -> None:
    """Raise :class:`InvalidInputError` unless width×height is a 2:1 sphere or a wider band."""
    if width < 8 or height < 2:
        raise InvalidInputError(f"{path} is {height}x{width} (HxW), too small for a panorama; use at least 4x8")
    if width % 2:
        raise InvalidInputError(f"{path} is {height}x{width} (HxW): a 360° panorama needs an even width")
    if 2 * height > width:
        raise InvalidInputError(
            f"{path} is {height}x{width} (HxW), taller than 2:1 (width:height), so it is not an equirectangular panorama; "
            "give a 2:1 image (or a wider 360° strip)"
        )


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL image → [1, C, H, W] float32 in [0, 1] (RGB, or RGBA when the image has transparency)."""
    mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB"
    array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """[C, h, w] (C = 3 or 4) float in [0, 1] → PIL image."""
    array = (tensor.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(np.ascontiguousarray(array), mode="RGBA" if array.shape[-1] == 4 else "RGB")


def load_panorama(path: str | os.PathLike) -> torch.Tensor:
    """Read a panorama file into [1, C, H, W] float32 in [0, 1], checking that it is one."""
    image = open_image(path)
    check_panorama_size(image.width, image.height, path)
    return image_to_tensor(image)


# --- writing a group of files --------------------------------------------------------------------------

@dataclass
class PlannedFile:
    """One output: its path and a function producing its bytes."""

    path: Path
    produce: Callable[[], bytes]
    label: str = ""


def write_all_or_nothing(
    files: Sequence[PlannedFile], overwrite: bool = False, progress: Callable[[str], None] | None = None
) -> list[Path]:
    """Produce and write every planned file; if any step fails, delete the ones written so far."""
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths):
        raise InvalidInputError("two outputs would have the same file name; change --prefix or the views")
    ensure_writable(paths, overwrite)
    written: list[Path] = []
    try:
        for planned in files:
            data = planned.produce()
            atomic_write_bytes(planned.path, data, overwrite=overwrite)
            written.append(planned.path)
            apply_default_mode(planned.path)
            if progress:
                progress(planned.label or planned.path.name)
    except BaseException:
        remove_quietly(written)
        raise
    return written


def apply_default_mode(path: str | os.PathLike, mode: int | None = None) -> None:
    """Give a freshly written file the usual permissions (0666 minus the umask, or ``mode``):
    temporary files are created 0600 and keep that mode when moved into place."""
    if mode is None:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    try:
        os.chmod(path, mode)
    except OSError:
        pass


def remove_quietly(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def output_path(out_dir: str | os.PathLike, prefix: str, name: str, image_format: str) -> Path:
    if image_format not in FORMAT_SUFFIX:
        raise InvalidInputError(f"unknown image format {image_format!r}; use png or jpg")
    return Path(out_dir) / f"{prefix}_{name}{FORMAT_SUFFIX[image_format]}"


def _encoder(tensor: torch.Tensor, path: Path) -> Callable[[], bytes]:
    return lambda: encode_image(tensor_to_image(tensor), path)


# --- cube maps -----------------------------------------------------------------------------------------

def plan_cubemap_faces(
    pano: torch.Tensor, out_dir, prefix: str, convention: str = "fbrlud", face_size: int | None = None,
    image_format: str = "png", mode: str = "bilinear",
) -> list[PlannedFile]:
    """Six face files ``{prefix}_{name}.{ext}``, named per ``convention`` (fbrlud, opengl, unity)."""
    from .. import geometry

    if convention not in geometry.CUBEMAP_CONVENTIONS:
        raise InvalidInputError(
            f"unknown cubemap convention {convention!r}; use one of {', '.join(geometry.CUBEMAP_CONVENTIONS)}"
        )
    size = _face_size(pano, face_size)
    faces = geometry.equirect_to_cubemap(pano, size, layout="stack", mode=mode)
    return [
        PlannedFile(path, _encoder(face[0], path), label=f"face {name}")
        for name, face in geometry.faces_in_convention(faces, convention, layout="stack")
        for path in [output_path(out_dir, prefix, name, image_format)]
    ]


def plan_cubemap_layout(
    pano: torch.Tensor, out_dir, prefix: str, layout: str = "dice", convention: str = "fbrlud",
    face_size: int | None = None, image_format: str = "png", mode: str = "bilinear",
) -> PlannedFile:
    """One image holding all faces: a ``dice`` cross (``{prefix}_cross``) or a 1×6 ``horizon`` strip
    (``{prefix}_strip``) with the faces in the convention's order."""
    from .. import geometry

    size = _face_size(pano, face_size)
    faces = geometry.equirect_to_cubemap(pano, size, layout="stack", mode=mode)
    if layout == "dice":
        image = geometry.faces_to_layout(faces, "dice")[0]
        name = "cross"
    else:
        ordered = [face for _, face in geometry.faces_in_convention(faces, convention, layout="stack")]
        image = torch.cat(ordered, dim=-1)[0]
        name = "strip"
    path = output_path(out_dir, prefix, name, image_format)
    return PlannedFile(path, _encoder(image, path), label=name)


def _face_size(pano: torch.Tensor, face_size: int | None) -> int:
    size = pano.shape[-1] // 4 if face_size is None else face_size
    if size is None or int(size) != size or size < 1 or size > 16384:
        raise InvalidInputError(f"face size must be a whole number of pixels in 1..16384, got {face_size}")
    return int(size)


# --- perspective views ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ViewSpec:
    """One perspective view: yaw, pitch, horizontal FoV and roll in degrees."""

    yaw: float
    pitch: float
    fov: float = 90.0
    roll: float = 0.0

    def describe(self) -> str:
        text = f"yaw {self.yaw:g}°, pitch {self.pitch:g}°, fov {self.fov:g}°"
        return text + (f", roll {self.roll:g}°" if self.roll else "")


def parse_view(text: str) -> ViewSpec:
    """``"YAW,PITCH[,FOV[,ROLL]]"`` (degrees) → :class:`ViewSpec`, validated."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not 2 <= len(values) <= 4 or not all(np.isfinite(values)):
        raise InvalidInputError(f"cannot read view {text!r}; write YAW,PITCH[,FOV[,ROLL]] in degrees, e.g. 45,10,90")
    view = ViewSpec(*values)
    check_fov(view.fov)
    if not -90.0 <= view.pitch <= 90.0:
        raise InvalidInputError(f"view pitch must be between -90 and 90 degrees, got {view.pitch:g}")
    return view


def check_fov(fov: float) -> float:
    if not 0.0 < float(fov) < 180.0:
        raise InvalidInputError(f"field of view must be between 0 and 180 degrees (exclusive), got {fov:g}")
    return float(fov)


def parse_size(text: str, what: str = "size") -> tuple[int, int]:
    """``"HEIGHTxWIDTH"`` (pano360's one size order, as ``--height``/``--width`` and ``eval --size``)
    → (height, width) with both in 2..16384."""
    try:
        height, width = (int(v) for v in str(text).lower().replace("×", "x").split("x"))
    except ValueError:
        raise InvalidInputError(f"cannot read {what} {text!r}; write HEIGHTxWIDTH, e.g. 360x640") from None
    if not (2 <= width <= 16384 and 2 <= height <= 16384):
        raise InvalidInputError(f"{what} {text!r} is out of range; use 2..16384 pixels per side")
    return height, width


def plan_views(
    pano: torch.Tensor, views: Sequence[ViewSpec], out_dir, prefix: str, out_hw: tuple[int, int] = (512, 512),
    image_format: str = "png", mode: str = "bilinear",
) -> list[PlannedFile]:
    """``{prefix}_viewNN.{ext}`` for each view, rendered in one batched call."""
    from .. import geometry

    if not views:
        raise InvalidInputError("no views to render; give --view YAW,PITCH[,FOV]")
    rendered = geometry.equirect_to_perspective(
        pano, [v.yaw for v in views], [v.pitch for v in views], [v.fov for v in views], out_hw,
        roll_deg=[v.roll for v in views], mode=mode,
    )[0]
    planned = []
    for index, (view, image) in enumerate(zip(views, rendered)):
        path = output_path(out_dir, prefix, f"view{index:02d}", image_format)
        planned.append(PlannedFile(path, _encoder(image, path), label=f"view {index}: {view.describe()}"))
    return planned


# --- GPano tagging ----------------------------------------------------------------------------------------

def strip_xmp(data: bytes) -> bytes:
    """PNG/JPEG bytes without their XMP packet(s) (image data untouched)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        out, offset = [data[:8]], 8
        while offset + 12 <= len(data):
            length, chunk_type = struct.unpack(">I4s", data[offset : offset + 8])
            end = offset + 12 + length
            payload = data[offset + 8 : offset + 8 + length]
            if not (chunk_type == b"iTXt" and payload.startswith(PNG_XMP_KEYWORD + b"\x00")):
                out.append(data[offset:end])
            offset = end
            if chunk_type == b"IEND":
                break
        return b"".join(out)
    if data.startswith(b"\xff\xd8"):
        out, offset = [data[:2]], 2
        while offset + 4 <= len(data) and data[offset] == 0xFF:
            marker = data[offset + 1]
            if marker == 0xDA:
                break
            length = struct.unpack(">H", data[offset + 2 : offset + 4])[0]
            segment = data[offset : offset + 2 + length]
            if not (marker == 0xE1 and segment[4:].startswith(JPEG_XMP_HEADER)):
                out.append(segment)
            offset += 2 + length
        out.append(data[offset:])
        return b"".join(out)
    raise InvalidInputError("only PNG and JPEG files can carry GPano XMP; convert the image to .png or .jpg")


def check_taggable(path: str | os.PathLike, output: str | os.PathLike | None = None) -> None:
    """Raise :class:`InvalidInputError` unless :func:`tag_panorama_file` can tag ``path``."""
    path = Path(path)
    image = open_image(path)
    if path.suffix.lower() not in IMAGE_FORMATS:
        raise InvalidInputError(f"{path.name}: only .png, .jpg or .jpeg files can be tagged")
    check_panorama_size(image.width, image.height, path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head.startswith((b"\x89PNG\r\n\x1a\n", b"\xff\xd8")):
        raise InvalidInputError(f"{path} is not a PNG or JPEG file; only those can carry GPano XMP")
    if output is not None and Path(output).suffix.lower() != path.suffix.lower():
        raise InvalidInputError(f"the tagged copy must keep the {path.suffix} extension; got {Path(output).name}")
    if output is None:  # tagged in place: the file is replaced through its folder
        if not os.access(path, os.W_OK) or not (path.stat().st_mode & 0o222):
            raise InvalidInputError(f"{path} is read-only; make it writable, or write a tagged copy with "
                                    "--metadata-out COPY" + path.suffix)
        check_output_folder(path.parent, flag="folder of INPUT")


def tag_panorama_file(
    path: str | os.PathLike, output: str | os.PathLike | None = None, overwrite: bool = False,
    initial_hfov_deg: float = 90.0,
) -> Path:
    """Add complete GPano XMP to an existing PNG/JPEG without re-encoding its pixels.

    Writes ``output`` (no clobbering unless ``overwrite``) or, when ``output`` is None, replaces
    ``path`` itself atomically. Any XMP packet already in the file is replaced. Full spheres get
    FullPano = image size; wider strips are tagged as cylindrical bands centred on the horizon.
    """
    path = Path(path)
    check_taggable(path, output)
    with Image.open(path) as image:
        width, height = image.size
    data = path.read_bytes()
    xmp = build_gpano_xmp(pano_geometry_for_size(width, height), initial_hfov_deg=initial_hfov_deg)
    tagged = embed_xmp(strip_xmp(data), xmp)
    if output is None:
        mode = path.stat().st_mode & 0o7777
        atomic_write_bytes(path, tagged, overwrite=True)
        apply_default_mode(path, mode)  # the tagged file keeps the original's permissions
        return path
    atomic_write_bytes(output, tagged, overwrite=overwrite)
    apply_default_mode(output)
    return Path(output)
