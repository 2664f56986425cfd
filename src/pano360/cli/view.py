"""``pano360 view``: look around in a panorama in the browser, or write a self-contained viewer page."""

from __future__ import annotations

import argparse

HELP = "look around in a panorama in the browser (offline), or write a viewer page"
"""The one line ``pano360 --help`` shows for this command."""


def register(subparsers) -> argparse.ArgumentParser:
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "view",
        help=HELP,
        description=(
            "Open an interactive 360° viewer (Pannellum, bundled: works offline): drag to look around,\n"
            "mouse wheel or +/- to zoom. Without --html the page is served on 127.0.0.1 until Ctrl+C\n"
            "and the default browser opens it. With --html the page is written as one self-contained\n"
            "file (viewer and image inlined) that opens from disk anywhere. Wide 360° strips are shown\n"
            "as a band, using their GPano cropped-area metadata. The first view is the file's GPano\n"
            "initial view (InitialViewHeadingDegrees / InitialViewPitchDegrees / InitialHorizontalFOVDegrees)\n"
            "unless --yaw/--pitch/--hfov say otherwise.\n\n"
            "--depth: a viewer you can move in: the panorama as a mesh displaced by depth (WebGL2, bundled).\n"
            "W/A/S/D or arrows walk (within the free space), Q/E down/up, R back to the centre; the pointer\n"
            "shifts the eye a little (parallax). --depth alone uses PANO_depth.exr/.png beside the image, or\n"
            "estimates depth (Depth Anything V2 Small, or --depth-model); --depth FILE uses that map."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE", help="equirectangular panorama (PNG or JPEG)")
    parser.add_argument("--html", default=None, metavar="OUT.html",
                        help="write a self-contained page here instead of serving it")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --html file")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 to serve on (0 = any free port)")
    parser.add_argument("--no-browser", action="store_true", help="serve without opening a browser")
    parser.add_argument("--yaw", type=float, default=None,
                        help="initial yaw in degrees, 0 = image centre (default: the file's GPano initial view, else 0)")
    parser.add_argument("--pitch", type=float, default=None,
                        help="initial pitch in degrees, positive = up (default: from GPano, else 0)")
    parser.add_argument("--hfov", type=float, default=None,
                        help="initial horizontal field of view in degrees (default: from GPano, else 100)")
    parser.add_argument("--depth", nargs="?", const="auto", default=None, metavar="DEPTH",
                        help="depth mode: walk inside the scene (optional depth map .exr/.png; see above)")
    parser.add_argument("--depth-model", default=None, metavar="ID|PATH",
                        help="--depth: transformers depth model used when no depth map is found")
    parser.add_argument("--mesh-rows", type=int, default=None, help="--depth: mesh grid rows (default min(height, 256))")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..validation import check_finite

    for flag, value in (("--yaw", args.yaw), ("--pitch", args.pitch), ("--hfov", args.hfov)):
        if value is not None:
            check_finite(value, flag)
    if args.pitch is not None and not -90.0 <= args.pitch <= 90.0:
        raise InvalidInputError(f"--pitch must be between -90 and 90 degrees, got {args.pitch:g}")
    if args.hfov is not None and not 0.0 < args.hfov < 180.0:
        raise InvalidInputError(f"--hfov must be between 0 and 180 degrees (exclusive), got {args.hfov:g}")
    options = {"yaw": args.yaw, "pitch": args.pitch, "hfov": args.hfov}
    if (args.depth_model or args.mesh_rows) and not args.depth:
        raise InvalidInputError("--depth-model/--mesh-rows apply to the depth mode; add --depth")
    page = _depth_page(args, options) if args.depth else None
    if args.html:
        if args.port or args.no_browser:
            raise InvalidInputError("--port/--no-browser apply when serving; drop them with --html")
        from ..viewer import check_html_target, write_viewer_html

        check_html_target(args.html, args.overwrite)  # before reading the image
        if page is not None:
            from ..io.atomic import atomic_write_text

            path = atomic_write_text(args.html, page, overwrite=args.overwrite)
        else:
            path = write_viewer_html(args.image, args.html, overwrite=args.overwrite, **options)
        print(f"{path}  (self-contained viewer page; open it in any browser)")
        return 0
    if args.overwrite:
        raise InvalidInputError("--overwrite applies to --html OUT.html; drop it when serving")
    if not 0 <= args.port <= 65535:
        raise InvalidInputError(f"--port must be in 0..65535, got {args.port}")
    from ..viewer import open_viewer

    open_viewer(args.image, port=args.port, open_browser=not args.no_browser, page=page, **options)
    return 0


def _depth_page(args: argparse.Namespace, options: dict) -> str:
    """The depth-mode page: depth from --depth FILE, a PANO_depth map beside the image, or estimated."""
    from ..errors import InvalidInputError
    from ..io.export import open_image
    from ..spatial.depth import check_full_sphere

    if args.html:
        from ..viewer import check_html_target

        check_html_target(args.html, args.overwrite)
    image = open_image(args.image)
    check_full_sphere(image.height, image.width, args.image)
    if args.mesh_rows is not None and not 4 <= args.mesh_rows <= image.height:
        raise InvalidInputError(f"--mesh-rows must be between 4 and the panorama height {image.height}, "
                                f"got {args.mesh_rows}")
    from ..spatial.convert import find_depth_beside
    from ..spatial.files import check_depth_matches, read_depth

    source = args.depth if args.depth != "auto" else find_depth_beside(args.image)
    if source is not None:
        depth = check_depth_matches(read_depth(source), image.height, image.width)
    else:
        from ..spatial.depth import estimate_depth

        depth = estimate_depth(args.image, args.depth_model).depth
    from ..viewer.depth import build_depth_viewer_html

    view = {key: value for key, value in options.items() if value is not None}
    return build_depth_viewer_html(args.image, depth, rows=args.mesh_rows, **view)
