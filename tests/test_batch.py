"""``pano360 batch``: jobs files, stable job ids, sharding, manifests, resume after SIGKILL, SIGINT, and
``accelerate launch`` with two processes producing exactly the single-process images."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pano360
from pano360.batch import BatchRunner, BatchSettings, load_jobs, shard
from pano360.batch.jobs import expand_entry, parse_seeds
from pano360.batch.manifest import ManifestLog, merge_manifest, read_records
from pano360.batch.runner import call_arguments
from pano360.errors import InvalidInputError

TINY = {"model": "tiny", "height": 32, "width": 64, "num_inference_steps": 2}


# --- jobs files -------------------------------------------------------------------------------------

def test_text_jsonl_and_csv_give_the_same_jobs(tmp_path):
    (tmp_path / "p.txt").write_text("# prompts\na red room\n\na blue sky\n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a red room"}\n"a blue sky"\n')
    (tmp_path / "p.csv").write_text("prompt,seed\na red room,\na blue sky,0\n")
    ids = [[job.id for job in load_jobs(tmp_path / name, defaults=TINY, repeat=2)[0]]
           for name in ("p.txt", "p.jsonl", "p.csv")]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 4 and len(set(ids[0])) == 4
    jobs, errors = load_jobs(tmp_path / "p.txt", defaults=TINY, repeat=2)
    assert not errors and [(j.prompt, j.seed) for j in jobs] == [
        ("a red room", 0), ("a red room", 1), ("a blue sky", 0), ("a blue sky", 1)]
    assert jobs[0].source == "p.txt:2" and jobs[0].file_stem == f"a-red-room-s0-{jobs[0].id[:8]}"


def test_keys_aliases_and_options_normalise_to_one_job():
    base = {"prompt": "x", "model": "tiny", "method": "multidiffusion", "num_inference_steps": 4,
            "height": 32, "width": 64, "guidance_scale": 5.0, "seed": 3, "options": {"stride": 4}}
    same = [
        {"prompt": "x", "model": "tiny", "method": "multidiffusion", "steps": 4, "size": "32x64", "guidance": 5,
         "seed": 3, "stride": 4},
        {"prompt": " x ", "model": "tiny", "method": "multidiffusion", "num-inference-steps": "4", "height": 32.0,
         "width": 64, "guidance_scale": "5", "seeds": "3", "options": {"stride": 4}},
    ]
    [reference] = expand_entry(base, {})
    for entry in same:
        assert expand_entry(entry, {}) == [reference]
    # the job's own keys win over the batch defaults; the job's own seed wins over the batch's seeds
    assert expand_entry({"prompt": "x", "seed": 9}, {"seeds": "0-2", "num_inference_steps": 7})[0]["seed"] == 9
    assert [s["seed"] for s in expand_entry({"prompt": "x"}, {"seeds": "0-2"})] == [0, 1, 2]
    assert expand_entry({"prompt": "x", "steps": 3}, {"num_inference_steps": 7})[0]["num_inference_steps"] == 3
    load, call = call_arguments(reference)
    assert load == {"model": "tiny"}
    assert call == {"prompt": "x", "method": "multidiffusion", "height": 32, "width": 64, "num_inference_steps": 4,
                    "guidance_scale": 5.0, "seed": 3, "stride": 4}
    _, preset_call = call_arguments(expand_entry({"prompt": "x", "preset": "multidiffusion-paper", "width": 1024}, {})[0])
    assert preset_call["method"] == "multidiffusion" and preset_call["width"] == 1024 and preset_call["stride"] == 8


def test_seed_ranges():
    assert parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("1,4,9") == [1, 4, 9] and parse_seeds([2, "5-6"]) == [2, 5, 6]
    for bad, message in (("3-1", "backwards"), ("a-b", "cannot read seeds"), ("0-999999", "more than")):
        with pytest.raises(InvalidInputError, match=message):
            parse_seeds(bad)


def test_bad_entries_become_failed_records_not_exceptions(tmp_path):
    path = tmp_path / "jobs.jsonl"
    path.write_text('{"prompt": "ok"}\nnot json\n[1, 2]\n{"seed": 1}\n{"prompt": "x", "steps": "many"}\n'
                    '{"prompt": "ok"}\n')
    jobs, errors = load_jobs(path, defaults=TINY)
    assert [job.prompt for job in jobs] == ["ok"]  # the duplicate line is the same job: kept once
    reasons = {error.source: error.reason for error in errors}
    assert set(reasons) == {"jobs.jsonl:2", "jobs.jsonl:3", "jobs.jsonl:4", "jobs.jsonl:5"}
    assert "not valid JSON" in reasons["jobs.jsonl:2"] and "object" in reasons["jobs.jsonl:3"]
    assert "prompt" in reasons["jobs.jsonl:4"] and "whole number" in reasons["jobs.jsonl:5"]
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_jobs(tmp_path / "missing.txt")
    (tmp_path / "bad.csv").write_text("text,seed\nx,1\n")
    with pytest.raises(InvalidInputError, match="'prompt'"):
        load_jobs(tmp_path / "bad.csv")


# --- sharding and manifests -----------------------------------------------------------------------

def test_shards_cover_every_job_once_stably_and_balanced_per_model(tmp_path):
    path = tmp_path / "jobs.jsonl"
    lines = [json.dumps({"prompt": f"p{i}", "model": "tiny" if i % 3 else "tiny-sd2"}) for i in range(23)]
    path.write_text("\n".join(lines) + "\n")
    jobs, _ = load_jobs(path, repeat=2)
    for world in (1, 2, 3, 5):
        shards = [shard(jobs, rank, world) for rank in range(world)]
        ids = [job.id for part in shards for job in part]
        assert sorted(ids) == sorted(job.id for job in jobs) and len(ids) == len(set(ids))
        again, _ = load_jobs(path, repeat=2)
        assert [[j.id for j in shard(again, r, world)] for r in range(world)] == [[j.id for j in p] for p in shards]
        for group in {job.model_group for job in jobs}:
            sizes = [sum(job.model_group == group for job in part) for part in shards]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(InvalidInputError):
        shard(jobs, 2, 2)


def test_manifest_log_survives_a_cut_line_and_merges_latest_per_job(tmp_path):
    log_file = tmp_path / "manifest.d" / "rank0-of1.jsonl"
    with ManifestLog(log_file) as log:
        log.append({"job": "a", "status": "failed", "reason": "r"})
        log.append({"job": "a", "status": "done", "file": "a.png"})
    with open(log_file, "a") as handle:
        handle.write('{"job": "b", "stat')  # a kill in the middle of a line
    assert [r["job"] for r in read_records(log_file)] == ["a", "a"]
    with ManifestLog(log_file) as log:  # reopening cuts the partial line before appending
        log.append({"job": "b", "status": "done", "file": "b.png"})
    assert log_file.read_text().count("\n") == 3 and all(json.loads(l) for l in log_file.read_text().splitlines())
    merged = read_records(merge_manifest(tmp_path, [{"job": j, "index": i} for i, j in enumerate("abc")]))
    assert [(r["job"], r["status"]) for r in merged] == [("a", "done"), ("b", "done"), ("c", "pending")]


# --- the runner in-process --------------------------------------------------------------------------

def test_runner_generates_skips_fails_and_stops_on_sigint(tmp_path, tiny_generators, single_torch_thread):
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text('{"prompt": "a"}\n{"prompt": "b", "method": "multidiffusion", "stride": 3}\n'
                         '{"prompt": "c", "height": 33}\n{"prompt": "d"}\n{"prompt": "e"}\n')
    out = tmp_path / "out"
    loads = []

    def load(load_kwargs):
        loads.append(load_kwargs)
        return tiny_generators("tiny")

    jobs, errors = load_jobs(jobs_file, defaults=TINY)
    summary = BatchRunner(jobs, errors, BatchSettings(out_dir=out, progress=False), load).run()
    assert summary.total == {"done": 3, "skipped": 0, "failed": 2, "pending": 0} and len(loads) == 1
    records = {r["prompt"]: r for r in read_records(out / "manifest.jsonl")}
    assert "stride 3" in records["b"]["reason"] and "multiple of 8" in records["c"]["reason"]
    sidecar = json.loads((out / (records["a"]["file"] + ".json")).read_text())
    assert sidecar["batch"]["job_id"] == records["a"]["job"] and sidecar["seed"] == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}

    # a re-run loads no model and touches nothing
    summary = BatchRunner(jobs, errors, BatchSettings(out_dir=out, progress=False), load).run()
    assert summary.total["skipped"] == 3 and len(loads) == 1
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamps

    # SIGINT during a job: that job is finished, then the batch stops (a real signal to this process)
    more, _ = load_jobs(jobs_file, defaults=TINY | {"seed": 10})
    generator = tiny_generators("tiny")

    class Interrupting:
        backbone = generator.backbone
        controlnet = None

        def __call__(self, *args, **kwargs):
            if not getattr(self, "sent", False):
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)
            return generator(*args, **kwargs)

    summary = BatchRunner(more, [], BatchSettings(out_dir=out, progress=False), lambda _: Interrupting()).run()
    assert summary.interrupted and summary.shard["done"] == 1
    assert summary.total["pending"] == 2 and "resume" in summary.describe()
    assert not list(out.glob(".*.tmp"))


# --- processes: SIGKILL and resume; accelerate launch -----------------------------------------------

N_JOBS = 6
STEPS = 4


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "pano360", *args]


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error")
    package_root = str(Path(pano360.__file__).resolve().parents[1])  # this checkout's pano360, also under -m
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    return env


def _batch_args(jobs_file, out, steps=STEPS):
    return ["batch", str(jobs_file), "-o", str(out), "--model", "tiny", "--height", "32", "--width", "64",
            "--steps", str(steps), "--repeat", "3", "--quiet", "--device", "cpu"]


def _finished(out: Path) -> dict[str, tuple[bytes, int]]:
    """Images whose sidecar (written last) exists: name -> (bytes, mtime in ns)."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.glob("*.png"))
            if p.with_name(p.name + ".json").exists()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_generators, single_torch_thread):
    """An uninterrupted run of the 6 jobs, in this process (the CLI runs below must match it byte for byte)."""
    folder = tmp_path_factory.mktemp("batch-reference")
    jobs_file = folder / "prompts.txt"
    jobs_file.write_text("a red room\na blue sky\n")
    jobs, errors = load_jobs(jobs_file, defaults={"model": "tiny", "height": 32, "width": 64,
                                                  "num_inference_steps": STEPS}, repeat=3)
    summary = BatchRunner(jobs, errors, BatchSettings(out_dir=folder / "out", progress=False),
                          lambda _: tiny_generators("tiny")).run()
    assert summary.total["done"] == N_JOBS
    images = _finished(folder / "out")
    assert len(images) == N_JOBS
    return jobs_file, {name: data for name, (data, _) in images.items()}


