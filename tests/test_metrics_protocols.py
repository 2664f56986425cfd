"""View protocols, Discontinuity Score, Intra-LPIPS / Intra-Style-L and CLIP score on synthetic panoramas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pano360.metrics import views as V
from pano360.metrics.perceptual import intra_lpips, intra_style_loss
from pano360.metrics.seam import discontinuity_score
from pano360.nets.lpips import LPIPS
from pano360.nets.vgg import build_trunk

# tiny models gain nothing from threads; on a busy 2-core machine OpenMP barriers slow them down many times
pytestmark = pytest.mark.usefixtures("single_torch_thread")


def smooth_panorama(height: int = 64, width: int = 128, seed: int = 0) -> torch.Tensor:
    """uint8 [3, H, W] made of low-frequency periodic waves: continuous across the wrap seam."""
    rng = np.random.default_rng(seed)
    x = np.arange(width) / width * 2 * math.pi
    y = np.arange(height)[:, None] / height * math.pi
    channels = []
    for _ in range(3):
        a, b, c = rng.uniform(0, 2 * math.pi, 3)
        channels.append(128 + 60 * np.sin(x + a) * np.cos(y + b) + 30 * np.sin(2 * x + c))
    return torch.from_numpy(np.stack(channels).clip(0, 255).astype(np.uint8))


def test_discontinuity_score_is_low_when_seamless_and_high_with_a_cut():
    seamless = smooth_panorama()
    ramp = torch.linspace(0, 255, 128).round().to(torch.uint8).expand(3, 64, 128)  # 255 → 0 jump at the seam
    cut = torch.roll(seamless, 40, dims=-1).clone()
    cut[:, :, 40:] = torch.flip(seamless, dims=[-1])[:, :, 40:]  # mismatched content across the seam
    scores = discontinuity_score(torch.stack([seamless, ramp, torch.roll(ramp, 64, dims=-1), cut]))
    assert scores[0] < 0.5
    assert scores[1] > 5 and scores[3] > scores[0] * 3
    assert scores[2] < 0.5  # the same ramp with its jump moved away from the seam
    float_scores = discontinuity_score(torch.stack([seamless]).float() / 255)
    torch.testing.assert_close(float_scores, scores[:1])


def test_roll_half_puts_the_seam_in_the_middle():
    pano = torch.arange(8).view(1, 1, 1, 8)
    assert V.roll_half(pano).flatten().tolist() == [4, 5, 6, 7, 0, 1, 2, 3]


def test_view_rigs_are_seeded_per_panorama_and_follow_the_protocols():
    a, b = V.random_rig(3, 20, seed=0), V.random_rig(3, 20, seed=0)
    assert len(a) == 20 and torch.equal(a.yaw_deg, b.yaw_deg) and torch.equal(a.pitch_deg, b.pitch_deg)
    assert not torch.equal(a.yaw_deg, V.random_rig(4, 20, seed=0).yaw_deg)
    assert not torch.equal(a.yaw_deg, V.random_rig(3, 20, seed=1).yaw_deg)
    assert torch.all(a.fov_deg == 90)
    seam = V.seam_rig(3, 20, seed=0)
    assert torch.all(seam.yaw_deg == 180) and seam.pitch_deg.abs().max() <= 90 and seam.pitch_deg.std() > 0
    ring = V.horizon_rig()
    assert ring.yaw_deg.tolist() == [0, 45, 90, 135, 180, 225, 270, 315] and torch.all(ring.pitch_deg == 0)


def test_random_views_cover_the_sphere_uniformly():
    pitches = torch.cat([V.random_rig(i, 20).pitch_deg for i in range(200)])
    sin_pitch = torch.sin(torch.deg2rad(pitches))
    assert abs(float(sin_pitch.mean())) < 0.05 and abs(float(sin_pitch.var()) - 1 / 3) < 0.03


def test_rendered_views_are_uint8_and_of_the_right_count():
    panos = torch.stack([smooth_panorama(seed=0), smooth_panorama(seed=1)])
    views = V.render_views(panos, [V.random_rig(0, 3), V.random_rig(1, 3)], size=32)
    assert views.shape == (6, 3, 32, 32) and views.dtype == torch.uint8
    shared = V.render_shared_views(panos, V.horizon_rig(), size=32)
    assert shared.shape == (16, 3, 32, 32)
    faces = V.cube_faces(panos, 16)
    assert faces.shape == (2, 6, 3, 16, 16) and faces.dtype == torch.uint8
    constant = torch.full((1, 3, 16, 32), 200, dtype=torch.uint8)
    # truncation like torchmetrics' (x * 255).byte(): bilinear round-off can land just below 200
    assert set(V.render_views(constant, [V.random_rig(0, 2)], size=8).unique().tolist()) <= {199, 200}


def test_syncdiffusion_crops():
    pano = torch.arange(3 * 4 * 12).view(3, 4, 12)
    crops = V.grid_crops(pano, 4)
    assert len(crops) == 3 and torch.equal(crops[1], pano[:, :, 4:8])
    assert V.sync_crop_size(512) == 512 and V.sync_crop_size(1024) == 512 and V.sync_crop_size(256) == 256
    batch = torch.arange(2 * 3 * 4 * 12).view(2, 3, 4, 12)
    one = V.random_square_crop(batch, 4)
    rng = np.random.RandomState(2023)
    offsets = [rng.randint(0, 8), rng.randint(0, 8)]
    assert torch.equal(one[0], batch[0, :, :, offsets[0]:offsets[0] + 4])
    assert torch.equal(one[1], batch[1, :, :, offsets[1]:offsets[1] + 4])


@pytest.fixture(scope="module")
def lpips_vgg() -> LPIPS:
    return LPIPS("vgg", pretrained=False)


def test_intra_lpips_of_identical_crops_is_zero(lpips_vgg):
    tile = smooth_panorama(32, 32, seed=2)
    identical = torch.cat([tile, tile, tile], dim=-1)
    assert intra_lpips(identical, lpips_vgg, 32) == 0.0
    different = torch.cat([tile, smooth_panorama(32, 32, seed=3)], dim=-1)
    value = intra_lpips(different, lpips_vgg, 32)
    expected = float(lpips_vgg(different[None, :, :, :32].float() / 127.5 - 1, different[None, :, :, 32:].float() / 127.5 - 1))
    assert value == pytest.approx(expected, rel=1e-4)


def test_intra_style_loss_sums_gram_losses_over_pairs():
    vgg19 = build_trunk("vgg19", pretrained=False)
    a, b = smooth_panorama(32, 32, seed=4), smooth_panorama(32, 32, seed=5)
    assert intra_style_loss(torch.cat([a, a], dim=-1), vgg19, 32) == 0.0
    one_pair = intra_style_loss(torch.cat([a, b], dim=-1), vgg19, 32)
    assert one_pair > 0
    # pairs (a, a), (a, b), (a, b): the per-panorama value is a sum, not a mean
    assert intra_style_loss(torch.cat([a, a, b], dim=-1), vgg19, 32) == pytest.approx(2 * one_pair, rel=1e-5)


def test_clip_score_is_clamped_scaled_cosine():
    from pano360.metrics.clipscore import clip_scores
    from pano360.nets.clip import tiny_random_clip

    bundle = tiny_random_clip()
    images = torch.stack([smooth_panorama(seed=s) for s in range(3)])
    texts = ["a room", "a forest at night", "a beach"]
    scores = clip_scores(bundle, images, texts)
    image_features = bundle.image_embeddings([im.permute(1, 2, 0).numpy() for im in images])
    text_features = bundle.text_embeddings(texts)
    expected = np.maximum(100 * (image_features * text_features).sum(-1).numpy(), 0)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
    assert scores.shape == (3,)
