"""``pano360 caption FOLDER``: write captions for training panoramas with an image-to-text model."""

from __future__ import annotations

import argparse
import os

HELP = "caption a folder of panoramas for training (BLIP-2 or any image-to-text model)"
"""The one line ``pano360 --help`` shows for this command."""


def register(subparsers) -> argparse.ArgumentParser:
    from ..captioning import DEFAULT_CAPTIONER
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "caption",
        help=HELP,
        description=(
            "Caption every 2:1 panorama in FOLDER (recursively) and write <image>.txt beside it, or one\n"
            "metadata.jsonl; with --views also the 8 horizon views (yaw 0..315 in 45 degree steps, FoV 90),\n"
            "the per-view prompts MVDiffusion trains on. Existing captions are kept unless --overwrite.\n\n"
            "examples:\n"
            "  pano360 caption panos/ --prompt \"a 360-degree view of\" --prefix \"a 360 panorama of \"\n"
            "  pano360 caption panos/ --model tiny --output jsonl --views      # offline smoke run"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("folder", help="folder of equirectangular images")
    parser.add_argument("--model", default=DEFAULT_CAPTIONER,
                        help="image-to-text model id or folder (tiny = random test captioner)")
    parser.add_argument("--prompt", default=None,
                        help="text the model continues (BLIP-2 conditional captioning), e.g. 'a 360-degree view of'")
    parser.add_argument("--prefix", default="", help="text put before every written caption")
    parser.add_argument("--views", action="store_true", help="also caption the 8 horizon views")
    parser.add_argument("--output", choices=["txt", "jsonl"], default="txt",
                        help="txt files beside the images, or one metadata.jsonl")
    parser.add_argument("--overwrite", action="store_true", help="replace existing captions")
    parser.add_argument("--batch-size", type=int, default=4, help="images per model call")
    parser.add_argument("--max-new-tokens", type=int, default=30, help="caption length limit in tokens")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    parser.add_argument("--cache-dir", default=None, help="Hugging Face cache folder")
    parser.add_argument("--offline", action="store_true", help="use only models already in the cache")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)
    return parser


def run(args) -> int:
    from ..captioning import LazyCaptioner, caption_folder, find_panoramas, load_captioner
    from ..errors import InvalidInputError

    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise InvalidInputError("--batch-size and --max-new-tokens must be at least 1")
    folder = os.path.expanduser(args.folder)
    if not os.path.isdir(folder):
        raise InvalidInputError(f"{args.folder!r} is not a folder of panoramas")
    if not os.access(folder, os.W_OK):
        raise InvalidInputError(f"cannot write captions into {args.folder!r}; make it writable")
    find_panoramas(folder)  # every image checked (2:1, readable) before the model loads
    captioner = LazyCaptioner(lambda: load_captioner(  # loaded only if some panorama needs a caption
        args.model, device=args.device, dtype=args.dtype, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
        cache_dir=args.cache_dir, local_files_only=args.offline))
    summary = caption_folder(folder, captioner, views=args.views, prefix=args.prefix, output=args.output,
                             overwrite=args.overwrite, batch_size=args.batch_size, progress=not args.quiet)
    if not args.quiet:
        kept = f"; kept the existing captions of {len(summary.kept)} (use --overwrite to replace them)" \
            if summary.kept else ""
        print(f"captioned {len(summary.written)} panorama(s){kept}")
    return 0
