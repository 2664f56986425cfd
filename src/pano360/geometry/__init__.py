"""Sphere math on tensors: equirect ↔ perspective ↔ cubemap, rotations and camera rigs.

Everything is torch only (CPU or GPU), batched, works in fp16/bf16/fp32/fp64 (grids are computed in
float64, sampling runs in float32 and the result comes back in the input dtype) and is differentiable
with respect to the images. Conventions are in :mod:`pano360.geometry.coords`; the user guide is
``docs/geometry.md``.

Main entry points (angles in degrees, FoV horizontal)::

    equirect_to_perspective(equirect [B,C,H,W], yaw_deg, pitch_deg, fov_deg, out_hw, roll_deg=0,
                            mode="bilinear") -> [B, V, C, h, w]
    perspective_to_equirect(views [B,V,C,h,w], yaw_deg, pitch_deg, fov_deg, out_hw, roll_deg=0,
                            mode="bilinear", blend="average") -> (equirect [B,C,H,W], weight [B,1,H,W])
    equirect_to_cubemap(equirect, face_size, layout="list")     # F R B L U D
    cubemap_to_equirect(cubemap, out_hw=None, layout=None)
    rotate_equirect(equirect, yaw_deg, pitch_deg, roll_deg), roll_yaw(equirect, columns)
    rigs.horizon_ring(), rigs.cube_faces(), rigs.random_views(n, seed)
"""

from . import rigs
from .coords import (
    equirect_directions,
    equirect_lonlat,
    is_full_sphere,
    latitude_extent,
    lonlat_to_pixel,
    lonlat_to_unit,
    pixel_to_lonlat,
    rotation_matrix,
    unit_to_lonlat,
)
from .cubemap import (
    CUBEMAP_CONVENTIONS,
    LAYOUTS,
    cube_face_directions,
    cubemap_to_equirect,
    equirect_to_cubemap,
    faces_from_layout,
    faces_in_convention,
    faces_to_layout,
    locate_on_cube,
    sample_cubemap,
)
from .perspective import (
    equirect_to_perspective,
    horizontal_to_vertical_fov,
    perspective_to_equirect,
    view_angles,
    view_directions,
)
from .rigs import CUBE_FACE_NAMES, ViewRig, cube_faces, horizon_ring, random_views
from .rotate import roll_yaw, rotate_equirect, yaw_to_columns
from .sampling import MODES, pad_equirect, sample_equirect, sample_equirect_lonlat, sample_equirect_pixels

__all__ = [
    "CUBEMAP_CONVENTIONS",
    "CUBE_FACE_NAMES",
    "LAYOUTS",
    "MODES",
    "ViewRig",
    "cube_face_directions",
    "cube_faces",
    "cubemap_to_equirect",
    "equirect_directions",
    "equirect_lonlat",
    "equirect_to_cubemap",
    "equirect_to_perspective",
    "faces_from_layout",
    "faces_in_convention",
    "faces_to_layout",
    "horizon_ring",
    "horizontal_to_vertical_fov",
    "is_full_sphere",
    "latitude_extent",
    "locate_on_cube",
    "lonlat_to_pixel",
    "lonlat_to_unit",
    "pad_equirect",
    "perspective_to_equirect",
    "pixel_to_lonlat",
    "random_views",
    "rigs",
    "roll_yaw",
    "rotate_equirect",
    "rotation_matrix",
    "sample_cubemap",
    "sample_equirect",
    "sample_equirect_lonlat",
    "sample_equirect_pixels",
    "unit_to_lonlat",
    "view_angles",
    "view_directions",
    "yaw_to_columns",
]
