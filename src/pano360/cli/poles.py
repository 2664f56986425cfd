"""``pano360 poles IN PROMPT -o OUT``: regenerate the zenith and nadir of a panorama through pole views."""

from __future__ import annotations

import argparse

HELP = "refine the zenith and nadir of a panorama (no pinched swirl in a 360 viewer)"


def register(subparsers) -> argparse.ArgumentParser:
    from .main import HelpFormatter
    from .sphere_common import (
        add_model_arguments,
        add_output_arguments,
        add_pole_arguments,
        add_sampling_arguments,
    )

    parser = subparsers.add_parser(
        "poles",
        help=HELP,
        description=(
            "Regenerate the caps around the poles of an equirectangular panorama. Each pole is rendered as a\n"
            "perspective view looking straight up/down whose outer ring comes from the panorama; the cap is\n"
            "inpainted (an inpainting checkpoint with --inpaint-model, else masked blending with --model) and\n"
            "blended back with a feathered edge. Everything closer to the horizon than the cap is unchanged.\n"
            "A wider-than-2:1 strip (e.g. MVDiffusion's band) becomes a full 2:1 sphere.\n\n"
            "examples:\n"
            '  pano360 poles pano.png "a cathedral interior" -o pano_poles.png\n'
            '  pano360 poles band.png "a beach" --model tiny --steps 4 -o sphere.png      # offline smoke run'
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("input", metavar="IN", help="equirectangular panorama (PNG or JPEG; 2:1 or a wider strip)")
    parser.add_argument("prompt", help="what the panorama shows (the prompt it was made with)")
    add_pole_arguments(parser)
    add_sampling_arguments(parser)
    add_model_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..io.export import check_panorama_size
    from ..sphere.pipeline import check_pole_request, refine_poles
    from .sphere_common import (
        backbone_record,
        check_models,
        check_output,
        load_pipe,
        pole_settings,
        progress_bar,
        read_rgb,
        sampling_settings,
        save_result,
    )

    target = check_output(args.output, args.overwrite)
    settings = pole_settings(args)
    sampling = sampling_settings(args)
    image, panorama = read_rgb(args.input, "panorama")
    check_panorama_size(image.width, image.height, args.input)
    settings = check_pole_request(image.height, image.width, settings)
    check_models(args)
    backbone = load_pipe(args)
    bar = progress_bar(sampling.num_inference_steps, "pano360 poles", args.quiet)
    try:
        result = refine_poles(backbone.pipe, panorama, args.prompt, settings, sampling, progress=lambda i: bar.update(1))
    finally:
        bar.close()
    record = {"operation": "poles", "input": args.input, "prompt": args.prompt, **sampling.__dict__,
              "pole_settings": settings.__dict__, **backbone_record(backbone)}
    save_result(result, target, record, args.overwrite)
    if not args.quiet:
        print(f"{target}  ({result.shape[-2]}x{result.shape[-1]} HxW, poles refined: {', '.join(settings.poles)})")
    return 0
