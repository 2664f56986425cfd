"""UniPano at sampling time: the adapter through the loading door (API and CLI), and the circular
method's reference padding option / the unipano-paper preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.seams import column_jumps, smooth_latents

from pano360 import PanoramaGenerator
from pano360.adapters.unipano import UniPanoAdapter
from pano360.cli.main import main
from pano360.presets import get_preset

COMMON = {"height": 64, "width": 256, "num_inference_steps": 2, "progress": False}


@pytest.fixture(scope="module")
def adapter_folders(tmp_path_factory, tiny_generators, single_torch_thread):
    """A fresh (untrained) and a randomised UniPano adapter for the tiny SD 1 UNet, as folders and as a
    UniPano-code Lightning checkpoint."""
    unet = tiny_generators("tiny").unet
    root = tmp_path_factory.mktemp("unipano")
    fresh = UniPanoAdapter.for_unet(unet)
    fresh.save(root / "fresh")
    trained = UniPanoAdapter.for_unet(unet)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in trained.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    trained.save(root / "trained")
    state = {trained.reference_name(k): v for k, v in trained.state_dict().items()}
    torch.save({"state_dict": state}, root / "last.ckpt")
    return root


def _latents(gen, **kwargs):
    latents = smooth_latents(1, 8, 32)
    return gen("a bright room", method="circular", latents=latents, output_type="latent", **COMMON, **kwargs).latents


def test_adapter_through_from_pretrained(adapter_folders, tiny_generators):
    base = _latents(tiny_generators("tiny"))
    fresh = PanoramaGenerator.from_pretrained("tiny", adapter=adapter_folders / "fresh", device="cpu",
                                              torch_dtype="fp32")
    assert torch.equal(_latents(fresh), base)  # untrained adapter: the base model exactly
    trained = PanoramaGenerator.from_pretrained("tiny", adapter=adapter_folders / "trained", device="cpu",
                                                torch_dtype="fp32")
    adapted = _latents(trained)
    assert (adapted - base).abs().max() > 1e-3
    assert not any(m._forward_hooks for m in trained.unet.modules())  # detached after the run
    reference = PanoramaGenerator.from_pretrained("tiny", adapter=adapter_folders / "last.ckpt", device="cpu",
                                                  torch_dtype="fp32")
    assert torch.equal(_latents(reference), adapted)


def test_generate_cli_with_a_reference_checkpoint(adapter_folders, tmp_path):
    out = tmp_path / "pano.png"
    assert main(["generate", "a room", "--model", "tiny", "--adapter", str(adapter_folders / "last.ckpt"),
                 "--steps", "1", "--height", "64", "--width", "128", "--seed", "1", "-o", str(out), "--quiet"]) == 0
    assert out.is_file()


def test_reference_padding_differs_from_exact_wrap_and_keeps_the_seam_closed(tiny_generators):
    gen = tiny_generators("tiny")
    latents = smooth_latents(1, 8, 32)
    images = {}
    for name, options in {"exact": {}, "reference": {"padding": "reference", "roll_per_step": 90.0},
                          "plain": {"wrap": False, "wrap_vae": False}}.items():
        images[name] = gen("a bright room", method="circular", latents=latents, output_type="np", **COMMON,
                           **options).images[0]
    assert np.abs(images["reference"] - images["exact"]).max() > 1e-3
    seams = {}
    for name, image in images.items():
        interior, seams[name] = column_jumps(image)
        if name != "plain":  # the seam looks like an interior column boundary ...
            assert seams[name] <= np.percentile(interior, 90), name
    assert seams["plain"] > 2.0 * seams["reference"]  # ... and clearly unlike the unwrapped model's
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in gen.unet.modules())


def test_unipano_paper_preset():
    preset = get_preset("unipano-paper")
    assert preset.method == "circular"
    assert preset.options == {"padding": "reference", "roll_per_step": 90.0}
    assert preset.generation == {"height": 512, "width": 1024, "num_inference_steps": 50, "guidance_scale": 9.0,
                                 "scheduler": "ddim"}
