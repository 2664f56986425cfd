"""What the web app does, without any web framework: generate into one output folder, list and read
results there, check uploads. :mod:`pano360.web.app` puts a Gradio page over it.

Every file the service reads or writes is inside ``out_dir``: results are addressed by their bare
file name (``resolve``), never by a path. A request is turned into a job exactly like a line of a
batch jobs file (:mod:`pano360.batch.jobs`), so the same request gives the same file name, and a
result that is already there is returned instead of being made again.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..io.sidecar import sidecar_path

DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_PIXELS = 64 * 1024 * 1024  # refuses decompression bombs before decoding
GALLERY_LIMIT = 60


@dataclass
class Result:
    """One panorama in the output folder: the image, its sidecar, its cube-map zip, its parameters."""

    image: Path
    sidecar: Path
    cubemap_zip: Path
    parameters: dict[str, Any]


class PanoramaService:
    """One loaded generator serving requests one at a time into ``out_dir``.

    Args:
        generator: a loaded :class:`~pano360.PanoramaGenerator` (loaded once, shared by all requests).
        out_dir: the only folder requests read from and write to.
        model_name: recorded in each request's job (what the generator was loaded from).
        max_upload_bytes: largest accepted upload (depth map).
    """

    def __init__(self, generator, out_dir: str | os.PathLike, model_name: str = "custom",
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES):
        self.generator = generator
        self.out_dir = Path(out_dir).resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model_name = model_name
        self.max_upload_bytes = int(max_upload_bytes)
        self._lock = threading.Lock()  # one request on the device at a time, whatever the front end does

    @property
    def needs_depth(self) -> bool:
        return self.generator.controlnet is not None

    # --- requests -----------------------------------------------------------------------------
    def job_for(self, prompt: str, negative_prompt: str | None = None, method: str | None = None,
                preset: str | None = None, height: int | None = None, width: int | None = None,
                steps: int | None = None, guidance_scale: float | None = None, seed: int | None = None):
        """The request as a batch job (checked without the model); seed None or < 0 = a random seed."""
        from ..batch.jobs import Job, expand_entry, job_id
        from ..batch.runner import check_job

        entry = {"prompt": prompt or "", "negative_prompt": negative_prompt or None, "method": method or None,
                 "preset": preset or None, "height": _whole(height, "height"), "width": _whole(width, "width"),
                 "num_inference_steps": _whole(steps, "steps"), "guidance_scale": guidance_scale,
                 "seed": _whole(seed, "seed")}
        if entry["seed"] is None or entry["seed"] < 0:
            entry["seed"] = secrets.randbelow(2**31)
        entry = {key: value for key, value in entry.items() if value is not None}
        [spec] = expand_entry(entry, {"model": self.model_name})
        check_job(spec)
        return Job(job_id(spec), spec, 0, "web")

    def generate(self, *args, depth: str | os.PathLike | None = None,
                 on_step: Callable[[int, int], None] | None = None, **kwargs) -> Result:
        """Generate (or find) the panorama for a request; ``on_step(done, total)`` reports progress.

        Arguments as :meth:`job_for`; ``depth`` is an uploaded depth map (checked by
        :meth:`check_upload`), required when the generator has a ControlNet.
        """
        from ..batch.runner import call_arguments, is_finished, job_image_path, leftovers

        job = self.job_for(*args, **kwargs)
        control = None
        if self.needs_depth:
            if depth is None:
                raise InvalidInputError("this server has a depth ControlNet: upload a depth map")
            from ..batch.jobs import Job, job_id

            control = self.check_upload(depth)
            spec = job.spec | {"depth_sha256": _image_hash(control)}  # the depth map is part of the job
            job = Job(job_id(spec), spec, 0, "web")
        elif depth is not None:
            raise InvalidInputError("this server has no ControlNet, so a depth map cannot be used; remove it "
                                    "(start the server with --controlnet to use depth maps)")
        image = job_image_path(self.out_dir, job)
        with self._lock:
            if not is_finished(image, job.id):
                for path in leftovers(image):  # what an interrupted earlier request left
                    path.unlink(missing_ok=True)
                _, call = call_arguments(job.spec)
                total = call.get("num_inference_steps", 50)

                def callback(gen, i, t, tensors):
                    if on_step:
                        on_step(i + 1, total)
                    return {}

                output = self.generator(**call, control_image=control, progress=False,
                                        callback_on_step_end=callback)
                output.parameters["batch"] = {"job_id": job.id, "job": job.spec, "source": "web"}
                output.save(image)
            return self.result(image.name)

    # --- files in the output folder -----------------------------------------------------------
    def resolve(self, name: str) -> Path:
        """``out_dir/name`` for a bare file name of an existing result image; anything else — a path,
        ``..``, a file outside the folder (also through a link), a missing file — is refused."""
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name \
                or "\x00" in name or os.path.isabs(name):
            raise InvalidInputError(f"{name!r} is not the name of a result in the output folder")
        path = (self.out_dir / name).resolve()
        if path.parent != self.out_dir or path.suffix.lower() not in (".png", ".jpg", ".jpeg") \
                or not path.is_file() or not sidecar_path(path).is_file():
            raise InvalidInputError(f"{name!r} is not the name of a result in the output folder")
        return path

    def result(self, name: str) -> Result:
        """A result by its image file name, with its cube-map zip (made on first request)."""
        image = self.resolve(name)
        sidecar = sidecar_path(image)
        try:
            parameters = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise InvalidInputError(f"the sidecar of {name!r} cannot be read") from None
        return Result(image, sidecar, self._cubemap_zip(image), parameters)

    def gallery(self, limit: int = GALLERY_LIMIT) -> list[tuple[Path, str]]:
        """Earlier results, newest first: ``(image path, caption)`` with the prompt and seed."""
        items = []
        for image in self.out_dir.iterdir():
            if image.suffix.lower() in (".png", ".jpg", ".jpeg") and sidecar_path(image).is_file() \
                    and not image.name.startswith("."):
                items.append((image.stat().st_mtime, image))
        results = []
        for _, image in sorted(items, reverse=True)[:limit]:
            try:
                record = json.loads(sidecar_path(image).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            prompt = record.get("prompt")
            caption = f"{prompt if isinstance(prompt, str) else image.stem} (seed {record.get('seed')})"
            results.append((image, caption))
        return results

    def _cubemap_zip(self, image: Path) -> Path:
        """``<stem>-cubemap.zip`` beside the image: six PNG faces (front right back left up down)."""
        from ..io.atomic import atomic_write_bytes
        from ..io.export import load_panorama, plan_cubemap_faces

        target = image.with_name(f"{image.stem}-cubemap.zip")
        if target.is_file():
            return target
        faces = plan_cubemap_faces(load_panorama(image), self.out_dir, image.stem)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # PNGs are already compressed
            for face in faces:
                archive.writestr(face.path.name, face.produce())
        try:
            atomic_write_bytes(target, buffer.getvalue())
        except FileExistsError:  # made meanwhile by another request: same content
            pass
        return target

    # --- uploads -----------------------------------------------------------------------------
    def check_upload(self, path: str | os.PathLike, what: str = "depth map"):
        """Open an uploaded image after checking its size in bytes and pixels; returns an RGB PIL image."""
        from PIL import Image, UnidentifiedImageError

        path = Path(path)
        try:
            size = path.stat().st_size
        except OSError:
            raise InvalidInputError(f"the uploaded {what} could not be read; upload it again") from None
        if size > self.max_upload_bytes:
            raise InvalidInputError(f"the uploaded {what} is {size / 2**20:.1f} MiB; the limit is "
                                    f"{self.max_upload_bytes / 2**20:.1f} MiB")
        try:
            with Image.open(path) as image:
                if image.width * image.height > MAX_UPLOAD_PIXELS:
                    raise InvalidInputError(f"the uploaded {what} is {image.width}x{image.height}; "
                                            f"at most {MAX_UPLOAD_PIXELS // 2**20} megapixels are accepted")
                if image.format not in ("PNG", "JPEG", "WEBP"):
                    raise InvalidInputError(f"the uploaded {what} is a {image.format} file; upload PNG or JPEG")
                image.load()
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            if isinstance(error, InvalidInputError):
                raise
            raise InvalidInputError(f"the uploaded {what} is not an image Pillow can read; upload PNG or JPEG") \
                from None


def _whole(value, name: str) -> int | None:
    """Form numbers arrive as floats (or None/""): whole numbers only."""
    if value is None or value == "":
        return None
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidInputError(f"{name} must be a whole number, got {value:g}")
        return int(value)
    return value


def _image_hash(image) -> str:
    """SHA-256 of an image's size and RGB pixels."""
    import hashlib

    return hashlib.sha256(f"{image.width}x{image.height}:".encode() + image.tobytes()).hexdigest()
