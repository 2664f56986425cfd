"""Model-free parts of the full-sphere tools: wrapping tile grids, photo placement, pole geometry."""

from __future__ import annotations

import math

import pytest
import torch

from pano360.errors import InvalidInputError
from pano360.geometry import equirect_lonlat
from pano360.sphere import placement as pl
from pano360.sphere import poles
from pano360.sphere.measures import cube_seam_discontinuity, seam_ratio
from pano360.sphere.tiles import TileGrid


def smooth_panorama(height: int = 64, width: int = 128) -> torch.Tensor:
    """A smooth, seamless synthetic full sphere [1, 3, H, W] in [-1, 1] (continuous on the sphere)."""
    lon, lat = equirect_lonlat(height, width, dtype=torch.float64)
    x, y, z = torch.cos(lat) * torch.sin(lon), torch.sin(lat), torch.cos(lat) * torch.cos(lon)
    return (0.8 * torch.stack([x * 0.7 + 0.2 * y, z * y, 0.5 * x * z - 0.4 * y])[None]).float()


# --- tiles ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size,tile,overlap", [((16, 32), 16, 4), ((50, 97), (16, 20), 4), ((64, 128), 128, 8),
                                               ((9, 40), 8, 2)])
def test_tile_weights_are_a_partition_of_unity_that_wraps(size, tile, overlap):
    grid = TileGrid.make(size, tile, overlap)
    total = torch.zeros(size, dtype=torch.float64)
    for t in grid.tiles:
        grid.add(total, grid.weight(t, dtype=torch.float64), t)
    assert torch.allclose(total, torch.ones(size, dtype=torch.float64), atol=1e-12)
    assert any(t.left + t.width > size[1] for t in grid.tiles) or grid.spans_width  # one tile crosses the seam


def test_tile_crop_and_blend_reassemble_a_plane_exactly():
    plane = torch.randn(2, 3, 24, 40, dtype=torch.float64)
    grid = TileGrid.make((24, 40), (8, 12), 3)
    out = torch.zeros_like(plane)
    for t in grid.tiles:
        crop = grid.crop(plane, t)
        assert crop.shape[-2:] == (8, 12)
        assert torch.equal(crop, torch.roll(plane, -t.left, -1)[..., t.top:t.top + 8, :12])  # wrapped columns
        grid.add(out, crop * grid.weight(t, dtype=torch.float64), t)
    assert torch.allclose(out, plane, atol=1e-12)


def test_tile_grid_final_rows_and_bad_overlap():
    grid = TileGrid.make((40, 40), 16, 4)
    assert [grid.final_rows(r) for r in range(len(grid.tops))] == [*grid.tops[1:], 40]
    with pytest.raises(InvalidInputError, match="at most half a tile"):
        TileGrid.make((40, 40), 16, 9)


# --- placement ----------------------------------------------------------------------------------------

def test_fov_from_35mm_equivalent_focal_length():
    # 3:2 photo at 36 mm-wide full frame: hfov = 2 atan(18 / f)
    assert pl.fov_from_focal_35mm(24, 3000, 2000) == pytest.approx(math.degrees(2 * math.atan(18 / 24)), rel=1e-6)
    assert pl.fov_from_focal_35mm(50, 3000, 2000) == pytest.approx(39.5978, abs=1e-3)


def test_fov_from_exif_tags():
    from PIL import Image

    image = Image.new("RGB", (300, 200))
    exif = image.getexif()
    exif.get_ifd(pl.EXIF_IFD)[pl.TAG_FOCAL_LENGTH_35MM] = 28
    reread = Image.open(_saved_jpeg(image, exif))
    assert pl.fov_from_exif(reread) == pytest.approx(pl.fov_from_focal_35mm(28, 300, 200))
    assert pl.fov_from_exif(Image.new("RGB", (300, 200))) is None


def _saved_jpeg(image, exif):
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("fov", [0, 180, -5, 200.0])
def test_fov_outside_open_interval_is_refused(fov):
    with pytest.raises(InvalidInputError, match="between 0 and 180"):
        pl.check_fov(fov)


