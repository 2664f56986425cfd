"""``pano360 upscale IN --scale 2|4 -o OUT``: seamless tiled upscaling of a panorama (to 8K and beyond)."""

from __future__ import annotations

import argparse
import sys

HELP = "upscale a panorama 2x/4x (or to a width such as 8192) without reopening the seam"


def register(subparsers) -> argparse.ArgumentParser:
    from .main import HelpFormatter
    from .sphere_common import add_model_arguments, add_output_arguments, add_sampling_arguments

    parser = subparsers.add_parser(
        "upscale",
        help=HELP,
        description=(
            "Bicubic upscale, then img2img refinement with the panorama's model family in tiles that wrap\n"
            "across the 0/360 seam and blend where they overlap; the VAE encode and decode are tiled and wrap\n"
            "too. Memory is bounded by the tile, not the image. GPano metadata is written for the new size\n"
            "(a cylindrical strip stays a strip).\n\n"
            "examples:\n"
            "  pano360 upscale pano.png --scale 4 -o pano_4x.png          # prompt from pano.png.json if present\n"
            '  pano360 upscale pano.png --to 8192 --prompt "a misty forest" --strength 0.25 -o pano_8k.png\n'
            "  pano360 upscale pano.png --scale 2 --model tiny --steps 4 -o big.png     # offline smoke run"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("input", metavar="IN", help="equirectangular panorama (PNG or JPEG; 2:1 or a wider strip)")
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--scale", type=int, default=None, help="upscaling factor: 2 or 4")
    size.add_argument("--to", dest="target_width", type=int, default=None, metavar="WIDTH",
                      help="target width in pixels (aspect kept), e.g. 8192")
    parser.add_argument("--prompt", default=None,
                        help="what the panorama shows (default: from IN's sidecar, e.g. pano.png.json, else empty)")
    refine = parser.add_argument_group("refinement (tile sizes in latent units = pixels / 8)")
    refine.add_argument("--strength", type=float, default=0.3,
                        help="how much of the schedule is redone: 0.2-0.4 adds detail and keeps the picture")
    refine.add_argument("--tile", type=int, default=None, help="diffusion tile size (default: the model's native size)")
    refine.add_argument("--overlap", type=int, default=None, help="diffusion tile overlap (default: tile / 4)")
    refine.add_argument("--vae-tile", type=int, default=64, help="VAE tile size (64 = 512 px)")
    refine.add_argument("--tile-batch-size", type=int, default=4, help="tiles per UNet call (memory vs speed)")
    add_sampling_arguments(parser, steps=20, guidance=5.0)
    add_model_arguments(parser, inpainting=False)
    add_output_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def _default_prompt(path: str) -> str:
    from ..io.sidecar import read_sidecar, sidecar_path

    if not sidecar_path(path).is_file():
        return ""
    try:
        prompt = read_sidecar(path).get("prompt", "")
    except ValueError:
        return ""
    return prompt if isinstance(prompt, str) else ""


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io.export import check_panorama_size, open_image
    from ..sphere.upscale import UpscaleSettings, target_size, upscale_panorama
    from .sphere_common import (
        backbone_record,
        check_models,
        check_output,
        load_pipe,
        progress_bar,
        sampling_settings,
    )

    target = check_output(args.output, args.overwrite)
    sampling = sampling_settings(args)
    image = open_image(args.input).convert("RGB")
    check_panorama_size(image.width, image.height, args.input)
    out_h, out_w = target_size(image.height, image.width, args.scale, args.target_width)
    settings = UpscaleSettings(args.strength, sampling.num_inference_steps, sampling.guidance_scale, sampling.scheduler,
                               args.tile, args.overlap, args.vae_tile, None, args.tile_batch_size, sampling.seed).check()
    prompt = args.prompt if args.prompt is not None else _default_prompt(args.input)
    check_models(args)
    if not args.quiet:
        print(f"upscaling {args.input} ({image.height}x{image.width}) to {out_h}x{out_w} (HxW); loading the model",
              file=sys.stderr, flush=True)
    backbone = load_pipe(args)
    bars = []

    def progress(stage: str, total: int):
        bar = progress_bar(total, f"upscale {out_h}x{out_w} {stage} (tiles)", args.quiet)
        bars.append(bar)
        return lambda: bar.update(1)

    try:
        result = upscale_panorama(backbone.pipe, np.asarray(image), prompt, scale=args.scale,
                                  target_width=args.target_width, settings=settings,
                                  negative_prompt=sampling.negative_prompt, progress=progress)
    finally:
        for bar in bars:
            bar.close()
    from PIL import Image

    from .. import __version__
    from ..io.images import save_panorama_image
    from ..io.sidecar import library_versions, write_sidecar

    record = {"operation": "upscale", "input": args.input, "prompt": prompt, "width": out_w, "height": out_h,
              "upscale": settings.__dict__, **backbone_record(backbone),
              "versions": library_versions() | {"pano360": __version__}, "image_file": target.name}
    save_panorama_image(Image.fromarray(result), target, overwrite=args.overwrite, software=f"pano360 {__version__}")
    write_sidecar(target, record, overwrite=args.overwrite)
    if not args.quiet:
        print(f"{target}  ({out_h}x{out_w} HxW)")
    return 0
