"""The viewer's depth mode: walk a little inside the panorama, rendered as a mesh displaced by depth.

:func:`build_depth_viewer_html` writes one self-contained page, like the 360° viewer: the ``.glb`` that
``pano360 convert --to mesh`` writes (the same bytes: faces across depth edges removed, the panorama as
its texture) and a coarse map of the free space, inlined as base64, plus ``assets/depth-viewer.js``,
pano360's own small WebGL2 renderer with a binary-glTF reader (no third-party library, no CDN, opens
from disk). Drag to look, wheel to zoom, W/A/S/D or arrows to walk, Q/E down/up, R back to
the centre; the pointer's position shifts the eye slightly (head-motion parallax). Walking stops at
``limit`` (0.8) of the way to the nearest surface in the direction of travel, so the camera stays in
the scene's free space, where the mesh has no holes to look through.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidInputError
from . import ASSETS, MIME_TYPES, _inline_script

FREE_SPACE_HW = (32, 64)


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()).decode()


def free_space_grid(depth: torch.Tensor, hw: tuple[int, int] = FREE_SPACE_HW) -> np.ndarray:
    """Conservative (minimum-pooled) distance to the surface on a coarse equirect grid [rows, cols]."""
    import torch.nn.functional as F

    height, width = depth.shape
    rows, cols = min(hw[0], height), min(hw[1], width)
    pooled = -F.adaptive_max_pool2d(-depth[None, None].float(), (rows, cols))[0, 0]
    return pooled.numpy().astype(np.float32)


def depth_viewer_config(image_path, depth: torch.Tensor, *, rows: int | None = None, grazing_deg: float = 85.0,
                        hfov: float = 90.0, yaw: float = 0.0, pitch: float = 0.0, limit: float = 0.8) -> dict:
    """The page's ``PANO360_DEPTH`` object (the mesh as base64 .glb, texture inside)."""
    from ..io.export import image_to_tensor
    from ..io.images import read_image
    from ..spatial.depth import check_full_sphere
    from ..spatial.files import check_depth_matches
    from ..spatial.mesh import build_mesh, mesh_files

    path = Path(image_path)
    image = read_image(path, "panorama", formats=tuple(MIME_TYPES))
    check_full_sphere(image.height, image.width, str(path))
    depth = check_depth_matches(depth.float(), image.height, image.width)
    if not 0.0 < hfov < 180.0:
        raise InvalidInputError(f"--hfov must be between 0 and 180 degrees (exclusive), got {hfov:g}")
    mesh = build_mesh(depth, rows=rows or min(image.height, 256), grazing_deg=grazing_deg)
    median = float(depth.median())
    grid = free_space_grid(depth)
    glb = next(iter(mesh_files(mesh, image_to_tensor(image.convert("RGB")), "mesh.glb").values()))
    config = {
        "glb": base64.b64encode(glb).decode("ascii"),
        "free": {"rows": int(grid.shape[0]), "cols": int(grid.shape[1]), "data": _b64(grid)},
        "hfov": float(hfov), "yaw": float(yaw), "pitch": float(pitch), "limit": float(limit),
        "step": 0.05 * median, "parallax": 0.03 * median,
        "near": 0.005 * float(depth.min()), "far": 4.0 * float(depth.max()),
        "vertices": len(mesh.vertices), "faces": len(mesh.faces),
    }
    return config


def build_depth_viewer_html(image_path, depth: torch.Tensor, *, title: str | None = None, **options) -> str:
    """The complete depth-mode page for ``image_path`` with radial ``depth`` [H, W] as a string.
    ``options``: ``rows``, ``grazing_deg``, ``hfov``, ``yaw``, ``pitch`` (degrees), ``limit``."""
    config = depth_viewer_config(image_path, depth, **options)
    title = title or f"{Path(image_path).name} (depth)"
    script = (ASSETS / "depth-viewer.js").read_text(encoding="utf-8")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(title)}</title>\n"
        "<meta name=\"generator\" content=\"pano360 depth viewer (WebGL2)\">\n"
        "<style>html, body { margin: 0; height: 100%; background: #000; overflow: hidden; }\n"
        "#depth-canvas { width: 100%; height: 100%; display: block; touch-action: none; cursor: grab; }\n"
        "#help { position: absolute; left: 8px; bottom: 8px; color: #ddd; font: 12px sans-serif; "
        "background: rgba(0,0,0,0.4); padding: 4px 6px; border-radius: 4px; pointer-events: none; }</style>\n"
        "</head>\n<body>\n<canvas id=\"depth-canvas\"></canvas>\n"
        "<div id=\"help\">drag: look &middot; wheel: zoom &middot; W A S D / arrows: walk &middot; Q E: down/up "
        "&middot; R: centre</div>\n"
        f"<script>\nwindow.PANO360_DEPTH = {json.dumps(config)};\n</script>\n"
        f"<script>\n{_inline_script(script)}\n</script>\n</body>\n</html>\n"
    )


def write_depth_viewer_html(image_path, depth: torch.Tensor, html_path: str | os.PathLike, overwrite: bool = False,
                            **options) -> Path:
    """Write the self-contained depth-mode page atomically (never clobbers unless ``overwrite``)."""
    from ..io.atomic import atomic_write_text
    from ..io.export import apply_default_mode
    from . import check_html_target

    check_html_target(html_path, overwrite)
    path = atomic_write_text(html_path, build_depth_viewer_html(image_path, depth, **options), overwrite=overwrite)
    apply_default_mode(path)
    return path


__all__ = ["build_depth_viewer_html", "depth_viewer_config", "free_space_grid", "write_depth_viewer_html"]
