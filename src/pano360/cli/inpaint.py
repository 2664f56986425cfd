"""``pano360 inpaint PANO MASK PROMPT -o OUT``: regenerate a painted region of a panorama, keep the rest exact."""

from __future__ import annotations

import argparse

HELP = "regenerate the masked region of a panorama (wraparound; the rest kept bit-exact)"


def register(subparsers) -> argparse.ArgumentParser:
    from .main import HelpFormatter
    from .sphere_common import add_model_arguments, add_output_arguments, add_sampling_arguments

    parser = subparsers.add_parser(
        "inpaint",
        help=HELP,
        description=(
            "Regenerate the white part of MASK in the equirectangular panorama PANO from PROMPT, with\n"
            "wraparound padding (a region across the left/right seam is one region), then paste every\n"
            "pixel outside the mask back from PANO, so they are exactly the input's. The mask is a PNG of\n"
            "the panorama's size (or the same 2:1 shape): white = regenerate, black = keep; an RGBA mask\n"
            "counts its opaque pixels (the studio's paint mode saves such masks).\n\n"
            "examples:\n"
            '  pano360 inpaint room.png room-mask.png "a large window with a sea view" -o room2.png\n'
            '  pano360 inpaint pano.png mask.png "a red door" --model tiny --steps 2 -o out.png  # offline smoke run'
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("panorama", metavar="PANO", help="equirectangular panorama (PNG or JPEG, W >= 2H)")
    parser.add_argument("mask", metavar="MASK", help="mask image: white = regenerate, black = keep")
    parser.add_argument("prompt", help="what the painted region should show")
    add_sampling_arguments(parser)
    add_model_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from ..sphere.edit import check_inpaint_size, inpaint_panorama, read_mask
    from .sphere_common import (
        backbone_record,
        check_models,
        check_output,
        load_pipe,
        progress_bar,
        read_rgb,
        sampling_settings,
        save_result,
    )

    target = check_output(args.output, args.overwrite)
    sampling = sampling_settings(args)
    image, _ = read_rgb(args.panorama, "panorama")
    check_inpaint_size(image.height, image.width)
    mask = read_mask(args.mask, image.height, image.width)
    check_models(args)
    backbone = load_pipe(args)
    bar = progress_bar(sampling.num_inference_steps, "pano360 inpaint", args.quiet)
    try:
        result = inpaint_panorama(backbone.pipe, image, mask, args.prompt, negative_prompt=sampling.negative_prompt,
                                  num_inference_steps=sampling.num_inference_steps,
                                  guidance_scale=sampling.guidance_scale, seed=sampling.seed,
                                  scheduler=sampling.scheduler, progress=lambda i: bar.update(1))
    finally:
        bar.close()
    from ..io.export import image_to_tensor

    tensor = image_to_tensor(result) * 2 - 1
    record = {"operation": "inpaint", "input": args.panorama, "mask": args.mask, "prompt": args.prompt,
              "masked_fraction": float(mask.mean()), **sampling.__dict__, **backbone_record(backbone)}
    with torch.no_grad():
        save_result(tensor, target, record, args.overwrite)
    if not args.quiet:
        print(f"{target}  ({image.height}x{image.width} HxW, {100 * mask.mean():.1f}% regenerated)")
    return 0
