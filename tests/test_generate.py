"""The shared loop with the circular method on tiny SD 1.x / 2.x (v) / SDXL models."""

import numpy as np
import pytest
import torch
from support.seams import column_jumps, smooth_latents

from pano360.errors import InvalidInputError

# tiny models gain nothing from threads; on a busy 2-core machine OpenMP barriers made this module's
# ControlNet tests take 90 s each instead of 10-20 s (issue 24)
pytestmark = pytest.mark.usefixtures("single_torch_thread")

H, W = 64, 128  # pixels: 8 x 16 latent units
STEPS = 3


def run(gen, latents, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return gen("a quiet harbour at dusk", height=H, width=W, latents=latents, output_type="np",
               progress=False, **kwargs).images[0]


def noise(seed=0, batch=1):
    return torch.randn(batch, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model", ["tiny", "tiny-sd2", "tiny-sdxl"])
def test_roll_equivariance(tiny_generators, model):
    """Rolling the initial latent by k columns rolls the panorama by 8k pixels (k = UNet downsampling)."""
    gen = tiny_generators(model)
    k = gen.backbone.info.unet_downsampling
    latents = noise(1)
    base = run(gen, latents)
    rolled = run(gen, torch.roll(latents, k, dims=-1))
    assert np.abs(np.roll(base, 8 * k, axis=1) - rolled).max() <= 1e-4
    assert np.abs(base - rolled).max() > 1e-2  # the roll really moved the content


@pytest.mark.parametrize("model", ["tiny", "tiny-sdxl"])
def test_roll_equivariance_with_depth_controlnet(tiny_generators, model):
    gen = tiny_generators(model, controlnet="tiny")
    k = gen.backbone.info.unet_downsampling
    depth = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(3))
    latents = noise(2)
    base = run(gen, latents, control_image=depth)
    rolled = run(gen, torch.roll(latents, k, -1), control_image=torch.roll(depth, 8 * k, -1))
    assert np.abs(np.roll(base, 8 * k, axis=1) - rolled).max() <= 1e-4
    other_depth = run(gen, latents, control_image=torch.zeros_like(depth))
    assert np.abs(base - other_depth).max() > 1e-2  # the depth image matters
    off = run(gen, latents, control_image=depth, controlnet_conditioning_scale=0.0)
    assert np.abs(base - off).max() > 1e-2


def test_seam_wraps_only_with_wraparound(tiny_generators):
    gen = tiny_generators("tiny")
    wrapped_seams, plain_seams, interiors = [], [], []
    for seed in range(3):
        latents = smooth_latents(seed, H // 8, W // 8)
        interior, seam = column_jumps(run(gen, latents))
        # The seam looks like an interior column boundary ...
        assert seam <= np.percentile(interior, 90)
        _, plain_seam = column_jumps(run(gen, latents, wrap=False, wrap_vae=False))
        wrapped_seams.append(seam)
        plain_seams.append(plain_seam)
        interiors.append(np.median(interior))
    # ... while without wraparound, on the same model and latents, it is clearly larger.
    assert np.mean(plain_seams) > 1.8 * np.mean(interiors)
    assert np.mean(plain_seams) > 1.8 * np.mean(wrapped_seams)


def test_vae_wrap_matters_for_pixels(tiny_generators):
    gen = tiny_generators("tiny")
    latents = smooth_latents(1, H // 8, W // 8)
    _, seam = column_jumps(run(gen, latents))
    _, seam_no_vae_wrap = column_jumps(run(gen, latents, wrap_vae=False))
    assert seam_no_vae_wrap > 1.5 * seam


def test_determinism_with_seed(tiny_generators):
    gen = tiny_generators("tiny")
    first = gen("a room", height=H, width=W, num_inference_steps=2, seed=7, output_type="np", progress=False)
    again = gen("a room", height=H, width=W, num_inference_steps=2, seed=7, output_type="np", progress=False)
    other = gen("a room", height=H, width=W, num_inference_steps=2, seed=8, output_type="np", progress=False)
    assert np.array_equal(first.images, again.images)
    assert np.abs(first.images - other.images).max() > 1e-2
    assert first.parameters["seeds"] == [7]
    with_generator = gen("a room", height=H, width=W, num_inference_steps=2, output_type="np", progress=False,
                         generator=torch.Generator().manual_seed(7))
    assert np.array_equal(first.images, with_generator.images)


def test_channels_last_layout_gives_the_same_panorama():
    from pano360 import PanoramaGenerator

    outputs = {}
    for layout in (False, True):
        gen = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32", channels_last=layout)
        out = gen("a room", height=H, width=W, num_inference_steps=2, latents=noise(3), output_type="np",
                  progress=False)
        conv = gen.unet.conv_in.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) == layout
        assert out.parameters["channels_last"] is layout
        outputs[layout] = out.images
    assert np.abs(outputs[True] - outputs[False]).max() < 1e-4
    auto = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32")
    auto("a room", height=H, width=W, num_inference_steps=1, output_type="latent", progress=False)
    assert auto.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)  # auto: on for the CPU
    with pytest.raises(InvalidInputError, match="channels_last"):
        PanoramaGenerator.from_pretrained("tiny", device="cpu", channels_last="yes")


def test_batch_seeds_are_individually_reproducible(tiny_generators):
    gen = tiny_generators("tiny")
    batch = gen("a room", height=H, width=W, num_inference_steps=2, seed=10, num_images_per_prompt=2,
                output_type="np", progress=False)
    single = gen("a room", height=H, width=W, num_inference_steps=2, seed=11, output_type="np", progress=False)
    assert batch.parameters["seeds"] == [10, 11]
    assert np.abs(batch.images[1] - single.images[0]).max() < 1e-5


def test_output_types_and_latents(tiny_generators):
    gen = tiny_generators("tiny")
    common = dict(height=H, width=W, num_inference_steps=2, seed=1, progress=False)
    pil = gen("a room", **common)
    pt = gen("a room", output_type="pt", **common)
    latent = gen("a room", output_type="latent", **common)
    assert pil.images[0].size == (W, H)
    assert pt.images.shape == (1, 3, H, W) and 0 <= pt.images.min() and pt.images.max() <= 1
    assert latent.images is None and latent.latents.shape == (1, 4, H // 8, W // 8)
    assert torch.allclose(latent.latents, pt.latents)


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "dpmpp_2m", "unipc"])
def test_schedulers_run(tiny_generators, scheduler):
    gen = tiny_generators("tiny-sd2")
    out = gen("a room", height=H, width=W, num_inference_steps=2, seed=1, scheduler=scheduler,
              output_type="np", progress=False)
    assert np.isfinite(out.images).all() and out.parameters["scheduler"] == scheduler


