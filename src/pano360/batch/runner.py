"""Run a batch of jobs: each model loaded once per process, finished jobs skipped, every file atomic.

Resumable by construction:

- a job's files are ``DIR/<stem>.png`` + its sidecar ``DIR/<stem>.png.json`` where the stem holds the job id (see
  :attr:`~pano360.batch.jobs.Job.file_stem`); both are written with :mod:`pano360.io.atomic`
  (temporary file, fsync, hard link), image first, sidecar last;
- a job is *finished* when its image is a complete image file and its sidecar names the same job id
  (``sidecar["batch"]["job_id"]``). Finished jobs are skipped and their files never touched;
- anything else under a job's stem (an image whose sidecar was never written, a temporary file left
  by a kill) belongs to an unfinished job of this shard and is removed before the job is redone.

So a SIGKILL at any moment loses no finished image and leaves nothing that a re-run does not clean
up. SIGINT/SIGTERM stop after the current job (a second SIGINT stops at once; nothing partial stays).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, OutputExistsError, Pano360Error
from ..io.sidecar import sidecar_path
from .jobs import Job, JobError, shard
from .manifest import (
    ManifestLog,
    count_statuses,
    log_path,
    merge_manifest,
    read_records,
    remove_stale_temporaries,
)

IMAGE_SUFFIXES = {"png": ".png", "jpg": ".jpg"}


# --- job -> PanoramaGenerator arguments (the one place that knows the generator's API) ---------------

def call_arguments(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A normalised job → ``(from_pretrained keyword arguments, __call__ keyword arguments)``.

    A ``preset`` (:mod:`pano360.presets`) fills the method, generation settings and method options the
    job does not set (the job wins), here, so that the call and the loaded model are explicit.
    """
    from ..backbones.loading import DEFAULT_MODEL
    from ..presets import GENERATION_KEYS, apply_preset

    method, options, generation = apply_preset(
        spec.get("preset"), spec.get("method"), dict(spec.get("options") or {}),
        {key: spec.get(key) for key in GENERATION_KEYS})
    call: dict[str, Any] = {"prompt": spec["prompt"], "method": method}
    for key in ("negative_prompt", "seed", "eta"):
        if spec.get(key) is not None:
            call[key] = spec[key]
    call.update({key: value for key, value in generation.items() if key != "model"})
    call.update(options)
    load: dict[str, Any] = {"model": generation.get("model") or DEFAULT_MODEL}
    loras = spec.get("lora") or []
    scales = [float(s) for s in spec.get("lora_scale") or []]
    if scales and len(scales) not in (1, len(loras)):
        raise InvalidInputError(f"{len(scales)} lora_scale values for {len(loras)} loras; give one, or one per lora")
    if loras:
        load["loras"] = [(str(source), scales[i] if len(scales) > 1 else (scales or [1.0])[0])
                         for i, source in enumerate(loras)]
    if spec.get("adapter") is not None:
        load["adapter"] = spec["adapter"]
    return load, call


_CALL_KEYS = {"prompt", "negative_prompt", "method", "height", "width", "num_inference_steps", "guidance_scale",
              "seed", "scheduler", "eta"}


def check_job(spec: dict[str, Any]) -> None:
    """Every check of a job that needs no model (raises :class:`InvalidInputError` naming the fix).

    The size is checked when the job (or its preset) gives it; otherwise it is the model's native size,
    which the generator checks when the job runs.
    """
    from ..backbones.adapters import check_adapter_path
    from ..backbones.loading import classify_model_argument
    from ..backbones.schedulers import check_scheduler_name
    from ..methods import GenerationRequest, get_method
    from ..validation import check_generation_args, check_guidance, check_nonnegative, check_steps

    load, call = call_arguments(spec)
    classify_model_argument(load["model"])
    for source, _ in load.get("loras", []):
        check_adapter_path(source)
    if load.get("adapter") is not None:
        check_adapter_path(str(load["adapter"]), what="adapter")
    steps, guidance = call.get("num_inference_steps", 50), call.get("guidance_scale", 7.5)
    check_steps(steps)
    check_guidance(guidance)
    check_nonnegative(call.get("eta", 0.0), "eta")
    if call.get("scheduler") is not None:
        check_scheduler_name(call["scheduler"])
    method = get_method(call["method"], **{k: v for k, v in call.items() if k not in _CALL_KEYS})
    if "height" in call:
        height = call["height"]
        width = call.get("width", 2 * height if isinstance(height, int) else height)
        check_generation_args(height=height, width=width, num_inference_steps=steps, guidance_scale=guidance)
        method.check(GenerationRequest(height=height, width=width, num_inference_steps=steps,
                                       guidance_scale=guidance))


