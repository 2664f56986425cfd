"""Full-sphere tools on tiny random models: inpainting, poles, photo → 360, tiled upscaling.

Seams: every model-backed step wraps its convolutions, so the seam is *exactly* exchangeable with
an interior boundary (tested as roll equivariance); the acceptance ratio (mean |first − last column|
vs the mean step between adjacent columns) is then a statistic of the random models' texture, so
it is pooled over a fixed set of seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_sphere_geometry import smooth_panorama

from pano360.backbones.tiny import tiny_inpainting_pipeline, tiny_pipeline
from pano360.sphere.inpaint import inpaint
from pano360.sphere.measures import cube_seam_discontinuity
from pano360.sphere.pipeline import Sampling, outpaint_photo, refine_poles
from pano360.sphere.placement import Placement, interior_mask, reproject_photo
from pano360.sphere.poles import PoleSettings
from pano360.sphere.tiles import TileGrid
from pano360.sphere.upscale import UpscaleSettings, tiled_decode, upscale_panorama

pytestmark = pytest.mark.usefixtures("single_torch_thread")
SEEDS = range(8)
FAST = Sampling(num_inference_steps=2)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline("sd1")


def pooled_seam_ratio(images) -> float:
    seam = sum((x[..., 0] - x[..., -1]).abs().double().mean().item() for x in images)
    inner = sum((x[..., 1:] - x[..., :-1]).abs().double().mean().item() for x in images)
    return seam / inner


def test_masked_blending_keeps_the_known_latents(pipe):
    from pano360.backbones.vae import decode_latents, encode_images

    image = smooth_panorama(64, 128)
    out = inpaint(pipe, image, torch.zeros(1, 1, 64, 128), "a room", num_inference_steps=2)
    with torch.no_grad():
        expected = decode_latents(pipe.vae, encode_images(pipe.vae, image)).clamp(-1, 1)
    assert torch.allclose(out, expected, atol=1e-5)


def test_wrapped_inpainting_is_roll_equivariant(pipe):
    image = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(1, 1, 64, 128)
    mask[..., 16:56, 24:100] = 1
    noise = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(1))
    a = inpaint(pipe, image, mask, "room", num_inference_steps=2, wrap=True, noise=noise)
    b = inpaint(pipe, image.roll(32, -1), mask.roll(32, -1), "room", num_inference_steps=2, wrap=True,
                noise=noise.roll(4, -1))  # 4 latents = the tiny UNet's downsampling
    assert (a.roll(32, -1) - b).abs().max() < 1e-4


def test_inpainting_unet_sees_mask_and_masked_image():
    pipe9 = tiny_inpainting_pipeline("sd1")
    image = smooth_panorama(64, 128)
    mask = torch.zeros(1, 1, 64, 128)
    mask[..., :, 40:80] = 1
    a = inpaint(pipe9, image, mask, "room", num_inference_steps=2)
    b = inpaint(pipe9, image, mask.roll(24, -1), "room", num_inference_steps=2)
    assert a.shape == (1, 3, 64, 128) and not torch.allclose(a, b)


def test_pole_refinement_acceptance(pipe):
    pano = smooth_panorama(64, 128)
    settings = PoleSettings(view_size=64)
    outs = [refine_poles(pipe, pano, "sky", settings, Sampling(num_inference_steps=2, seed=s)) for s in SEEDS]
    lat = 90 - (torch.arange(64) + 0.5) * 180 / 64
    band = lat.abs() < 90 - settings.cap_deg
    for out in outs:
        assert torch.equal(out[..., band, :], pano[..., band, :])  # unchanged outside the blend zone
        edge, inside = cube_seam_discontinuity(out, 32)
        assert edge <= inside  # U and D join F R B L without a step
    assert pooled_seam_ratio(outs) <= 1.1


def test_poles_turn_a_band_into_a_sphere_without_a_step(pipe):
    band = smooth_panorama(64, 128)[..., 16:48, :]  # a ±45° strip with no top or bottom
    out = refine_poles(pipe, band, "a beach", PoleSettings(view_size=64), FAST)
    assert out.shape == (1, 3, 64, 128)
    lat = 90 - (torch.arange(64) + 0.5) * 180 / 64
    kept = torch.nonzero(lat.abs() < 90 - (90 - 45 + 10)).flatten()  # the cap grows to 55° for a ±45° strip
    assert len(kept) >= 20 and torch.equal(out[..., kept, :], band[..., kept - 16, :])
    edge, inside = cube_seam_discontinuity(out, 32)
    assert edge <= inside


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_photo_to_360_acceptance(pipe, family):
    model = pipe if family == "sd1" else tiny_inpainting_pipeline("sdxl")
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 96), torch.linspace(-1, 1, 128), indexing="ij")
    photo = torch.stack([0.8 * xx, 0.5 * yy, 0.5 * torch.sin(3 * xx + yy)])[None]
    placement = Placement(yaw_deg=30.0, pitch_deg=10.0, fov_deg=60.0, feather_px=4.0)
    seeds = range(24) if family == "sd1" else range(1)  # the noisiest ratio (64x128 output): more seeds
    outs = [outpaint_photo(model, photo, "a room", placement, (64, 128), pole_settings=PoleSettings(view_size=64),
                           sampling=Sampling(num_inference_steps=1, seed=s)) for s in seeds]
    out = outs[0]
    assert out.shape == (1, 3, 64, 128)
    back = reproject_photo(outs[0], (96, 128), placement)
    inside = interior_mask((96, 128), placement.feather_px).expand_as(back)
    assert 10 * math.log10(4 / ((back - photo) ** 2)[inside].mean().item()) >= 40.0
    if family == "sd1":
        assert pooled_seam_ratio(outs) <= 1.1


def test_tiled_decode_matches_a_wrapped_full_decode(pipe):
    from pano360.backbones.vae import decode_latents
    from pano360.backbones.wrap import wraparound

    latents = torch.randn(1, 4, 16, 32, generator=torch.Generator().manual_seed(0))
    grid = TileGrid.make((16, 32), 16, 4)
    tiled = tiled_decode(pipe.vae, latents, grid, np.zeros((128, 256, 3), np.uint8)).astype(np.float64)
    with wraparound(pipe.vae), torch.no_grad():
        full = decode_latents(pipe.vae, latents)[0].permute(1, 2, 0).numpy()
    full = np.round(np.clip(full / 2 + 0.5, 0, 1) * 255)
    assert np.abs(tiled - full).mean() < 6  # tile borders differ a little (zero padding inside a tile)
    assert np.abs(tiled - full).mean() < 0.3 * np.abs(np.diff(full, axis=1)).mean()


def test_upscale_is_seamless_and_of_the_right_size(pipe):
    """Multi-tile path (tiles of 16 latents on a 16x32 latent: three tiles across, one crossing the seam).
    The input is rolled by a different number of columns for each seed, so the random VAE's texture at
    the seam differs between samples (the wrapped VAE alone would give the same seam every time)."""
    pano = smooth_panorama(64, 128)
    image = ((pano[0] + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    outs = []
    for seed in SEEDS:
        settings = UpscaleSettings(strength=0.5, num_inference_steps=2, tile=16, vae_tile=16, seed=seed)
        out = upscale_panorama(pipe, np.roll(image, 8 * seed, axis=1), "a room", scale=2, settings=settings)
        assert out.shape == (128, 256, 3) and out.dtype == np.uint8
        outs.append(torch.from_numpy(out).permute(2, 0, 1).float()[None])
    assert pooled_seam_ratio(outs) <= 1.1


def test_outpaint_image_api_takes_pil_and_reads_exif_fov(pipe):
    from PIL import Image

    from pano360.errors import InvalidInputError
    from pano360.sphere.pipeline import outpaint_image

    photo = Image.fromarray((np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8))
    with pytest.raises(InvalidInputError, match="EXIF has no focal length"):
        outpaint_image(pipe, photo, "a park")
    result = outpaint_image(pipe, photo, "a park", fov_deg=60.0, yaw_deg=-90.0, height=64, refine=False,
                            sampling=Sampling(num_inference_steps=1))
    assert result.size == (128, 64)
