"""The PanFusion/UniPano reference padding scheme: pad/crop per UNet op, per-step roll, padded decode."""

from __future__ import annotations

import pytest
import torch
from support.seams import smooth_latents

from pano360.adapters.reference_padding import (
    REFERENCE_DECODE_PAD,
    crop_columns,
    pad_columns,
    padded_ops,
    reference_roll_columns,
    reference_unet_padding,
)
from pano360.backbones.guided import predict_noise
from pano360.backbones.tiny import TEXT_WIDTH, tiny_unet
from pano360.backbones.wrap import wraparound


@pytest.fixture(scope="module")
def unet(single_torch_thread):
    return tiny_unet("sd1")


def _call(unet, latents):
    embeds = torch.randn(1, 6, TEXT_WIDTH, generator=torch.Generator().manual_seed(0))
    return predict_noise(unet, latents, torch.tensor([500]), embeds)


def test_pad_and_crop_columns():
    x = torch.arange(2 * 3 * 2 * 5, dtype=torch.float32).reshape(2, 3, 2, 5)
    padded = pad_columns(x, 2)
    assert padded.shape == (2, 3, 2, 9)
    assert torch.equal(padded[..., :2], x[..., -2:]) and torch.equal(padded[..., -2:], x[..., :2])
    assert torch.equal(crop_columns(padded, 2), x)
    assert pad_columns(x[None], 1).shape == (1, 2, 3, 2, 7)  # any leading dims, like pad_pano's 5-D input


def test_convolution_ops_see_the_same_neighbours_as_exact_wrap(unet):
    """conv_in, Downsample2D and Upsample2D with the reference pad/crop equal exact wraparound."""
    ops = {}
    for module, _ in padded_ops(unet):
        ops.setdefault(type(module).__name__, module)  # the first of each kind
    down, up = ops["Downsample2D"], ops["Upsample2D"]
    cases = [(unet.conv_in, torch.randn(1, 4, 8, 12)), (down, torch.randn(1, down.channels, 8, 12)),
             (up, torch.randn(1, up.channels, 4, 6))]
    with torch.no_grad():
        for module, inputs in cases:
            with wraparound(module):
                exact = module(inputs)
            with reference_unet_padding(unet):
                reference = module(inputs)
            assert reference.shape == exact.shape
            torch.testing.assert_close(reference, exact, atol=1e-6, rtol=1e-5)


def test_differs_from_exact_wrap_but_keeps_the_seam_closed(unet):
    latents = smooth_latents(0, 8, 32)
    with torch.no_grad():
        plain = _call(unet, latents)
        with wraparound(unet):
            exact = _call(unet, latents)
        with reference_unet_padding(unet):
            reference = _call(unet, latents)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in unet.modules())  # restored
    # GroupNorm counts the duplicated columns, so the result is not the exact wrap's ...
    assert (reference - exact).abs().max() > 1e-3
    # ... but much closer to it than the unwrapped UNet, and left and right edges meet.
    assert (reference - exact).abs().max() < 0.5 * (plain - exact).abs().max()

    def seam_ratio(output):
        interior = (output[..., 1:] - output[..., :-1]).abs().mean()
        return ((output[..., 0] - output[..., -1]).abs().mean() / interior).item()

    assert seam_ratio(reference) < 1.5
    assert seam_ratio(plain) > 2.0


def test_roll_and_decode_constants_follow_the_reference():
    assert reference_roll_columns(128) == 32 and reference_roll_columns(256) == 64
    assert reference_roll_columns(128, 360.0) == 0
    # After 50 steps the reference rolls back by int(-50·90/360·w): a whole number of turns for w = 128.
    assert (50 * reference_roll_columns(128) + reference_roll_columns(128, -50 * 90.0)) == 0
    assert REFERENCE_DECODE_PAD == 8
