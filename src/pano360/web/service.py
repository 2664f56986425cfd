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
from .limits import JobGate, RateLimiter, RequestLimits

EXPORTS_3D = {"depth": ".png", "mesh": ".glb", "stereo": ".png", "hdr": ".hdr"}
"""3D exports offered when ``pano360.spatial`` is installed, with the file extension asked for."""
SPATIAL_MISSING = ("3D exports (depth, mesh, stereo, HDR) need pano360.spatial, which this installation does not "
                   "have yet")

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
    """Loaded generators serving requests into ``out_dir``, at most ``concurrency`` at a time.

    Args:
        generator: a loaded :class:`~pano360.PanoramaGenerator` (loaded once, shared by all requests),
            or a list of them: one per concurrent job (``pano360 serve --concurrency N`` loads N copies
            per device, since a model's scheduler and seam patching are per-call state).
        out_dir: the only folder requests read from and write to (uploads are kept in
            ``out_dir/inputs``, deleted results go to ``out_dir/trash``).
        model_name: recorded in each request's job (what the generator was loaded from).
        max_upload_bytes: largest accepted upload (depth map, photo, mask).
        limits: the largest request (:class:`~.limits.RequestLimits`).
        rate_limit: requests per minute per client (0 = none).
    """

    def __init__(self, generator, out_dir: str | os.PathLike, model_name: str = "custom",
                 max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, limits: RequestLimits | None = None,
                 rate_limit: int = 0, model_keys: dict | None = None):
        self.generators = list(generator) if isinstance(generator, (list, tuple)) else [generator]
        self.generator = self.generators[0]
        self.out_dir = Path(out_dir).resolve()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model_name = model_name
        # what the generators were loaded with besides the model (batch job keys: lora, lora_scale,
        # adapter): recorded in every job, and a re-run of a result made otherwise is refused
        self.model_keys = {key: value for key, value in (model_keys or {}).items() if value}
        self.max_upload_bytes = int(max_upload_bytes)
        self.limits = limits or RequestLimits()
        self.rate = RateLimiter(rate_limit)
        self.gate = JobGate(len(self.generators))
        self._free = list(self.generators)
        self.waiters: dict[str, Callable[[int], None]] = {}  # session -> told how many jobs go first
        self._free_lock = threading.Lock()

    @property
    def needs_depth(self) -> bool:
        return self.generator.controlnet is not None

    def _run(self, session: str, work, on_step=None, cost: float = 0.0):
        """``work(generator, step)`` with a free generator; ``step(done, total)`` reports progress and
        raises :class:`~.limits.JobCancelled` after :meth:`cancel`. ``cost`` (pixel-steps) orders
        the waiting jobs, shortest first (:class:`~.limits.JobGate`); while the job waits,
        ``self.waiters[session](ahead)`` (when the front end registered one) is told how many jobs go
        first, and ``(0)`` once it is on the device."""

        def run(check):
            with self._free_lock:
                generator = self._free.pop()
            try:
                def step(done, total):
                    check()
                    if on_step:
                        on_step(done, total)

                check()
                waiting(0)  # on the device now
                return work(generator, step)
            finally:
                with self._free_lock:
                    self._free.append(generator)

        def waiting(ahead):
            waiter = self.waiters.get(session)
            if waiter is not None:
                waiter(ahead)

        return self.gate.run(session, run, cost=cost, on_wait=waiting)

    def cancel(self, session: str) -> bool:
        """Stop the running job of ``session`` at its next step (True when there was one)."""
        return self.gate.cancel(session)

    def admit(self, client: str | None) -> None:
        """Count a request of ``client`` against the rate limit (one line when over it)."""
        self.rate.check(client or "local")

    # --- requests -----------------------------------------------------------------------------
    def job_for(self, prompt: str, negative_prompt: str | None = None, method: str | None = None,
                preset: str | None = None, height: int | None = None, width: int | None = None,
                steps: int | None = None, guidance_scale: float | None = None, seed: int | None = None):
        """The request as a batch job (checked without the model); seed None or < 0 = a random seed."""
        from ..batch.jobs import Job, expand_entry, job_id
        from ..batch.runner import check_job

        self.limits.check(_whole(height, "height"), _whole(width, "width"), _whole(steps, "steps"), prompt,
                          negative_prompt)
        entry = {"prompt": prompt or "", "negative_prompt": negative_prompt or None, "method": method or None,
                 "preset": preset or None, "height": _whole(height, "height"), "width": _whole(width, "width"),
                 "num_inference_steps": _whole(steps, "steps"), "guidance_scale": guidance_scale,
                 "seed": _whole(seed, "seed")}
        if entry["seed"] is None or entry["seed"] < 0:
            entry["seed"] = secrets.randbelow(2**31)
        entry = {key: value for key, value in entry.items() if value is not None}
        [spec] = expand_entry(entry, {"model": self.model_name, **self.model_keys})
        check_job(spec)
        return Job(job_id(spec), spec, 0, "web")

    def generate(self, *args, depth: str | os.PathLike | None = None,
                 on_step: Callable[[int, int], None] | None = None, session: str = "local", **kwargs) -> Result:
        """Generate (or find) the panorama for a request; ``on_step(done, total)`` reports progress.

        Arguments as :meth:`job_for`; ``depth`` is an uploaded depth map (checked by
        :meth:`check_upload`), required when the generator has a ControlNet.
        """
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
        return self._generate_job(job, control, on_step, session)

    def _generate_job(self, job, control, on_step, session, target: Path | None = None) -> Result:
        from ..batch.runner import call_arguments, is_finished, job_image_path, leftovers

        image = target or job_image_path(self.out_dir, job)
        if target is None and is_finished(image, job.id):
            return self.result(image.name)
        _, call = call_arguments(job.spec)
        total = call.get("num_inference_steps", 50)

        def work(generator, step):
            if target is None and is_finished(image, job.id):  # made meanwhile by an identical request
                return
            for path in leftovers(image):  # what an interrupted earlier request left
                path.unlink(missing_ok=True)
            output = generator(**call, control_image=control, progress=False,
                               callback_on_step_end=lambda gen, i, t, tensors: step(i + 1, total) or {})
            output.parameters["batch"] = {"job_id": job.id, "job": job.spec, "source": "web"}
            output.save(image)

        cost = call.get("height", 512) * call.get("width", 1024) * total
        self._run(session, work, on_step, cost=cost)
        return self.result(image.name)

    # --- studio operations: inpaint, outpaint, poles, upscale; re-run, vary seed, delete --------
    def inpaint(self, name: str, mask, prompt: str, negative_prompt: str | None = None, steps: int | None = 30,
                guidance_scale: float | None = 7.5, seed: int | None = None, *, on_step=None,
                session: str = "local") -> Result:
        """Regenerate the ``mask`` (a PNG path, data URL, PIL image or array; white/opaque = new) of
        the result ``name``; everything else is kept bit-exact. The source and mask are kept in
        ``out_dir/inputs`` so the sidecar can re-run it."""
        from ..sphere.edit import read_mask

        source = self.resolve(name)
        image = self.check_upload(source, "panorama")
        spec = self._sampling_spec("inpaint", prompt, negative_prompt, steps, guidance_scale, seed)
        self.limits.check(image.height, image.width)
        mask_array = read_mask(self._mask_image(mask), image.height, image.width)
        from PIL import Image

        spec["source"] = self._keep_input(image)
        spec["mask"] = self._keep_input(Image.fromarray(mask_array.astype("uint8") * 255, "L"))
        return self._run_spec(spec, on_step, session)

    def outpaint(self, photo, prompt: str, negative_prompt: str | None = None, yaw: float = 0.0, pitch: float = 0.0,
                 fov: float = 90.0, height: int | None = None, steps: int | None = 30,
                 guidance_scale: float | None = 7.5, seed: int | None = None, refine_poles: bool = True, *,
                 on_step=None, session: str = "local") -> Result:
        """An uploaded photo (checked: size, type) → a full 2:1 panorama around it; the photo's pixels
        are pasted back."""
        from ..sphere.pipeline import check_outpaint_request
        from ..sphere.placement import Placement

        image = self.check_upload(photo, "photo")
        height = _whole(height, "height") or self.generator.backbone.info.native_size
        spec = self._sampling_spec("outpaint", prompt, negative_prompt, steps, guidance_scale, seed)
        self.limits.check(height, 2 * height)
        placement = Placement(float(yaw or 0.0), float(pitch or 0.0), float(fov or 90.0))
        check_outpaint_request((image.height, image.width), placement, (height, 2 * height))
        spec.update(photo=self._keep_input(image), yaw=placement.yaw_deg, pitch=placement.pitch_deg,
                    fov=placement.fov_deg, height=height, refine_poles=bool(refine_poles))
        return self._run_spec(spec, on_step, session)

    def placement_preview(self, photo, yaw: float = 0.0, pitch: float = 0.0, fov: float = 90.0,
                          height: int | None = None) -> Path:
        """The photo projected to its place on a grey sphere (no model): ``inputs/placement-<hash>.png``."""
        import numpy as np
        import torch
        from PIL import Image

        from ..io.images import save_panorama_image
        from ..sphere.pipeline import check_outpaint_request
        from ..sphere.placement import Placement, place_photo

        image = self.check_upload(photo, "photo")
        height = min(_whole(height, "height") or 256, 512)
        height -= height % 8
        placement = Placement(float(yaw or 0.0), float(pitch or 0.0), float(fov or 90.0))
        check_outpaint_request((image.height, image.width), placement, (height, 2 * height))
        tensor = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        canvas, covered, _ = place_photo(tensor, (height, 2 * height), placement)
        shown = canvas * covered + (1 - covered) * -0.6  # dark grey where the model will paint
        array = ((shown[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
        folder = self.out_dir / "inputs"
        folder.mkdir(exist_ok=True)
        target = folder / f"placement-{_image_hash(image)[:16]}-{placement.yaw_deg:g}-{placement.pitch_deg:g}-" \
                          f"{placement.fov_deg:g}-{height}.png"
        if not target.exists():
            try:
                save_panorama_image(Image.fromarray(array), target)
            except FileExistsError:
                pass
        return target

    def refine(self, name: str, operation: str, prompt: str | None = None, steps: int | None = 30,
               guidance_scale: float | None = 7.5, seed: int | None = None, *, on_step=None,
               session: str = "local") -> Result:
        """Pole refinement (``"poles"``) or a 2x seamless upscale (``"upscale"``) of the result ``name``."""
        if operation not in ("poles", "upscale"):
            raise InvalidInputError(f"unknown operation {operation!r}: poles or upscale")
        image = self.check_upload(self.resolve(name), "panorama")
        record = self.result(name).parameters
        prompt = prompt or (record.get("prompt") if isinstance(record.get("prompt"), str) else "")
        spec = self._sampling_spec(operation, prompt, None, steps, guidance_scale, seed)
        factor = 2 if operation == "upscale" else 1
        height = image.height if operation == "upscale" else image.width // 2
        self.limits.check(factor * height, factor * image.width)
        spec["source"] = self._keep_input(image)
        return self._run_spec(spec, on_step, session)

    def rerun(self, name: str, *, on_step=None, session: str = "local") -> Result:
        """Make the result ``name`` again from its sidecar, into a new file (``<stem>-rerun<N>``)."""
        spec, job = self._spec_of(name)
        stem = self.resolve(name).stem
        number = 1
        while (self.out_dir / f"{stem}-rerun{number}.png").exists():
            number += 1
        target = self.out_dir / f"{stem}-rerun{number}.png"
        if job is not None:
            return self._generate_job(job, None, on_step, session, target=target)
        return self._run_spec(spec, on_step, session, target=target)

    def vary_seed(self, name: str, seed: int | None = None, *, on_step=None, session: str = "local") -> Result:
        """The result ``name`` again with another seed (random unless given)."""
        spec, job = self._spec_of(name)
        seed = secrets.randbelow(2**31) if seed is None or seed < 0 else int(seed)
        if job is not None:
            spec = dict(job.spec)
            spec.pop("job_id", None)
            return self.generate(spec.get("prompt", ""), spec.get("negative_prompt"), spec.get("method"),
                                 spec.get("preset"), spec.get("height"), spec.get("width"),
                                 spec.get("num_inference_steps"), spec.get("guidance_scale"), seed,
                                 on_step=on_step, session=session)
        return self._run_spec(spec | {"seed": seed}, on_step, session)

    def delete(self, name: str) -> Path:
        """Move a result (image, sidecar, cube-map zip) into ``out_dir/trash``; returns the trashed image."""
        import time

        image = self.resolve(name)
        trash = self.out_dir / "trash"
        trash.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = None
        for path in (image, sidecar_path(image), image.with_name(f"{image.stem}-cubemap.zip")):
            if path.is_file():
                target = trash / f"{stamp}-{path.name}"
                n = 1
                while target.exists():
                    target = trash / f"{stamp}-{n}-{path.name}"
                    n += 1
                os.replace(path, target)
                moved = moved or target
        return moved

    def export_3d(self, name: str, to: str) -> Path:
        """A 3D export of the result ``name`` through ``pano360.spatial.convert_panorama`` (when installed)."""
        import importlib.util

        if importlib.util.find_spec("pano360.spatial") is None:
            raise InvalidInputError(SPATIAL_MISSING)
        from .. import spatial  # type: ignore[attr-defined]

        if to not in EXPORTS_3D:
            raise InvalidInputError(f"unknown export {to!r}: one of {', '.join(EXPORTS_3D)}")
        image = self.resolve(name)
        output = self.out_dir / f"{image.stem}-{to}{EXPORTS_3D[to]}"
        with self.gate._slots:  # the device is busy for the conversion too
            path = Path(spatial.convert_panorama(image, to, output)).resolve()
        if self.out_dir not in path.parents:
            raise InvalidInputError("the export was not written inside the output folder")
        return path

    def _sampling_spec(self, operation, prompt, negative_prompt, steps, guidance_scale, seed) -> dict:
        from ..validation import check_guidance, check_steps

        steps = _whole(steps, "steps") or 30
        seed = _whole(seed, "seed")
        guidance = 7.5 if guidance_scale is None or guidance_scale == "" else float(guidance_scale)
        if not isinstance(prompt, str):
            raise InvalidInputError("the prompt must be text")
        self.limits.check(steps=steps, prompt=prompt, negative_prompt=negative_prompt)
        check_steps(steps, "steps")
        check_guidance(guidance)
        return {"operation": operation, "prompt": prompt, "negative_prompt": negative_prompt or None,
                "num_inference_steps": steps, "guidance_scale": guidance,
                "seed": secrets.randbelow(2**31) if seed is None or seed < 0 else seed, "model": self.model_name,
                **self.model_keys}

    def _spec_of(self, name: str):
        """(studio spec, None) or (None, batch job) from a result's sidecar."""
        from ..batch.jobs import Job, job_id

        record = self.result(name).parameters
        studio = record.get("studio")
        if isinstance(studio, dict) and isinstance(studio.get("spec"), dict):
            spec = dict(studio["spec"])
            made = {key: spec.get(key) for key in ("model", "lora", "lora_scale", "adapter") if spec.get(key)}
            here = {"model": self.model_name, **self.model_keys}
            if made != here:
                raise InvalidInputError(f"{name!r} was made with {made}; this server runs {here}, so a re-run would "
                                        "not give the same image (start pano360 serve with that model)")
            return spec, None
        batch = record.get("batch")
        if isinstance(batch, dict) and isinstance(batch.get("job"), dict):
            spec = dict(batch["job"])
            if "depth_sha256" in spec:
                raise InvalidInputError(f"{name!r} was made from a depth map, which is not kept; generate it again")
            from ..batch.jobs import MODEL_KEYS

            made = {key: spec.get(key) for key in MODEL_KEYS if spec.get(key)}
            here = {"model": self.model_name, **self.model_keys}
            if made != here:
                raise InvalidInputError(f"{name!r} was made with {made}; this server runs {here}, so a re-run would "
                                        "not give the same image (start pano360 serve with that model)")
            return spec, Job(job_id(spec), spec, 0, "web")
        raise InvalidInputError(f"the sidecar of {name!r} does not say how it was made, so it cannot be re-run")

    def _run_spec(self, spec: dict, on_step, session: str, target: Path | None = None) -> Result:
        """Run a studio operation ``spec`` into ``target`` (default: a name from the spec's hash)."""
        import hashlib

        from ..io.paths import slugify

        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        target = target or self.out_dir / f"{spec['operation']}-{slugify(spec['prompt'], 30)}-{digest}.png"
        if target.exists() and sidecar_path(target).exists():
            return self.result(target.name)
        inputs = {key: self._input(spec[key]) for key in ("source", "mask", "photo") if key in spec}
        total = spec["num_inference_steps"]

        def work(generator, step):
            return _run_operation(generator, spec, inputs, lambda i: step(i + 1, total))

        image = self._run(session, work, on_step, cost=_cost(spec, inputs))
        self._save(image, target, spec)
        return self.result(target.name)

    def _save(self, image, target: Path, spec: dict) -> None:
        from .. import __version__
        from ..io.images import save_panorama_image
        from ..io.sidecar import library_versions, write_sidecar

        record = {key: spec[key] for key in ("operation", "prompt", "negative_prompt", "num_inference_steps",
                                             "guidance_scale", "seed") if key in spec}
        record |= {"height": image.height, "width": image.width, "image_file": target.name,
                   "model": self.model_name, "studio": {"spec": spec},
                   "versions": library_versions() | {"pano360": __version__}}
        for path in (target, sidecar_path(target)):
            path.unlink(missing_ok=True)  # a re-run after an interrupted save
        save_panorama_image(image, target, software=f"pano360 {__version__}")
        write_sidecar(target, record)

    def _keep_input(self, image) -> str:
        """Store an input image in ``out_dir/inputs`` by its content hash; returns ``inputs/<hash>.png``."""
        from ..io.atomic import atomic_write_bytes

        folder = self.out_dir / "inputs"
        folder.mkdir(exist_ok=True)
        name = f"{_image_hash(image)[:24]}.png"
        if not (folder / name).is_file():
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            try:
                atomic_write_bytes(folder / name, buffer.getvalue())
            except FileExistsError:
                pass
        return f"inputs/{name}"

    def _input(self, relative: str):
        """An input kept by :meth:`_keep_input` (only names of that form, only inside ``out_dir/inputs``)."""
        from PIL import Image

        parts = str(relative).split("/")
        if len(parts) != 2 or parts[0] != "inputs" or not parts[1].endswith(".png") or ".." in parts[1] \
                or "\\" in parts[1] or not all(c in "0123456789abcdef." + "png" for c in parts[1]):
            raise InvalidInputError(f"{relative!r} is not an input kept by the studio")
        path = self.out_dir / "inputs" / parts[1]
        if not path.is_file():
            raise InvalidInputError(f"{relative!r} is missing from the output folder, so this cannot be re-run")
        with Image.open(path) as image:
            image.load()
            return image.copy()

    def _mask_image(self, mask):
        """A mask from the page (a ``data:image/png;base64,`` URL) or an upload path / image / array."""
        import base64

        from PIL import Image

        if isinstance(mask, str) and mask.startswith("data:"):
            header, _, data = mask.partition(",")
            if not header.startswith("data:image/png;base64") or len(data) > self.max_upload_bytes * 4 // 3 + 4:
                raise InvalidInputError("the mask must be a PNG data URL within the upload limit")
            try:
                raw = base64.b64decode(data, validate=True)
            except ValueError:
                raise InvalidInputError("the mask data URL is not valid base64") from None
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > MAX_UPLOAD_PIXELS:
                raise InvalidInputError("the mask has too many pixels")
            image.load()
            return image
        if isinstance(mask, str) and not mask:
            raise InvalidInputError("paint the region to regenerate first (Paint mode in the viewer)")
        if isinstance(mask, (str, os.PathLike)):
            path = Path(mask)
            self.check_upload(path, "mask")
            with Image.open(path) as image:
                image.load()
                return image.copy()
        return mask

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
            operation = record.get("operation")
            kind = f"{operation}, " if isinstance(operation, str) else ""
            caption = f"{prompt if isinstance(prompt, str) else image.stem} ({kind}seed {record.get('seed')})"
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


def _cost(spec: dict, inputs: dict) -> float:
    """A studio job's work in pixel-steps, to order waiting jobs (shortest first)."""
    steps = spec["num_inference_steps"]
    if spec["operation"] == "outpaint":
        return 2 * spec["height"] ** 2 * steps * (2 if spec.get("refine_poles") else 1)
    image = inputs.get("source")
    pixels = image.width * image.height if image is not None else 512 * 1024
    return pixels * steps * (4 if spec["operation"] == "upscale" else 1)


def _run_operation(generator, spec: dict, inputs: dict, progress):
    """One studio operation on a generator's pipeline → a PIL image (runs on the device)."""
    import numpy as np
    import torch
    from PIL import Image

    from ..sphere.pipeline import Sampling

    pipe = generator.pipe
    sampling = Sampling(spec["num_inference_steps"], spec["guidance_scale"], seed=spec["seed"],
                        negative_prompt=spec.get("negative_prompt"))

    def to_tensor(image):
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)[None]

    def to_image(tensor):
        array = ((tensor[0].permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().cpu().numpy()
        return Image.fromarray(np.ascontiguousarray(array), "RGB")

    operation = spec["operation"]
    with torch.no_grad():
        if operation == "inpaint":
            from ..sphere.edit import inpaint_panorama

            return inpaint_panorama(pipe, inputs["source"], np.asarray(inputs["mask"].convert("L")) > 127,
                                    spec["prompt"], negative_prompt=sampling.negative_prompt,
                                    num_inference_steps=sampling.num_inference_steps,
                                    guidance_scale=sampling.guidance_scale, seed=sampling.seed, progress=progress)
        if operation == "outpaint":
            from ..sphere.pipeline import outpaint_photo
            from ..sphere.placement import Placement

            placement = Placement(spec["yaw"], spec["pitch"], spec["fov"])
            result = outpaint_photo(pipe, to_tensor(inputs["photo"]), spec["prompt"], placement,
                                    (spec["height"], 2 * spec["height"]), refine=spec["refine_poles"],
                                    sampling=sampling, progress=progress)
            return to_image(result)
        if operation == "poles":
            from ..sphere.pipeline import refine_poles

            return to_image(refine_poles(pipe, to_tensor(inputs["source"]), spec["prompt"], sampling=sampling,
                                         progress=progress))
        if operation == "upscale":
            from ..sphere.upscale import UpscaleSettings, upscale_panorama

            settings = UpscaleSettings(num_inference_steps=sampling.num_inference_steps,
                                       guidance_scale=sampling.guidance_scale, seed=sampling.seed)
            done = [0]

            def stage(name, total):
                def tick():
                    if name == "refine":
                        done[0] += 1
                        progress(min(done[0], sampling.num_inference_steps) - 1)
                return tick

            array = upscale_panorama(pipe, np.asarray(inputs["source"].convert("RGB")), spec["prompt"], scale=2,
                                     settings=settings, negative_prompt=sampling.negative_prompt, progress=stage)
            return Image.fromarray(array)
    raise InvalidInputError(f"unknown operation {operation!r}")
