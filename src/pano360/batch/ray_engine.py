"""Batch generation over a Ray cluster: ``pano360 batch JOBS -o DIR --engine ray``.

The same jobs, job ids, files, resume check and manifest as the local runner:
:class:`RayBatchRunner` *is* a :class:`~pano360.batch.runner.BatchRunner` (the driver plans the batch,
skips finished jobs, fails invalid ones before any model loads, and writes the manifest); only running
the jobs differs. A pool of Ray actors (:class:`RayWorker`) each load a model once and generate one job
at a time with :func:`~pano360.batch.runner.run_job`, the local runner's own job function:

- jobs are dealt model group by model group; an idle worker takes the next job of the model it has
  loaded, and only loads another model when its own has no jobs left;
- a job that fails is retried (``retries`` times, on whichever worker is free), then recorded as failed;
  the batch goes on. A worker that dies (node lost, OOM kill, ``ray.kill``) loses only the job it was
  running: that job counts one attempt and goes back to the queue, and a new worker takes the dead one's
  place;
- outputs are written by the workers straight into DIR when they see it (a shared folder: NFS, a
  mounted bucket, or one machine), or come back through Ray's object store as bytes and are written by
  the driver. ``outputs="auto"`` decides per worker with a probe file the driver puts in DIR; both ways
  write through :mod:`pano360.io.atomic` (image first, sidecar last), so no partial file is ever visible;
- progress (done/total, rate, ETA) is a tqdm bar on the driver.

Ray is imported only when a batch runs on it; without Ray, :func:`require_ray` says what to install.
"""

from __future__ import annotations

import gc
import os
import secrets
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..io.atomic import atomic_write_bytes
from ..io.sidecar import sidecar_path
from .jobs import Job
from .runner import (
    BatchRunner,
    BatchSettings,
    JobOutcome,
    _load_generator,
    _reason,
    call_arguments,
    group_by_model,
    is_finished,
    job_image_path,
    leftovers,
    load_failure,
    run_job,
)

RAY_EXTRA = 'pip install "pano360[ray]"'
OUTPUT_MODES = ("auto", "shared", "driver")
PROBE_PREFIX = ".pano360-ray-probe-"


def require_ray():
    """Import Ray, or explain in one line how to install it."""
    try:
        import ray
    except ImportError as error:
        raise InvalidInputError(f"--engine ray needs Ray ({error}); install it with: {RAY_EXTRA}") from None
    return ray


@dataclass
class RaySettings:
    """How the jobs are spread over the cluster (none of this changes the images).

    Attributes:
        address: the cluster: ``"auto"`` (one started with ``ray start`` on this machine),
            ``"ray://HOST:10001"`` (Ray Client), ``"HOST:6379"``; ``None``: ``RAY_ADDRESS``, else a running
            cluster on this machine, else a new Ray on this machine (Ray's own rule).
        workers: actors to start; ``None``: as many as the cluster's GPUs (or CPUs) hold, at most one per job.
        gpus_per_worker: GPUs each actor reserves (fractions share a GPU); ``None``: 1 if the cluster
            has GPUs, else 0.
        cpus_per_worker: CPUs each actor reserves.
        outputs: ``"shared"`` (workers write into DIR), ``"driver"`` (files come back through the object
            store) or ``"auto"`` (per worker: shared if it sees DIR, else through the driver).
        retries: how many more times a failed job is tried before it is recorded as failed.
        runtime_env: Ray runtime environment for a cluster this process starts or connects to.
        load_generator: ``load_kwargs -> generator`` run in the workers (picklable); default: the
            local runner's loader.
    """

    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    outputs: str = "auto"
    retries: int = 2
    runtime_env: dict[str, Any] | None = None
    load_generator: Callable[[dict[str, Any]], Any] | None = None

    def check(self) -> None:
        """One line naming the fix for each bad setting (before anything starts)."""
        if self.workers is not None and self.workers < 1:
            raise InvalidInputError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise InvalidInputError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}")
        if self.cpus_per_worker <= 0:
            raise InvalidInputError(f"--cpus-per-worker must be more than 0, got {self.cpus_per_worker}")
        if self.outputs not in OUTPUT_MODES:
            raise InvalidInputError(f"--outputs must be one of {', '.join(OUTPUT_MODES)}, got {self.outputs!r}")
        if self.retries < 0:
            raise InvalidInputError(f"--retries must be 0 or more, got {self.retries}")
        check_reachable(self.address)


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """For a ``HOST:PORT`` or ``ray://HOST:PORT`` address, that something listens there (Ray itself would
    retry for minutes before failing). ``None``, ``auto`` and ``local`` are left to Ray."""
    import socket

    if not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInputError(f"--address {address!r} is not auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise InvalidInputError(f"cannot reach Ray at {address} ({error.strerror or error}); start the cluster "
                                "(ray start --head) or fix --address") from None


