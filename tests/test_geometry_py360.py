"""Equivalence with py360convert (a test-only dependency) where it is right.

Documented deviations (see the docstrings of pano360.geometry.perspective / cubemap / sampling):

* e2p: py360convert's FoV spans the outer pixel *centres*; ours spans the outer pixel edges. Calling it
  with fov' = 2·atan(tan(fov/2)·(w − 1)/w) puts both on the same grid.
* e2c: py360convert's face grid puts the outer pixel centres on the cube edges;
  ``cube_face_directions(s, align_corners=True)`` reproduces it, our default uses pixel centres.
* c2e: py360convert samples an align-corners equirect grid and reads faces half a face pixel off;
  we compare on its grid and check that ours is the closer one to the analytic image.
* Within half a pixel of a pole ("polar cap") we interpolate towards one pole value; py360convert
  averages the two pixels either side of the pole, which depends on the longitude.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pano360 import geometry as g

py360convert = pytest.importorskip("py360convert")

TOL = 1.0 / 255.0


def analytic(d: torch.Tensor) -> torch.Tensor:
    """A smooth RGB function of the direction d [..., 3] → [..., 3] in [0, 1]."""
    x, y, z = d.unbind(-1)
    return torch.stack([0.5 + 0.3 * x + 0.1 * y * z, 0.5 + 0.3 * y, 0.5 + 0.25 * z + 0.1 * x * y], -1)


def smooth(height: int, width: int) -> torch.Tensor:
    return analytic(g.equirect_directions(height, width, dtype=torch.float64)).permute(2, 0, 1)[None].float()


def to_numpy(image: torch.Tensor) -> np.ndarray:
    """[1, C, H, W] → [H, W, C]."""
    return image[0].permute(1, 2, 0).contiguous().numpy()


def outside_polar_caps(directions: torch.Tensor, height: int) -> torch.Tensor:
    """True where a direction is more than one equirect pixel away from both poles."""
    _, lat = g.unit_to_lonlat(directions.double())
    return (math.pi / 2 - lat.abs()) > math.pi / height


def py360_fov(fov_deg: float, height: int, width: int) -> tuple[float, float]:
    """py360convert (h_fov, v_fov) that samples exactly our pixel grid for a view of size (h, w)."""
    t = math.tan(math.radians(fov_deg) / 2)
    return (2 * math.degrees(math.atan(t * (width - 1) / width)),
            2 * math.degrees(math.atan(t * height / width * (height - 1) / height)))


VIEWS = [  # yaw, pitch, roll, horizontal fov, (h, w)
    (0.0, 0.0, 0.0, 90.0, (32, 32)),
    (45.0, 20.0, 0.0, 60.0, (24, 40)),
    (-120.0, -50.0, 30.0, 100.0, (33, 33)),
    (170.0, 80.0, 0.0, 90.0, (32, 32)),
    (180.0, -90.0, -15.0, 120.0, (20, 30)),
]


@pytest.mark.parametrize("size", [(64, 128), (96, 192)])
@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_e2p_matches_py360convert(size, mode):
    height, width = size
    pano = smooth(height, width)
    for yaw, pitch, roll, fov, out_hw in VIEWS:
        ours = g.equirect_to_perspective(pano, yaw, pitch, fov, out_hw, roll_deg=roll, mode=mode)[0, 0]
        ref = py360convert.e2p(to_numpy(pano), py360_fov(fov, *out_hw), yaw, pitch, out_hw, in_rot_deg=roll,
                               mode=mode)
        diff = np.abs(to_numpy(ours[None]) - ref).max(-1)
        keep = outside_polar_caps(g.view_directions(yaw, pitch, fov, out_hw, roll)[0], height).numpy()
        if mode == "bicubic":  # cubic convolution vs prefiltered cubic B-spline: both interpolate
            assert diff[keep].max() < TOL, (yaw, pitch)
        elif mode == "nearest":  # ties (a coordinate at .5 ± rounding error) may pick either pixel
            lon, lat = g.unit_to_lonlat(g.view_directions(yaw, pitch, fov, out_hw, roll, dtype=torch.float64)[0])
            x, y = g.lonlat_to_pixel(lon, lat, height, width)
            tie = (((x % 1) - 0.5).abs() < 1e-4) | (((y % 1) - 0.5).abs() < 1e-4)
            assert not ((diff > 1e-5) & keep & ~tie.numpy()).any(), (yaw, pitch)
        else:
            assert diff[keep].max() < 1e-5, (yaw, pitch)  # the same grid and the same interpolation
        assert diff.max() < 0.05  # inside the polar cap (if any) the results stay close too


@pytest.mark.parametrize("face_size", [16, 32])
def test_e2c_on_py360convert_grid_is_identical(face_size):
    pano = smooth(2 * face_size, 4 * face_size)
    directions = g.cube_face_directions(face_size, align_corners=True)
    ours = g.sample_equirect(pano, directions)  # [1, C, 6, s, s]
    ours = g.faces_to_layout(ours.permute(0, 2, 1, 3, 4), "horizon")
    ref = py360convert.e2c(to_numpy(pano), face_size, cube_format="horizon")
    assert np.abs(to_numpy(ours) - ref).max() < 1e-5


@pytest.mark.parametrize("face_size,layout", [(64, "dice"), (128, "horizon"), (64, "dict")])
def test_e2c_default_grid_agrees_within_a_level(face_size, layout):
    pano = smooth(2 * face_size, 4 * face_size)
    ours = g.equirect_to_cubemap(pano, face_size, layout=layout)
    ref = py360convert.e2c(to_numpy(pano), face_size, cube_format=layout)
    if layout == "dict":
        assert list(ref) == list(ours) == ["F", "R", "B", "L", "U", "D"]
        for name in ref:
            assert np.abs(to_numpy(ours[name]) - ref[name]).max() < TOL
    else:
        assert np.abs(to_numpy(ours) - ref).max() < TOL


@pytest.mark.parametrize("face_size,out_hw", [(32, (64, 128)), (64, (96, 192)), (128, (128, 256))])
def test_c2e_matches_py360convert_and_is_closer_to_the_truth(face_size, out_hw):
    height, width = out_hw
    faces = g.equirect_to_cubemap(smooth(2 * face_size, 4 * face_size), face_size, layout="stack")
    ref = py360convert.c2e(to_numpy(g.faces_to_layout(faces, "dice")), height, width, cube_format="dice")
    # py360convert's output grid: longitudes linspace(-π, π, W), latitudes linspace(π/2, -π/2, H)
    lon = torch.linspace(-math.pi, math.pi, width, dtype=torch.float64)
    lat = torch.linspace(math.pi / 2, -math.pi / 2, height, dtype=torch.float64)
    directions = g.lonlat_to_unit(*torch.broadcast_tensors(lon[None, :], lat[:, None]))
    ours = to_numpy(g.sample_cubemap(faces, directions.float()))
    truth = analytic(directions).numpy()
    error_ours, error_ref = np.abs(ours - truth).max(), np.abs(ref - truth).max()
    assert error_ours < error_ref / 2  # py360convert reads the faces half a face pixel off
    # the disagreement is that half-pixel offset: one gradient step of the smooth image per face pixel
    assert np.abs(ours - ref).max() < 0.8 * math.pi / 2 / face_size * 0.5 + 2 * error_ours
    if face_size >= 128:
        assert np.abs(ours - ref).max() < TOL
    # and our own c2e (on pixel centres) round-trips the panorama
    back = g.cubemap_to_equirect(faces, (2 * face_size, 4 * face_size))
    assert (back - smooth(2 * face_size, 4 * face_size)).abs().max() < 4e-3
