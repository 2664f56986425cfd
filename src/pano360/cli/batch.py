"""``pano360 batch JOBS -o DIR``: many panoramas from a jobs file, resumable, on one GPU or many."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "generate many panoramas from a jobs file (resumable; many GPUs with accelerate launch, clusters with Ray)"
"""The one line ``pano360 --help`` shows for this command."""


RAY_EXTRA = 'pip install "pano360[ray]"'
RAY_FLAGS = {"address": "--address", "workers": "--workers", "gpus_per_worker": "--gpus-per-worker",
             "cpus_per_worker": "--cpus-per-worker", "outputs": "--outputs", "retries": "--retries"}


def register(subparsers) -> argparse.ArgumentParser:
    from ..defaults import DEFAULT_MODEL
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "batch",
        help=HELP,
        description=(
            "Generate one panorama per job into DIR: DIR/<prompt>-s<seed>-<id>.png with GPano XMP and a\n"
            "JSON sidecar, and DIR/manifest.jsonl with each job's status, file and reason on failure.\n\n"
            "JOBS is a text file (one prompt per line), a .jsonl file (one object per line: \"prompt\" and any\n"
            "generate option by its Python name, e.g. seed, seeds (\"0-9\"), height, width, size (\"512x1024\"),\n"
            "num_inference_steps/steps, guidance_scale, negative_prompt, method, preset, scheduler, model,\n"
            "lora, options {...} or method options such as stride) or a .csv file with those columns.\n"
            "The options below are defaults for every job; a job's own keys win.\n\n"
            "Re-running the same command skips finished jobs and redoes unfinished ones; finished images\n"
            "are never overwritten. Ctrl+C stops after the current job. A job with bad options is\n"
            "recorded as failed and the batch goes on (exit status 1 if any job failed).\n\n"
            "examples:\n"
            "  pano360 batch prompts.txt -o out --model tiny --steps 4 --repeat 3\n"
            "  pano360 batch jobs.jsonl -o out --seeds 0-9\n"
            "  accelerate launch --num_processes 4 -m pano360 batch jobs.jsonl -o out   # one shard per GPU\n"
            "  pano360 batch jobs.jsonl -o /shared/out --engine ray --address auto       # a Ray cluster"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("jobs", metavar="JOBS", help="jobs file: .txt (prompts), .jsonl or .csv")
    parser.add_argument("-o", "--out-dir", required=True, metavar="DIR", help="output folder (created if missing)")
    defaults = parser.add_argument_group("job defaults (a job's own keys win)")
    defaults.add_argument("--model", default=DEFAULT_MODEL,
                          help="Hub id, diffusers folder, .safetensors/.ckpt file, or tiny / tiny-sd2 / tiny-sdxl")
    defaults.add_argument("--adapter", default=None, metavar="PATH",
                          help="trained panorama adapter (folder or reference checkpoint) for every job")
    defaults.add_argument("--method", default=None, help="panorama method (default: circular, or the preset's)")
    defaults.add_argument("--preset", default=None, help="reference settings (see pano360 generate --help)")
    defaults.add_argument("--height", type=int, default=None, help="height in pixels (default: the model's native)")
    defaults.add_argument("--width", type=int, default=None, help="width in pixels (default: 2 x height)")
    defaults.add_argument("--steps", type=int, default=None, help="denoising steps (default 50)")
    defaults.add_argument("--guidance", type=float, default=None, help="guidance scale (default 7.5)")
    defaults.add_argument("--negative-prompt", default=None, help="what to avoid")
    defaults.add_argument("--scheduler", default=None, help="sampler (default ddim)")
    defaults.add_argument("--seed", type=int, default=None, help="seed of jobs without one (default 0)")
    defaults.add_argument("--seeds", default=None, metavar="RANGE",
                          help="one job per seed for every line without its own seeds: 0-9, 1,4,9")
    defaults.add_argument("--repeat", type=int, default=1,
                          help="N images per line with seeds seed, seed+1, ... (ignored where seeds are listed)")
    from .generate import add_method_options

    add_method_options(parser)  # the same method flags as generate, from the methods' declarations
    run_group = parser.add_argument_group("running (does not change the images)")
    run_group.add_argument("--format", dest="image_format", default="png", choices=["png", "jpg"], help="image format")
    run_group.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="weights dtype")
    run_group.add_argument("--device", default="auto",
                           help="auto (under accelerate launch: cuda:LOCAL_RANK), cpu, cuda, cuda:N or mps")
    run_group.add_argument("--no-metadata", action="store_true", help="do not embed GPano 360 XMP")
    run_group.add_argument("--quiet", action="store_true", help="no progress bar")
    run_group.add_argument("--engine", default="local", choices=["local", "ray"],
                           help="local: this process (one shard per process under accelerate launch); ray: a pool of "
                                f"Ray actors, one model each (needs: {RAY_EXTRA})")
    ray_group = parser.add_argument_group("Ray engine (--engine ray; docs/batch_serve.md)")
    ray_group.add_argument("--address", default=None,
                           help="Ray cluster: auto (started with `ray start` here), ray://HOST:10001, HOST:6379 "
                                "(default: RAY_ADDRESS, else a cluster running here, else a new Ray on this machine)")
    ray_group.add_argument("--workers", type=int, default=None, metavar="N",
                           help="actors, each loading the model once (default: as many as the cluster's GPUs, or "
                                "CPUs, hold; at most one per job)")
    ray_group.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                           help="GPUs each actor reserves; 0.5 puts two on a GPU (default: 1 if the cluster has GPUs "
                                "and --device is not cpu, else 0)")
    ray_group.add_argument("--cpus-per-worker", type=float, default=None, metavar="C",
                           help="CPUs each actor reserves (default 1)")
    ray_group.add_argument("--outputs", default=None, choices=["auto", "shared", "driver"],
                           help="shared: workers write into DIR (it must be mounted on every node); driver: images come "
                                "back through the object store and this process writes them; auto (default): shared "
                                "for the workers that see DIR, driver for the others")
    ray_group.add_argument("--retries", type=int, default=None, metavar="K",
                           help="tries after the first before a job is recorded as failed; a job whose worker died "
                                "counts one try (default 2)")
    parser.set_defaults(func=run)
    return parser


def job_defaults(args: argparse.Namespace) -> dict:
    """The CLI's job defaults, by the Python API's names (None = not given)."""
    return {"model": args.model, "adapter": args.adapter, "method": args.method, "preset": args.preset, "height": args.height,
            "width": args.width, "num_inference_steps": args.steps, "guidance_scale": args.guidance,
            "negative_prompt": args.negative_prompt, "scheduler": args.scheduler, "seed": args.seed,
            "seeds": args.seeds}


def cli_method_options(args: argparse.Namespace) -> dict:
    """Method options given as flags (parsed as ``generate`` parses them), for every job that does not
    set them itself. They need ``--method`` (or a ``--preset``) to say whose options they are."""
    from ..errors import InvalidInputError
    from ..methods import cli_options
    from ..presets import get_preset
    from .generate import OPTION_PREFIX, method_options

    given = [flag for flag in cli_options() if getattr(args, OPTION_PREFIX + flag[2:].replace("-", "_"), None)
             is not None]
    if not given:
        return {}
    method = args.method or (get_preset(args.preset).method if args.preset else None)
    if method is None:
        raise InvalidInputError(f"{', '.join(given)} on the command line need --method (or --preset); options of "
                                "single jobs go in the jobs file")
    return method_options(argparse.Namespace(**{**vars(args), "method": method}))


def run(args: argparse.Namespace) -> int:
    from ..batch import BatchRunner, BatchSettings, load_jobs, process_rank
    from ..errors import InvalidInputError

    if args.repeat < 1:
        raise InvalidInputError(f"--repeat must be at least 1, got {args.repeat}")
    ray_settings = ray_engine_settings(args)  # before reading jobs: a missing extra costs nothing
    if args.seeds is not None:
        from ..batch.jobs import parse_seeds

        parse_seeds(args.seeds)  # a bad range is the user's typo, not a failed job
    defaults = job_defaults(args) | {"options": cli_method_options(args)}
    jobs, errors = load_jobs(args.jobs, defaults=defaults, repeat=args.repeat)
    if not jobs and not errors:
        raise InvalidInputError(f"{args.jobs} holds no jobs; write one prompt (or JSON object) per line")
    rank, world_size, local_rank = process_rank()
    settings = BatchSettings(out_dir=Path(args.out_dir), image_format=args.image_format, device=args.device,
                             dtype=args.dtype, metadata=not args.no_metadata, progress=not args.quiet, rank=rank,
                             world_size=world_size, local_rank=local_rank, jobs_file=str(args.jobs))
    if rank == 0 and not args.quiet:
        where = f" on {world_size} processes" if world_size > 1 else " on Ray" if ray_settings else ""
        print(f"pano360 batch: {len(jobs)} jobs{where} -> {args.out_dir}", file=sys.stderr)
    if ray_settings is not None:
        from ..batch.ray_engine import RayBatchRunner

        summary = RayBatchRunner(jobs, errors, settings, ray_settings).run()
    else:
        summary = BatchRunner(jobs, errors, settings).run()
    prefix = f"rank {rank}: " if world_size > 1 else ""
    print(f"{prefix}{summary.describe(world_size)}", flush=True)
    if summary.interrupted:
        return 130
    return 1 if summary.shard.get("failed") else 0


def ray_engine_settings(args: argparse.Namespace):
    """``RaySettings`` for ``--engine ray`` (Ray imported and settings checked), ``None`` for the local
    engine, which refuses the Ray flags instead of ignoring them."""
    from ..errors import InvalidInputError

    given = {key: getattr(args, key) for key in RAY_FLAGS if getattr(args, key, None) is not None}
    if args.engine != "ray":
        if given:
            raise InvalidInputError(f"{', '.join(RAY_FLAGS[key] for key in given)} only apply with --engine ray; "
                                    "add --engine ray or leave them out")
        return None
    from ..batch.ray_engine import RaySettings, require_ray

    require_ray()
    settings = RaySettings(**given)
    settings.check()
    return settings
