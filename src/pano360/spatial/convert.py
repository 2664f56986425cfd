"""One entry point for the 3D conversions, used by the CLI, batch and the web app.

``convert_panorama(image_path, to, output, **options) -> Path`` with ``to`` one of
:data:`CONVERSIONS`. Everything cheap is checked first (the target, the output name and folder, the
option names, the panorama's size, a given depth map's size), then depth is read or estimated, then the
files are written atomically (all of them or none).

Depth: ``depth=PATH`` (or a [H, W] tensor) uses that map; otherwise a depth map written beside the
panorama as ``STEM_depth.exr`` / ``STEM_depth.png`` by ``pano360 depth`` is used when it has the right
size (``reuse_depth=False`` turns that off); otherwise it is estimated with ``model`` (default Depth
Anything V2 Small). Relative depth is put in metres for stereo by assuming the camera is
``camera_height`` (default 1.6 m) above the floor.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from ..errors import InvalidInputError

CONVERSIONS = ("depth", "mesh", "pointcloud", "stereo", "hdr", "exr")
SUFFIXES = {"depth": (".png", ".exr"), "mesh": (".glb", ".obj"), "pointcloud": (".ply",),
            "stereo": (".png", ".jpg", ".jpeg"), "hdr": (".hdr", ".exr"), "exr": (".exr",)}
DEFAULT_SUFFIX = {"depth": ".exr", "mesh": ".glb", "pointcloud": ".ply", "stereo": ".png", "hdr": ".hdr", "exr": ".exr"}
#: options each conversion accepts (beyond output/overwrite/progress)
DEPTH_OPTIONS = {"depth", "model", "prediction", "fov_deg", "view_size", "batch_size", "camera_height", "device",
                 "reuse_depth"}
OPTIONS = {
    "depth": DEPTH_OPTIONS - {"depth", "reuse_depth"},
    "mesh": DEPTH_OPTIONS | {"rows", "grazing_deg"},
    "pointcloud": DEPTH_OPTIONS | {"max_points"},
    "stereo": DEPTH_OPTIONS | {"ipd", "layout", "fill"},
    "hdr": {"exposure_ev", "half", "exposures", "ev"},
    "exr": {"exposure_ev", "half", "exposures", "ev"},
}
ASSUMED_CAMERA_HEIGHT = 1.6  # metres, eye height of a standing adult


def default_output(image_path: str | os.PathLike, to: str, layout: str = "tb") -> Path:
    """The name ``pano360 convert`` uses: ``STEM_depth.exr``, ``STEM_mesh.glb``, ``STEM_points.ply``,
    ``STEM_360_TB.png``, ``STEM.hdr``, ``STEM.exr``."""
    from .stereo import stereo_suffix

    path = Path(image_path)
    names = {"depth": "_depth", "mesh": "_mesh", "pointcloud": "_points", "stereo": stereo_suffix(layout),
             "hdr": "", "exr": ""}
    return path.with_name(path.stem + names[to] + DEFAULT_SUFFIX[to])


def find_depth_beside(image_path: str | os.PathLike) -> Path | None:
    path = Path(image_path)
    for suffix in (".exr", ".png"):
        candidate = path.with_name(f"{path.stem}_depth{suffix}")
        if candidate.is_file():
            return candidate
    return None


def check_conversion(to: str, output: str | os.PathLike, options: dict, overwrite: bool = False) -> Path:
    """Validate ``to``, the output name (suffix, free, writable folder) and option names; one line each."""
    from ..io.paths import check_output_target

    if to not in CONVERSIONS:
        raise InvalidInputError(f"unknown --to {to!r}; use one of: {', '.join(CONVERSIONS)}")
    output = Path(output)
    if output.suffix.lower() not in SUFFIXES[to]:
        raise InvalidInputError(f"{output.name}: --to {to} writes {' or '.join(SUFFIXES[to])}; change the file name")
    unknown = sorted(set(options) - OPTIONS[to])
    if unknown:
        raise InvalidInputError(f"option {unknown[0]!r} does not apply to --to {to}; it takes: "
                                f"{', '.join(sorted(OPTIONS[to])) or 'no options'}")
    if to == "exr" or output.suffix.lower() == ".exr":
        from .files import require_openexr

        require_openexr()
    if to in ("mesh", "pointcloud"):
        from .mesh import _trimesh

        _trimesh()
    return check_output_target(output, overwrite, flag="output")


def _load_depth(image_path, pano, options: dict, progress: bool):
    """(depth [H, W], units, description) for the panorama: given, found beside it, or estimated."""
    from .depth import estimate_depth
    from .files import check_depth_matches, read_depth

    height, width = pano.shape[-2:]
    given = options.pop("depth", None)
    reuse = options.pop("reuse_depth", True)
    if given is None and reuse and image_path is not None:
        found = find_depth_beside(image_path)
        if found is not None:
            candidate = read_depth(found)
            if tuple(candidate.shape) == (height, width):
                given = found
    from .depth import DepthResult

    if isinstance(given, DepthResult):
        depth = check_depth_matches(given.depth, height, width, "depth")
        for key in ("model", "prediction", "fov_deg", "view_size", "batch_size", "device", "camera_height"):
            options.pop(key, None)
        return depth, given.units, f"estimated with {given.model}"
    if given is not None:
        depth = given if isinstance(given, torch.Tensor) else read_depth(given)
        depth = check_depth_matches(depth.float(), height, width, "--depth" if not isinstance(given, torch.Tensor) else "depth")
        units = _units_of(given)
        for key in ("model", "prediction", "fov_deg", "view_size", "batch_size", "device"):
            options.pop(key, None)
        camera_height = options.pop("camera_height", None)
        if camera_height is not None:
            from .depth import estimate_camera_height

            depth = depth * (camera_height / estimate_camera_height(depth))
            units = "metres"
        return depth, units, f"read from {given}" if not isinstance(given, torch.Tensor) else "given"
    keys = ("model", "prediction", "fov_deg", "view_size", "batch_size", "camera_height", "device")
    result = estimate_depth(pano, **{k: options.pop(k) for k in keys if k in options}, progress=progress)
    return result.depth, result.units, f"estimated with {result.model}"


def _units_of(given) -> str:
    if isinstance(given, torch.Tensor):
        return "relative"
    from ..io.sidecar import find_sidecar

    sidecar = find_sidecar(given)
    if sidecar is None:
        return "relative"
    import json

    try:
        return str(json.loads(sidecar.read_text(encoding="utf-8")).get("depth", {}).get("units", "relative"))
    except (OSError, ValueError, AttributeError):
        return "relative"


def convert_panorama(
    image_path: str | os.PathLike, to: str, output: str | os.PathLike | None = None, *, overwrite: bool = False,
    progress: bool = True, log: Callable[[str], None] | None = None, **options,
) -> Path:
    """Convert a 2:1 panorama file into ``to`` (:data:`CONVERSIONS`) at ``output`` (default
    :func:`default_output`) and return the main file's path.

    Options by target (all optional):
      depth:      model, prediction, fov_deg, view_size, batch_size, camera_height, device
      mesh:       the depth options, depth (PATH, [H, W] tensor or DepthResult), reuse_depth, rows, grazing_deg
      pointcloud: the depth options, depth, reuse_depth, max_points
      stereo:     the depth options, depth, reuse_depth, ipd (metres, 0.064), layout ("tb"/"sbs"), fill
      hdr / exr:  exposure_ev, half (16-bit EXR), exposures (extra files of the same panorama) with ev
                  (one EV per file, the first for ``image_path``) for an exposure merge
    ``log`` receives one-line notes (which depth was used, what was written).
    """
    from .depth import as_panorama_tensor

    log = log or (lambda message: None)
    layout = options.get("layout", "tb")
    output = Path(output) if output is not None else default_output(image_path, to, layout)
    check_conversion(to, output, options, overwrite)
    pano = as_panorama_tensor(image_path)  # checks 2:1 before any model work
    options = dict(options)

    if to in ("hdr", "exr"):
        from .hdr import merge_exposures, write_hdr

        exposures = options.pop("exposures", None)
        linear = False
        if exposures:
            ev = list(options.pop("ev", None) or [])
            images = [pano] + [as_panorama_tensor(p) for p in exposures]
            pano = merge_exposures(images, ev)
            linear = True
        elif options.pop("ev", None):
            raise InvalidInputError("--ev applies with --exposure files; drop it or add the other exposures")
        path = write_hdr(pano, output, exposure_ev=options.pop("exposure_ev", 0.0), half=options.pop("half", False),
                         linear=linear, overwrite=overwrite)
        log(f"{path}  (scene-linear Rec.709; an HDR container of an LDR image, not measured radiance)")
        return path

    if to == "depth":
        from .depth import estimate_depth
        from .files import check_depth_suffix

        check_depth_suffix(output)
        result = estimate_depth(pano, **options, progress=progress)
        path = result.save(output, overwrite=overwrite, source=str(image_path))
        log(f"{path}  (depth, {result.units}, {result.model}; median overlap residual "
            f"{100 * result.overlap_residual:.2f}%)")
        return path

    depth, units, how = _load_depth(image_path, pano, options, progress)
    log(f"depth {how} ({units})")
    if to == "mesh":
        from .mesh import write_mesh

        written, mesh = write_mesh(depth, pano, output, overwrite=overwrite, **options)
        log(f"{written[0]}  ({len(mesh.vertices)} vertices, {len(mesh.faces)} faces, {mesh.dropped} faces "
            "across depth edges removed)")
        return written[0]
    if to == "pointcloud":
        from .mesh import write_pointcloud

        written = write_pointcloud(depth, pano, output, overwrite=overwrite, **options)
        log(f"{written[0]}  (coloured point cloud)")
        return written[0]
    # stereo
    from .stereo import render_stereo, write_stereo

    if units != "metres":
        from .depth import estimate_camera_height

        depth = depth * (ASSUMED_CAMERA_HEIGHT / estimate_camera_height(depth))
        log(f"relative depth scaled to metres assuming the camera is {ASSUMED_CAMERA_HEIGHT} m above the floor "
            "(give camera_height / --camera-height to change)")
    image, info = render_stereo(pano, depth, **options)
    path = write_stereo(image, output, info["layout"], overwrite=overwrite)
    log(f"{path}  (stereo 360 {info['layout'].upper()}, IPD {info['ipd_m'] * 1000:.0f} mm, left eye "
        f"{info['left_eye']})")
    return path


__all__ = ["CONVERSIONS", "convert_panorama", "default_output"]
