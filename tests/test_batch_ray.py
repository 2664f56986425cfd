"""``pano360 batch --engine ray`` on a Ray cluster this module starts on 127.0.0.1 (2 CPUs): the same
images as the local engine, a worker killed mid-run costs one retried job and nothing else, a failing job
is retried then recorded, outputs through the object store, re-runs do nothing; and without Ray, one
line naming the extra."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

# Ray maps 127.0.0.1 to the machine's network address unless its "cluster" mode is off; these tests
# must start and reach Ray on the loopback only. Read when Ray is imported, so set first.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest

import pano360
from pano360.batch import BatchRunner, BatchSettings, load_jobs, read_records

TESTS = Path(__file__).resolve().parent
JOB_DEFAULTS = {"model": "tiny", "height": 32, "width": 64, "num_inference_steps": 4}
CURSED = "a cursed room"


# --- without Ray (runs everywhere) ------------------------------------------------------------------

def test_without_ray_one_line_names_the_extra_and_local_refuses_ray_flags(tmp_path, capsys, monkeypatch):
    from pano360.cli.main import main

    jobs = tmp_path / "p.txt"
    jobs.write_text("a\n")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["batch", str(jobs), "-o", str(tmp_path / "o"), "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "pano360[ray]"' in err
    assert not (tmp_path / "o").exists()  # before anything is read or written
    assert main(["batch", str(jobs), "-o", str(tmp_path / "o"), "--workers", "2", "--retries", "1"]) == 2
    assert "--workers, --retries only apply with --engine ray" in capsys.readouterr().err


def test_an_address_where_nothing_listens_is_one_line_at_once():
    from pano360.batch.ray_engine import RaySettings
    from pano360.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="cannot reach Ray at 127.0.0.1:1 .*fix --address"):
        RaySettings(address="127.0.0.1:1").check()  # Ray itself would retry for minutes
    with pytest.raises(InvalidInputError, match="not auto, HOST:PORT"):
        RaySettings(address="ray://nowhere").check()


# --- on a local Ray cluster -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    """One Ray for the module: 2 CPUs, loopback only, workers importing this checkout (and this folder,
    for the test's loader)."""
    ray = pytest.importorskip("ray")
    src = str(Path(pano360.__file__).resolve().parents[1])
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([src, str(TESTS)]), "OMP_NUM_THREADS": "1",
                                       "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}})
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    yield ray
    ray.shutdown()


class CursedLoader:
    """Loads the real model; its generator fails every time for the prompt CURSED (a job that fails
    deterministically after the model is loaded). Pickled by reference: workers import this module."""

    def __call__(self, load):
        from pano360 import PanoramaGenerator

        generator = PanoramaGenerator.from_pretrained(load["model"], device="cpu", torch_dtype="fp32")

        class Cursed:
            backbone = generator.backbone
            controlnet = None

            def __call__(self, prompt, **kwargs):
                if prompt == CURSED:
                    raise RuntimeError("this prompt always fails")
                return generator(prompt, **kwargs)

        return Cursed()


@pytest.fixture(scope="module")
def local_images(tmp_path_factory, tiny_generators, single_torch_thread):
    """The local engine's images of 2 prompts x 3 seeds (name -> bytes), and the jobs file."""
    folder = tmp_path_factory.mktemp("ray-reference")
    jobs_file = folder / "prompts.txt"
    jobs_file.write_text("a red room\na blue sky\n")
    jobs, errors = load_jobs(jobs_file, defaults=JOB_DEFAULTS, repeat=3)
    summary = BatchRunner(jobs, errors, BatchSettings(out_dir=folder / "out", progress=False),
                          lambda _: tiny_generators("tiny")).run()
    assert summary.total["done"] == 6
    return jobs_file, {p.name: p.read_bytes() for p in (folder / "out").glob("*.png")}


def _watch_for_partial_files(out: Path, stop: threading.Event, seen: list[str]) -> None:
    """Every image visible under its final name must be complete (verify() checks each PNG chunk)."""
    from PIL import Image

    while not stop.is_set():
        for path in out.glob("*.png"):
            try:
                with Image.open(path) as image:
                    image.verify()
            except FileNotFoundError:
                continue
            except Exception as error:  # noqa: BLE001
                seen.append(f"{path.name}: {error}")
        stop.wait(0.05)


def test_ray_makes_the_local_images_and_survives_a_killed_worker(ray_cluster, local_images, tmp_path, capsys,
                                                                  monkeypatch):
    from pano360.batch.ray_engine import RayBatchRunner, RaySettings
    from pano360.cli.main import main

    jobs_file, expected = local_images
    jobs_file_with_cursed = tmp_path / "prompts.txt"
    jobs_file_with_cursed.write_text(jobs_file.read_text() + CURSED + "\n")
    jobs, errors = load_jobs(jobs_file_with_cursed, defaults=JOB_DEFAULTS, repeat=3)
    jobs = jobs[:7]  # the 6 reference jobs and one cursed job
    out = tmp_path / "out"
    killed = {}

    class KillingOneWorker(RayBatchRunner):
        """Kills the worker that was just given the 4th job (it has loaded the model and finished a job
        by then, so the job is lost mid-run), by that actor's own id. Its second worker plays one on a node
        without DIR (it is not given the probe file), so its files come back through the object store."""

        dispatched = 0

        def _start_worker(self, ray, gpus, probe):
            return super()._start_worker(ray, gpus, None if self.workers_started == 1 else probe)

        def _submit(self, ray, worker, job, group, load):
            ref = super()._submit(ray, worker, job, group, load)
            self.dispatched += 1
            if self.dispatched == 4:
                killed.update(job=job.id, actor=worker._actor_id.hex())
                ray.kill(worker)
            return ref

    settings = RaySettings(workers=2, retries=2, load_generator=CursedLoader())
    stop, partial = threading.Event(), []
    out.mkdir()
    watcher = threading.Thread(target=_watch_for_partial_files, args=(out, stop, partial), daemon=True)
    watcher.start()
    try:
        runner = KillingOneWorker(jobs, errors, BatchSettings(out_dir=out, progress=True), settings)
        summary = runner.run()
    finally:
        stop.set()
        watcher.join()
    err = capsys.readouterr().err
    assert not partial, partial
    assert summary.total == {"done": 6, "skipped": 0, "failed": 1, "pending": 0}, summary
    assert runner.workers_started == 3  # two, and one in place of the killed one
    assert "7/7" in err and ("job/s" in err or "s/job" in err)  # done/total and rate on the driver
    assert "lost its worker" in err and "this prompt always fails" in err

    images = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert images == expected  # byte for byte, the killed job's image included
    records = read_records(out / "manifest.jsonl")
    assert len(records) == 7 and len({r["job"] for r in records}) == 7
    by_job = {r["job"]: r for r in records}
    assert by_job[killed["job"]]["status"] == "done" and by_job[killed["job"]]["attempts"] == 2
    assert by_job[killed["job"]]["file"] in expected
    [cursed] = [r for r in records if r["prompt"] == CURSED]
    assert cursed["status"] == "failed" and cursed["attempts"] == 3 and "always fails" in cursed["reason"]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary or probe file
    log = [r for r in read_records(out / "manifest.d" / "rank0-of1.jsonl")]
    assert sorted(r["job"] for r in log) == sorted(by_job)  # one final record per job: no duplicates

    # both ways of writing were used: the first worker into DIR, the second through the object store
    # (a worker is given a second job only after finishing its first, so the killed one had finished one,
    # and the other one was never killed)
    assert {r.get("outputs") for r in records if r["status"] == "done"} == {"shared", "driver"}

    # a re-run from the command line starts no worker and touches nothing
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    started = RayBatchRunner.__init__

    def spy(self, *args, **kwargs):
        started(self, *args, **kwargs)
        runners.append(self)

    runners = []
    monkeypatch.setattr(RayBatchRunner, "__init__", spy)
    code = main(["batch", str(jobs_file), "-o", str(out), "--model", "tiny", "--height", "32", "--width", "64",
                 "--steps", "4", "--repeat", "3", "--device", "cpu", "--engine", "ray", "--workers", "2",
                 "--outputs", "driver", "--retries", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert "6 jobs: 0 generated, 6 finished earlier, 0 failed, 0 pending" in captured.out
    assert "on Ray" in captured.err
    [again] = runners
    assert again.workers_started == 0 and again.ray_settings.outputs == "driver" and again.ray_settings.retries == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps


# --- the driver's scheduling, on an in-process stand-in for Ray (fast, runs without Ray) -------------

class Ref:
    """An object reference: hashable by identity, holding a value or an error."""

    def __init__(self, value=None, error=None):
        self.value, self.error = value, error


class FakeRay:
    """Just what the driver uses of Ray: actors run their methods at once, in this process."""

    class RayError(Exception):
        pass

    class RayActorError(RayError):
        pass

    def __init__(self, start_fails=False, dies_after_run=()):
        self.exceptions = self  # ray.exceptions.RayActorError
        self.start_fails = start_fails
        self.dies_after_run = set(dies_after_run)  # prompts whose worker dies after writing its files
        self.killed = []

    def is_initialized(self):
        return True

    def cluster_resources(self):
        return {"CPU": 2.0}

    def remote(self, cls):
        fake = self

        class Actor:
            def __init__(self, args):
                self.instance, self.dead = cls(*args), False

            def __getattr__(self, name):
                method = getattr(self.instance, name)

                class Call:
                    @staticmethod
                    def remote(*args):
                        if self.dead or (name == "where" and fake.start_fails):
                            return Ref(error=fake.RayActorError(f"{name}: the actor died"))
                        value = method(*args)
                        if name == "run" and args[0].prompt in fake.dies_after_run:
                            fake.dies_after_run.discard(args[0].prompt)
                            self.dead = True
                            return Ref(error=fake.RayActorError("the node was lost"))
                        return Ref(value=value)

                return Call

        class Options:
            @staticmethod
            def options(**_):
                return type("Starter", (), {"remote": staticmethod(lambda *args: Actor(args))})

        return Options

    def wait(self, refs, num_returns=1, timeout=None):
        return list(refs[:num_returns]), list(refs[num_returns:])

    def get(self, ref):
        if ref.error is not None:
            raise ref.error
        return ref.value

    def kill(self, actor):
        actor.dead = True
        self.killed.append(actor)


def _fake_run(tmp_path, monkeypatch, tiny_generators, fake, prompts, **settings):
    from pano360.batch.ray_engine import RayBatchRunner, RaySettings

    monkeypatch.setitem(sys.modules, "ray", fake)
    tmp_path.mkdir()
    jobs_file = tmp_path / "p.txt"
    jobs_file.write_text("".join(p + "\n" for p in prompts))
    jobs, errors = load_jobs(jobs_file, defaults=JOB_DEFAULTS | {"num_inference_steps": 2})
    loader = settings.pop("load_generator", lambda load: tiny_generators("tiny"))
    runner = RayBatchRunner(jobs, errors, BatchSettings(out_dir=tmp_path / "out", progress=False),
                            RaySettings(load_generator=loader, **settings))
    summary = runner.run()
    records = {r["prompt"]: r for r in read_records(tmp_path / "out" / "manifest.jsonl")}
    return runner, summary, records


def test_scheduling_lost_results_bad_models_dead_clusters_and_sigint(tmp_path, monkeypatch, tiny_generators,
                                                                     single_torch_thread):
    import signal

    # a worker lost after writing its files: the job is done, not redone
    runner, summary, records = _fake_run(tmp_path / "a", monkeypatch, tiny_generators,
                                         FakeRay(dies_after_run={"b"}), ["a", "b", "c"], workers=1)
    assert summary.total["done"] == 3 and records["b"]["attempts"] == 1 and runner.workers_started == 2

    # a model that cannot be loaded fails its group, once per job, without retries
    def cannot_load(load):
        raise OSError("no such model")

    _, summary, records = _fake_run(tmp_path / "b", monkeypatch, tiny_generators, FakeRay(), ["a", "b"],
                                    load_generator=cannot_load)
    assert summary.total == {"done": 0, "skipped": 0, "failed": 2, "pending": 0}
    assert all("cannot load model tiny" in r["reason"] and "no such model" in r["reason"] for r in records.values())

    # no worker can start: a bounded number of tries, then every job fails with the reason
    runner, summary, records = _fake_run(tmp_path / "c", monkeypatch, tiny_generators, FakeRay(start_fails=True),
                                         ["a", "b"], workers=2, retries=1)
    assert summary.total["failed"] == 2 and runner.workers_started == 4
    assert all("no Ray worker could start" in r["reason"] for r in records.values())

    # Ctrl+C: no new job is given out, the running one is finished, the rest stays pending
    def interrupting(load):
        generator = tiny_generators("tiny")

        def once(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            return generator(*args, **kwargs)

        return type("Once", (), {"__call__": staticmethod(once)})()

    _, summary, records = _fake_run(tmp_path / "d", monkeypatch, tiny_generators, FakeRay(), ["a", "b", "c"],
                                    workers=1, load_generator=interrupting)
    assert summary.interrupted and summary.total == {"done": 1, "skipped": 0, "failed": 0, "pending": 2}
