"""Sphere geometry: conventions pinned, round trips, rotations, rigs, dtypes, devices, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from pano360 import geometry as g

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def smooth_panorama(height: int = 64, width: int = 128, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """[1, 3, H, W] with values in [0, 1] that are smooth functions of the direction (seamless, pole-safe)."""
    d = g.equirect_directions(height, width, dtype=torch.float64)
    x, y, z = d.unbind(-1)
    image = torch.stack([0.5 + 0.3 * x + 0.1 * y * z, 0.5 + 0.3 * y, 0.5 + 0.25 * z + 0.1 * x * y], 0)
    return image[None].to(device=device, dtype=dtype)


def blob_panorama(lon_deg: float, lat_deg: float, height: int = 64, width: int = 128, sigma_deg: float = 6.0):
    """[1, 1, H, W] with a Gaussian spot centred on (lon, lat)."""
    d = g.equirect_directions(height, width, dtype=torch.float64)
    centre = g.lonlat_to_unit(torch.tensor(math.radians(lon_deg), dtype=torch.float64), torch.tensor(math.radians(lat_deg), dtype=torch.float64))
    angle = torch.acos((d @ centre).clamp(-1, 1))
    return torch.exp(-(angle / math.radians(sigma_deg)) ** 2)[None, None].float()


# --- conventions ---------------------------------------------------------------------------------

def test_pixel_lonlat_convention():
    height, width = 64, 128
    lon, lat = g.pixel_to_lonlat(torch.tensor([0.0, (width - 1) / 2, width - 1.0]),
                                 torch.tensor([0.0, (height - 1) / 2, height - 1.0]), height, width)
    assert torch.allclose(torch.rad2deg(lon), torch.tensor([-180 + 180 / width, 0.0, 180 - 180 / width]))
    assert torch.allclose(torch.rad2deg(lat), torch.tensor([90 - 90 / height, 0.0, -90 + 90 / height]))
    x, y = g.lonlat_to_pixel(lon, lat, height, width)
    assert torch.allclose(x, torch.tensor([0.0, (width - 1) / 2, width - 1.0]), atol=1e-4)
    assert torch.allclose(y, torch.tensor([0.0, (height - 1) / 2, height - 1.0]), atol=1e-4)
    # lon 0 / lat 0 is +z (forward), lon +90 is +x (right), lat +90 is +y (up)
    v = g.lonlat_to_unit(torch.tensor([0.0, math.pi / 2, 0.0]), torch.tensor([0.0, 0.0, math.pi / 2]))
    assert torch.allclose(v, torch.tensor([[0.0, 0, 1], [1, 0, 0], [0, 1, 0]]), atol=1e-6)
    lon2, lat2 = g.unit_to_lonlat(v * 3.0)
    assert torch.allclose(lon2[:2], torch.tensor([0.0, math.pi / 2]), atol=1e-6)
    assert torch.allclose(lat2, torch.tensor([0.0, 0.0, math.pi / 2]), atol=1e-6)


def test_band_latitude_extent():
    assert g.latitude_extent(64, 128) == pytest.approx(math.pi)
    assert g.latitude_extent(32, 256) == pytest.approx(math.pi / 4)  # 45° band, square pixels
    with pytest.raises(ValueError, match="taller than 2:1"):
        g.latitude_extent(65, 128)


@pytest.mark.parametrize("lon,lat", [(60.0, 30.0), (-135.0, -20.0), (0.0, 0.0), (179.0, 55.0)])
def test_marker_at_lonlat_is_centre_of_view_with_that_yaw_pitch(lon, lat):
    pano = blob_panorama(lon, lat)
    view = g.equirect_to_perspective(pano, lon, lat, 60.0, (33, 33))[0, 0, 0]
    row, col = divmod(int(view.argmax()), 33)
    assert (row, col) == (16, 16)
    assert view[16, 16] > 0.85  # the spot is only 2 pixels wide: bilinear sampling softens its peak


def test_positive_yaw_turns_right_and_positive_pitch_looks_up():
    pano = blob_panorama(90.0, 0.0)  # a spot at column ≈ 3W/4
    col = int(pano[0, 0, 32].argmax())
    assert abs(col - 96) <= 1
    # Turning right by 45° brings a spot at +90° into the right half of a 120° view.
    view = g.equirect_to_perspective(pano, 45.0, 0.0, 120.0, (33, 65))[0, 0, 0]
    assert int(view.argmax()) % 65 > 32
    up = blob_panorama(0.0, 60.0)
    view = g.equirect_to_perspective(up, 0.0, 30.0, 120.0, (33, 33))[0, 0, 0]
    assert int(view.argmax()) // 33 < 16  # above the centre row
    assert torch.allclose(
        g.rotation_matrix(90.0, 0.0)[0] @ torch.tensor([0.0, 0, 1], dtype=torch.float64),
        torch.tensor([1.0, 0, 0], dtype=torch.float64), atol=1e-12,
    )


def test_view_shapes_and_broadcasting():
    pano = smooth_panorama().repeat(2, 1, 1, 1)
    views = g.equirect_to_perspective(pano, [0.0, 45.0, 90.0], 10.0, 90.0, (12, 20))
    assert views.shape == (2, 3, 3, 12, 20)
    single = g.equirect_to_perspective(pano, 45.0, 10.0, 90.0, (12, 20))
    assert torch.allclose(single[:, 0], views[:, 1])
    with pytest.raises(ValueError, match="between 0 and 180"):
        g.equirect_to_perspective(pano, 0.0, 0.0, 180.0, (8, 8))
    with pytest.raises(ValueError, match="between 0 and 180"):
        g.equirect_to_perspective(pano, 0.0, 0.0, [90.0, 0.0], (8, 8))
    with pytest.raises(ValueError, match="interpolation mode"):
        g.equirect_to_perspective(pano, 0.0, 0.0, 90.0, (8, 8), mode="lanczos")


# --- seam and poles -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic"])
def test_sampling_wraps_across_the_seam(mode):
    pano = torch.rand(1, 2, 32, 64)
    x = torch.tensor([-0.5, -0.25, 63.5, 63.75, 10.0])
    y = torch.full_like(x, 7.0)
    shifted = g.sample_equirect_pixels(pano, x + 64.0, y, mode)
    assert torch.allclose(g.sample_equirect_pixels(pano, x, y, mode), shifted, atol=1e-6)
    # halfway across the seam, bilinear averages the first and last columns
    mid = g.sample_equirect_pixels(pano, torch.tensor([-0.5]), torch.tensor([7.0]), "bilinear")[0, :, 0]
    assert torch.allclose(mid, (pano[0, :, 7, 0] + pano[0, :, 7, -1]) / 2, atol=1e-6)
    # a view looking at the seam equals the same view of the panorama rolled by half a turn
    a = g.equirect_to_perspective(pano, 180.0, 0.0, 90.0, (16, 16), mode=mode)
    b = g.equirect_to_perspective(torch.roll(pano, 32, -1), 0.0, 0.0, 90.0, (16, 16), mode=mode)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_poles_have_one_value_and_sampling_is_continuous_over_them(mode):
    pano = torch.rand(1, 1, 16, 32)
    lon = torch.linspace(-math.pi, math.pi, 13)
    for lat, row in ((math.pi / 2, 0), (-math.pi / 2, 15)):
        pole = g.sample_equirect(pano, g.lonlat_to_unit(lon, torch.full_like(lon, lat)), mode)[0, 0]
        assert torch.allclose(pole, pano[0, 0, row].mean().expand_as(pole), atol=1e-6)
    # crossing the pole along a meridian: values just before and just after it converge to the pole value
    eps = torch.tensor([1e-2, 1e-3, 1e-4])
    near = g.sample_equirect(pano, g.lonlat_to_unit(torch.zeros(3), math.pi / 2 - eps), mode)[0, 0]
    far = g.sample_equirect(pano, g.lonlat_to_unit(torch.full((3,), math.pi), math.pi / 2 - eps), mode)[0, 0]
    mean = pano[0, 0, 0].mean()
    assert ((near - mean).abs() <= (near[0] - mean).abs() + 1e-6).all() and (near[-1] - mean).abs() < 1e-3
    assert (far[-1] - mean).abs() < 1e-3
    # outside the half-pixel cap, bilinear reads the row itself and its mirror across the pole
    on_row = g.sample_equirect_pixels(pano, torch.tensor([3.0]), torch.tensor([0.0]), mode)[0, 0]
    if mode == "bilinear":
        assert torch.allclose(on_row, pano[0, 0, 0, 3:4], atol=1e-6)
    # views straight up at any yaw are rotations of one another: their centres agree
    views = g.equirect_to_perspective(pano, [0.0, 37.0, 180.0], 90.0, 90.0, (9, 9), mode=mode)
    assert torch.allclose(views[0, :, 0, 4, 4], views[0, 0, 0, 4, 4].expand(3), atol=1e-6)


def test_nearest_never_invents_values():
    pano = torch.randint(0, 255, (1, 1, 16, 32)).float()
    views = g.equirect_to_perspective(pano, [0.0, 90.0, 180.0], [0.0, 89.0, -90.0], 90.0, (17, 17), mode="nearest")
    assert torch.isin(views, pano).all()


def test_smooth_views_are_continuous_over_pole_and_seam():
    pano = smooth_panorama(64, 128)
    d = g.view_directions([180.0, 0.0, 90.0], [0.0, 90.0, -90.0], 90.0, (16, 16))
    exact = torch.stack([0.5 + 0.3 * d[..., 0] + 0.1 * d[..., 1] * d[..., 2], 0.5 + 0.3 * d[..., 1],
                         0.5 + 0.25 * d[..., 2] + 0.1 * d[..., 0] * d[..., 1]], 1)  # [V, 3, h, w]
    views = g.equirect_to_perspective(pano, [180.0, 0.0, 90.0], [0.0, 90.0, -90.0], 90.0, (16, 16))
    assert (views[0] - exact).abs().max() < 4e-3


# --- round trips ------------------------------------------------------------------------------------

def test_cubemap_round_trip_and_layouts():
    pano = smooth_panorama(64, 128)
    faces = g.equirect_to_cubemap(pano, 32, layout="stack")
    assert faces.shape == (1, 6, 3, 32, 32)
    for layout in ("list", "dict", "horizon", "dice"):
        packed = g.equirect_to_cubemap(pano, 32, layout=layout)
        assert torch.equal(g.faces_from_layout(packed), faces)
        assert torch.equal(g.faces_from_layout(g.faces_to_layout(faces, layout), layout), faces)
    assert g.equirect_to_cubemap(pano, 32, layout="dice").shape == (1, 3, 96, 128)
    assert g.equirect_to_cubemap(pano, 32, layout="horizon").shape == (1, 3, 32, 192)
    back = g.cubemap_to_equirect(faces)
    assert back.shape == pano.shape
    assert (back - pano).abs().max() < 2e-3  # bilinear twice on a smooth image
    # the cube faces are the 90° views of the cube_faces rig
    views = g.equirect_to_perspective(pano, **g.cube_faces().angles(), out_hw=(32, 32))
    assert torch.allclose(views, faces, atol=1e-6)


def test_cube_face_orientation():
    d = g.cube_face_directions(8, dtype=torch.float64)
    centres = d[:, 3:5, 3:5].mean((1, 2))
    centres = centres / centres.norm(dim=-1, keepdim=True)
    expected = torch.tensor([[0, 0, 1], [1, 0, 0], [0, 0, -1], [-1, 0, 0], [0, 1, 0], [0, -1, 0]], dtype=torch.float64)
    assert torch.allclose(centres, expected, atol=1e-12)
    top_of_up = d[4, 0, 4]  # top edge of the up face points back (−z), bottom edge of down face back too
    assert top_of_up[2] < -0.6 and d[5, -1, 4][2] < -0.6 and d[5, 0, 4][2] > 0.6
    assert d[0, 4, -1][0] > 0.6 and d[1, 4, 0][2] > 0.6  # front's right edge meets right's left edge


def test_c2e_is_seamless_across_face_edges():
    faces = torch.zeros(1, 6, 1, 16, 16)
    for i in range(6):
        faces[:, i] = i  # a constant per face: the blend at an edge stays between the two face values
    pano = g.cubemap_to_equirect(faces, (32, 64))
    assert pano.min() >= 0 and pano.max() <= 5 + 1e-5
    smooth = g.equirect_to_cubemap(smooth_panorama(64, 128), 32, layout="stack")
    pano = g.cubemap_to_equirect(smooth, (64, 128))
    # no jumps: neighbouring pixels differ by about one pixel's worth of the smooth gradient
    assert (pano - torch.roll(pano, 1, -1)).abs().max() < 0.03
    assert (pano[..., 1:, :] - pano[..., :-1, :]).abs().max() < 0.03


def test_perspective_round_trip_inside_the_view():
    pano = smooth_panorama(64, 128)
    rig = g.horizon_ring(8)
    views = g.equirect_to_perspective(pano, **rig.angles(), out_hw=(48, 48))
    for blend in ("average", "feather"):
        stitched, weight = g.perspective_to_equirect(views, **rig.angles(), out_hw=(64, 128), blend=blend)
        covered = weight[0, 0] > 0
        assert covered[20:44].all() and not covered[0].any()  # the 90° ring misses the poles
        assert (stitched - pano)[0][:, covered].abs().max() < 2e-3
        assert (stitched[0][:, ~covered] == 0).all()
    _, weight = g.perspective_to_equirect(views, **rig.angles(), out_hw=(64, 128))
    assert weight.max() == 2 and weight.shape == (1, 1, 64, 128)  # 45° steps, 90° views: overlaps of 2


# --- rotations ----------------------------------------------------------------------------------------

def test_yaw_360_is_identity_and_column_roll_is_torch_roll():
    pano = torch.rand(2, 3, 32, 64)
    assert torch.allclose(g.rotate_equirect(pano, 360.0), pano, atol=1e-5)
    assert torch.allclose(g.rotate_equirect(pano, -720.0, mode="bicubic"), pano, atol=1e-5)
    for k in (1, 5, -7, 32):
        assert torch.equal(g.roll_yaw(pano, k), torch.roll(pano, k, dims=-1))
        assert torch.allclose(g.rotate_equirect(pano, 360.0 * k / 64), torch.roll(pano, k, -1), atol=1e-5)
    assert g.yaw_to_columns(45.0, 64) == 8


def test_rotation_moves_centre_content_and_inverts():
    pano = blob_panorama(0.0, 0.0)
    moved = g.rotate_equirect(pano, 90.0, 30.0)
    row, col = divmod(int(moved[0, 0].argmax()), 128)
    lon, lat = g.pixel_to_lonlat(torch.tensor(float(col)), torch.tensor(float(row)), 64, 128)
    assert abs(math.degrees(lon) - 90) < 2 and abs(math.degrees(lat) - 30) < 2
    smooth = smooth_panorama()
    there = g.rotate_equirect(smooth, 30.0, 40.0, 20.0)
    back = g.rotate_equirect(there, 30.0, 40.0, 20.0, inverse=True)
    assert (back - smooth).abs().max() < 2e-3
    batch = g.rotate_equirect(torch.cat([smooth, smooth]), [30.0, 0.0], [40.0, 0.0], [20.0, 0.0])
    assert torch.allclose(batch[0], there[0], atol=1e-6) and torch.allclose(batch[1], smooth[0], atol=1e-5)


# --- rigs -----------------------------------------------------------------------------------------

def test_rigs():
    ring = g.horizon_ring()
    assert len(ring) == 8 and ring.yaw_deg.tolist() == [45.0 * i for i in range(8)]
    assert (ring.fov_deg == 90).all() and (ring.pitch_deg == 0).all()
    cube = g.cube_faces()
    assert cube.names == ("F", "R", "B", "L", "U", "D") and cube.pitch_deg.tolist()[4:] == [90.0, -90.0]
    a, b = g.random_views(500, seed=3), g.random_views(500, seed=3)
    assert torch.equal(a.yaw_deg, b.yaw_deg) and not torch.equal(a.yaw_deg, g.random_views(500, seed=4).yaw_deg)
    assert a.yaw_deg.min() >= -180 and a.yaw_deg.max() < 180
    # uniform on the sphere: sin(pitch) is uniform, so about half the views are within ±30°
    share = (a.pitch_deg.abs() < 30).double().mean()
    assert 0.42 < share < 0.58
    narrow = g.random_views(20, seed=0, fov_deg=(60.0, 80.0), pitch_range_deg=(-10.0, 10.0))
    assert narrow.pitch_deg.abs().max() <= 10 and narrow.fov_deg.min() >= 60 and narrow.fov_deg.max() <= 80
    assert len(ring[[0, 2]]) == 2


# --- dtypes, devices, gradients -------------------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtypes_and_devices(device, dtype):
    pano = smooth_panorama(32, 64, dtype=dtype, device=device)
    reference = smooth_panorama(32, 64, dtype=torch.float64, device=device)
    tolerance = {torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-5)
    view = g.equirect_to_perspective(pano, [10.0, -100.0], 20.0, 90.0, (8, 8))
    assert view.dtype == dtype and view.device.type == device
    assert (view.double() - g.equirect_to_perspective(reference, [10.0, -100.0], 20.0, 90.0, (8, 8))).abs().max() < tolerance
    faces = g.equirect_to_cubemap(pano, 8, layout="stack")
    back = g.cubemap_to_equirect(faces, (32, 64))
    stitched, weight = g.perspective_to_equirect(view, [10.0, -100.0], 20.0, 90.0, (32, 64))
    rotated = g.rotate_equirect(pano, 10.0, 5.0)
    for out in (faces, back, stitched, weight, rotated):
        assert out.dtype == dtype and out.device.type == device


def test_gradients_flow_to_images_and_angles():
    pano = smooth_panorama(8, 16, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p: g.equirect_to_perspective(p, [20.0, 200.0], [10.0, 80.0], 90.0, (3, 4)), (pano,)
    )
    faces = torch.rand(1, 6, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: g.cubemap_to_equirect(f, (4, 8), layout="stack"), (faces,))
    views = torch.rand(1, 2, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v: g.perspective_to_equirect(v, [0.0, 90.0], 0.0, 100.0, (4, 8))[0], (views,)
    )
    yaw = torch.tensor([30.0], requires_grad=True)
    g.equirect_to_perspective(smooth_panorama(), yaw, 0.0, 60.0, (8, 8)).mean().backward()
    assert yaw.grad is not None and yaw.grad.abs() > 0
