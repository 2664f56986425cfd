"""Transformer backbones (FLUX.1, SD3, Qwen-Image) behind the backbone contract, on tiny random models.

* ``circular`` with the seam off equals each family's diffusers pipeline (same latents, steps, guidance);
* with the exact seam, rolling the initial latents by whole tokens rolls the panorama exactly, for
  several model shapes and two schedulers; the seam column does not stand out;
* a FLUX LoRA in the diffusers/peft layout gives what ``pipe.load_lora_weights`` gives;
* every method runs offline on the tiny transformers.
"""

import pytest
import torch

from pano360 import PanoramaGenerator
from pano360.backbones.family_flux import pack_latents
from pano360.backbones.tiny_dit import tiny_dit_pipeline
from pano360.errors import InvalidInputError

H, W = 64, 128  # pixels: 8 x 16 latents, 4 x 8 tokens
STEPS = 3
PROMPT = "a quiet harbour at dusk"

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def noise(channels=16, seed=0, height=H // 8, width=W // 8):
    return torch.randn(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


def run(gen, latents, **kwargs):
    kwargs.setdefault("num_inference_steps", STEPS)
    kwargs.setdefault("height", latents.shape[-2] * 8)
    kwargs.setdefault("width", latents.shape[-1] * 8)
    return gen(PROMPT, latents=latents, output_type="pt", progress=False, **kwargs).images


@pytest.fixture(scope="module")
def pipes():
    return {name: tiny_dit_pipeline(name) for name in ("tiny-flux", "tiny-sd3", "tiny-qwen")}


def diffusers_reference(pipe, name, latents, **kwargs):
    """The family's own diffusers pipeline from the same initial latents."""
    packed = latents if name.startswith("tiny-sd3") else pack_latents(latents)
    return pipe(PROMPT, height=H, width=W, num_inference_steps=STEPS, output_type="pt", latents=packed,
                **kwargs).images


@pytest.mark.parametrize("name, kwargs, shape", [
    ("tiny-flux", {}, None),
    ("tiny-flux", {"negative_prompt": "blurry", "true_cfg_scale": 2.0}, None),
    ("tiny-flux", {}, {"attention_head_dim": 24, "axes_dims_rope": (8, 8, 8), "latent_channels": 8}),
    ("tiny-flux-schnell", {}, {"num_attention_heads": 3}),
    ("tiny-sd3", {}, None),
    ("tiny-sd3", {"negative_prompt": "blurry", "guidance_scale": 5.0}, None),
    ("tiny-sd35", {}, None),
    ("tiny-qwen", {}, None),
    ("tiny-qwen", {"negative_prompt": "blurry"}, None),
    ("tiny-qwen", {}, {"attention_head_dim": 32, "axes_dims_rope": (8, 12, 12), "latent_channels": 8}),
])
def test_unwrapped_circular_equals_the_diffusers_pipeline(pipes, name, kwargs, shape):
    pipe = pipes[name] if shape is None and name in pipes else tiny_dit_pipeline(name, **(shape or {}))
    gen = PanoramaGenerator.from_pipe(pipe, name)
    latents = noise(gen.backbone.info.latent_channels, seed=3)
    reference = diffusers_reference(pipe, name, latents, **kwargs)
    ours = run(gen, latents, wrap=False, wrap_vae=False, **kwargs)
    assert (reference - ours).abs().max() <= 1e-4
    seamless = run(gen, latents, **kwargs)
    assert (reference - seamless).abs().max() > 1e-3  # the seam changes the result


def test_flux_lora_in_the_diffusers_layout_matches_load_lora_weights(tmp_path):
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    donor = tiny_dit_pipeline("tiny-flux")
    donor.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, parameter in donor.transformer.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0.0, 0.5)
    FluxPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(donor.transformer))
    lora = tmp_path / "pytorch_lora_weights.safetensors"

    reference_pipe = tiny_dit_pipeline("tiny-flux")
    reference_pipe.load_lora_weights(str(tmp_path), weight_name=lora.name)
    latents = noise(seed=5)
    reference = diffusers_reference(reference_pipe, "tiny-flux", latents)

    gen = PanoramaGenerator.from_pipe(tiny_dit_pipeline("tiny-flux"), "tiny-flux")
    plain = run(gen, latents, wrap=False, wrap_vae=False)
    gen.load_lora(str(lora))
    ours = run(gen, latents, wrap=False, wrap_vae=False)
    assert (reference - ours).abs().max() <= 1e-4
    assert (plain - ours).abs().max() > 1e-3  # the LoRA changes the image


