"""``pano360 convert``: cube faces, a cross, a face strip, perspective views or a fly-around video from
a panorama, GPano tagging of an existing image, and the 3D outputs of :mod:`pano360.spatial` (depth,
mesh, point cloud, stereo 360, HDR/EXR)."""

from __future__ import annotations

import argparse
from pathlib import Path

TARGETS = ("cubemap", "cross", "strip", "views", "video", "depth", "mesh", "pointcloud", "stereo", "hdr", "exr")
SPATIAL_TARGETS = ("depth", "mesh", "pointcloud", "stereo", "hdr", "exr")
CONVENTIONS = ("fbrlud", "opengl", "unity")


HELP = "export cube faces, views, a video, depth, a 3D mesh/point cloud, stereo 360 or HDR; tag as 360"
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
            "  video    a fly-around: one turn around the horizon (MP4, or GIF without imageio-ffmpeg)\n"
            "  depth    360° depth map PREFIX_depth.exr (see pano360 depth; --depth-format png for 16-bit PNG)\n"
            "  mesh     textured mesh PREFIX_mesh.glb (or .obj with --mesh-format obj): the sphere displaced by\n"
            "           depth, faces across depth edges removed (--grazing); right-handed, Y up, -Z forward\n"
            "  pointcloud  coloured point cloud PREFIX_points.ply, same frame\n"
            "  stereo   stereo 360 for headsets, PREFIX_360_TB.png: top-bottom, left eye on top, --ipd apart\n"
            "           (omni-directional stereo; disocclusions filled from the background)\n"
            "  hdr, exr PREFIX.hdr (Radiance) / PREFIX.exr (OpenEXR): scene-linear Rec.709 for image-based\n"
            "           lighting. Not measured radiance: an LDR image keeps its range; --exposure adds\n"
            "           other exposures of the same panorama to merge (--ev: stops of INPUT then each file)\n"
            "mesh, pointcloud and stereo read --depth, else PREFIX_depth.exr/.png beside INPUT when it has the\n"
            "panorama's size, else estimate depth (the --depth-model flags, as in pano360 depth).\n\n"
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
    parser.add_argument("--depth", default=None, metavar="DEPTH.exr|.png",
                        help="depth map of INPUT for mesh/pointcloud/stereo (from pano360 depth)")
    parser.add_argument("--depth-format", default="exr", metavar="{exr,png}", help="file type of --to depth")
    from .depth import add_depth_arguments

    add_depth_arguments(parser, view_size_flag="--depth-view-size")
    parser.add_argument("--mesh-format", default="glb", metavar="{glb,obj}", help="mesh: file type")
    parser.add_argument("--mesh-rows", type=int, default=None,
                        help="mesh: rows of the vertex grid (columns = 2 x rows; default min(height, 256))")
    parser.add_argument("--grazing", type=float, default=85.0, metavar="DEG",
                        help="mesh: drop faces steeper than this from the view direction (depth edges)")
    parser.add_argument("--max-points", type=int, default=2_000_000, help="pointcloud: at most this many points")
    parser.add_argument("--ipd", type=float, default=0.064, metavar="M",
                        help="stereo: interpupillary distance in metres")
    parser.add_argument("--stereo-layout", default="tb", metavar="{tb,sbs}",
                        help="stereo: top-bottom (left eye on top) or side by side (left eye left)")
    parser.add_argument("--fill-model", default=None, metavar="MODEL",
                        help="stereo: fill disocclusions with this SD/SDXL model (an inpainting checkpoint, or "
                        "masked blending with a text-to-image one; tiny offline) instead of the background fill")
    parser.add_argument("--fill-prompt", default=None, help="stereo with --fill-model: what the panorama shows")
    parser.add_argument("--fill-steps", type=int, default=20, help="stereo with --fill-model: denoising steps")
    parser.add_argument("--exposure", dest="exposures", action="append", default=None, metavar="FILE",
                        help="hdr/exr: another exposure of the same panorama to merge (repeatable)")
    parser.add_argument("--ev", action="append", type=float, default=None, metavar="STOPS",
                        help="hdr/exr with --exposure: exposure of INPUT, then of each file, in stops")
    parser.add_argument("--exposure-ev", type=float, default=0.0, help="hdr/exr: scale the result by 2^EV")
    parser.add_argument("--half", action="store_true", help="exr: 16-bit float channels instead of 32-bit")
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
_DEPTH_FLAGS = {"depth_model": None, "prediction": None, "fov": None, "depth_view_size": None, "batch_size": None,
                "camera_height": None, "device": None}
