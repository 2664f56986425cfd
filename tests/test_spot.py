"""SpotDiffusion (method="spot"): shifted non-overlapping windows with wrap."""

import pytest
import torch

from pano360.errors import InvalidInputError
from pano360.methods import available_methods, get_method


def _run(gen, latents, steps=2, **options):
    calls = []
    unet = gen.unet
    handle = unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append(args[0].shape[0]),
                                            with_kwargs=True)
    try:
        out = gen("a lake", method="spot", height=64, width=256, latents=latents, num_inference_steps=steps,
                  output_type="pt", progress=False, window=8, seed=3, **options)
    finally:
        handle.remove()
    return out, calls


def test_spot_is_registered_with_its_options():
    assert "spot" in available_methods()
    method = get_method("spot", window=8)
    assert method.window == (8, 8) and method.shift is True


def test_spot_predicts_each_latent_once_per_step(tiny_generators, single_torch_thread):
    gen = tiny_generators("tiny")
    latents = torch.randn(1, 4, 8, 32, generator=torch.Generator().manual_seed(0))
    _, calls = _run(gen, latents, steps=2)
    # 32 / 8 = 4 windows per step, both guidance halves in one call: 2 steps x 4 windows x 2
    assert sum(calls) == 2 * 4 * 2


def test_spot_rolls_with_the_panorama(tiny_generators, single_torch_thread):
    """Rolling the initial noise by one window (8 latents) rolls the result by 64 px exactly: the seam
    is an ordinary column for the shifted tiling and the wrapped decode."""
    gen = tiny_generators("tiny")
    latents = torch.randn(1, 4, 8, 32, generator=torch.Generator().manual_seed(1))
    a, _ = _run(gen, latents)
    b, _ = _run(gen, latents.roll(8, dims=-1))
    assert (b.latents - a.latents.roll(8, dims=-1)).abs().max() <= 1e-5
    assert (b.images - a.images.roll(64, dims=-1)).abs().max() <= 1e-4


def test_spot_shift_changes_the_result_and_offsets_are_seeded(tiny_generators, single_torch_thread):
    gen = tiny_generators("tiny")
    latents = torch.randn(1, 4, 8, 32, generator=torch.Generator().manual_seed(2))
    shifted, _ = _run(gen, latents, steps=3)
    again, _ = _run(gen, latents, steps=3)
    fixed, _ = _run(gen, latents, steps=3, shift=False)
    assert torch.equal(shifted.latents, again.latents)
    assert (shifted.latents - fixed.latents).abs().max() > 1e-3


def test_spot_rejects_sizes_it_cannot_tile(tiny_generators):
    gen = tiny_generators("tiny")
    with pytest.raises(InvalidInputError, match="multiple of the window"):
        gen("a lake", method="spot", height=64, width=200, num_inference_steps=1, window=8, progress=False)
