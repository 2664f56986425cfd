"""``pano360 outpaint PHOTO PROMPT -o OUT``: one perspective photo → a full 360° panorama around it."""

from __future__ import annotations

import argparse

HELP = "turn one photo into a full 360° panorama around it"


def register(subparsers) -> argparse.ArgumentParser:
    from .main import HelpFormatter
    from .sphere_common import (
        add_model_arguments,
        add_output_arguments,
        add_pole_arguments,
        add_sampling_arguments,
    )

    parser = subparsers.add_parser(
        "outpaint",
        help=HELP,
        description=(
            "Place a photo on the sphere (its camera: --yaw, --pitch, horizontal --fov; the FoV is read from\n"
            "the EXIF focal length when --fov is not given), inpaint everything else with wraparound padding\n"
            "(an inpainting checkpoint with --inpaint-model, or masked blending with --model), refine the\n"
            "poles, and paste the photo's pixels back exactly with a feathered border. The output is a full\n"
            "2:1 panorama with GPano 360 metadata.\n\n"
            "examples:\n"
            '  pano360 outpaint street.jpg "a busy street in Lisbon" -o street360.png\n'
            '  pano360 outpaint room.jpg "a living room" --fov 70 --yaw 90 --inpaint-model '
            "stabilityai/stable-diffusion-2-inpainting -o room360.png\n"
            '  pano360 outpaint photo.png "a park" --model tiny --fov 60 --steps 4 -o park.png   # offline smoke run'
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("photo", metavar="PHOTO", help="a perspective photo (PNG or JPEG)")
    parser.add_argument("prompt", help="what the whole panorama shows")
    place = parser.add_argument_group("placement (degrees)")
    place.add_argument("--yaw", type=float, default=0.0, help="where the photo looks: 0 = panorama centre, + = right")
    place.add_argument("--pitch", type=float, default=0.0, help="+ = up, in [-90, 90]")
    place.add_argument("--roll", type=float, default=0.0, help="camera roll")
    place.add_argument("--fov", type=float, default=None,
                       help="horizontal field of view in (0, 180); default: from the EXIF focal length "
                       "(35 mm equivalent), else required")
    place.add_argument("--feather", type=float, default=8.0,
                       help="photo pixels inside its border over which it fades into the generated surroundings")
    place.add_argument("--height", type=int, default=None,
                       help="panorama height in pixels, a multiple of 8 (width = 2 x height; default: the model's "
                       "native size, 512 for SD 1/2, 1024 for SDXL)")
    place.add_argument("--no-poles", action="store_true", help="skip the pole refinement")
    add_pole_arguments(parser, prefix="pole-")
    add_sampling_arguments(parser)
    add_model_arguments(parser)
    add_output_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def resolve_fov(fov: float | None, image) -> float:
    from ..errors import InvalidInputError
    from ..sphere.placement import check_fov, fov_from_exif

    if fov is not None:
        return check_fov(fov)
    found = fov_from_exif(image)
    if found is None:
        raise InvalidInputError("the photo's EXIF has no focal length; give its horizontal field of view with --fov "
                                "(e.g. --fov 65 for a typical phone photo)")
    return check_fov(found)


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..sphere.pipeline import check_outpaint_request, outpaint_photo
    from ..sphere.placement import Placement
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
    sampling = sampling_settings(args)
    poles = pole_settings(args)
    image, photo = read_rgb(args.photo, "photo")
    placement = Placement(args.yaw, args.pitch, resolve_fov(args.fov, image), args.roll, args.feather)
    if args.height is not None and (args.height < 64 or args.height % 8):
        raise InvalidInputError(f"--height must be a multiple of 8 pixels >= 64, got {args.height}")
    out_hw = (args.height, 2 * args.height) if args.height else None
    check_outpaint_request((image.height, image.width), placement, out_hw or (512, 1024))
    check_models(args)
    backbone = load_pipe(args)
    bar = progress_bar(sampling.num_inference_steps, "pano360 outpaint", args.quiet)
    try:
        result = outpaint_photo(backbone.pipe, photo, args.prompt, placement, out_hw, refine=not args.no_poles,
                                pole_settings=poles, sampling=sampling, progress=lambda i: bar.update(1))
    finally:
        bar.close()
    record = {"operation": "outpaint", "photo": args.photo, "prompt": args.prompt, "placement": placement.__dict__,
              "poles_refined": not args.no_poles, **sampling.__dict__, **backbone_record(backbone)}
    save_result(result, target, record, args.overwrite)
    if not args.quiet:
        print(f"{target}  ({result.shape[-2]}x{result.shape[-1]} HxW, photo at yaw {placement.yaw_deg:g}°, "
              f"pitch {placement.pitch_deg:g}°, FoV {placement.fov_deg:.1f}°)")
    return 0