# --- the worker (a Ray actor; ray.remote is applied when a batch starts, so this imports without Ray) ----

class RayWorker:
    """One Ray actor: loads one model at a time and generates the jobs it is given, one at a time."""

    def __init__(self, settings: BatchSettings, load_generator, outputs: str, probe: tuple[str, str] | None,
                 name: str):
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # as the CLI does: no warnings a user cannot act on
        self.settings = settings
        self.out_dir = Path(settings.out_dir)
        self.load_generator = load_generator or partial(_load_generator, settings=settings)
        self.name = name
        self.loaded: str | None = None
        self.generator = None
        self.sees_out_dir = self._sees(probe)
        self.writes_shared = outputs == "shared" or (outputs == "auto" and self.sees_out_dir)

    def _sees(self, probe: tuple[str, str] | None) -> bool:
        """Whether this worker sees the driver's DIR: the probe file is there with the driver's token, and
        the folder is writable."""
        if probe is None:
            return False
        name, token = probe
        try:
            return (self.out_dir / name).read_text(encoding="utf-8") == token and os.access(self.out_dir, os.W_OK)
        except OSError:
            return False

    def where(self) -> dict[str, Any]:
        import socket

        return {"worker": self.name, "host": socket.gethostname(), "pid": os.getpid(), "shared": self.writes_shared}

    def run(self, job: Job, group: str, load: dict[str, Any]) -> dict[str, Any]:
        """Generate ``job`` (loading ``load`` first if another model is loaded). Returns ``{"outcome"}``,
        with ``"files"`` (name -> bytes, image first) when the driver writes them, or ``{"load_error"}``."""
        if group != self.loaded:
            self.generator = None
            self.loaded = None
            gc.collect()
            try:
                self.generator = self.load_generator(load)
            except Exception as error:  # noqa: BLE001 - reported as the group's failure
                return {"load_error": load_failure(load, error), "worker": self.name}
            self.loaded = group
        result: dict[str, Any] = {"worker": self.name}
        if self.writes_shared:
            if not self.sees_out_dir:
                result["outcome"] = JobOutcome("failed", reason=(
                    f"{self.out_dir} is not shared with the node of {self.name}; mount it on every node or use "
                    "--outputs auto"))
                return result
            image = job_image_path(self.out_dir, job, self.settings.image_format)
            result["outcome"] = run_job(self.generator, job, image, self.settings)
            return result
        with tempfile.TemporaryDirectory(prefix="pano360-ray-") as folder:
            image = job_image_path(Path(folder), job, self.settings.image_format)
            outcome = run_job(self.generator, job, image, self.settings)
            if outcome.status == "done":  # image, the job's 3D exports, sidecar last (it marks the job finished)
                names = [image.name, *(outcome.exports or []), sidecar_path(image).name]
                result["files"] = {name: (Path(folder) / name).read_bytes() for name in names}
            result["outcome"] = outcome
        return result


# --- the driver --------------------------------------------------------------------------------------