# --- files of a job ---------------------------------------------------------------------------------

def job_image_path(out_dir: Path, job: Job, image_format: str = "png") -> Path:
    return out_dir / f"{job.file_stem}{IMAGE_SUFFIXES[image_format]}"


def is_finished(image_path: Path, job_id: str) -> bool:
    """The image is a complete image file and its sidecar records ``job_id``."""
    from PIL import Image

    sidecar = sidecar_path(image_path)
    if not (image_path.is_file() and sidecar.is_file()):
        return False
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        if record.get("batch", {}).get("job_id") != job_id or record.get("image_file") != image_path.name:
            return False
        with Image.open(image_path) as image:
            image.verify()  # checks the structure and (PNG) every chunk checksum without decoding
        return True
    except Exception:  # noqa: BLE001 - unreadable sidecar or image: not finished
        return False


def leftovers(image_path: Path) -> list[Path]:
    """Files an unfinished job may have left: its image, its sidecar, and the writers' temporary files."""
    folder = image_path.parent
    found = [p for p in (image_path, sidecar_path(image_path)) if p.exists()]
    for name in (image_path.name, sidecar_path(image_path).name):
        found.extend(folder.glob(f".{name}.*.tmp"))
    return found


def owner_of(image_path: Path) -> str | None:
    """The job id recorded in an existing sidecar, if any."""
    try:
        return json.loads(sidecar_path(image_path).read_text(encoding="utf-8")).get("batch", {}).get("job_id")
    except Exception:  # noqa: BLE001 - no readable sidecar
        return None


# --- stopping cleanly -------------------------------------------------------------------------------

class StopRequest:
    """Set by the first SIGINT/SIGTERM: finish the current job, then stop. A second SIGINT interrupts."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print("\npano360 batch: stopping after the current job (Ctrl+C again to stop now; finished images are "
              "kept and a re-run resumes)", file=sys.stderr, flush=True)


@contextmanager
def stop_on_signals(stop: StopRequest) -> Iterator[StopRequest]:
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# --- the runner -------------------------------------------------------------------------------------

@dataclass
class BatchSettings:
    """How to run (not part of any job: changing these does not change which images are made)."""

    out_dir: Path
    image_format: str = "png"
    device: str = "auto"
    dtype: str = "auto"
    metadata: bool = True
    progress: bool = True
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    jobs_file: str = ""


@dataclass
class BatchSummary:
    """Counts for this process's shard and for the whole batch (from the merged manifest)."""

    shard: dict[str, int] = field(default_factory=dict)
    total: dict[str, int] = field(default_factory=dict)
    manifest: Path | None = None
    interrupted: bool = False

    def describe(self, world_size: int = 1) -> str:
        def counts(values: dict[str, int]) -> str:
            return (f"{values.get('done', 0)} generated, {values.get('skipped', 0)} finished earlier, "
                    f"{values.get('failed', 0)} failed")

        text = f"{sum(self.total.values())} jobs: {counts(self.total)}, {self.total.get('pending', 0)} pending"
        if world_size > 1:
            text = f"this process: {counts(self.shard)}; whole batch so far: {text}"
        if self.interrupted:
            text += " (stopped early: run the same command again to resume)"
        return text + (f"; manifest: {self.manifest}" if self.manifest else "")


def _load_generator(load: dict[str, Any], settings: BatchSettings):
    from ..generator import PanoramaGenerator

    device = settings.device
    if device == "auto" and settings.world_size > 1:
        import torch

        if torch.cuda.is_available():  # one device per local rank
            device = f"cuda:{settings.local_rank % torch.cuda.device_count()}"
    kwargs = dict(load)
    model = kwargs.pop("model")
    return PanoramaGenerator.from_pretrained(model, torch_dtype=settings.dtype, device=device, **kwargs)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text if isinstance(error, Pano360Error) else f"{type(error).__name__}: {text}".rstrip(": ")


