"""Textured meshes and coloured point clouds from a panorama and its depth (files through trimesh).

Frame of the files: **right-handed, Y up, −Z forward** (glTF's, and what Blender's glTF importer,
three.js, Unity's and Unreal's glTF loaders expect): pano360's sphere frame (x right, y up, z forward,
left-handed) with z negated, so a viewer at the origin looking along −Z sees the panorama's centre
column. Distances are in the depth map's units (metres, or relative with median distance 1).

The mesh is the sphere displaced by depth: one vertex per cell of a ``rows``×2·rows grid at the cell
centres (depth sampled there, never interpolated across an edge), a duplicated seam column (so texture
coordinates run 0→1 without a jump) and one vertex per pole. A triangle is dropped when its vertices'
distances differ by more than a surface seen at ``grazing_deg`` from head-on would allow between
neighbouring grid cells: ``max/min − 1 > tan(grazing)·Δθ`` (Δθ = the grid step in radians). That
removes the "rubber sheet" between a foreground object and the wall behind it. Triangles face the
centre (counter-clockwise seen from the origin).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..geometry import lonlat_to_unit

MESH_SUFFIXES = (".glb", ".obj")
POINTCLOUD_SUFFIXES = (".ply",)


@dataclass
class PanoramaMesh:
    """vertices [N, 3] float32 (file frame, see module doc), faces [F, 3] int64, uv [N, 2] float32
    (u right, v **up**, OpenGL style; 0..1 over the panorama), depth [N] float32 (radial distance),
    threshold: the relative jump above which faces were dropped, dropped: how many."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    depth: np.ndarray
    threshold: float
    dropped: int


def _to_file_frame(points: np.ndarray) -> np.ndarray:
    out = points.copy()
    out[..., 2] *= -1.0
    return out


def discontinuity_threshold(rows: int, grazing_deg: float) -> float:
    """Relative depth jump between neighbouring vertices that counts as a discontinuity."""
    if not 0.0 < grazing_deg < 90.0:
        raise InvalidInputError(f"--grazing must be between 0 and 90 degrees, got {grazing_deg:g}")
    return math.tan(math.radians(grazing_deg)) * math.pi / rows


def build_mesh(depth: Tensor, rows: int | None = None, grazing_deg: float = 85.0) -> PanoramaMesh:
    """Mesh of a depth map [H, W] (radial distance) on a ``rows``×2·rows grid (default min(H, 256))."""
    height, width = depth.shape
    rows = int(rows or min(height, 256))
    if not 4 <= rows <= height:
        raise InvalidInputError(f"--mesh-rows must be between 4 and the panorama height {height}, got {rows}")
    cols = 2 * rows
    # depth at grid-cell centres: nearest source pixel (no blending across edges)
    ys = ((torch.arange(rows, dtype=torch.float64) + 0.5) * height / rows).floor().long().clamp_max(height - 1)
    xs = ((torch.arange(cols, dtype=torch.float64) + 0.5) * width / cols).floor().long().clamp_max(width - 1)
    grid = depth.double()[ys][:, xs]  # [rows, cols]
    lat = (0.5 - (torch.arange(rows, dtype=torch.float64) + 0.5) / rows) * math.pi
    lon = ((torch.arange(cols + 1, dtype=torch.float64) + 0.5) / cols - 0.5) * 2 * math.pi  # seam column dup
    grid = torch.cat([grid, grid[:, :1]], dim=1)  # [rows, cols + 1]
    lon2, lat2 = torch.broadcast_tensors(lon[None, :], lat[:, None])
    points = lonlat_to_unit(lon2, lat2) * grid[..., None]  # [rows, cols + 1, 3]
    u = ((torch.arange(cols + 1, dtype=torch.float64) + 0.5) / cols)[None, :].expand(rows, -1)
    v = (1.0 - (torch.arange(rows, dtype=torch.float64) + 0.5) / rows)[:, None].expand(-1, cols + 1)
    top, bottom = float(grid[0, :-1].mean()), float(grid[-1, :-1].mean())
    vertices = torch.cat([points.reshape(-1, 3), torch.tensor([[0.0, top, 0.0], [0.0, -bottom, 0.0]],
                                                             dtype=torch.float64)])
    uv = torch.cat([torch.stack([u, v], -1).reshape(-1, 2), torch.tensor([[0.5, 1.0], [0.5, 0.0]],
                                                                        dtype=torch.float64)])
    radial = torch.cat([grid.reshape(-1), torch.tensor([top, bottom], dtype=torch.float64)])
    n_grid = rows * (cols + 1)
    pole_top, pole_bottom = n_grid, n_grid + 1

    index = torch.arange(n_grid).reshape(rows, cols + 1)
    a, b = index[:-1, :-1], index[:-1, 1:]   # upper row: left, right
    c, d = index[1:, :-1], index[1:, 1:]     # lower row
    # Counter-clockwise seen from the centre (the file frame mirrors z, which flips the winding once more:
    # (a, b, c) is clockwise from inside in pano360's frame and counter-clockwise in the file frame).
    quads = torch.cat([torch.stack([a, c, b], -1).reshape(-1, 3), torch.stack([b, c, d], -1).reshape(-1, 3)])
    j = torch.arange(cols)
    cap_top = torch.stack([torch.full_like(j, pole_top), index[0, j], index[0, j + 1]], -1)
    cap_bottom = torch.stack([torch.full_like(j, pole_bottom), index[-1, j + 1], index[-1, j]], -1)
    faces = torch.cat([quads, cap_top, cap_bottom])
    threshold = discontinuity_threshold(rows, grazing_deg)
    face_depth = radial[faces]
    ratio = face_depth.amax(-1) / face_depth.amin(-1).clamp_min(1e-12)
    keep = ratio - 1.0 <= threshold
    verts = _to_file_frame(vertices.numpy()).astype(np.float32)
    return PanoramaMesh(vertices=verts, faces=faces[keep].numpy().astype(np.int64), uv=uv.numpy().astype(np.float32),
                        depth=radial.numpy().astype(np.float32), threshold=threshold, dropped=int((~keep).sum()))


