"""3D outputs of batch jobs: a job's ``exports`` (e.g. ``["depth", "mesh", "stereo"]``) are written next to
its image by :func:`pano360.spatial.convert_panorama`, with the default names
(``<stem>_depth.exr``, ``<stem>_mesh.glb``, ``<stem>_points.ply``, ``<stem>_360_TB.png``, ``<stem>.hdr``,
``<stem>.exr``). Depth is estimated once per job and shared; the depth model is loaded once per process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

#: what a job may ask for (the same names as ``pano360.spatial.CONVERSIONS``; kept here torch-free)
EXPORTS = ("depth", "mesh", "pointcloud", "stereo", "hdr", "exr")
_MODELS: dict[str, Any] = {}


def normalise_exports(value: Any) -> list[str]:
    """A job's ``exports`` (a name, a comma list or a list) → sorted unique names, checked."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise InvalidInputError(f"exports must be a list such as [\"depth\", \"mesh\"], got {value!r}")
    names = sorted({str(item).strip() for item in items if str(item).strip()})
    unknown = [name for name in names if name not in EXPORTS]
    if unknown:
        raise InvalidInputError(f"unknown export {unknown[0]!r}; use any of: {', '.join(EXPORTS)}")
    return names


def write_job_exports(image: Path, exports: list[str] | None, depth_model: str | None = None) -> list[Path]:
    """Write the job's exports beside ``image``; all or none (written files are removed on failure)."""
    if not exports:
        return []
    from ..io.export import remove_quietly
    from ..spatial.convert import convert_panorama, default_output
    from ..spatial.depth import DEFAULT_DEPTH_MODEL, estimate_depth, load_depth_model

    written: list[Path] = []
    try:
        depth = None
        if set(exports) & {"depth", "mesh", "pointcloud", "stereo"}:
            name = depth_model or DEFAULT_DEPTH_MODEL
            if name not in _MODELS:
                _MODELS[name] = load_depth_model(name)
            depth = estimate_depth(image, _MODELS[name], progress=False)
        for target in exports:
            output = default_output(image, target)
            if target == "depth":
                written.append(depth.save(output, source=image.name))
                written.append(output.with_name(output.name + ".json"))
            elif target in ("mesh", "pointcloud", "stereo"):
                written.append(convert_panorama(image, target, output, depth=depth, progress=False))
            else:
                written.append(convert_panorama(image, target, output, progress=False))
    except BaseException:
        remove_quietly(written)
        raise
    return written