def load_failure(load: dict[str, Any], error: BaseException) -> str:
    """The reason recorded for every job of a model group whose model cannot be loaded."""
    return f"cannot load model {load['model']}: {_reason(error)}"


def group_by_model(jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs grouped by what is loaded for them (model, LoRAs, adapter; a preset may name the model), in
    order of first appearance: each group's model is loaded once per process (or Ray worker)."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(json.dumps(call_arguments(job.spec)[0], sort_keys=True, default=str), []).append(job)
    return groups


@dataclass
class JobOutcome:
    """What running one job gave: ``done`` (its files are written) or ``failed`` with a reason.

    ``retryable`` is false when trying again cannot help (the output name is taken by another file).
    """

    status: str
    file: str | None = None
    reason: str | None = None
    seconds: float | None = None
    retryable: bool = True
    exports: list[str] | None = None

    def fields(self) -> dict[str, Any]:
        """The manifest record's fields (besides job, status and rank)."""
        return {key: value for key, value in (("file", self.file), ("reason", self.reason),
                                              ("seconds", self.seconds), ("exports", self.exports)) if value is not None}


def run_job(generator, job: Job, image: Path, settings: BatchSettings, on_step=None) -> JobOutcome:
    """Generate ``job`` with a loaded ``generator`` into ``image`` and its sidecar (atomic, image first,
    sidecar last). The one way a job becomes files, for the local runner and the Ray workers.

    Never raises for a failed job (the reason is in the outcome); on failure nothing of the job is
    left. KeyboardInterrupt propagates, after removing a half-written job.
    """
    started = time.perf_counter()
    _, call = call_arguments(job.spec)
    try:
        output = generator(**call, progress=False, callback_on_step_end=on_step)
        output.parameters["batch"] = {"job_id": job.id, "job": job.spec, "source": job.source,
                                      "jobs_file": settings.jobs_file}
        output.save(image, metadata=settings.metadata)
        from .exports import write_job_exports  # 3D outputs the job asks for (exports), beside the image

        exports = [path.name for path in write_job_exports(image, job.spec.get("exports"), job.spec.get("depth_model"))]
    except OutputExistsError as error:
        return JobOutcome("failed", reason=_reason(error), retryable=False)
    except KeyboardInterrupt:
        if not is_finished(image, job.id):  # stopped between the image and its sidecar
            for path in leftovers(image):
                path.unlink(missing_ok=True)
        raise
    except Exception as error:  # noqa: BLE001 - a bad option found late, out of memory, ...: the batch goes on
        for path in leftovers(image):
            path.unlink(missing_ok=True)
        return JobOutcome("failed", reason=_reason(error), seconds=round(time.perf_counter() - started, 3))
    return JobOutcome("done", file=image.name, seconds=round(time.perf_counter() - started, 3), exports=exports or None)


class BatchRunner:
    """Runs this process's shard of ``jobs`` into ``settings.out_dir``.

    ``load_generator(load_kwargs) -> PanoramaGenerator`` can be replaced (tests, an already loaded model).
    """

    def __init__(self, jobs: list[Job], errors: list[JobError], settings: BatchSettings,
                 load_generator: Callable[[dict[str, Any]], Any] | None = None):
        if settings.image_format not in IMAGE_SUFFIXES:
            raise InvalidInputError(f"unknown image format {settings.image_format!r}; use png or jpg")
        self.jobs = jobs
        self.errors = errors
        self.settings = settings
        self.out_dir = Path(settings.out_dir)
        self.load_generator = load_generator or (lambda load: _load_generator(load, settings))
        self.stop = StopRequest()

    # manifest rows describing every job of the batch (for the merged manifest)
    def _job_rows(self) -> list[dict[str, Any]]:
        rows = [{"job": job.id, "index": job.index, "source": job.source, "prompt": job.prompt, "seed": job.seed,
                 "file": None} for job in self.jobs]
        rows += [{"job": error.id, "index": None, "source": error.source, "prompt": error.spec.get("prompt"),
                  "seed": error.spec.get("seed"), "file": None} for error in self.errors]
        return rows

    def run(self) -> BatchSummary:
        settings = self.settings
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.out_dir)
        mine = shard(self.jobs, settings.rank, settings.world_size)
        log = ManifestLog(log_path(self.out_dir, settings.rank, settings.world_size))
        statuses: list[dict[str, Any]] = []

        def record(job_or_error, status: str, **extra) -> None:
            entry = {"job": job_or_error.id, "status": status, "rank": settings.rank, **extra}
            log.append(entry)
            statuses.append(entry)

        interrupted = False
        try:
            if settings.rank == 0:
                for error in self.errors:
                    record(error, "failed", reason=f"{error.source}: {error.reason}")
            todo = self._plan(mine, record)
            with stop_on_signals(self.stop):
                interrupted = self._generate(todo, record, total=len(mine))
        except KeyboardInterrupt:
            interrupted = True
        finally:
            log.close()
            manifest = self._merge()
        summary = BatchSummary(shard=count_statuses(statuses), manifest=manifest, interrupted=interrupted)
        summary.total = count_statuses(read_records(manifest))
        return summary

    def _plan(self, mine: list[Job], record) -> list[Job]:
        """Skip finished jobs, fail invalid ones, clean the leftovers of unfinished ones."""
        todo = []
        for job in mine:
            image = job_image_path(self.out_dir, job, self.settings.image_format)
            if is_finished(image, job.id):
                record(job, "skipped", file=image.name)
                continue
            owner = owner_of(image)
            if image.exists() and owner not in (None, job.id):
                record(job, "failed",
                       reason=f"{image.name} already exists for another job ({owner}); it is never overwritten")
                continue
            try:
                check_job(job.spec)
            except Pano360Error as error:
                record(job, "failed", reason=_reason(error))
                continue
            for path in leftovers(image):  # an unfinished job of this shard: remove what it left
                path.unlink(missing_ok=True)
            todo.append(job)
        return todo

    def _generate(self, todo: list[Job], record, total: int) -> bool:
        """Run the jobs, one model group at a time; returns True if stopped before the end."""
        progress = None
        if self.settings.progress:
            from tqdm.auto import tqdm

            prefix = f"rank {self.settings.rank}: " if self.settings.world_size > 1 else ""
            progress = tqdm(total=total, initial=total - len(todo), desc=f"{prefix}jobs", unit="job", file=sys.stderr)
        groups = group_by_model(todo)
        try:
            for group in groups.values():
                if self.stop.requested:
                    return True
                load, _ = call_arguments(group[0].spec)
                try:
                    generator = self.load_generator(load)
                except Exception as error:  # noqa: BLE001 - the whole group fails, the batch goes on
                    for job in group:
                        record(job, "failed", reason=load_failure(load, error))
                        if progress:
                            progress.update(1)
                    continue
                for job in group:
                    if self.stop.requested:
                        return True
                    self._run_job(generator, job, record, progress)
                    if progress:
                        progress.update(1)
                del generator
        finally:
            if progress:
                progress.close()
        return self.stop.requested

    def _run_job(self, generator, job: Job, record, progress) -> None:
        image = job_image_path(self.out_dir, job, self.settings.image_format)
        steps = call_arguments(job.spec)[1].get("num_inference_steps", 50)

        def on_step(gen, i, t, tensors):
            if progress:
                progress.set_postfix_str(f"step {i + 1}/{steps}")
            return {}

        outcome = run_job(generator, job, image, self.settings, on_step)
        record(job, outcome.status, **outcome.fields())

    def _merge(self) -> Path:
        """Merge all ranks' logs; repeated while another rank's log grew meanwhile, so the last
        process to finish writes a manifest with everything."""
        folder = log_path(self.out_dir, 0, 1).parent

        def sizes():
            return {p.name: p.stat().st_size for p in folder.glob("rank*.jsonl")}

        for _ in range(10):
            before = sizes()
            manifest = merge_manifest(self.out_dir, self._job_rows())
            if sizes() == before:
                break
        return manifest
