"""Fly-around video of a panorama: the camera turns a full circle around the horizon.

MP4 (H.264, yuv420p) goes through the ``imageio-ffmpeg`` package, which ships its own ffmpeg binary
(``pip install "pano360[video]"``); without it the video is an animated GIF written by Pillow.
Frames are rendered a few at a time with one batched ``equirect_to_perspective`` call each, and the
file appears complete at its final path or not at all.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInputError, OutputExistsError
from .atomic import atomic_write_bytes, ensure_writable
from .export import apply_default_mode

VIDEO_FORMATS = ("auto", "mp4", "gif")


def mp4_available() -> bool:
    """True when imageio-ffmpeg and its ffmpeg binary can be used."""
    try:
        import imageio_ffmpeg

        return Path(imageio_ffmpeg.get_ffmpeg_exe()).exists()
    except (ImportError, RuntimeError, OSError):  # not installed, or no binary for this platform
        return False


def resolve_video_format(video_format: str = "auto") -> str:
    """"auto" → "mp4" when imageio-ffmpeg works, else "gif"; other values are checked."""
    if video_format not in VIDEO_FORMATS:
        raise InvalidInputError(f"unknown video format {video_format!r}; use auto, mp4 or gif")
    if video_format == "auto":
        return "mp4" if mp4_available() else "gif"
    if video_format == "mp4" and not mp4_available():
        raise InvalidInputError('MP4 needs imageio-ffmpeg: pip install "pano360[video]", or use --video-format gif')
    return video_format


def flyaround_frames(
    pano: torch.Tensor, frames: int, out_hw: tuple[int, int], fov_deg: float = 90.0, pitch_deg: float = 0.0,
    chunk: int = 8, mode: str = "bilinear",
) -> Iterator[np.ndarray]:
    """Yield ``frames`` uint8 RGB frames [h, w, 3]; frame i looks at yaw 360·i/frames."""
    from .. import geometry

    for start in range(0, frames, chunk):
        yaws = [360.0 * i / frames for i in range(start, min(frames, start + chunk))]
        views = geometry.equirect_to_perspective(pano[:, :3], yaws, pitch_deg, fov_deg, out_hw, mode=mode)[0]
        batch = (views.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        yield from batch


def write_flyaround(
    pano: torch.Tensor, path: str | os.PathLike, *, frames: int = 120, fps: float = 30.0,
    out_hw: tuple[int, int] = (360, 640), fov_deg: float = 90.0, pitch_deg: float = 0.0,
    overwrite: bool = False, progress: Callable[[], None] | None = None,
) -> Path:
    """Write a fly-around of ``pano`` [1, C, H, W] to ``path`` (.mp4 or .gif by extension)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mp4", ".gif"):
        raise InvalidInputError(f"{path.name}: a fly-around video must be .mp4 or .gif")
    if frames < 2 or frames > 10000:
        raise InvalidInputError(f"frames must be between 2 and 10000, got {frames}")
    if not 0 < fps <= 240:
        raise InvalidInputError(f"fps must be in (0, 240], got {fps:g}")
    height, width = out_hw
    if suffix == ".mp4" and (height % 2 or width % 2):
        raise InvalidInputError(f"MP4 frames need even sizes, got {height}x{width} (HxW); use e.g. {height + height % 2}x{width + width % 2}")
    ensure_writable([path], overwrite)
    rendered = flyaround_frames(pano, frames, out_hw, fov_deg, pitch_deg)
    if suffix == ".gif":
        return _write_gif(rendered, path, fps, overwrite, progress)
    return _write_mp4(rendered, path, fps, (height, width), overwrite, progress)


def _write_gif(frames, path: Path, fps: float, overwrite: bool, progress) -> Path:
    from PIL import Image

    images = []
    for frame in frames:
        images.append(Image.fromarray(frame).quantize(colors=256, method=Image.Quantize.MEDIANCUT))
        if progress:
            progress()
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000.0 / fps)), loop=0)
    atomic_write_bytes(path, buffer.getvalue(), overwrite=overwrite)
    apply_default_mode(path)
    return path


def mp4_problem(path: str | os.PathLike) -> str | None:
    """Why the file at ``path`` is not a complete MP4 (None when it is): its top-level boxes must tile
    the file exactly and include ``ftyp``, ``moov`` (written last by ffmpeg) and ``mdat``."""
    import struct

    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            seen, offset = set(), 0
            while offset < size:
                handle.seek(offset)
                header = handle.read(16)
                if len(header) < 8:
                    return f"a box header is cut off at byte {offset}"
                length, kind = struct.unpack(">I4s", header[:8])
                if length == 1 and len(header) == 16:
                    length = struct.unpack(">Q", header[8:16])[0]
                elif length == 0:
                    length = size - offset
                if length < 8 or offset + length > size:
                    return f"the {kind.decode('latin-1')!r} box at byte {offset} is cut off"
                seen.add(kind)
                offset += length
    except OSError as error:
        return (error.strerror or str(error)).lower()
    missing = [name for name in ("ftyp", "moov", "mdat") if name.encode() not in seen]
    return f"no {'/'.join(missing)} box" if missing else None


def _write_mp4(frames, path: Path, fps: float, out_hw, overwrite: bool, progress) -> Path:
    """ffmpeg writes a temporary file; its exit status and the file's structure are checked before the
    file is moved into place. A full disk gives one line (path, space needed), and no file is left."""
    import imageio_ffmpeg

    from .atomic import DiskFullError, disk_full_error, is_disk_full

    height, width = out_hw
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.parent)
    os.close(fd)
    frame_bytes = height * width * 3
    sent = 0
    try:
        try:
            writer = imageio_ffmpeg.write_frames(
                tmp_name, (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                quality=8, macro_block_size=2, ffmpeg_log_level="error",
            )
            writer.send(None)
            try:
                for frame in frames:
                    writer.send(np.ascontiguousarray(frame))
                    sent += 1
                    if progress:
                        progress()
            finally:
                writer.close()
        except DiskFullError:
            raise
        except OSError as error:  # imageio-ffmpeg: ffmpeg failed (its exit status and log in the message)
            text = str(error)
            if is_disk_full(error) or "No space left" in text or "File too large" in text:
                raise disk_full_error(path, sent * frame_bytes // 20 or None,
                                      OSError(28, "No space left on device")) from None
            first = next((line for line in text.splitlines() if line.strip()), type(error).__name__)
            raise OSError(getattr(error, "errno", None) or 5, f"ffmpeg could not write {path}: {first[:200]}") from None
        problem = mp4_problem(tmp_name)
        if problem is not None:
            free = shutil.disk_usage(path.parent).free
            if free < 64 * 1024 * 1024:  # the likely cause: the disk filled while ffmpeg wrote
                raise disk_full_error(path, os.path.getsize(tmp_name) * 2 or None,
                                      OSError(28, "No space left on device"))
            raise OSError(5, f"ffmpeg wrote a broken video for {path} ({problem}); nothing was written there")
        apply_default_mode(tmp_name)
        if overwrite:
            os.replace(tmp_name, path)
        else:
            try:
                os.link(tmp_name, path)
            except FileExistsError:
                raise OutputExistsError(f"{path} already exists; choose another output path or pass --overwrite") from None
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return path