class RayBatchRunner(BatchRunner):
    """:class:`BatchRunner` whose jobs run on a pool of Ray actors (see the module's docstring).

    Connects to (or starts) Ray only when there is a job to run: a batch whose jobs are all finished
    does nothing. Works in a process where Ray is already initialised (it then leaves Ray running).
    """

    def __init__(self, jobs, errors, settings: BatchSettings, ray_settings: RaySettings | None = None):
        ray_settings = ray_settings or RaySettings()
        ray_settings.check()
        if settings.world_size > 1:
            raise InvalidInputError("--engine ray runs from one driver process; start it without accelerate "
                                    "launch / torchrun")
        settings = BatchSettings(**{**vars(settings), "out_dir": Path(settings.out_dir).resolve()})
        super().__init__(jobs, errors, settings)
        self.ray_settings = ray_settings
        self.workers_started = 0  # actors started by the last run (replacements included)
        self._token = secrets.token_hex(4)

    # hooks (tests wrap them)
    def _submit(self, ray, worker, job: Job, group: str, load: dict[str, Any]):
        return worker.run.remote(job, group, load)

    def _generate(self, todo: list[Job], record, total: int) -> bool:
        if not todo:
            return False
        ray = require_ray()
        started_ray = False
        if not ray.is_initialized():
            try:
                ray.init(address=self.ray_settings.address, runtime_env=self.ray_settings.runtime_env,
                         logging_level="WARNING", log_to_driver=self.settings.progress)
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = self.ray_settings.address or os.environ.get("RAY_ADDRESS") or "this machine"
                raise InvalidInputError(f"cannot start or reach Ray at {where} ({_first_line(error)}); start the "
                                        "cluster (ray start --head) or fix --address") from None
            started_ray = True
        self._actor_class = ray.remote(RayWorker)
        probe = self._write_probe() if self.ray_settings.outputs != "driver" else None
        progress = None
        try:
            count, gpus = self._pool_size(ray, len(todo))
            if self.settings.progress:
                from tqdm.auto import tqdm

                progress = tqdm(total=total, initial=total - len(todo), desc="jobs", unit="job", file=sys.stderr,
                                smoothing=0.1)
            return self._schedule(ray, todo, record, count, gpus, probe, progress)
        finally:
            if progress:
                progress.close()
            if probe:
                (self.out_dir / probe[0]).unlink(missing_ok=True)
            if started_ray:
                ray.shutdown()

    def _write_probe(self) -> tuple[str, str]:
        for stale in self.out_dir.glob(f"{PROBE_PREFIX}*"):  # from a driver killed long ago (only a dot file)
            try:
                if time.time() - stale.stat().st_mtime > 86400:
                    stale.unlink()
            except OSError:
                pass
        name, token = f"{PROBE_PREFIX}{self._token}", secrets.token_hex(16)
        atomic_write_bytes(self.out_dir / name, token.encode())
        return name, token

    def _pool_size(self, ray, jobs: int) -> tuple[int, float]:
        """(number of workers, GPUs per worker) from the settings and the cluster's resources."""
        resources = ray.cluster_resources()
        gpus = self.ray_settings.gpus_per_worker
        if gpus is None:  # a GPU each where there are GPUs, unless the jobs are told to run on the CPU
            gpus = 1.0 if resources.get("GPU", 0) >= 1 and self.settings.device != "cpu" else 0.0
        count = self.ray_settings.workers
        if count is None:
            if gpus > 0:
                if resources.get("GPU", 0) < gpus:
                    raise InvalidInputError(
                        f"the Ray cluster has {resources.get('GPU', 0):g} GPUs, fewer than --gpus-per-worker {gpus:g}; "
                        "add GPU nodes, give --workers N to wait for an autoscaler, or use --gpus-per-worker 0")
                count = int(resources["GPU"] // gpus)
            else:
                count = int(resources.get("CPU", 0) // self.ray_settings.cpus_per_worker)
        return max(1, min(count, jobs)), gpus

    def _start_worker(self, ray, gpus: float, probe):
        self.workers_started += 1
        name = f"pano360-{self._token}-w{self.workers_started}"
        actor = self._actor_class.options(
            name=name, num_cpus=self.ray_settings.cpus_per_worker, num_gpus=gpus, max_restarts=0,
            max_task_retries=0)
        return actor.remote(self.settings, self.ray_settings.load_generator, self.ray_settings.outputs, probe, name)

    def _schedule(self, ray, todo: list[Job], record, count: int, gpus: float, probe, progress) -> bool:
        """Keep every ready worker busy with one job until none is left; returns True if stopped early.

        A worker gets jobs once it has started (answered a ping), so a replacement that is still
        starting (or cannot start) holds no job while others are free.
        """
        groups = group_by_model(todo)
        queues = {key: deque(jobs) for key, jobs in groups.items()}
        loads = {key: call_arguments(jobs[0].spec)[0] for key, jobs in groups.items()}
        attempts: dict[str, int] = {}
        idle: deque = deque()  # ready workers, longest idle first
        starting: dict[Any, Any] = {}  # ping ref -> actor
        busy: dict[Any, tuple[Any, Job, str]] = {}  # job ref -> (actor, job, group)
        loaded: dict[Any, str | None] = {}  # actor -> the model group it has loaded (or is loading)
        failed_starts: list[str] = []

        def say(text: str) -> None:
            if progress:
                progress.write(f"pano360 batch: {text}", file=sys.stderr)

        def show_workers() -> None:
            if progress:
                progress.set_postfix_str(f"{len(idle) + len(busy)}/{count} Ray workers ready")

        def start() -> None:
            actor = self._start_worker(ray, gpus, probe)
            starting[actor.where.remote()] = actor

        def jobs_left() -> bool:
            return any(queues.values())

        def finish(job: Job, status: str, **fields) -> None:
            record(job, status, attempts=attempts.get(job.id, 0), **fields)
            if progress:
                progress.update(1)

        def failed_attempt(job: Job, group: str, reason: str, retryable: bool = True, **fields) -> None:
            left = self.ray_settings.retries + 1 - attempts[job.id]
            if retryable and left > 0:
                say(f"{job.source} (job {job.id[:8]}) {reason}; trying again ({left} more tr{'y' if left == 1 else 'ies'})")
                queues[group].appendleft(job)
            else:
                finish(job, "failed", reason=reason, **fields)

        def next_job(actor) -> tuple[Job, str]:
            own = loaded.get(actor)
            if own is not None and queues.get(own):
                return queues[own].popleft(), own
            key = next(key for key, queue in queues.items() if queue)  # the next model in order with jobs left
            return queues[key].popleft(), key

        def job_returned(ref) -> None:
            actor, job, group = busy.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as error:
                loaded.pop(actor, None)
                ray.kill(actor)  # make sure it is gone (a no-op for a dead one)
                salvaged = self._salvage(job)
                if salvaged:
                    finish(job, "done", file=salvaged)
                else:
                    failed_attempt(job, group, f"lost its worker ({_first_line(error)})")
                if jobs_left() and not self.stop.requested:
                    start()
                return
            except ray.exceptions.RayError as error:  # the result was lost, a bug in the worker, ...
                idle.append(actor)
                salvaged = self._salvage(job)
                if salvaged:
                    finish(job, "done", file=salvaged)
                else:
                    failed_attempt(job, group, f"failed on Ray: {_first_line(error)}")
                return
            idle.append(actor)
            worker = result.get("worker")
            if "load_error" in result:  # the whole model group fails, as in the local runner
                loaded[actor] = None
                for lost in [job, *queues[group]]:
                    finish(lost, "failed", reason=result["load_error"], worker=worker)
                queues[group].clear()
                return
            outcome: JobOutcome = result["outcome"]
            via = "driver" if result.get("files") else "shared"
            if outcome.status == "done" and result.get("files"):
                outcome = self._write_files(job, result.pop("files"), outcome)
            if outcome.status == "done":
                finish(job, "done", worker=worker, outputs=via, **outcome.fields())
            else:
                failed_attempt(job, group, outcome.reason or "failed", outcome.retryable, worker=worker,
                               **{k: v for k, v in outcome.fields().items() if k != "reason"})

        def worker_started(ref) -> None:
            actor = starting.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as error:  # cannot start there: pano360 missing on a node, ...
                ray.kill(actor)
                failed_starts.append(_first_line(error))
                say(f"a Ray worker could not start ({failed_starts[-1]})")
                if len(failed_starts) <= count * self.ray_settings.retries and jobs_left():  # retries per worker
                    start()
                return
            idle.append(actor)

        for _ in range(count):
            start()
        try:
            while True:
                while idle and jobs_left() and not self.stop.requested:
                    actor = idle.popleft()
                    job, group = next_job(actor)
                    loaded[actor] = group
                    attempts[job.id] = attempts.get(job.id, 0) + 1
                    busy[self._submit(ray, actor, job, group, loads[group])] = (actor, job, group)
                show_workers()
                if not busy and (not jobs_left() or not starting or self.stop.requested):
                    break
                ready, _ = ray.wait([*busy, *starting], num_returns=1, timeout=1.0)
                for ref in ready:
                    (job_returned if ref in busy else worker_started)(ref)
            if jobs_left() and not self.stop.requested:  # every worker died or none could start
                reason = (f"no Ray worker could start ({failed_starts[-1]}); install pano360 on every node "
                          "(or pass a runtime_env) and check the cluster's resources") if failed_starts else \
                    "every Ray worker was lost"
                for queue in queues.values():
                    while queue:
                        finish(queue.popleft(), "failed", reason=reason)
        finally:
            for actor in [*idle, *starting.values(), *(entry[0] for entry in busy.values())]:
                ray.kill(actor)
        return jobs_left()

    def _salvage(self, job: Job) -> str | None:
        """After a lost worker or result: a worker writing into DIR may have finished the job before it was
        lost (its image name is returned: the job is done), or left part of it (removed, so that the retry
        can write the files; ``None``)."""
        image = job_image_path(self.out_dir, job, self.settings.image_format)
        if is_finished(image, job.id):
            return image.name
        for path in leftovers(image):
            path.unlink(missing_ok=True)
        return None

    def _write_files(self, job: Job, files: dict[str, bytes], outcome: JobOutcome) -> JobOutcome:
        """Write a job's files that came back through the object store: atomic, image first, sidecar last."""
        written: list[Path] = []
        try:
            for name, data in files.items():  # image, exports, then the sidecar
                written.append(atomic_write_bytes(self.out_dir / name, data))
        except Exception as error:  # noqa: BLE001 - disk full, a name taken meanwhile, ...
            for path in written:  # only what this call wrote: never another job's file
                path.unlink(missing_ok=True)
            return JobOutcome("failed", reason=_reason(error), retryable=False)
        return outcome


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")
