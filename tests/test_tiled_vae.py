"""Tiled VAE decoding: exact against the untiled decode, wrapped across the seam."""

import pytest
import torch

from pano360.backbones.tiny import tiny_vae
from pano360.backbones.vae import decode_latents, decode_latents_tiled
from pano360.backbones.wrap import is_wrapped, wraparound


@pytest.fixture(scope="module")
def vae():
    return tiny_vae()


def test_tiled_wrapped_decode_equals_untiled_wrapped_decode(vae, single_torch_thread):
    latents = torch.randn(1, 4, 64, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with wraparound(vae):
            expected = decode_latents(vae, latents)
        got = decode_latents_tiled(vae, latents, tile=64, margin=8, wrap=True)
    assert got.shape == expected.shape == (1, 3, 512, 2048)
    assert (got - expected).abs().max() <= 1e-3
    assert not is_wrapped(vae)  # the partial wrap used for the global part is undone


def test_tiled_decode_keeps_the_seam_closed(vae, single_torch_thread):
    """Rolling the latent by one column rolls the image by 8 px: no seam at the panorama's edge or
    between tiles (tile cores of 12 columns, the seam inside a tile's context)."""
    latents = torch.randn(1, 4, 16, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        image = decode_latents_tiled(vae, latents, tile=(8, 12), margin=8, wrap=True)
        rolled = decode_latents_tiled(vae, latents.roll(5, dims=-1), tile=(8, 12), margin=8, wrap=True)
    assert (rolled - image.roll(40, dims=-1)).abs().max() <= 1e-4


def test_tiled_plain_decode_with_row_tiles_and_offload(vae, single_torch_thread):
    latents = torch.randn(2, 4, 24, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = decode_latents(vae, latents)
        got = decode_latents_tiled(vae, latents, tile=(10, 16), margin=8, wrap=False, store="cpu")
    assert (got - expected).abs().max() <= 1e-4


def test_too_small_margin_is_visible(vae, single_torch_thread):
    """The exactness comes from the margin: without context, tile borders show."""
    latents = torch.randn(1, 4, 16, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = decode_latents(vae, latents)
        got = decode_latents_tiled(vae, latents, tile=16, margin=0)
    assert (got - expected).abs().max() > 1e-3
