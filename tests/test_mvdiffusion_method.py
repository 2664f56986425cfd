"""method="mvdiffusion" in the shared loop: reference loop parity, prompts, stitching, outpainting, CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support.mvdiffusion_reference import multiview_reference

from pano360 import PanoramaGenerator
from pano360.adapters.mvdiffusion import MVDiffusionAdapter, ring_cameras
from pano360.errors import InvalidInputError, ModelLoadError
from pano360.geometry.rigs import horizon_ring
from pano360.methods import get_method
from pano360.methods.mvdiffusion import covered_rows, stitch_views

pytestmark = pytest.mark.usefixtures("single_torch_thread")
VIEW = 64  # view size in pixels (8×8 latents) keeps the tiny runs fast
SIZE = {"height": 256, "width": 512, "view_size": VIEW}


def randomised(adapter, seed=1, std=0.1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return adapter


@pytest.fixture(scope="module")
def mv_generator():
    gen = PanoramaGenerator.from_pretrained("tiny-sd2", device="cpu", torch_dtype="fp32")
    gen.load_adapter(randomised(MVDiffusionAdapter.for_unet(gen.unet)))
    return gen


def reference_loop(gen, prompts, noise, steps, guidance):
    """The reference's inference loop (digest §5) around the reference-style model: DDIM on
    [b, m, 4, h, w], [uncond; cond] with the empty prompt for every view, one model call per step."""
    from diffusers import DDIMScheduler

    pipe = gen.pipe
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)

    def embed(texts):
        ids = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return pipe.text_encoder(ids)[0]

    cond, uncond = embed(prompts)[None], embed([""] * len(prompts))[None]
    cams = ring_cameras(8, 90.0, VIEW)
    R, K = cams.R[None].repeat(2, 1, 1, 1), cams.K[None].repeat(2, 1, 1, 1)
    latents = noise * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            both = torch.cat([latents, latents])
            out = multiview_reference(gen.unet, gen.adapters[0], both, t, torch.cat([uncond, cond]), R, K)
            u, c = out.chunk(2)
            latents = scheduler.step(u + guidance * (c - u), t, latents).prev_sample
    return latents


def test_three_ddim_steps_match_the_reference_loop(mv_generator):
    prompts = [f"view {i} of a kitchen" for i in range(8)]
    noise = torch.randn(1, 8, 4, VIEW // 8, VIEW // 8, generator=torch.Generator().manual_seed(4))
    out = mv_generator(prompts, method="mvdiffusion", num_inference_steps=3, guidance_scale=7.5,
                       scheduler="ddim", latents=noise, progress=False, **SIZE)
    expected = reference_loop(mv_generator, prompts, noise, 3, 7.5)
    assert out.latents.shape == (1, 8, 4, 8, 8)
    assert (out.latents - expected).abs().max() < 1e-4
    assert len(out.views[0]) == 8 and out.views[0][0].size == (VIEW, VIEW)
    top = covered_rows(256, 8, 90.0)
    assert out.images[0].size == (512, 256 - 2 * top)
    assert out.parameters["pano_geometry"] == {"full_width": 512, "full_height": 256, "crop_top": top}
    assert out.parameters["prompt"] == prompts


def test_reference_crop_and_default_canvas(mv_generator):
    assert covered_rows(2048, 8, 90.0) == 540  # the reference's rows 540:1508
    method = get_method("mvdiffusion")
    assert method.default_size(mv_generator.backbone.info) == (512, 1024)  # 8 native 128-px views
    from pano360.presets import get_preset

    preset = get_preset("mvdiffusion-paper")
    assert preset.generation == {"height": 2048, "width": 4096, "num_inference_steps": 50,
                                 "guidance_scale": 9.0, "scheduler": "ddim"}


def test_prompts_one_or_per_view(tmp_path):
    method = get_method("mvdiffusion")
    assert method.prompt_units("a lake") == [["a lake"] * 8]
    per_view = [f"p{i}" for i in range(8)]
    assert method.prompt_units(per_view) == [per_view]
    assert method.prompt_units([per_view, "a lake"]) == [per_view, ["a lake"] * 8]
    with pytest.raises(InvalidInputError, match="3 prompts for 8 views"):
        method.prompt_units(["a", "b", "c"])
    path = tmp_path / "views.txt"
    path.write_text("\n".join(per_view) + "\n")
    assert get_method("mvdiffusion", view_prompts=str(path)).prompt_units("ignored") == [per_view]
    path.write_text("one\ntwo\n")
    with pytest.raises(InvalidInputError, match="2 prompt lines; give one line per view"):
        get_method("mvdiffusion", view_prompts=str(path)).prompt_units("x")


def test_rotating_the_rig_rolls_the_panorama():
    """Shifting the views by one (view i shows what view i−1 showed) turns the panorama by 45°: W/8 columns."""
    gen = torch.Generator().manual_seed(0)
    views = torch.rand(1, 8, 3, 32, 32, generator=gen) * 2 - 1
    rig = horizon_ring(8, 90.0)
    pano, weight = stitch_views(views, rig, (64, 128))
    turned, _ = stitch_views(torch.roll(views, 1, dims=1), rig, (64, 128))
    assert torch.allclose(turned, torch.roll(pano, 128 // 8, dims=-1), atol=1e-4)
    band = slice(covered_rows(64, 8, 90.0), 64 - covered_rows(64, 8, 90.0))
    assert (weight[..., band, :] > 0).all()  # the band is covered everywhere
    assert (pano[..., :2, :] == 1).all()  # white where no view reaches (the poles)


def test_stitching_uses_tent_weights():
    """View 0 black, the others white: view 0's centre column is (almost) only view 0, and halfway to
    view 1 (longitude 22.5°, both tents at 0.5) the two mix evenly."""
    views = torch.ones(1, 8, 3, 32, 32)
    views[:, 0] = -1
    pano, _ = stitch_views(views, horizon_ring(8, 90.0), (64, 128))
    band = slice(24, 40)
    assert (pano[0, :, band, 63:65] < -0.9).all()  # longitudes ±1.4°: view 1's tent there is 0.03
    halfway = pano[0, :, band, 71:73]  # longitudes 21.1° and 23.9°, symmetric about 22.5°
    assert halfway.abs().max() < 0.1 and halfway.mean().abs() < 1e-4
    assert torch.allclose(pano[0, :, band, 96], torch.ones(3, 16))  # 90°: views 1, 2 and 3 only


def test_needs_the_blocks_and_the_right_weights(tmp_path):
    plain = PanoramaGenerator.from_pretrained("tiny-sd2", device="cpu", torch_dtype="fp32")
    with pytest.raises(InvalidInputError, match="adapter='pano.ckpt'.*stable-diffusion-2-base"):
        plain("a room", method="mvdiffusion", num_inference_steps=1, progress=False, fresh_blocks=False, **SIZE)
    with pytest.raises(InvalidInputError, match="width = 2 × height"):
        plain("a room", method="mvdiffusion", num_inference_steps=1, height=256, width=768, progress=False)
    # the outpainting checkpoint on a text-to-image base fails when loading, naming the inpainting base
    from pano360.backbones.tiny import tiny_inpainting_pipeline

    inpaint_unet = tiny_inpainting_pipeline("sd2").unet
    path = tmp_path / "pano_outpaint.ckpt"
    torch.save({"state_dict": MVDiffusionAdapter.for_unet(inpaint_unet).reference_state_dict(unet=inpaint_unet)}, path)
    with pytest.raises(ModelLoadError, match="stabilityai/stable-diffusion-2-inpainting"):
        PanoramaGenerator.from_pretrained("tiny-sd2", device="cpu", torch_dtype="fp32", adapter=str(path))


def psnr(a, b):
    mse = float(((a - b) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def test_outpainting_keeps_the_photo(tmp_path):
    from PIL import Image

    from pano360.backbones.tiny import tiny_inpainting_pipeline
    from pano360.methods.mvdiffusion import load_photo

    gen = PanoramaGenerator.from_pipe(tiny_inpainting_pipeline("sd2"), name="tiny-inpaint")
    gen.load_adapter(randomised(MVDiffusionAdapter.for_unet(gen.unet), seed=3))
    yy, xx = np.mgrid[0:80, 0:120]
    photo = Image.fromarray(np.stack([xx * 2, yy * 3, (xx + yy)], -1).astype(np.uint8))  # 120×80, smooth
    seen = []
    hook = gen.unet.conv_in.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        out = gen("a garden", method="mvdiffusion", image=photo, num_inference_steps=2, seed=0, output_type="np",
                  progress=False, **SIZE)
        raw = gen("a garden", method="mvdiffusion", image=photo, paste_back=False, num_inference_steps=2, seed=0,
                  output_type="np", progress=False, **SIZE)
    finally:
        hook.remove()
    x = seen[0]  # [2 (CFG) · 8 views, 9, 8, 8]: noisy latent, mask, masked-image latent
    assert x.shape == (16, 9, 8, 8)
    mask = x[:, 4].view(2, 8, -1)
    assert (mask[:, 0] == 0).all() and (mask[:, 1:] == 1).all()
    masked = x[:, 5:].view(2, 8, 4, 8, 8)
    assert torch.equal(masked[0], masked[1])  # both CFG halves see the same condition
    from pano360.backbones.vae import encode_images

    means = encode_images(gen.vae, torch.stack([load_photo(photo, VIEW), torch.zeros(3, VIEW, VIEW)]))
    for view, mean in ((0, means[0]), (3, means[1])):  # posterior samples of the photo / of mid-grey
        other = means[1 - int(view > 0)]
        assert (masked[0, view] - mean).norm() < (masked[0, view] - other).norm()
    target = (load_photo(photo, VIEW).permute(1, 2, 0).numpy() + 1) / 2
    assert psnr(out.views[0][0], target) >= 40
    assert psnr(raw.views[0][0], target) < 30  # without paste-back view 0 is regenerated
    # in the panorama, the photo's interior is the projected photo
    from pano360.geometry import equirect_to_perspective

    pano = torch.from_numpy(out.images[0]).permute(2, 0, 1)[None] * 2 - 1
    full = torch.ones(1, 3, 256, 512)
    top = out.parameters["pano_geometry"]["crop_top"]
    full[..., top:256 - top, :] = pano
    back = (equirect_to_perspective(full, 0.0, 0.0, 90.0, out_hw=(VIEW, VIEW), mode="bicubic")[0, 0] + 1) / 2
    inner = slice(8, VIEW - 8)
    assert psnr(back[:, inner, inner].permute(1, 2, 0).numpy(), target[inner, inner]) >= 30


def test_outpainting_needs_matching_weights(mv_generator, tmp_path):
    from PIL import Image

    photo = Image.new("RGB", (64, 64), (120, 30, 200))
    with pytest.raises(InvalidInputError, match="pano_outpaint.ckpt on stabilityai/stable-diffusion-2-inpainting"):
        mv_generator("a room", method="mvdiffusion", image=photo, num_inference_steps=1, progress=False, **SIZE)


def test_cli_generates_with_view_prompts(tmp_path):
    from pano360.cli.main import main

    folder = tmp_path / "adapter"
    gen = PanoramaGenerator.from_pretrained("tiny-sd2", device="cpu", torch_dtype="fp32")
    randomised(MVDiffusionAdapter.for_unet(gen.unet), seed=9).save(folder)
    prompts = tmp_path / "views.txt"
    prompts.write_text("".join(f"view {i}\n" for i in range(8)))
    out = tmp_path / "pano.png"
    assert main(["generate", "a room", "--model", "tiny-sd2", "--method", "mvdiffusion", "--adapter", str(folder),
                 "--view-prompts", str(prompts), "--view-size", "64", "--steps", "2", "--height", "256",
                 "--width", "512", "-o", str(out)]) == 0
    from PIL import Image

    with Image.open(out) as image:
        assert image.size == (512, 256 - 2 * covered_rows(256, 8, 90.0))


def test_a_reference_checkpoint_brings_its_own_weights(tmp_path):
    """The file's UNet/VAE/text encoder replace the base's on the first generation; an ε checkpoint on a
    v-prediction base is refused before generating."""
    source = PanoramaGenerator.from_pretrained("tiny-sd2", device="cpu", torch_dtype="fp32")
    blocks = randomised(MVDiffusionAdapter.for_unet(source.unet), seed=6)
    unet = source.unet
    with torch.no_grad():
        unet.conv_in.weight.mul_(-1)  # the checkpoint's UNet differs from the base's
    path = tmp_path / "pano.ckpt"
    torch.save({"state_dict": blocks.reference_state_dict(unet=unet, vae=source.vae,
                                                          text_encoder=source.pipe.text_encoder)}, path)
    v_base = PanoramaGenerator.from_pretrained("tiny-sd2", device="cpu", torch_dtype="fp32", adapter=str(path))
    with pytest.raises(InvalidInputError, match="ε-prediction weights.*predicts v_prediction"):
        v_base("a room", method="mvdiffusion", num_inference_steps=1, progress=False, **SIZE)
    gen = PanoramaGenerator.from_pretrained("tiny-sd2", device="cpu", torch_dtype="fp32", adapter=str(path),
                                            prediction_type="epsilon")
    assert not torch.equal(gen.unet.conv_in.weight, unet.conv_in.weight)
    gen("a room", method="mvdiffusion", num_inference_steps=1, progress=False, output_type="latent", **SIZE)
    assert torch.equal(gen.unet.conv_in.weight, unet.conv_in.weight) and not gen.adapters[0].components


def test_tiny_models_run_with_fresh_blocks_and_real_ones_ask_for_the_checkpoint(tiny_generators):
    """Without an adapter, the tiny model starts from zero-initialised blocks (an exact identity), so
    ``--model tiny --method mvdiffusion`` runs offline; with fresh_blocks off the checkpoint is asked for."""
    gen = tiny_generators("tiny")  # no MVDiffusion adapter loaded
    noise = torch.randn(1, 8, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    common = dict(height=128, width=256, view_size=VIEW, num_inference_steps=2, latents=noise,
                  output_type="latent", progress=False)
    fresh = gen("a hall", method="mvdiffusion", **common)  # the tiny models' default
    assert fresh.parameters["method_options"]["fresh_blocks"] is True
    assert not gen.adapters  # the run's fresh blocks did not stay on the generator
    explicit = PanoramaGenerator.from_pipe(gen.pipe, channels_last=gen.channels_last)
    explicit.load_adapter(MVDiffusionAdapter.for_unet(gen.unet))
    torch.testing.assert_close(explicit("a hall", method="mvdiffusion", **common).latents, fresh.latents)
    with pytest.raises(InvalidInputError, match="pano.ckpt"):
        gen("a hall", method="mvdiffusion", fresh_blocks=False, **common)