def test_sigkill_then_rerun_gives_the_uninterrupted_images(reference, tmp_path):
    jobs_file, expected = reference
    out = tmp_path / "out"
    process = subprocess.Popen(_cli(*_batch_args(jobs_file, out)), env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None and len(list(out.glob("*.json"))) < 2:
        time.sleep(0.005)
    assert process.poll() is None, "the batch ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    kept = _finished(out)
    assert 2 <= len(kept) < N_JOBS
    # what a kill in the middle of writing can leave for an unfinished job: a temporary file, and an
    # image whose sidecar was never written
    unfinished = sorted(set(expected) - set(kept))
    (out / f".{unfinished[0]}.x1y2z3.tmp").write_bytes(b"partial")
    (out / unfinished[-1]).write_bytes(b"not the final image")
    stale = out / ".manifest.jsonl.a1b2c3.tmp"  # a manifest merge cut short, a while ago
    stale.write_text("{")
    os.utime(stale, (time.time() - 120, time.time() - 120))

    rerun = subprocess.run(_cli(*_batch_args(jobs_file, out)), check=False, env=_env(), capture_output=True, text=True,
                           timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{N_JOBS - len(kept)} generated, {len(kept)} finished earlier, 0 failed, 0 pending" in rerun.stdout
    after = _finished(out)
    assert {name: data for name, (data, _) in after.items()} == expected
    assert {name: after[name] for name in kept} == kept  # same bytes and mtimes
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*expected, *(n + ".json" for n in expected), "manifest.jsonl", "manifest.d"])
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    statuses = [r["status"] for r in read_records(out / "manifest.jsonl")]
    assert sorted(statuses) == sorted(["skipped"] * len(kept) + ["done"] * (N_JOBS - len(kept)))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_accelerate_launch_two_processes_makes_the_single_process_images(reference, tmp_path):
    jobs_file, expected = reference
    out = tmp_path / "out"
    # accelerate's --cpu starts one process (several need mpirun); --multi_gpu starts N through torchrun,
    # which works on CPUs too, and --device cpu keeps every rank there.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(_free_port()), "-m", "pano360", *_batch_args(jobs_file, out)]
    done = subprocess.run(command, check=False, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    images = _finished(out)
    assert {name: data for name, (data, _) in images.items()} == expected
    assert sorted(p.name for p in (out / "manifest.d").iterdir()) == ["rank0-of2.jsonl", "rank1-of2.jsonl"]
    records = read_records(out / "manifest.jsonl")
    assert len(records) == N_JOBS and {r["status"] for r in records} == {"done"}
    ranks = [r["rank"] for r in records]
    assert sorted(ranks) == [0, 0, 0, 1, 1, 1]
    assert "whole batch so far: 6 jobs: 6 generated" in done.stdout  # the last rank merged everything


def test_cli_errors_before_any_model(tmp_path, capsys):
    from pano360.cli.main import main

    (tmp_path / "empty.txt").write_text("# nothing\n")
    assert main(["batch", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "o")]) == 2
    assert "holds no jobs" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "o"), "--seeds", "5-1"]) == 2
    assert "backwards" in capsys.readouterr().err
    (tmp_path / "p.txt").write_text("a\nb\n")
    assert main(["batch", str(tmp_path / "p.txt"), "-o", str(tmp_path / "o"), "--stride", "8"]) == 2
    assert "need --method" in capsys.readouterr().err
    # method flags as in generate, for every job; checked per job before any model loads
    assert main(["batch", str(tmp_path / "p.txt"), "-o", str(tmp_path / "o"), "--model", "tiny", "--quiet",
                 "--method", "multidiffusion", "--stride", "3", "--height", "32", "--width", "64"]) == 1
    assert "2 jobs: 0 generated, 0 finished earlier, 2 failed" in capsys.readouterr().out
    records = read_records(tmp_path / "o" / "manifest.jsonl")
    assert all("stride 3" in r["reason"] for r in records) and not list((tmp_path / "o").glob("*.png"))
    shutil.rmtree(tmp_path / "o", ignore_errors=True)