_SPATIAL_GROUPS = [
    ({"depth": None}, {"mesh", "pointcloud", "stereo"}, "mesh, pointcloud or stereo"),
    ({"depth_format": "exr"}, {"depth"}, "depth"),
    ({"mesh_format": "glb", "mesh_rows": None, "grazing": 85.0}, {"mesh"}, "mesh"),
    ({"max_points": 2_000_000}, {"pointcloud"}, "pointcloud"),
    ({"ipd": 0.064, "stereo_layout": "tb", "fill_model": None, "fill_prompt": None, "fill_steps": 20}, {"stereo"},
     "stereo"),
    ({"exposures": None, "ev": None, "exposure_ev": 0.0}, {"hdr", "exr"}, "hdr or exr"),
    ({"half": False}, {"exr", "hdr"}, "exr"),
]


def _check_modifiers(args: argparse.Namespace, targets: list[str]) -> None:
    """Options that modify a target the user did not ask for are errors, not silently ignored."""
    from ..errors import InvalidInputError

    groups = [(_VIDEO_FLAGS, {"video"}, "video"), (_VIEW_FLAGS, {"views"}, "views"),
              (_FACE_FLAGS, {"cubemap", "cross", "strip"}, "cubemap, cross or strip"),
              (_DEPTH_FLAGS, {"depth", "mesh", "pointcloud", "stereo"}, "depth, mesh, pointcloud or stereo"), *_SPATIAL_GROUPS]
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
    spatial = _spatial_plan(args, targets)  # option checks of the 3D targets (no file access yet)
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
    spatial_paths = _spatial_outputs(spatial, out_dir, prefix, args)
    check_output_targets([p.path for p in planned] + ([video_path] if video_path else []) + metadata_out
                         + list(spatial_paths.values()), args.overwrite)
    if spatial:
        _check_spatial(args, spatial, spatial_paths, pano)

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
            if spatial:
                written += _run_spatial(args, source, spatial, spatial_paths, messages)
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


def _spatial_plan(args: argparse.Namespace, targets: list[str]) -> dict[str, dict]:
    """{target: convert_panorama options} for the 3D targets, flags checked (torch not imported)."""
    from ..errors import InvalidInputError
    from ..validation import check_finite
    from .depth import depth_options

    chosen = [t for t in targets if t in SPATIAL_TARGETS]
    if not chosen:
        return {}
    depth_opts = depth_options(args)
    _check_choice(args.depth_format, ("exr", "png"), "--depth-format")
    _check_choice(args.mesh_format, ("glb", "obj"), "--mesh-format")
    _check_choice(args.stereo_layout, ("tb", "sbs"), "--stereo-layout")
    for flag, value in (("--grazing", args.grazing), ("--ipd", args.ipd), ("--exposure-ev", args.exposure_ev)):
        check_finite(value, flag)
    if not 0 < args.grazing < 90:
        raise InvalidInputError(f"--grazing must be between 0 and 90 degrees, got {args.grazing:g}")
    if args.ipd <= 0 or args.ipd > 1:
        raise InvalidInputError(f"--ipd is in metres (0.064 is typical), got {args.ipd:g}")
    if args.max_points < 1:
        raise InvalidInputError(f"--max-points must be at least 1, got {args.max_points}")
    if args.depth and "depth" in chosen:
        raise InvalidInputError("--depth gives a depth map; drop it with --to depth, which estimates one")
    if args.exposures and len(args.ev or []) != len(args.exposures) + 1:
        raise InvalidInputError(f"give --ev once for INPUT and once per --exposure: {len(args.exposures) + 1} "
                                f"values, got {len(args.ev or [])}")
    if bool(args.fill_model) != bool(args.fill_prompt):
        raise InvalidInputError("--fill-model and --fill-prompt go together: the model needs to know what it fills")
    if args.fill_model:
        from ..backbones.loading import classify_model_argument

        classify_model_argument(args.fill_model)
        if not 1 <= args.fill_steps <= 1000:
            raise InvalidInputError(f"--fill-steps must be 1..1000, got {args.fill_steps}")
    if args.ev and not args.exposures:
        raise InvalidInputError("--ev applies with --exposure FILE; add the other exposures or drop --ev")
    plan: dict[str, dict] = {}
    needs_depth = {"model", "prediction", "fov_deg", "view_size", "batch_size", "camera_height", "device"}
    for target in chosen:
        if target == "depth":
            plan[target] = dict(depth_opts)
        elif target == "mesh":
            plan[target] = {"rows": args.mesh_rows, "grazing_deg": args.grazing}
        elif target == "pointcloud":
            plan[target] = {"max_points": args.max_points}
        elif target == "stereo":
            plan[target] = {"ipd": args.ipd, "layout": args.stereo_layout}
        else:
            plan[target] = {"exposure_ev": args.exposure_ev, "half": args.half}
            if args.exposures:
                plan[target] |= {"exposures": list(args.exposures), "ev": list(args.ev)}
        if target in ("mesh", "pointcloud", "stereo"):
            plan[target] |= {k: v for k, v in depth_opts.items() if k in needs_depth}
    return plan