def test_callback_sees_and_can_replace_latents(tiny_generators):
    gen = tiny_generators("tiny")
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append((step, tensors["latents"].shape))
        return {"latents": tensors["latents"] * 0} if step == STEPS - 1 else {}

    out = gen("a room", height=H, width=W, num_inference_steps=STEPS, seed=1, output_type="latent",
              progress=False, callback_on_step_end=callback)
    assert [s for s, _ in seen] == list(range(STEPS))
    assert torch.count_nonzero(out.latents) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(height=60), "multiple of 8"),
        (dict(width=100), "multiple of 8"),
        (dict(height=256, width=128), "greater than width"),
        (dict(num_inference_steps=0), "steps"),
        (dict(guidance_scale=-1.0), "guidance"),
        (dict(width=136), "multiple of 32 pixels"),  # latent width 17: the UNet cannot wrap it
        (dict(latents=torch.zeros(1, 4, 4, 4)), "latents have shape"),
        (dict(output_type="jpg"), "output_type"),
        (dict(scheduler="warp-drive"), "unknown scheduler"),
        (dict(method="nope"), "unknown method"),
        (dict(bogus_option=1), "no option"),
        (dict(control_image=torch.zeros(1, 3, 64, 128)), "no ControlNet is loaded"),
    ],
)
def test_bad_arguments_fail_before_denoising(tiny_generators, kwargs, match):
    gen = tiny_generators("tiny")
    calls_before = []
    kwargs = {"height": H, "width": W, "num_inference_steps": 2, **kwargs}
    original_unet_forward = gen.unet.forward

    def forbidden(*args, **kw):  # pragma: no cover - only runs if validation is missing
        calls_before.append(1)
        return original_unet_forward(*args, **kw)

    gen.unet.forward = forbidden
    try:
        with pytest.raises(InvalidInputError, match=match):
            gen("a room", progress=False, **kwargs)
    finally:
        del gen.unet.forward
    assert not calls_before
