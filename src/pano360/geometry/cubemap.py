"""Equirectangular ↔ cubemap, cubemap layouts and the face conventions of graphics engines.

Internal face order is py360convert's **F R B L U D** (front, right, back, left, up, down); each face
is the 90° view of :func:`pano360.geometry.rigs.cube_faces` (front looks at the image centre column,
up's top edge borders back, down's top edge borders front), so ``equirect_to_cubemap`` equals
``equirect_to_perspective`` with that rig at FoV 90°.

Layouts of a batch of faces [B, 6, C, s, s]:

* ``"stack"``: that tensor;
* ``"list"``: 6 tensors [B, C, s, s] in F R B L U D order;  ``"dict"``: keys "F" "R" "B" "L" "U" "D";
* ``"horizon"``: one row [B, C, s, 6s] in F R B L U D order;
* ``"dice"``: a cross [B, C, 3s, 4s]: U above F, then L F R B in the middle row, D below F
  (empty cells are 0).

Deviations from py360convert (1.0.x), which the equivalence tests account for:

* ``e2c``: py360convert puts the *centres* of a face's outer pixels on the cube edges
  (``linspace(-0.5, 0.5, s)``), so neighbouring faces repeat the edge texels; we use pixel centres
  at (i + 0.5)/s, like a GPU samples a cube texture. ``cube_face_directions(s, align_corners=True)``
  reproduces py360convert's grid.
* ``c2e``: py360convert samples its output on an align-corners grid (longitudes ``linspace(-π, π, W)``,
  so its first and last columns are both the seam, and rows 0 and H−1 are exactly the poles), maps
  face coordinates to [0, s] instead of [−0.5, s − 0.5] (half a face pixel off) and picks the face of a
  pixel from a rounded lookup table near the up/down faces. We sample pixel centres and pick the
  face whose axis is closest to each direction.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .coords import cached_equirect_directions, rotation_matrix, unit_to_lonlat
from .rigs import CUBE_FACE_NAMES, cube_faces
from .sampling import Mode, check_mode, sample_equirect_lonlat, work_dtype

Layout = Literal["stack", "list", "dict", "horizon", "dice"]
LAYOUTS = ("stack", "list", "dict", "horizon", "dice")

#: Dice (cross) cell (column, row) of each face, F R B L U D order.
DICE_CELLS = ((1, 1), (2, 1), (3, 1), (0, 1), (1, 0), (1, 2))

#: File-name conventions: (internal face, name) pairs in each convention's own order.
#: OpenGL/RenderMan cube maps (+X −X +Y −Y +Z −Z) in the left-handed frame x right, y up, z forward:
#: +Z is the front (yaw 0), +X the right (yaw 90°), +Y up; with rows stored top-first (as image files
#: are) the faces keep exactly our orientation. Unity's "Skybox/6 Sided" material labels its slots
#: Front (+Z), Back (−Z), Left (+X), Right (−X), Up (+Y), Down (−Y): its "Left" slot shows the view to the
#: *right* of the front (+X), so our R face goes to ``_LeftTex`` and our L face to ``_RightTex``.
CUBEMAP_CONVENTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "fbrlud": (("F", "front"), ("R", "right"), ("B", "back"), ("L", "left"), ("U", "up"), ("D", "down")),
    "opengl": (("R", "px"), ("L", "nx"), ("U", "py"), ("D", "ny"), ("F", "pz"), ("B", "nz")),
    "unity": (("F", "FrontTex"), ("B", "BackTex"), ("R", "LeftTex"), ("L", "RightTex"), ("U", "UpTex"),
              ("D", "DownTex")),
}


def _face_rotations(device=None) -> Tensor:
    """Camera-to-world rotations [6, 3, 3] of the faces (float64, exact signed permutations)."""
    rig = cube_faces()
    return rotation_matrix(rig.yaw_deg, rig.pitch_deg, rig.roll_deg, device=device).round()


def cube_face_directions(
    face_size: int, *, align_corners: bool = False, device=None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Unit rays [6, s, s, 3] through the pixels of the six faces (F R B L U D).

    ``align_corners=False`` (default) puts pixel i's centre at tan-coordinate 2(i + 0.5)/s − 1;
    ``True`` puts the outer pixel centres on the cube edges (py360convert's ``xyzcube`` grid).
    """
    face_size = _check_face_size(face_size)
    if align_corners:
        t = torch.linspace(-1.0, 1.0, face_size, dtype=torch.float64, device=device)
        if face_size == 1:
            t = torch.zeros(1, dtype=torch.float64, device=device)
    else:
        t = 2.0 * (torch.arange(face_size, dtype=torch.float64, device=device) + 0.5) / face_size - 1.0
    x, y = torch.broadcast_tensors(t[None, :], -t[:, None])
    rays = torch.stack([x, y, torch.ones_like(x)], -1)
    rays = rays / rays.norm(dim=-1, keepdim=True)
    world = torch.einsum("fij,hwj->fhwi", _face_rotations(device), rays)
    return world.to(dtype)