def _spatial_outputs(plan: dict, out_dir: Path, prefix: str, args: argparse.Namespace) -> dict[str, Path]:
    suffixes = {"depth": f"_depth.{args.depth_format}", "mesh": f"_mesh.{args.mesh_format}", "pointcloud": "_points.ply",
                "stereo": ("_360_TB" if args.stereo_layout == "tb" else "_360_LR") + ".png", "hdr": ".hdr",
                "exr": ".exr"}
    return {target: out_dir / f"{prefix}{suffixes[target]}" for target in plan}


def _check_spatial(args, plan: dict, paths: dict, pano) -> None:
    """Cheap checks before any model work: full sphere, output names, libraries, --depth's size."""
    from ..errors import InvalidInputError
    from ..spatial.convert import check_conversion
    from ..spatial.depth import check_full_sphere

    check_full_sphere(pano.shape[-2], pano.shape[-1], args.input)
    for target, options in plan.items():
        check_conversion(target, paths[target], options, args.overwrite)
    if args.depth and set(plan) & {"mesh", "pointcloud", "stereo"}:
        from ..spatial.files import check_depth_matches, read_depth

        check_depth_matches(read_depth(args.depth), pano.shape[-2], pano.shape[-1])
    for extra in args.exposures or []:
        from ..io.export import open_image

        image = open_image(extra, "--exposure image")
        if (image.height, image.width) != tuple(pano.shape[-2:]):
            raise InvalidInputError(f"--exposure {extra} is {image.height}x{image.width} (HxW) but INPUT is "
                                    f"{pano.shape[-2]}x{pano.shape[-1]}; give exposures of the same panorama")


def _run_spatial(args, source: Path, plan: dict, paths: dict, messages: list[str]) -> list[Path]:
    """Run the 3D conversions: depth is estimated (or read) once and shared. Returns written paths; on
    failure removes what it wrote and re-raises."""
    from tqdm.auto import tqdm

    from ..io.export import remove_quietly
    from ..spatial.convert import convert_panorama

    written: list[Path] = []
    depth = args.depth
    bar = tqdm(total=len(plan), unit="output", desc="pano360 convert 3D", disable=True if args.quiet else None,
               leave=False)
    try:
        depth_targets = [t for t in ("mesh", "pointcloud", "stereo") if t in plan]
        if "depth" in plan:
            written.append(convert_panorama(source, "depth", paths["depth"], overwrite=args.overwrite,
                                            progress=not args.quiet, log=messages.append, **plan["depth"]))
            written.append(paths["depth"].with_name(paths["depth"].name + ".json"))
            depth = paths["depth"]
            bar.update(1)
        elif depth_targets and depth is None:
            from ..spatial.convert import find_depth_beside
            from ..spatial.depth import estimate_depth
            from ..spatial.files import read_depth

            found = find_depth_beside(source)
            options = plan[depth_targets[0]]
            shape = None
            if found is not None:
                from ..io.export import open_image

                image = open_image(source)
                shape = (image.height, image.width)
            if found is not None and tuple(read_depth(found).shape) == shape:
                depth = found
            else:
                keys = ("model", "prediction", "fov_deg", "view_size", "batch_size", "camera_height", "device")
                depth = estimate_depth(source, **{k: options[k] for k in keys if k in options},
                                       progress=not args.quiet)
        for target in plan:
            if target == "depth":
                continue
            options = dict(plan[target])
            if target in depth_targets:
                options["depth"] = depth
                options = {k: v for k, v in options.items() if v is not None}
            if target == "stereo" and args.fill_model:
                options["fill"] = _stereo_fill(args)
            bar.set_postfix_str(target)
            written.append(convert_panorama(source, target, paths[target], overwrite=args.overwrite,
                                            progress=not args.quiet, log=messages.append, **options))
            if target == "mesh" and args.mesh_format == "obj":
                stem = paths[target]
                written += [stem.with_suffix(".mtl"), stem.with_name(stem.stem + "_texture.png")]
            bar.update(1)
    except BaseException:
        remove_quietly(written)
        raise
    finally:
        bar.close()
    return written


def _stereo_fill(args: argparse.Namespace):
    """The inpainting fill of ``--fill-model`` (its pipeline loaded once)."""
    from ..backbones.device import resolve_device
    from ..backbones.loading import load_backbone, load_inpainting_backbone, peek_checkpoint
    from ..sphere.stereo_fill import inpaint_fill

    device = resolve_device(args.device or "auto")
    facts = peek_checkpoint(args.fill_model)
    load = load_inpainting_backbone if facts is not None and facts.in_channels == 9 else load_backbone
    backbone = load(args.fill_model, device=device)
    return inpaint_fill(backbone.pipe, args.fill_prompt, num_inference_steps=args.fill_steps)


def _progress_bar(total: int, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", desc="pano360 convert", disable=True if quiet or total == 0 else None, leave=False)