def _trimesh():
    try:
        import trimesh
    except ImportError:
        raise InvalidInputError("meshes and point clouds need trimesh: pip install 'pano360[3d]'") from None
    return trimesh


def texture_image(pano: Tensor, max_width: int = 4096):
    """[1, 3, H, W] → PIL RGB texture, downsized to at most ``max_width`` wide."""
    from ..io.export import tensor_to_image

    image = tensor_to_image(pano[0, :3])
    if image.width > max_width:
        image = image.resize((max_width, max_width // 2))
    return image


def mesh_files(mesh: PanoramaMesh, pano: Tensor, path: str | os.PathLike) -> dict[Path, bytes]:
    """Encoded files of a mesh: ``{path: glb bytes}`` or, for .obj, the .obj, its .mtl and its texture."""
    trimesh = _trimesh()
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise InvalidInputError(f"{path.name}: a mesh is written as .glb or .obj; change the file name")
    image = texture_image(pano)
    material = trimesh.visual.material.SimpleMaterial(image=image, diffuse=(255, 255, 255, 255))
    visual = trimesh.visual.TextureVisuals(uv=mesh.uv, image=image, material=material)
    shape = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, visual=visual, process=False)
    if suffix == ".glb":
        return {path: shape.export(file_type="glb")}
    from trimesh.exchange.obj import export_obj

    mtl_name = path.stem + ".mtl"
    text, extra = export_obj(shape, include_normals=False, include_texture=True, return_texture=True,
                             mtl_name=mtl_name)
    files = {path: text.encode("utf-8")}
    renames = {name: f"{path.stem}_texture{Path(name).suffix}" for name in extra if not name.endswith(".mtl")}
    for name, data in extra.items():
        if name.endswith(".mtl"):
            for old, new in renames.items():
                data = data.replace(old.encode(), new.encode())
        files[path.with_name(renames.get(name, name))] = data
    return files


def pointcloud_bytes(depth: Tensor, pano: Tensor, max_points: int = 2_000_000) -> bytes:
    """Binary PLY of one coloured point per pixel (subsampled by a whole stride to ≤ ``max_points``)."""
    trimesh = _trimesh()
    from .depth import depth_to_points

    height, width = depth.shape
    stride = max(1, math.ceil(math.sqrt(height * width / max_points)))
    points = depth_to_points(depth)[::stride, ::stride].reshape(-1, 3).numpy()
    colours = (pano[0, :3, ::stride, ::stride].permute(1, 2, 0).reshape(-1, 3).clamp(0, 1) * 255).round()
    colours = np.concatenate([colours.to(torch.uint8).numpy(), np.full((len(points), 1), 255, np.uint8)], 1)
    cloud = trimesh.PointCloud(_to_file_frame(points).astype(np.float32), colors=colours)
    return cloud.export(file_type="ply")


def write_files(files: dict[Path, bytes], overwrite: bool = False) -> list[Path]:
    """All files or none, atomically (pano360.io.export.write_all_or_nothing)."""
    from ..io.export import PlannedFile, write_all_or_nothing

    return write_all_or_nothing([PlannedFile(p, (lambda d=d: d), p.name) for p, d in files.items()], overwrite)


def write_mesh(depth: Tensor, pano: Tensor, path: str | os.PathLike, *, rows: int | None = None,
               grazing_deg: float = 85.0, overwrite: bool = False) -> tuple[list[Path], PanoramaMesh]:
    """Build and write the mesh (.glb, or .obj + .mtl + texture); returns (written paths, mesh)."""
    mesh = build_mesh(depth, rows=rows, grazing_deg=grazing_deg)
    return write_files(mesh_files(mesh, pano, path), overwrite), mesh


def write_pointcloud(depth: Tensor, pano: Tensor, path: str | os.PathLike, *, overwrite: bool = False,
                     max_points: int = 2_000_000) -> list[Path]:
    path = Path(path)
    if path.suffix.lower() not in POINTCLOUD_SUFFIXES:
        raise InvalidInputError(f"{path.name}: a point cloud is written as .ply; change the file name")
    return write_files({path: pointcloud_bytes(depth, pano, max_points)}, overwrite)
