"""``pano360 eval``: the field's panorama metrics on a folder, as JSON plus an HTML report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DESCRIPTION = """\
Score a folder of panoramas with the metrics of PanFusion/UniPano (FID, IS, CLIP score, rolled,
random-view, seam-view and horizon-view variants, FAED), of SyncDiffusion (Intra-LPIPS,
Intra-Style-L, Mean-CLIP-S, crop FID/KID, Mean-GIQA) and geometry-aware ones (Discontinuity Score,
OmniFID). Writes OUTPUT/metrics.json and OUTPUT/report.html.

Metrics that need a reference set (--reference), prompts (--prompts or pano360 sidecar JSON files)
or full 2:1 panoramas are left out, with the reason, unless named in --metrics, where a missing
input is an error. Weights are downloaded once into ~/.cache/pano360/weights ($PANO360_WEIGHTS_DIR);
--weights-dir reads them from a folder instead, offline. See docs/metrics.md."""


HELP = "score a folder of panoramas (FID, FAED, CLIP, Intra-LPIPS, seam metrics, ...)"
"""The one line ``pano360 --help`` shows for this command."""


def register(subparsers) -> argparse.ArgumentParser:
    from ..metrics.suite import GROUPS, METRICS
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "eval", help=HELP,
        description=DESCRIPTION, formatter_class=HelpFormatter,
    )
    parser.add_argument("generated", metavar="GENERATED", help="folder of generated panoramas (.png/.jpg/.webp)")
    parser.add_argument("--reference", metavar="REF", default=None,
                        help="folder of reference panoramas/images, for FID, KID, FAED, OmniFID and GIQA")
    parser.add_argument("--prompts", metavar="FILE", default=None,
                        help="prompts for CLIP scores: .txt with one line per image in file-name order, or .json "
                             "mapping file names to a prompt or {\"prompt\": ..., \"views\": [8 captions]}; "
                             "None: each image's pano360 sidecar JSON")
    parser.add_argument("--metrics", nargs="+", default=["auto"], metavar="NAME",
                        help=f"metrics or groups to compute; 'auto' = all the inputs allow. Groups: "
                             f"{', '.join(GROUPS)}. Metrics: {', '.join(METRICS)}")
    parser.add_argument("-o", "--output", default=None, metavar="DIR",
                        help="folder for metrics.json and report.html; None: GENERATED/eval")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing metrics.json/report.html")
    parser.add_argument("--size", default=None, metavar="HxW",
                        help="resize every image to HEIGHTxWIDTH first (area filter when shrinking), e.g. 512x1024 "
                             "as PanFusion; None: use the images as they are (one size per folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random view directions")
    parser.add_argument("--num-views", type=int, default=20, help="random 90° views per panorama (crop-FID/IS)")
    parser.add_argument("--num-seam-views", type=int, default=20, help="seam-centred views per panorama (seam-FID/IS)")
    parser.add_argument("--crop-size", type=int, default=None,
                        help="square crop of the SyncDiffusion metrics in pixels; None: 512, or the image height "
                             "if lower")
    parser.add_argument("--fid-resize", choices=["tf1", "pytorch-fid", "clean"], default="tf1",
                        help="Inception pre-processing of the PanFusion FIDs/ISs: tf1 = torch-fidelity/torchmetrics "
                             "(as PanFusion), pytorch-fid, or clean = clean-fid")
    parser.add_argument("--kid-subsets", type=int, default=100, help="KID: number of random subsets")
    parser.add_argument("--kid-subset-size", type=int, default=1000, help="KID: images per subset (at most)")
    parser.add_argument("--giqa-k", type=int, default=8, help="KNN-GIQA: number of nearest reference images")
    parser.add_argument("--batch-size", type=int, default=16, help="images per network call")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--weights-dir", default=None, metavar="DIR",
                        help="offline folder with the weight files (names as published, see docs/metrics.md) and "
                             "clip-vit-base-patch16/; nothing is downloaded when given")
    parser.add_argument("--random-weights", action="store_true",
                        help="smoke test: random networks, Inception at 75 px, tiny CLIP; the numbers mean nothing")
    parser.add_argument("--no-report", action="store_true", help="write metrics.json only")
    parser.add_argument("--quiet", action="store_true", help="no progress bars; print only the output paths")
    parser.set_defaults(func=run)
    return parser


def _check_positive(name: str, value: int | None) -> None:
    from ..errors import InvalidInputError

    if value is not None and value < 1:
        raise InvalidInputError(f"{name} must be at least 1, got {value}")


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..io.atomic import atomic_write_text
    from ..io.paths import check_output_targets
    from ..metrics.inputs import parse_size
    from ..metrics.report import render_report
    from ..metrics.suite import METRICS, EvalConfig, evaluate

    for name in ("num_views", "num_seam_views", "crop_size", "kid_subsets", "kid_subset_size", "giqa_k", "batch_size"):
        _check_positive("--" + name.replace("_", "-"), getattr(args, name))
    output = Path(args.output) if args.output else Path(args.generated) / "eval"
    json_path, html_path = output / "metrics.json", output / "report.html"
    targets = [json_path] + ([] if args.no_report else [html_path])
    for flag, folder in (("GENERATED", args.generated), ("--reference", args.reference)):
        if folder is not None and not Path(folder).is_dir():
            what = "is a file" if Path(folder).is_file() else "does not exist"
            raise InvalidInputError(f"{flag} {folder} {what}; give the folder of images")
    if args.prompts is not None and not Path(args.prompts).is_file():
        raise InvalidInputError(f"--prompts {args.prompts} does not exist or is not a file; check the path")
    if args.reference and Path(args.reference).resolve() == Path(args.generated).resolve():
        raise InvalidInputError("--reference is the GENERATED folder itself; point it at the reference images")
    # fail before hours of computing, not after: names free, -o folder creatable and writable
    check_output_targets(targets, args.overwrite, flag="-o/--output")
    config = EvalConfig(
        metrics=args.metrics,
        seed=args.seed,
        num_random_views=args.num_views,
        num_seam_views=args.num_seam_views,
        fid_resize=args.fid_resize,
        kid_subsets=args.kid_subsets,
        kid_subset_size=args.kid_subset_size,
        giqa_k=args.giqa_k,
        crop_size=args.crop_size,
        batch_size=args.batch_size,
        device=args.device,
        weights_dir=args.weights_dir,
        random_weights=args.random_weights,
        progress=not args.quiet,
    )
    result = evaluate(args.generated, args.reference, args.prompts, config, size=parse_size(args.size))
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    page = None if args.no_report else render_report(result, result.images)
    atomic_write_text(json_path, text, overwrite=args.overwrite)
    if page is not None:
        atomic_write_text(html_path, page, overwrite=args.overwrite)
    if not args.quiet:
        width = max(len(METRICS[k].label) for k in result.metrics)
        for key, entry in result.metrics.items():
            value = entry.get("value")
            std = entry.get("std")
            shown = "–" if value is None else f"{value:.6g}"
            if std is not None:
                shown += f" ± {std:.3g}"
            print(f"{METRICS[key].label:<{width}}  {shown}")
        for key, reason in result.skipped.items():
            print(f"{METRICS[key].label:<{width}}  (skipped: {reason})")
    print(json_path)
    if page is not None:
        print(html_path)
    return 0