def test_photo_too_small_is_refused():
    with pytest.raises(InvalidInputError, match="too small"):
        pl.check_photo_size(48, 200)


def test_placed_photo_is_pasted_back_exactly_and_reprojects_to_itself():
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 96), torch.linspace(-1, 1, 128), indexing="ij")
    photo = torch.stack([0.8 * xx, 0.5 * yy, 0.5 * torch.sin(3 * xx + yy)])[None]
    placement = pl.Placement(yaw_deg=-120.0, pitch_deg=20.0, fov_deg=60.0, feather_px=4.0)
    canvas, covered, alpha = pl.place_photo(photo, (256, 512), placement)
    assert set(covered.unique().tolist()) == {0.0, 1.0} and (alpha <= covered).all()
    noise = torch.rand(1, 3, 256, 512) * 2 - 1  # whatever the model drew around and under the photo
    pasted = pl.paste_back(noise, canvas, alpha)
    assert torch.equal(pasted[alpha.expand_as(pasted) >= 1], canvas[alpha.expand_as(canvas) >= 1])
    assert torch.equal(pasted[covered.expand_as(pasted) == 0], noise[covered.expand_as(noise) == 0])
    back = pl.reproject_photo(pasted, (96, 128), placement)
    inside = pl.interior_mask((96, 128), placement.feather_px).expand_as(back)
    mse = ((back - photo) ** 2)[inside].mean().item()
    assert 10 * math.log10(4 / mse) >= 40.0


# --- poles --------------------------------------------------------------------------------------------

def test_pole_mask_and_alpha_match_the_cap():
    settings = poles.PoleSettings(cap_deg=30, context_deg=15, feather_deg=10)
    mask = poles.pole_view_mask(settings, 64)
    angle = poles.view_polar_angle(64, settings.fov_deg)
    assert torch.equal(mask[0, 0] > 0, angle < 30)
    assert angle.max() > 45 and angle[32, 0] < 45.5  # the rim of the view is cap + context from the pole
    alpha = poles.pole_alpha(90, 180, settings, "up")[0, 0, :, 0]
    lat = 90 - (torch.arange(90) + 0.5) * 2  # row centre latitudes
    assert torch.all(alpha[lat < 60] == 0) and torch.all(alpha[lat >= 70] == 1)


def test_blend_poles_keeps_the_equator_band_bit_for_bit_and_round_trips_the_caps():
    pano = smooth_panorama(64, 128)
    settings = poles.PoleSettings(view_size=96).check()
    views = poles.pole_views(pano, settings, 96)
    assert views.shape == (1, 2, 3, 96, 96)
    out = poles.blend_poles(pano, views, settings)  # unchanged views: only resampling error in the caps
    lat = 90 - (torch.arange(64) + 0.5) * 180 / 64
    band = lat.abs() < 90 - settings.cap_deg
    assert torch.equal(out[..., band, :], pano[..., band, :])
    assert (out - pano).abs().max() < 0.02
    edge, inside = cube_seam_discontinuity(out, 32)
    assert edge <= inside


def test_band_becomes_a_sphere_and_the_cap_covers_what_is_missing():
    band = smooth_panorama(64, 128)[..., 16:48, :]  # ±45°
    settings = poles.settings_for(32, 128, poles.PoleSettings())
    assert settings.cap_deg == pytest.approx(90 - 45 + 10)
    sphere = poles.band_to_sphere(band)
    assert sphere.shape[-2:] == (64, 128) and torch.equal(sphere[..., 16:48, :], band)
    with pytest.raises(InvalidInputError, match="too thin"):
        poles.settings_for(8, 128, poles.PoleSettings())  # ±11° band: cap would be 89°


def test_non_panorama_is_refused():
    with pytest.raises(InvalidInputError, match="not an equirectangular panorama"):
        poles.check_panorama_shape(100, 120)


def test_seam_ratio_sees_a_seam():
    pano = smooth_panorama(32, 64)
    assert seam_ratio(pano) < 1.1
    assert seam_ratio(pano[..., :40]) > 3  # a crop: its first and last columns are not neighbours
