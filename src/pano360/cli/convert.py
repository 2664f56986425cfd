"""``pano360 convert``: cube faces, a cross, a face strip, perspective views or a fly-around video from
a panorama, and GPano tagging of an existing image."""

from __future__ import annotations

import argparse
from pathlib import Path

TARGETS = ("cubemap", "cross", "strip", "views", "video")
CONVENTIONS = ("fbrlud", "opengl", "unity")


HELP = "export cube faces, a cross, perspective views or a video; tag an image as 360"
"""The one line ``pano360 --help`` shows for this command."""


def register(subparsers) -> argparse.ArgumentParser:
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "convert",
        help=HELP,
        description=(
            "Convert an equirectangular panorama (2:1, or a wider 360° strip).\n\n"
            "targets (--to, one or more):\n"
            "  cubemap  six face images named per --convention:\n"
            "             fbrlud: front right back left up down (py360convert order)\n"
            "             opengl: px nx py ny pz nz (+X right, +Y up, +Z front; GL / three.js loaders)\n"
            "             unity:  FrontTex BackTex LeftTex RightTex UpTex DownTex (Skybox/6 Sided slots;\n"
            "                     Unity's 'Left' slot holds the view to the right, +X)\n"
            "  cross    one image with the faces unfolded as a cross (up / left front right back / down)\n"
            "  strip    one 6:1 image with the faces side by side in the convention's order\n"
            "  views    perspective views (--view YAW,PITCH[,FOV[,ROLL]], repeatable)\n"
            "  video    a fly-around: one turn around the horizon (MP4, or GIF without imageio-ffmpeg)\n\n"
            "Sizes are written HEIGHTxWIDTH (as --height/--width and eval --size).\n"
            "Files are named PREFIX_NAME.EXT in --out-dir. Existing files are never replaced without\n"
            "--overwrite, and a failed run leaves no partial outputs.\n"
            "--add-metadata writes complete GPano XMP (Google Photos, Facebook, viewers) into the image\n"
            "itself, or into a copy with --metadata-out; pixels are not re-encoded."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", help="equirectangular panorama (PNG or JPEG)")
    parser.add_argument("--to", dest="targets", nargs="+", default=[], metavar="TARGET",
                        help=f"what to make: {', '.join(TARGETS)}")
    parser.add_argument("-o", "--out-dir", default=None,
                        help="folder for the outputs (default: the folder of INPUT)")
    parser.add_argument("--prefix", default=None, help="file name prefix (default: INPUT's name without extension)")
    parser.add_argument("--format", dest="image_format", default="png", metavar="{png,jpg}",
                        help="image format of faces, cross, strip and views")
    parser.add_argument("--convention", default="fbrlud", metavar="{" + ",".join(CONVENTIONS) + "}",
                        help="cube face order and file names (see above)")
    parser.add_argument("--face-size", type=int, default=None,
                        help="cube face edge in pixels (default: panorama width / 4)")
    parser.add_argument("--view", dest="views", action="append", default=None, metavar="YAW,PITCH[,FOV[,ROLL]]",
                        help="a perspective view in degrees (horizontal FoV, default 90), repeatable "
                        "(default: 8 views around the horizon, 45° apart)")
    parser.add_argument("--view-size", default="512x512", metavar="HxW",
                        help="size of each perspective view, HEIGHTxWIDTH (pano360's one size order)")
    parser.add_argument("--mode", default="bilinear", metavar="{nearest,bilinear,bicubic}",
                        help="interpolation")
    parser.add_argument("--frames", type=int, default=120, help="video: number of frames for one full turn")
    parser.add_argument("--fps", type=float, default=30.0, help="video: frames per second")
    parser.add_argument("--video-size", default="360x640", metavar="HxW", help="video: frame size, HEIGHTxWIDTH")
    parser.add_argument("--video-fov", type=float, default=90.0, help="video: horizontal field of view in degrees")
    parser.add_argument("--video-pitch", type=float, default=0.0, help="video: camera pitch in degrees")
    parser.add_argument("--video-format", default="auto", metavar="{auto,mp4,gif}",
                        help="video: container (auto = MP4 when imageio-ffmpeg is installed, else GIF)")
    parser.add_argument("--add-metadata", action="store_true",
                        help="tag INPUT with complete GPano 360 XMP (in place unless --metadata-out)")
    parser.add_argument("--metadata-out", default=None, metavar="PATH",
                        help="with --add-metadata: write the tagged copy here instead of changing INPUT")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(func=run)
    return parser


def _check_choice(value: str, choices, what: str) -> str:
    from ..errors import InvalidInputError

    if value not in choices:
        raise InvalidInputError(f"unknown {what} {value!r}; use one of: {', '.join(choices)}")
    return value


_VIDEO_FLAGS = {"frames": 120, "fps": 30.0, "video_size": "360x640", "video_fov": 90.0, "video_pitch": 0.0,
                "video_format": "auto"}
_VIEW_FLAGS = {"views": None, "view_size": "512x512"}
_FACE_FLAGS = {"face_size": None, "convention": "fbrlud"}


def _check_modifiers(args: argparse.Namespace, targets: list[str]) -> None:
    """Options that modify a target the user did not ask for are errors, not silently ignored."""
    from ..errors import InvalidInputError

    groups = [(_VIDEO_FLAGS, {"video"}, "video"), (_VIEW_FLAGS, {"views"}, "views"),
              (_FACE_FLAGS, {"cubemap", "cross", "strip"}, "cubemap, cross or strip")]
    for flags, needs, label in groups:
        if needs & set(targets):
            continue
        given = [name for name, default in flags.items() if getattr(args, name) != default]
        if given:
            names = ", ".join("--" + name.replace("_", "-") for name in given)
            raise InvalidInputError(f"{names} only apply with --to {label}; add it to --to or drop {names}")
    if not targets:
        given = [flag for flag, value in (("--out-dir", args.out_dir), ("--prefix", args.prefix)) if value]
        if given:
            raise InvalidInputError(f"{', '.join(given)} apply to --to outputs; with --add-metadata alone use "
                                    "--metadata-out PATH")


def run(args: argparse.Namespace) -> int:
    from ..errors import InvalidInputError
    from ..geometry import MODES, rigs
    from ..io import export, video

    # Validate everything before reading pixels or touching files.
    targets = []
    for item in args.targets:
        for name in str(item).split(","):
            if name:
                targets.append(_check_choice(name.strip(), TARGETS, "--to target"))
    targets = list(dict.fromkeys(targets))
    if not targets and not args.add_metadata:
        raise InvalidInputError("nothing to do; give --to " + "/".join(TARGETS) + " and/or --add-metadata")
    if args.metadata_out and not args.add_metadata:
        raise InvalidInputError("--metadata-out only applies with --add-metadata")
    convention = _check_choice(args.convention, CONVENTIONS, "cubemap convention")
    image_format = _check_choice(args.image_format.lower(), ("png", "jpg", "jpeg"), "--format")
    mode = _check_choice(args.mode, MODES, "interpolation mode")
    view_size = export.parse_size(args.view_size, "--view-size")
    video_size = export.parse_size(args.video_size, "--video-size")
    if args.views:
        views = [export.parse_view(text) for text in args.views]
    else:
        ring = rigs.horizon_ring(8, 90.0)
        views = [export.ViewSpec(float(y), 0.0, 90.0) for y in ring.yaw_deg]
    video_format = video.resolve_video_format(args.video_format) if "video" in targets else None
    if "video" in targets:
        export.check_fov(args.video_fov)
        if not -90.0 <= args.video_pitch <= 90.0:
            raise InvalidInputError(f"--video-pitch must be between -90 and 90, got {args.video_pitch:g}")
    if args.face_size is not None and not 1 <= args.face_size <= 16384:
        raise InvalidInputError(f"--face-size must be a whole number of pixels in 1..16384, got {args.face_size}")
    _check_modifiers(args, targets)
    from ..validation import check_finite

    for flag, value in (("--fps", args.fps), ("--video-fov", args.video_fov), ("--video-pitch", args.video_pitch)):
        check_finite(value, flag)

    from ..io.paths import check_output_folder, check_output_target

    source = Path(args.input)
    out_dir = Path(args.out_dir) if args.out_dir else source.parent
    prefix = args.prefix or source.stem
    if any(sep in prefix for sep in ("/", "\\")) or prefix in (".", ".."):
        raise InvalidInputError(f"--prefix {prefix!r} must be a plain file-name prefix; put folders in --out-dir")
    messages: list[str] = []

    # Outputs first (cheap): a read-only or impossible --out-dir fails before any pixel is read.
    if targets:
        check_output_folder(out_dir, flag="--out-dir")
    if args.add_metadata and args.metadata_out:
        check_output_target(args.metadata_out, args.overwrite, flag="--metadata-out")
    pano = export.load_panorama(source) if targets else None
    if args.add_metadata:
        export.check_taggable(source, args.metadata_out)
    planned = []
    for target in targets:
        if target == "cubemap":
            planned += export.plan_cubemap_faces(pano, out_dir, prefix, convention, args.face_size, image_format, mode)
        elif target in ("cross", "strip"):
            layout = "dice" if target == "cross" else "horizon"
            planned.append(export.plan_cubemap_layout(pano, out_dir, prefix, layout, convention, args.face_size,
                                                      image_format, mode))
        elif target == "views":
            planned += export.plan_views(pano, views, out_dir, prefix, view_size, image_format, mode)
    video_path = out_dir / f"{prefix}_flyaround.{video_format}" if video_format else None
    from ..io.paths import check_output_targets

    metadata_out = [Path(args.metadata_out)] if args.add_metadata and args.metadata_out else []
    check_output_targets([p.path for p in planned] + ([video_path] if video_path else []) + metadata_out,
                         args.overwrite)

    total = len(planned) + (args.frames if video_path else 0)
    bar = _progress_bar(total, args.quiet)
    written = []
    try:
        written = export.write_all_or_nothing(planned, args.overwrite, progress=lambda label: bar.update(1))
        try:
            if video_path:
                written.append(video.write_flyaround(
                    pano, video_path, frames=args.frames, fps=args.fps, out_hw=video_size, fov_deg=args.video_fov,
                    pitch_deg=args.video_pitch, overwrite=args.overwrite, progress=lambda: bar.update(1),
                ))
            if args.add_metadata:
                tagged = export.tag_panorama_file(source, args.metadata_out, overwrite=args.overwrite)
        except BaseException:
            export.remove_quietly(written)
            raise
    finally:
        bar.close()
    for item in planned:
        messages.append(f"{item.path}  ({item.label})" if item.label.startswith("view") else str(item.path))
    if video_path:
        messages.append(f"{video_path}  ({args.frames} frames at {args.fps:g} fps)")
    if args.add_metadata:
        messages.append(f"{tagged}  (GPano 360 metadata added)")
    if not args.quiet:
        for line in messages:
            print(line)
    return 0


def _progress_bar(total: int, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc="pano360 convert", disable=True if quiet or total == 0 else None, leave=False)
