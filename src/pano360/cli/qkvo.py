"""``pano360 qkvo DATA -o OUT``: UniPano's q/k vs v/o analysis (isolation and switching experiments)."""

from __future__ import annotations

import argparse

HELP = "UniPano's q/k vs v/o LoRA analysis (isolation and switching experiments)"
"""The one line ``pano360 --help`` shows for this command."""

DESCRIPTION = """\
UniPano's analysis of the attention projections as a tool. On the panoramas in DATA (a folder with
captions, a Matterport3D skybox tree or hf:NAME, as for 'pano360 train'):

  isolation  train one LoRA per subset (--subsets, default q k v o qkvo), same data, steps and seed;
  switching  sample with the all-four LoRA with only some subsets kept on (--switches, default
             qkvo vo qk none).

Every variant generates panoramas from the captions of the last --eval-count panoramas, which are held
out of training and serve as the reference set, and is scored with the project's metrics (--metrics,
default FAED, FID, CLIP score) plus a perspective retention measure: the mean LPIPS distance between the
variant's and the base model's perspective image (native size, no wraparound) from the same caption and
seed. Writes OUT/results.json, OUT/report.html (tables, bar charts, image grids), the LoRAs in
OUT/loras/ and every image under OUT/variants/. See docs/methods.md (UniPano).

Transformers (FLUX.1, SD3, e.g. --model tiny-flux): a letter covers both streams of the joint attention
(q = to_q + add_q_proj, ..., o = to_out.0 + to_add_out; FLUX single-stream o = the fused proj_out).
Training them needs a trainer that trains transformers; --loras DIR takes LoRAs trained elsewhere
(DIR/<subset>/ pano360 adapter folders) and skips training, for any model."""


def register(subparsers) -> argparse.ArgumentParser:
    from ..analysis.qkvo import DEFAULT_METRICS, DEFAULT_SUBSETS, DEFAULT_SWITCHES
    from ..defaults import DEFAULT_MODEL
    from .main import HelpFormatter

    parser = subparsers.add_parser("qkvo", help=HELP,
                                   description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("data", metavar="DATA", help="training panoramas with captions (as for pano360 train)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the run's files")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="base model: Hub id, diffusers folder, .safetensors file, or tiny / tiny-sd2 / tiny-sdxl")
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps per LoRA")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank")
    parser.add_argument("--subsets", nargs="+", default=list(DEFAULT_SUBSETS), metavar="SUBSET",
                        help="LoRAs to train for the isolation experiment: letters from q, k, v, o")
    parser.add_argument("--switches", nargs="*", default=list(DEFAULT_SWITCHES), metavar="SUBSET",
                        help="subsets of the all-four LoRA kept on in the switching experiment ('none' = base "
                             "model); give no value to skip the experiment")
    parser.add_argument("--loras", default=None, metavar="DIR",
                        help="use these trained LoRAs (DIR/<subset>/ adapter folders: each --subsets entry and qkvo "
                             "for --switches) instead of training them")
    parser.add_argument("--learning-rate", type=float, default=2e-4, help="LoRA learning rate (UniPano: 2e-4)")
    parser.add_argument("--resolution", type=int, default=512, help="panorama height in pixels (width = 2x)")
    parser.add_argument("--eval-count", type=int, default=8,
                        help="panoramas held out of training; their captions are generated from, their images "
                             "are the reference set")
    parser.add_argument("--eval-steps", type=int, default=50, help="sampling steps of the generated images")
    parser.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance of the samples")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), metavar="NAME",
                        help="metrics of 'pano360 eval' for the panoramas")
    parser.add_argument("--seed", type=int, default=0, help="seed of training and sampling (the same for every variant)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--weights-dir", default=None, metavar="DIR",
                        help="offline folder with the metric networks' weights (see docs/metrics.md)")
    parser.add_argument("--random-metric-weights", action="store_true",
                        help="smoke test: random metric networks; the numbers mean nothing")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run in OUT")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; print only the report path")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..analysis.qkvo import QKVOConfig, run_qkvo, subset_name

    config = QKVOConfig(
        data=args.data, output=args.output, model=args.model, steps=args.steps, rank=args.rank,
        subsets=tuple(args.subsets), switches=tuple(args.switches), seed=args.seed, resolution=args.resolution,
        eval_count=args.eval_count, num_inference_steps=args.eval_steps, guidance_scale=args.guidance_scale,
        metrics=tuple(args.metrics), device=args.device, weights_dir=args.weights_dir,
        random_metric_weights=args.random_metric_weights, training={"learning_rate": args.learning_rate},
        loras=args.loras,
        overwrite=args.overwrite, progress=not args.quiet,
    )
    record = run_qkvo(config)
    if not args.quiet:
        for experiment in ("isolation", "switching"):
            for variant, scores in record[experiment].items():
                values = ", ".join(f"{k} {v:.4g}" for k, v in scores["metrics"].items() if v is not None)
                print(f"{experiment} {subset_name(variant) if variant else 'none'}: {values}")
    from pathlib import Path

    print(Path(args.output) / "report.html")
    return 0
