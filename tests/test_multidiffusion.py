"""MultiDiffusion: window grids, equivalence with diffusers' panorama pipeline, loop closure, bad input."""

import numpy as np
import pytest
import torch
from support.seams import column_jumps, smooth_latents

from pano360.errors import InvalidInputError
from pano360.methods import get_method
from pano360.methods.windows import WindowGrid

H, W = 64, 256  # pixels: 8 x 32 latents; the tiny UNet's native window is 16 latents
STEPS = 2


pytestmark = pytest.mark.usefixtures("single_torch_thread")


def run(gen, latents, height=H, width=W, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return gen("a quiet harbour at dusk", method=kwargs.pop("method", "multidiffusion"), height=height, width=width,
               latents=latents, output_type="np", progress=False, **kwargs).images[0]


def noise(seed=0, height=H, width=W):
    return torch.randn(1, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))


# --- window grids -------------------------------------------------------------------------------

@pytest.mark.parametrize("width,wrap,count", [(2048, False, 25), (2048, True, 32), (1024, False, 9), (1024, True, 16)])
def test_grid_sizes_match_diffusers(width, wrap, count):
    """diffusers' get_views: window 64, stride 8; with circular padding (W/8)//8 windows per row."""
    grid = WindowGrid.make((64, width // 8), (64, 64), (8, 8), wrap=wrap)
    assert len(grid) == count
    assert grid.origins[:2] == ((0, 0), (0, 8))


def test_crop_and_accumulate_match_slicing_with_wrap():
    latents = torch.randn(2, 3, 12, 20)
    grid = WindowGrid.make((12, 20), (8, 10), (4, 5), wrap=True)  # 2 rows x 4 columns, wrapping
    crops = grid.crop(latents)
    assert crops.shape == (2, 8, 3, 8, 10)
    doubled = torch.cat([latents, latents], dim=-1)
    for n, (top, left) in enumerate(grid.origins):
        assert torch.equal(crops[:, n], doubled[..., top:top + 8, left:left + 10])
    total = torch.zeros(2, 3, 12, 20)
    for n, (top, left) in enumerate(grid.origins):
        cols = torch.arange(left, left + 10) % 20
        total[..., top:top + 8, cols] += crops[:, n]
    assert torch.allclose(grid.accumulate(crops), total)
    assert torch.allclose(grid.average(crops), latents, atol=1e-6)  # averaging unchanged crops is the identity
    coverage = grid.coverage()
    assert coverage[0, 0] == 2 and coverage[5, 0] == 4  # columns covered uniformly, rows 4..7 twice as often
    pixels = torch.randn(1, 3, 12 * 8, 20 * 8)
    pixel_crops = grid.crop(pixels, scale=8)
    assert torch.equal(pixel_crops[0, 3], torch.cat([pixels, pixels], -1)[0, :, 0:64, 120:200])


def test_loop_closure_covers_every_column_equally():
    grid = WindowGrid.make((64, 256), (64, 64), (16, 16), wrap=True)
    assert len(grid) == 16  # SyncDiffusion's loop closure has 13 + 2 windows: it misses offset 48
    assert torch.all(grid.coverage() == 4)


# --- equivalence with diffusers ----------------------------------------------------------------

@pytest.fixture(scope="module")
def window64_generator_and_diffusers():
    """A tiny SD 1.x pipeline whose UNet is fast at 64-latent windows (attention only at 16x16), as a
    pano360 generator and as diffusers' StableDiffusionPanoramaPipeline sharing the same modules."""
    from diffusers import DDIMScheduler, StableDiffusionPanoramaPipeline

    from pano360.backbones.tiny import tiny_window64_pipeline
    from pano360.generator import PanoramaGenerator

    pipe = tiny_window64_pipeline()
    panorama = StableDiffusionPanoramaPipeline(
        **{**pipe.components, "scheduler": DDIMScheduler.from_config(pipe.scheduler.config)},
        requires_safety_checker=False)
    panorama.set_progress_bar_config(disable=True)
    return PanoramaGenerator.from_pipe(pipe, name="tiny-window64"), panorama


@pytest.mark.parametrize("loop_closure", [False, True])
def test_matches_diffusers_panorama_pipeline(window64_generator_and_diffusers, loop_closure):
    """Same latent, prompt, DDIM steps and guidance: the decoded panoramas agree to 1e-4.

    diffusers' circular_padding decodes with 8 wrapped latent columns on each side, which is our
    decode_wrap="pad"; our default "conv" decode wraps every VAE convolution instead.
    """
    generator, panorama = window64_generator_and_diffusers
    height, width = 512, 576  # 64 x 72 latents: 2 windows, or 9 with wrap
    latents = noise(5, height, width)
    expected = panorama("a quiet harbour at dusk", height=height, width=width, num_inference_steps=STEPS,
                        guidance_scale=7.5, latents=latents, output_type="np", circular_padding=loop_closure).images[0]
    ours = run(generator, latents, height, width, guidance_scale=7.5, window=64, stride=8,
               loop_closure=loop_closure, decode_wrap="pad", view_batch_size=4)
    assert np.abs(expected - ours).max() <= 1e-4
    assert expected.std() > 1e-2  # not a trivially constant image


# --- loop closure --------------------------------------------------------------------------------

def test_seam_is_like_interior_only_with_loop_closure(tiny_generators):
    gen = tiny_generators("tiny")
    closed_seams, open_seams, interiors = [], [], []
    for seed in range(2):
        latents = smooth_latents(seed, H // 8, W // 8)
        interior, seam = column_jumps(run(gen, latents, num_inference_steps=1))
        assert seam <= np.percentile(interior, 90)
        _, open_seam = column_jumps(run(gen, latents, loop_closure=False, num_inference_steps=1))
        closed_seams.append(seam)
        open_seams.append(open_seam)
        interiors.append(np.median(interior))
    assert np.mean(open_seams) > 1.8 * np.mean(interiors)
    assert np.mean(open_seams) > 1.8 * np.mean(closed_seams)


@pytest.mark.parametrize("model,control", [("tiny", None), ("tiny-sd2", None), ("tiny-sdxl", None), ("tiny", "tiny")])
def test_roll_equivariance_with_loop_closure(tiny_generators, model, control):
    """Rolling the initial latent (and control image) by a multiple of the stride rolls the panorama."""
    gen = tiny_generators(model, controlnet=control)
    height, width = (64, 256) if model != "tiny-sdxl" else (128, 256)
    stride, roll = 8, 16  # latents: 32 columns, window 16 -> 4 wrap-symmetric windows per row
    latents = noise(1, height, width)
    kwargs = dict(stride=stride, view_batch_size=3, num_inference_steps=1)
    depth = None
    if control:
        depth = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(3))
        kwargs["control_image"] = depth
    base = run(gen, latents, height, width, **kwargs)
    if control:
        kwargs["control_image"] = torch.roll(depth, 8 * roll, -1)
    rolled = run(gen, torch.roll(latents, roll, -1), height, width, **kwargs)
    assert np.abs(np.roll(base, 8 * roll, axis=1) - rolled).max() <= 1e-4
    assert np.abs(base - rolled).max() > 1e-2


def test_view_batch_size_and_two_dimensional_grid(tiny_generators):
    """A 2-D grid with wrap (diffusers crashes there) runs; batching windows does not change the result."""
    gen = tiny_generators("tiny")
    latents = noise(2, 128, 256)  # 16 x 32 latents, window 8 x 16, stride 4 x 8: 3 rows x 4 columns
    one = run(gen, latents, 128, 256, window=(8, 16), stride=(4, 8), view_batch_size=1,
              num_inference_steps=1)
    many = run(gen, latents, 128, 256, window=(8, 16), stride=(4, 8), view_batch_size=12,
               num_inference_steps=1)
    assert one.shape == (128, 256, 3)
    assert np.abs(one - many).max() <= 1e-5


def test_out_of_memory_halves_the_view_batch_with_the_same_result(tiny_generators, monkeypatch):
    from pano360.backbones.guided import GuidedModel

    gen = tiny_generators("tiny")
    latents = noise(3, 128, 256)
    common = dict(window=(8, 16), stride=(4, 8), num_inference_steps=2)  # 12 windows
    expected = run(gen, latents, 128, 256, view_batch_size=3, **common)
    calls = []
    denoise = GuidedModel.__call__

    def limited(self, latents, *args, **kwargs):
        calls.append(latents.shape[0])
        if latents.shape[0] > 3:
            raise torch.OutOfMemoryError("pretend: 3 windows fit")
        return denoise(self, latents, *args, **kwargs)

    monkeypatch.setattr(GuidedModel, "__call__", limited)
    got = run(gen, latents, 128, 256, view_batch_size=12, **common)
    assert calls == [12, 6, 3, 3, 3, 3] + [3, 3, 3, 3]  # step 1 halves twice, step 2 starts at the kept size
    assert np.abs(got - expected).max() <= 1e-5


def test_options_recorded(tiny_generators):
    gen = tiny_generators("tiny")
    out = gen("a room", method="multidiffusion", height=H, width=W, num_inference_steps=1, seed=0,
              output_type="latent", progress=False, stride=4)
    assert out.parameters["method"] == "multidiffusion"
    assert out.parameters["method_options"]["stride"] == 4
    assert out.parameters["method_options"]["loop_closure"] is True


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("options,message", [
    (dict(window=48), "larger than the panorama"),
    (dict(stride=0), ">= 1"),
    (dict(stride=-8), ">= 1"),
    (dict(stride=12), "does not divide"),
    (dict(stride=(0, 8)), ">= 1"),
    (dict(stride=12, loop_closure=False), "does not divide"),
    (dict(stride=32, window=(8, 16)), "larger than the window"),
    (dict(view_batch_size=0), "view_batch_size"),
    (dict(decode_wrap="circle"), "decode_wrap"),
    (dict(window=(8, 16, 4)), "window"),
])
def test_bad_input_fails_before_any_model_call(tiny_generators, monkeypatch, options, message):
    gen = tiny_generators("tiny")

    def no_model_calls(*args, **kwargs):
        raise AssertionError("a model was called before the options were checked")

    monkeypatch.setattr(gen, "encode_prompt", no_model_calls)
    with pytest.raises(InvalidInputError, match=message):
        gen("a room", method="multidiffusion", height=H, width=W, num_inference_steps=2, progress=False, **options)


def test_model_free_checks():
    from pano360.methods import GenerationRequest

    method = get_method("multidiffusion", window=64, stride=16)
    method.check(GenerationRequest(512, 2048, 50, 7.5))
    with pytest.raises(InvalidInputError, match="use a width of 2048 or 2176 px"):
        method.check(GenerationRequest(512, 2056, 50, 7.5))
    with pytest.raises(InvalidInputError, match="unknown|has no option"):
        get_method("multidiffusion", strides=8)