def _check_face_size(face_size) -> int:
    if isinstance(face_size, bool) or int(face_size) != face_size or face_size <= 0:
        raise ValueError(f"face_size must be a positive integer, got {face_size!r}")
    return int(face_size)


@functools.lru_cache(maxsize=4)
def _cached_face_lonlat(face_size: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """(lon, lat) [6, s, s] of the face pixels: constant per size, so computed once."""
    lon, lat = unit_to_lonlat(cube_face_directions(face_size, device=device, dtype=torch.float64))
    return lon.to(dtype), lat.to(dtype)


def equirect_to_cubemap(
    equirect: Tensor, face_size: int, layout: Layout = "list", mode: Mode = "bilinear"
):
    """Cube faces of a batch of panoramas.

    Args:
        equirect: [B, C, H, W] (W = 2H), any float dtype/device.
        face_size: edge of each face in pixels.
        layout: "list" (default), "dict", "stack", "horizon" or "dice" (see module docstring).
        mode: "nearest", "bilinear" or "bicubic".
    """
    check_mode(mode)
    _check_layout(layout)
    lon, lat = _cached_face_lonlat(_check_face_size(face_size), equirect.device, work_dtype(equirect.dtype))
    faces = sample_equirect_lonlat(equirect, lon, lat, mode).permute(0, 2, 1, 3, 4)  # [B, 6, C, s, s]
    return faces_to_layout(faces, layout)


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown cubemap layout {layout!r}; use one of {', '.join(LAYOUTS)}")


def faces_to_layout(faces: Tensor, layout: Layout):
    """[B, 6, C, s, s] (F R B L U D) → the requested layout."""
    _check_layout(layout)
    if layout == "stack":
        return faces
    if layout == "list":
        return list(faces.unbind(1))
    if layout == "dict":
        return dict(zip(CUBE_FACE_NAMES, faces.unbind(1)))
    batch, _, channels, size, _ = faces.shape
    if layout == "horizon":
        return faces.permute(0, 2, 3, 1, 4).reshape(batch, channels, size, 6 * size)
    dice = faces.new_zeros(batch, channels, 3 * size, 4 * size)
    for face, (col, row) in enumerate(DICE_CELLS):  # six block copies, not a per-pixel loop
        dice[:, :, row * size : (row + 1) * size, col * size : (col + 1) * size] = faces[:, face]
    return dice


def infer_layout(cubemap) -> str:
    """Guess the layout of ``cubemap`` from its type and shape."""
    if isinstance(cubemap, Mapping):
        return "dict"
    if isinstance(cubemap, (list, tuple)):
        return "list"
    if isinstance(cubemap, Tensor):
        if cubemap.ndim == 5 and cubemap.shape[1] == 6:
            return "stack"
        if cubemap.ndim == 4:
            height, width = cubemap.shape[-2:]
            if width == 6 * height:
                return "horizon"
            if 3 * width == 4 * height and height % 3 == 0:
                return "dice"
    raise ValueError(
        "cannot tell the cubemap layout: give a list/dict of 6 faces [B, C, s, s], a stack [B, 6, C, s, s], "
        "a horizon strip [B, C, s, 6s] or a dice cross [B, C, 3s, 4s]"
    )


def faces_from_layout(cubemap, layout: Layout | None = None) -> Tensor:
    """Any layout → [B, 6, C, s, s] in F R B L U D order."""
    layout = layout or infer_layout(cubemap)
    _check_layout(layout)
    if layout == "dict":
        missing = [name for name in CUBE_FACE_NAMES if name not in cubemap]
        if missing:
            raise ValueError(f"cubemap dict lacks faces {missing}; keys must be F R B L U D")
        faces: Sequence[Tensor] = [cubemap[name] for name in CUBE_FACE_NAMES]
        return _stack_faces(faces)
    if layout == "list":
        return _stack_faces(list(cubemap))
    if layout == "stack":
        if cubemap.ndim != 5 or cubemap.shape[1] != 6 or cubemap.shape[-1] != cubemap.shape[-2]:
            raise ValueError(f"a cubemap stack must be [B, 6, C, s, s], got {tuple(cubemap.shape)}")
        return cubemap
    batch, channels, height, width = cubemap.shape
    if layout == "horizon":
        if width != 6 * height:
            raise ValueError(f"a horizon cubemap must be [B, C, s, 6s], got {tuple(cubemap.shape)}")
        return cubemap.reshape(batch, channels, height, 6, height).permute(0, 3, 1, 2, 4)
    if 3 * width != 4 * height or height % 3:
        raise ValueError(f"a dice cubemap must be [B, C, 3s, 4s], got {tuple(cubemap.shape)}")
    size = height // 3
    return torch.stack(
        [cubemap[:, :, row * size : (row + 1) * size, col * size : (col + 1) * size] for col, row in DICE_CELLS],
        dim=1,
    )


def _stack_faces(faces: Sequence[Tensor]) -> Tensor:
    if len(faces) != 6:
        raise ValueError(f"a cubemap needs 6 faces, got {len(faces)}")
    shape = faces[0].shape
    if any(face.shape != shape for face in faces) or len(shape) != 4 or shape[-1] != shape[-2]:
        raise ValueError("cubemap faces must all be square [B, C, s, s] tensors of the same shape")
    return torch.stack(list(faces), dim=1)


@functools.lru_cache(maxsize=8)
def _face_lookup(device) -> tuple[Tensor, Tensor, Tensor]:
    """Per face, for world→face coordinates: component index / sign [6, 3]; and the face of each
    dominant axis [3 axes, 2 signs (−, +)]."""
    rotations = _face_rotations(device)
    world_to_face = rotations.transpose(1, 2)  # rows: right, up, forward in world coordinates
    index = world_to_face.abs().argmax(-1)  # [6, 3]: which world component each face axis reads
    sign = torch.gather(world_to_face, -1, index[..., None])[..., 0]  # ±1
    face_of_axis = torch.empty(3, 2, dtype=torch.long, device=device)
    face_of_axis[index[:, 2], (sign[:, 2] > 0).long()] = torch.arange(6, device=device)
    return index, sign, face_of_axis


def locate_on_cube(directions: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Directions [*S, 3] → (face index [*S] in F R B L U D, a, b) where (a, b, 1) is the direction in
    that face's camera frame scaled to the face plane: a, b ∈ [−1, 1], a to the right, b up."""
    index, sign, face_of_axis = _face_lookup(directions.device)
    axis = directions.abs().argmax(-1)  # the dominant component picks the face
    positive = torch.gather(directions, -1, axis[..., None])[..., 0] > 0
    face = face_of_axis[axis, positive.long()]
    local = torch.gather(directions, -1, index[face]) * sign[face].to(directions.dtype)
    return face, local[..., 0] / local[..., 2], local[..., 1] / local[..., 2]


@functools.lru_cache(maxsize=16)
def _pad_index(size: int, pad: int, device: torch.device) -> Tensor:
    """Flat texel index [6, s + 2p, s + 2p] into the faces for every texel of the padded faces: the
    texel itself inside, the nearest texel of the neighbouring face in the ring (found by projecting
    the ring's directions onto the cube)."""
    t = 2.0 * (torch.arange(-pad, size + pad, dtype=torch.float64, device=device) + 0.5) / size - 1.0
    x, y = torch.broadcast_tensors(t[None, :], -t[:, None])
    rays = torch.stack([x, y, torch.ones_like(x)], -1)
    world = torch.einsum("fij,hwj->fhwi", _face_rotations(device), rays)
    face, a, b = locate_on_cube(world)
    col = torch.round((a + 1.0) * size / 2 - 0.5).clamp(0, size - 1).long()
    row = torch.round((1.0 - b) * size / 2 - 0.5).clamp(0, size - 1).long()
    return (face * size + row) * size + col


def _pad_faces(faces: Tensor, pad: int) -> Tensor:
    """[B, 6, C, s, s] → [B, 6, C, s + 2p, s + 2p] with the neighbouring faces' texels in the ring."""
    batch, _, channels, size, _ = faces.shape
    flat_index = _pad_index(size, pad, faces.device)
    flat = faces.permute(0, 2, 1, 3, 4).reshape(batch, channels, 6 * size * size)
    padded = flat[:, :, flat_index.reshape(-1)].reshape(batch, channels, 6, size + 2 * pad, size + 2 * pad)
    return padded.permute(0, 2, 1, 3, 4)


def sample_cubemap(faces: Tensor, directions: Tensor, mode: Mode = "bilinear") -> Tensor:
    """Sample faces [B, 6, C, s, s] along directions [*S, 3] → [B, C, *S], seamless across face edges."""
    check_mode(mode)
    size = faces.shape[-1]
    pad = 2 if mode == "bicubic" else 1
    grid = _atlas_grid(directions.to(work_dtype(faces.dtype)), size, pad)
    return _sample_atlas(faces, grid, directions.shape[:-1], mode, pad)


def _atlas_grid(directions: Tensor, size: int, pad: int) -> Tensor:
    """grid_sample coordinates [N, 2] into the padded-face atlas [6·(s + 2p), s + 2p] (faces stacked
    vertically) for directions [*S, 3]."""
    cell = size + 2 * pad
    face, a, b = locate_on_cube(directions)
    # column (a + 1)·s/2 − 0.5 + p and row (1 − b)·s/2 − 0.5 + p + face·cell, normalised with
    # align_corners=False: g = (2·pixel + 1)/extent − 1
    gx = a * (size / cell) + (2.0 * pad + size) / cell - 1.0
    gy = b * (-size / (6 * cell)) + face.to(a.dtype) * (2.0 / 6) + (2.0 * pad + size) / (6 * cell) - 1.0
    return torch.stack([gx, gy], -1).reshape(-1, 2)


def _sample_atlas(faces: Tensor, grid: Tensor, shape, mode: str, pad: int) -> Tensor:
    batch, _, channels, size, _ = faces.shape
    cell = size + 2 * pad
    padded = _pad_faces(faces.to(work_dtype(faces.dtype)), pad)
    atlas = padded.permute(0, 2, 1, 3, 4).reshape(batch, channels, 6 * cell, cell)
    grid = grid.reshape(1, 1, -1, 2).expand(batch, 1, -1, 2)
    out = F.grid_sample(atlas, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.reshape(batch, channels, *shape).to(faces.dtype)


@functools.lru_cache(maxsize=2)
def _cached_c2e_grid(height: int, width: int, size: int, pad: int, device: torch.device, dtype: torch.dtype):
    directions = cached_equirect_directions(height, width, device, dtype)
    return _atlas_grid(directions, size, pad)


def cubemap_to_equirect(cubemap, out_hw=None, layout: Layout | None = None, mode: Mode = "bilinear") -> Tensor:
    """Equirectangular panorama [B, C, H, W] from a cubemap in any layout (inferred when ``None``).

    ``out_hw`` = (H, W) defaults to (2s, 4s) for faces of size s. Face edges are seamless: a sample
    near an edge interpolates with the neighbouring face's texels.
    """
    faces = faces_from_layout(cubemap, layout)
    size = faces.shape[-1]
    if out_hw is None:
        out_hw = (2 * size, 4 * size)
    height, width = (int(v) for v in out_hw)
    check_mode(mode)
    pad = 2 if mode == "bicubic" else 1
    grid = _cached_c2e_grid(height, width, size, pad, faces.device, work_dtype(faces.dtype))
    return _sample_atlas(faces, grid, (height, width), mode, pad)


def faces_in_convention(cubemap, convention: str = "fbrlud", layout: Layout | None = None) -> list[tuple[str, Tensor]]:
    """[(name, face [B, C, s, s]), …] in a convention's order and naming (see ``CUBEMAP_CONVENTIONS``)."""
    if convention not in CUBEMAP_CONVENTIONS:
        raise ValueError(
            f"unknown cubemap convention {convention!r}; use one of {', '.join(CUBEMAP_CONVENTIONS)}"
        )
    faces = faces_from_layout(cubemap, layout)
    position = {name: i for i, name in enumerate(CUBE_FACE_NAMES)}
    return [(name, faces[:, position[face]]) for face, name in CUBEMAP_CONVENTIONS[convention]]
