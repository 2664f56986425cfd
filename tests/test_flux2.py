"""FLUX.2 [klein] behind the backbone contract, on the tiny random ``Flux2KleinPipeline`` (``tiny-flux2``).

* ``circular`` with the seam off equals ``Flux2KleinPipeline`` at its defaults (same initial latents);
* the VAE wrapper's normalisation is the pipeline's (patchify, batch-norm statistics, unpatchify);
* with the exact seam, rolling the initial latents by whole tokens rolls the panorama exactly (two model
  shapes, two schedulers); the periodic scheme alone is close, not exact;
* the other methods and the CLI run.
"""

import pytest
import torch

from pano360 import PanoramaGenerator
from pano360.backbones.family_flux2 import _patchify, empirical_mu
from pano360.backbones.tiny_flux2 import tiny_flux2_pipeline

H, W = 64, 128  # pixels: 8 x 16 latents, 4 x 8 tokens
STEPS = 3
PROMPT = "a quiet harbour at dusk"

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def noise(channels=32, seed=0, height=H // 8, width=W // 8):
    return torch.randn(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


def run(gen, latents, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    return gen(PROMPT, latents=latents, height=H, width=W, output_type="pt", progress=False, **kwargs).images


@pytest.fixture(scope="module")
def pipe():
    return tiny_flux2_pipeline()


@pytest.mark.parametrize("distilled, kwargs", [(True, {}), (False, {}), (False, {"guidance_scale": 2.5})])
def test_unwrapped_circular_equals_the_diffusers_pipeline(pipe, distilled, kwargs):
    pipe = pipe if distilled else tiny_flux2_pipeline(is_distilled=False)
    gen = PanoramaGenerator.from_pipe(pipe, "tiny-flux2")
    latents = noise(seed=3)
    # the pipeline takes its latents patchified: [1, 4C, h/2, w/2]
    reference = pipe(prompt=PROMPT, height=H, width=W, num_inference_steps=STEPS, output_type="pt",
                     latents=_patchify(latents), **kwargs).images
    ours = run(gen, latents, wrap=False, wrap_vae=False, **kwargs)
    assert (reference - ours).abs().max() <= 1e-4
    assert (reference - run(gen, latents, **kwargs)).abs().max() > 1e-3  # the seam changes the result


def test_the_vae_wrapper_normalises_as_the_pipeline(pipe):
    from pano360.backbones.vae import decode_latents, encode_images

    gen = PanoramaGenerator.from_pipe(pipe, "tiny-flux2")
    images = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0)) * 2 - 1
    ours = encode_images(gen.backbone.vae, images)
    assert ours.shape == (1, 32, H // 8, W // 8)
    assert (_patchify(ours) - pipe._encode_vae_image(images, None)).abs().max() <= 1e-5
    latents = noise(seed=1)
    expected = pipe.vae.decode(gen.backbone.vae.denormalise(latents), return_dict=False)[0]
    raw = _patchify(latents) * torch.sqrt(pipe.vae.bn.running_var.view(1, -1, 1, 1) + 1e-4) \
        + pipe.vae.bn.running_mean.view(1, -1, 1, 1)
    assert (pipe._unpatchify_latents(raw) - gen.backbone.vae.denormalise(latents)).abs().max() <= 1e-5
    assert (decode_latents(gen.backbone.vae, latents) - expected).abs().max() <= 1e-5


def test_timesteps_use_the_pipelines_empirical_shift(pipe):
    from diffusers.pipelines.flux2.pipeline_flux2_klein import compute_empirical_mu

    for tokens, steps in ((32, 3), (4096, 4), (5000, 28)):
        assert empirical_mu(tokens, steps) == pytest.approx(compute_empirical_mu(tokens, steps), abs=1e-9)


SHAPES = [{}, {"attention_head_dim": 24, "axes_dims_rope": (4, 4, 8, 8), "num_attention_heads": 3,
               "latent_channels": 16}]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("scheduler", ["flow_euler", "flow_dpmpp_2m"])
def test_rolling_the_noise_by_whole_tokens_rolls_the_panorama(shape, scheduler):
    gen = PanoramaGenerator.from_pipe(tiny_flux2_pipeline(**shape), "tiny-flux2")
    latents = noise(gen.backbone.info.latent_channels, seed=1)
    k = 4  # latent columns: two tokens
    base = run(gen, latents, scheduler=scheduler)
    rolled = run(gen, torch.roll(latents, k, dims=-1), scheduler=scheduler)
    assert (torch.roll(base, k * 8, dims=-1) - rolled).abs().max() <= 1e-4
    assert (base - rolled).abs().max() > 1e-2  # the roll really moved the content


def test_periodic_frequencies_alone_are_not_exact(pipe):
    gen = PanoramaGenerator.from_pipe(pipe, "tiny-flux2")
    latents = noise(seed=4)
    base = run(gen, latents, seam="periodic")
    rolled = run(gen, torch.roll(latents, 4, -1), seam="periodic")
    assert 1e-4 < (torch.roll(base, 32, -1) - rolled).abs().max() < 0.2


@pytest.mark.parametrize("method, options", [
    ("multidiffusion", {"window": 8, "stride": 4}),
    ("spot", {"window": 8}),
    ("circular", {"seam": "pad"}),
    ("circular", {"seam": "blend"}),
])
def test_methods_run(pipe, method, options):
    gen = PanoramaGenerator.from_pipe(pipe, "tiny-flux2")
    out = gen(PROMPT, method=method, height=H, width=W, num_inference_steps=2, seed=0, output_type="pt",
              progress=False, **options)
    assert out.images.shape == (1, 3, H, W) and torch.isfinite(out.images).all()


def test_cli_generates_with_tiny_flux2(tmp_path):
    from pano360.cli.main import main

    out = tmp_path / "flux2.png"
    assert main(["generate", "a cabin", "--model", "tiny-flux2", "--steps", "2", "-o", str(out), "--quiet"]) == 0
    assert out.is_file()


def test_folder_loading_and_detection(tmp_path):
    from pano360.backbones.families import family_of_transformer_keys
    from pano360.backbones.loading import load_backbone
    from pano360.backbones.tiny_dit import save_tiny_dit_pipeline
    from pano360.plan import model_facts

    folder = save_tiny_dit_pipeline(tmp_path / "flux2", "tiny-flux2")
    assert model_facts(str(folder)).family == "flux2"
    backbone = load_backbone(str(folder), hash_single_files=False)
    assert backbone.info.family == "flux2" and backbone.info.latent_channels == 32
    assert family_of_transformer_keys(backbone.denoiser.state_dict()) == "flux2"
    assert family_of_transformer_keys(["model.diffusion_model.single_stream_modulation.lin.weight"]) == "flux2"


def test_guidance_follows_the_pipeline(pipe):
    contract = PanoramaGenerator.from_pipe(pipe, "tiny-flux2").backbone.contract
    base = tiny_flux2_pipeline(is_distilled=False)
    assert contract.guidance_plan(pipe, 4.0, None, True) == (1.0, None)  # step-distilled: one pass
    assert contract.guidance_plan(base, 4.0, None, False) == (4.0, None)  # base: CFG against ""
    assert contract.guidance_plan(base, 1.0, None, False) == (1.0, None)


def test_the_seam_column_does_not_stand_out(pipe):
    gen = PanoramaGenerator.from_pipe(pipe, "tiny-flux2")
    for seed in range(2):
        columns = run(gen, noise(seed=seed))[0].float()
        interior = (columns[..., 1:] - columns[..., :-1]).abs().mean(dim=(0, 1))
        assert (columns[..., 0] - columns[..., -1]).abs().mean() <= torch.quantile(interior, 0.95)