SHAPES = {
    "tiny-flux": [{}, {"attention_head_dim": 24, "axes_dims_rope": (8, 8, 8), "num_attention_heads": 3},
                  {"latent_channels": 8, "vae_depth": 3}],
    "tiny-qwen": [{}, {"attention_head_dim": 32, "axes_dims_rope": (8, 12, 12)}, {"latent_channels": 8}],
}


@pytest.mark.parametrize("name, shape", [(n, s) for n, shapes in SHAPES.items() for s in shapes])
@pytest.mark.parametrize("scheduler", ["flow_euler", "flow_dpmpp_2m"])
def test_rolling_the_noise_by_whole_tokens_rolls_the_panorama(name, shape, scheduler):
    gen = PanoramaGenerator.from_pipe(tiny_dit_pipeline(name, **shape), name)
    info = gen.backbone.info
    factor = info.vae_scale_factor
    latents = noise(info.latent_channels, seed=1, height=H // factor, width=W // factor)
    k = 2 * info.patch_size  # latent columns: two tokens
    base = run(gen, latents, scheduler=scheduler, height=H, width=W)
    rolled = run(gen, torch.roll(latents, k, dims=-1), scheduler=scheduler, height=H, width=W)
    assert (torch.roll(base, k * factor, dims=-1) - rolled).abs().max() <= 1e-4
    assert (base - rolled).abs().max() > 1e-2  # the roll really moved the content


def test_sd3_rolls_exactly_with_its_absolute_positions_rolled_along(pipes):
    """SD3's additive embedding is absolute: with the width frequencies snapped, a roll of the tokens
    together with their positions is exact (the rest of the transformer and the wrapped VAE are).
    ``ceil`` rounding: at 8 tokens every nearest harmonic of the tiny model's frequencies is 0."""
    gen = PanoramaGenerator.from_pipe(pipes["tiny-sd3"], "tiny-sd3")
    contract, transformer = gen.backbone.contract, gen.backbone.denoiser
    latents = noise(seed=2)
    text = gen.encode_prompt([PROMPT], None, guidance=False)
    t = torch.tensor(700.0)
    with contract.seam(gen.backbone, vae=False, rounding="ceil"):
        base = contract.call(transformer, latents, t, text.embeds, text.pooled)
    with contract.seam(gen.backbone, vae=False, rounding="ceil", offset=-2):
        rolled = contract.call(transformer, torch.roll(latents, 4, -1), t, text.embeds, text.pooled)
    assert (torch.roll(base, 4, -1) - rolled).abs().max() <= 1e-4
    with contract.seam(gen.backbone, vae=False, rounding="ceil"):  # positions not rolled along: not a roll
        not_along = contract.call(transformer, torch.roll(latents, 4, -1), t, text.embeds, text.pooled)
    assert (torch.roll(base, 4, -1) - not_along).abs().max() > 1e-3


def test_sd3_position_embedding_matches_diffusers_without_the_seam(pipes):
    from pano360.backbones.family_sd3 import sd3_position_embedding

    patch = pipes["tiny-sd3"].transformer.pos_embed
    for rows, columns in ((4, 8), (6, 20), (3, 3)):
        expected = patch.cropped_pos_embed(rows * 2, columns * 2)
        assert (sd3_position_embedding(patch, rows, columns) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-qwen"])
def test_periodic_frequencies_alone_are_not_exact(pipes, name):
    """stable-diffusion.cpp's scheme (snapped frequencies only) leaves text-image attention tied to the
    absolute column: close, not exact; the exact scheme's text coupling removes that."""
    gen = PanoramaGenerator.from_pipe(pipes[name], name)
    latents = noise(seed=4)
    base = run(gen, latents, seam="periodic")
    rolled = run(gen, torch.roll(latents, 4, -1), seam="periodic")
    error = (torch.roll(base, 32, -1) - rolled).abs().max()
    assert 1e-4 < error < 0.2


def column_jumps(image):
    """Mean |difference| of neighbouring pixel columns [W-1] and across the seam, for [1, 3, H, W]."""
    columns = image[0].float()
    interior = (columns[..., 1:] - columns[..., :-1]).abs().mean(dim=(0, 1))
    return interior, (columns[..., 0] - columns[..., -1]).abs().mean()


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-sd3", "tiny-qwen"])
def test_the_seam_column_does_not_stand_out(pipes, name):
    gen = PanoramaGenerator.from_pipe(pipes[name], name)
    for seed in range(2):
        interior, seam = column_jumps(run(gen, noise(seed=seed)))
        assert seam <= torch.quantile(interior, 0.95)


def test_tiny_dits_load_by_name_with_the_family_defaults():
    gen = PanoramaGenerator.from_pretrained("tiny-flux", device="cpu", torch_dtype="fp32")
    out = gen(PROMPT, num_inference_steps=2, seed=0, output_type="pt", progress=False)
    assert out.images.shape == (1, 3, 128, 256)
    assert out.parameters["family"] == "flux" and out.parameters["scheduler"] == "flow_euler"
    assert out.parameters["guidance_scale"] == 3.5
    with pytest.raises(InvalidInputError, match="does not fit the flux model"):
        gen(PROMPT, num_inference_steps=2, scheduler="ddim", progress=False)
    with pytest.raises(InvalidInputError, match="multiple of 16"):
        gen(PROMPT, num_inference_steps=2, height=120, width=256, progress=False)


METHODS = [
    ("multidiffusion", {"window": 8, "stride": 4}),
    ("spot", {"window": 8}),
    ("syncdiffusion", {"window": 8, "stride": 4, "sync_threshold": 1}),
    ("circular", {"seam": "pad"}),
    ("circular", {"seam": "blend"}),
    ("circular", {"roll_per_step": 90.0}),
]


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3", "tiny-qwen"])
@pytest.mark.parametrize("method, options", METHODS)
def test_every_method_runs_on_the_tiny_transformers(model, method, options):
    gen = PanoramaGenerator.from_pretrained(model, device="cpu", torch_dtype="fp32")
    if model == "tiny-sd3" and options.get("seam") == "pad":
        options = {"seam": "none"}
    out = gen(PROMPT, method=method, height=H, width=W, num_inference_steps=2, seed=0, output_type="pt",
              progress=False, **options)
    assert out.images.shape == (1, 3, H, W) and torch.isfinite(out.images).all()


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-qwen"])
def test_inpainting_regenerates_only_the_mask(model):
    """Masked latent blending with the flow noising: across seeds the kept half stays (up to the VAE's global
    mid-block attention) while the masked half changes."""
    import pano360.sphere.inpaint  # noqa: F401  (registers the API-only inpaint method)

    gen = PanoramaGenerator.from_pretrained(model, device="cpu", torch_dtype="fp32")
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(1)) * 2 - 1
    mask = torch.zeros(1, 1, H, W)
    mask[..., :, W // 2:] = 1
    outputs = [gen(PROMPT, method="inpaint", image=image, mask=mask, height=H, width=W, num_inference_steps=2,
                   seed=seed, output_type="pt", progress=False).images for seed in (0, 1)]
    change = (outputs[0] - outputs[1]).abs()
    kept, masked = change[..., 8:W // 2 - 8].mean(), change[..., W // 2 + 8:-8].mean()
    assert masked > 1e-3 and kept < 0.5 * masked


def test_flux_fill_matches_the_diffusers_fill_pipeline(monkeypatch):
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    import pano360.sphere.inpaint  # noqa: F401  (registers the API-only inpaint method)

    # FluxFillPipeline samples the masked image's posterior; pano360 takes its mean (deterministic)
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    pipe = tiny_dit_pipeline("tiny-flux-fill")
    gen = PanoramaGenerator.from_pipe(pipe, "tiny-flux-fill")
    image = torch.rand(1, 3, H, W, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, H, W)
    mask[..., 16:48, 32:96] = 1
    latents = noise(seed=6)
    reference = pipe(PROMPT, image=image, mask_image=mask, height=H, width=W, num_inference_steps=STEPS,
                     guidance_scale=30.0, output_type="pt", latents=pack_latents(latents)).images
    ours = gen(PROMPT, method="inpaint", image=image * 2 - 1, mask=mask, wrap=False, height=H, width=W,
               num_inference_steps=STEPS, guidance_scale=30.0, latents=latents, output_type="pt",
               progress=False).images
    assert (reference - ours).abs().max() <= 1e-4


def test_poles_and_upscale_run_on_a_transformer():
    from pano360.sphere.pipeline import Sampling, refine_poles
    from pano360.sphere.upscale import UpscaleSettings, upscale_panorama

    gen = PanoramaGenerator.from_pretrained("tiny-flux", device="cpu", torch_dtype="fp32")
    panorama = torch.rand(1, 3, 64, 128) * 2 - 1
    refined = refine_poles(gen.pipe, panorama, PROMPT, sampling=Sampling(num_inference_steps=2))
    assert refined.shape == panorama.shape and torch.isfinite(refined).all()
    image = (torch.rand(64, 128, 3) * 255).byte().numpy()
    settings = UpscaleSettings(num_inference_steps=2, tile=8, overlap=2)
    out = upscale_panorama(gen.pipe, image, PROMPT, scale=2, settings=settings)
    assert out.shape == (128, 256, 3)


def test_folder_and_transformer_only_loading(tmp_path):
    from pano360.backbones.loading import load_backbone
    from pano360.backbones.tiny_dit import save_tiny_dit_pipeline
    from pano360.plan import model_facts

    folder = save_tiny_dit_pipeline(tmp_path / "qwen", "tiny-qwen")
    assert model_facts(str(folder)).family == "qwen-image"
    backbone = load_backbone(str(folder), hash_single_files=False)
    assert backbone.info.family == "qwen-image" and backbone.info.latent_channels == 16

    flux = save_tiny_dit_pipeline(tmp_path / "flux", "tiny-flux")
    other = save_tiny_dit_pipeline(tmp_path / "flux-other", "tiny-flux", seed=7)
    swapped = load_backbone(str(flux), transformer=str(other / "transformer"), hash_single_files=False)
    expected = load_backbone(str(other), hash_single_files=False)
    for (name, a), (_, b) in zip(swapped.denoiser.state_dict().items(), expected.denoiser.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(InvalidInputError, match="--transformer replaces"):
        load_backbone("tiny", transformer=str(other / "transformer"))


def test_fp8_transformer_storage_computes_in_the_given_dtype():
    from pano360.backbones.loading import load_backbone

    backbone = load_backbone("tiny-flux", quantize="fp8")
    assert any(p.dtype == torch.float8_e4m3fn for p in backbone.denoiser.parameters())
    gen = PanoramaGenerator(backbone)
    out = gen(PROMPT, height=H, width=W, num_inference_steps=2, seed=0, output_type="pt", progress=False)
    full = PanoramaGenerator.from_pretrained("tiny-flux", device="cpu", torch_dtype="fp32")
    reference = full(PROMPT, height=H, width=W, num_inference_steps=2, seed=0, output_type="pt", progress=False)
    assert torch.isfinite(out.images).all()
    assert (out.images - reference.images).abs().mean() < 0.05  # float8 weights: close, not equal


def test_flow_schedule_operations_are_consistent():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from pano360.backbones.parameterization import add_noise, model_input, predicted_original, training_target

    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    x0, eps = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    t = torch.tensor([250.0, 800.0])
    xt = add_noise(scheduler, x0, eps, t)
    velocity = training_target(scheduler, x0, eps, t)
    assert torch.allclose(predicted_original(scheduler, model_input(scheduler, xt, t), velocity, t), x0, atol=1e-5)
    sigma = (t / 1000).view(-1, 1, 1, 1)
    assert torch.allclose(xt, (1 - sigma) * x0 + sigma * eps)


def test_cli_generates_with_a_tiny_transformer(tmp_path, capsys):
    from pano360.cli.main import main

    out = tmp_path / "flux.png"
    assert main(["generate", "a cabin", "--model", "tiny-qwen", "--steps", "2", "-o", str(out), "--quiet"]) == 0
    assert out.is_file()
    code = main(["generate", "a cabin", "--model", "tiny-flux", "--scheduler", "ddim", "-o", str(tmp_path / "x.png")])
    assert code != 0
    assert "flow_euler" in capsys.readouterr().err


def test_mvdiffusion_is_refused_on_a_transformer_with_one_line():
    gen = PanoramaGenerator.from_pretrained("tiny-flux", device="cpu", torch_dtype="fp32")
    with pytest.raises(InvalidInputError, match="SD 2 UNet"):
        gen(PROMPT, method="mvdiffusion", num_inference_steps=2, progress=False)


def test_preset_trigger_phrase_is_added_once():
    from pano360.presets import Preset

    preset = Preset("x", "circular", "test", trigger="equirectangular 360 view")
    assert preset.prompt("a beach") == "equirectangular 360 view, a beach"
    assert preset.prompt("Equirectangular 360 View of a beach") == "Equirectangular 360 View of a beach"


def test_the_default_is_a_true_360_model_and_sd2_one_flag_away():
    from pano360.cli.generate import apply_preset
    from pano360.cli.main import build_parser

    args = build_parser().parse_args(["generate", "a cabin"])
    apply_preset(args)
    assert args.preset == "sdxl-360" and args.unet == "ProGamerGov/sdxl-360-diffusion"
    assert args.model == "stabilityai/stable-diffusion-xl-base-1.0" and (args.height, args.width) == (1024, 2048)
    args = build_parser().parse_args(["generate", "a cabin", "--method", "multidiffusion"])
    apply_preset(args)  # another method: the default model and its trigger, not the preset's settings
    assert args.preset is None and args.unet == "ProGamerGov/sdxl-360-diffusion"
    assert args.prompt.startswith("equirectangular 360 view")
    args = build_parser().parse_args(["generate", "a cabin", "--model", "stabilityai/stable-diffusion-2-base"])
    apply_preset(args)
    assert args.preset is None and args.unet is None


def test_a_unet_fine_tune_replaces_the_base_unet(tmp_path):
    from pano360.backbones.loading import load_backbone
    from pano360.backbones.tiny import save_tiny_pipeline

    base = save_tiny_pipeline(tmp_path / "base", "sdxl", seed=0)
    tuned = save_tiny_pipeline(tmp_path / "tuned", "sdxl", seed=5)
    for source in (tuned, tuned / "unet"):  # a repo-like folder with unet/, or the UNet folder itself
        swapped = load_backbone(str(base), unet=str(source), hash_single_files=False)
        expected = load_backbone(str(tuned), hash_single_files=False)
        assert all(torch.equal(a, b) for a, b in zip(swapped.denoiser.state_dict().values(),
                                                     expected.denoiser.state_dict().values()))
    gen = PanoramaGenerator(swapped)
    out = gen(PROMPT, height=64, width=128, num_inference_steps=2, seed=0, output_type="pt", progress=False)
    assert out.parameters["unet"]["name"] == str(tuned / "unet")
    with pytest.raises(InvalidInputError, match="--unet replaces an SD/SDXL UNet"):
        load_backbone("tiny-flux", unet=str(tuned))


@pytest.mark.parametrize("argv, message", [
    (["--model", "tiny-flux", "--height", "120", "--width", "256"], "multiple of 16 pixels"),
    (["--model", "tiny", "--seam", "pad"], "--seam pad is for transformers"),
    (["--model", "tiny-sd3", "--seam", "periodic"], "SD3 has no rotary positions"),
    (["--model", "tiny-qwen", "--method", "mvdiffusion"], "SD 2 UNet"),
    (["--model", "tiny-flux", "--scheduler", "dpmpp_2m"], "does not fit the flux model"),
    (["--model", "tiny-flux", "--depth", "x.png"], "drop --depth"),
    (["--model", "tiny-flux", "--unet", "tiny"], "--unet replaces an SD/SDXL UNet"),
])
def test_transformer_requests_are_refused_before_loading(argv, message, tmp_path, capsys, monkeypatch):
    """Family-specific mistakes get one line from the pre-flight plan, before any model is built."""
    from pano360.backbones import tiny_dit
    from pano360.cli.main import main

    def no_build(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(tiny_dit, "tiny_dit_pipeline", no_build)
    (tmp_path / "x.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "a cabin", *argv, "-o", str(tmp_path / "out.png")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
