"""``pano360 view``: look around in a panorama in the browser, or write a self-contained viewer page."""

from __future__ import annotations

import argparse


def register(subparsers) -> argparse.ArgumentParser:
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "view",
        help="look around in a panorama in the browser (offline), or write a viewer page",
        description=(
            "Open an interactive 360° viewer (Pannellum, bundled: works offline): drag to look around,\n"
            "mouse wheel or +/- to zoom. Without --html the page is served on 127.0.0.1 until Ctrl+C\n"
            "and the default browser opens it. With --html the page is written as one self-contained\n"
            "file (viewer and image inlined) that opens from disk anywhere. Wide 360° strips are shown\n"
            "as a band, using their GPano cropped-area metadata."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("image", metavar="IMAGE", help="equirectangular panorama (PNG or JPEG)")
    parser.add_argument("--html", default=None, metavar="OUT.html",
                        help="write a self-contained page here instead of serving it")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --html file")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 to serve on (0 = any free port)")
    parser.add_argument("--no-browser", action="store_true", help="serve without opening a browser")
    parser.add_argument("--yaw", type=float, default=0.0, help="initial yaw in degrees (0 = image centre)")
    parser.add_argument("--pitch", type=float, default=0.0, help="initial pitch in degrees (positive = up)")
    parser.add_argument("--hfov", type=float, default=100.0, help="initial horizontal field of view in degrees")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..viewer import open_viewer, write_viewer_html

    if not -90.0 <= args.pitch <= 90.0:
        raise InvalidInputError(f"--pitch must be between -90 and 90 degrees, got {args.pitch:g}")
    options = {"yaw": args.yaw, "pitch": args.pitch, "hfov": args.hfov}
    if args.html:
        path = write_viewer_html(args.image, args.html, overwrite=args.overwrite, **options)
        print(f"{path}  (self-contained viewer page; open it in any browser)")
        return 0
    if not 0 <= args.port <= 65535:
        raise InvalidInputError(f"--port must be in 0..65535, got {args.port}")
    open_viewer(args.image, port=args.port, open_browser=not args.no_browser, **options)
    return 0
