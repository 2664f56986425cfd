"""``pano360 depth PANO -o depth.png|.exr``: a seamless 360° depth map of a panorama."""

from __future__ import annotations

import argparse

HELP = "estimate a seamless 360° depth map (16-bit PNG or float EXR)"
"""The one line ``pano360 --help`` shows for this command."""

DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"  # (spatial.depth imports torch)


def register(subparsers) -> argparse.ArgumentParser:
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "depth",
        help=HELP,
        description=(
            "Estimate the depth of a 2:1 equirectangular panorama with a monocular depth model from\n"
            "transformers (AutoModelForDepthEstimation; default Depth Anything V2 Small, Apache-2.0). The\n"
            "model runs on overlapping perspective views (cube faces widened to --fov); each view's\n"
            "prediction is aligned to the others by one least-squares solve of a scale and shift per view\n"
            "on their overlaps, then the views are blended into one equirectangular map with no seam.\n\n"
            "The map holds the radial distance from the camera along each pixel's ray. A metric model\n"
            "gives metres; a relative one (the default) is scaled so that the median distance is 1, or to\n"
            "metres with --camera-height (the camera's height above the floor).\n"
            ".exr: float32 channel Z = distance. .png: 16-bit, distance = value x scale (linear, brighter =\n"
            "farther; the scale is in the PNG text chunk pano360:depth_scale and in the sidecar OUT.json).\n\n"
            "examples:\n"
            "  pano360 depth pano.png -o pano_depth.exr\n"
            "  pano360 depth pano.png -o pano_depth.png --camera-height 1.6 --device cuda\n"
            "  pano360 convert pano.png --to mesh stereo      # uses pano_depth.exr when it is there"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("input", metavar="PANO", help="2:1 equirectangular panorama (PNG or JPEG)")
    parser.add_argument("-o", "--output", default=None, metavar="OUT.exr|OUT.png",
                        help="depth map to write (default: PANO's name + _depth.exr)")
    add_depth_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(func=run)
    return parser


def add_depth_arguments(parser: argparse.ArgumentParser, view_size_flag: str = "--view-size") -> None:
    """Depth-model flags shared by ``depth`` and ``convert`` (where --view-size is taken by views)."""
    parser.add_argument("--depth-model", default=None, metavar="ID|PATH",
                        help=f"transformers depth model, hub id or folder (default: {DEFAULT_DEPTH_MODEL})")
    parser.add_argument("--prediction", default=None, metavar="{disparity,depth,metric}",
                        help="what the model predicts (default: read from its config: metric models give "
                        "metres, others relative disparity)")
    parser.add_argument("--fov", type=float, default=None, metavar="DEG",
                        help="field of view of the six views, degrees (default 120: 30° overlaps)")
    parser.add_argument(view_size_flag, dest="depth_view_size", type=int, default=None, metavar="PX",
                        help="side of each view in pixels (default: the model's input size)")
    parser.add_argument("--batch-size", type=int, default=None, help="views per model call (default 6)")
    parser.add_argument("--camera-height", type=float, default=None, metavar="M",
                        help="metres between the camera and the floor: scales the depth to metres")
    parser.add_argument("--device", default=None, help="device for the depth model, e.g. cuda, mps, cpu")


def depth_options(args: argparse.Namespace) -> dict:
    """Keyword arguments for :func:`pano360.spatial.depth.estimate_depth` from the shared flags, checked."""
    from ..errors import InvalidInputError
    from ..validation import check_finite

    options = {}
    if args.depth_model:
        options["model"] = args.depth_model
    if args.prediction is not None:
        if args.prediction not in ("disparity", "depth", "metric"):
            raise InvalidInputError(f"unknown --prediction {args.prediction!r}; use disparity, depth or metric")
        options["prediction"] = args.prediction
    if args.fov is not None:
        check_finite(args.fov, "--fov")
        if not 90.0 < args.fov < 170.0:
            raise InvalidInputError(f"--fov must be between 90 and 170 degrees so that views overlap, got {args.fov:g}")
        options["fov_deg"] = args.fov
    if args.depth_view_size is not None:
        if not 14 <= args.depth_view_size <= 4096:
            raise InvalidInputError(f"the depth view size must be 14..4096 pixels, got {args.depth_view_size}")
        options["view_size"] = args.depth_view_size
    if args.batch_size is not None:
        if args.batch_size < 1:
            raise InvalidInputError(f"--batch-size must be at least 1, got {args.batch_size}")
        options["batch_size"] = args.batch_size
    if args.camera_height is not None:
        check_finite(args.camera_height, "--camera-height")
        if args.camera_height <= 0:
            raise InvalidInputError(f"--camera-height must be a positive number of metres, got {args.camera_height:g}")
        options["camera_height"] = args.camera_height
    if args.device:
        options["device"] = args.device
    return options


def run(args: argparse.Namespace) -> int:
    from ..io.export import open_image
    from ..spatial.convert import check_conversion, convert_panorama, default_output

    options = depth_options(args)
    output = args.output or default_output(args.input, "depth")
    check_conversion("depth", output, options, args.overwrite)  # name, folder, EXR support: before reading
    image = open_image(args.input)  # cheap size check before loading any model
    from ..spatial.depth import check_full_sphere

    check_full_sphere(image.height, image.width, args.input)
    messages: list[str] = []
    convert_panorama(args.input, "depth", output, overwrite=args.overwrite, progress=not args.quiet,
                     log=messages.append, **options)
    if not args.quiet:
        print("\n".join(messages))
    return 0
