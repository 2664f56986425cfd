"""SyncDiffusion: reduces to MultiDiffusion at weight 0, one update reproduced with plain autograd,
the update lowers the perceptual distance to the anchor, bad input fails early."""

import numpy as np
import pytest
import torch

from pano360.errors import InvalidInputError
from pano360.methods.syncdiffusion import SyncDiffusionMethod, SyncDiffusionRun
from pano360.nets.lpips import LPIPS

H, W = 64, 192  # pixels: 8 x 24 latents; window 8 x 16 (tiny native 16, clipped), stride 8: 2 windows
PROMPT = "a quiet harbour at dusk"


pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def lpips():
    torch.manual_seed(0)
    return LPIPS(net="vgg", pretrained=False)


def noise(seed=0, height=H, width=W):
    return torch.randn(1, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(seed))


def run(gen, latents, method, steps=2, **kwargs):
    return gen(PROMPT, method=method, height=H, width=W, latents=latents, num_inference_steps=steps,
               progress=False, **kwargs)


class RecordingRun(SyncDiffusionRun):
    def denoise(self, model, latents, t, i):
        self.method.seen.append((self, model, latents.detach().clone(), t))
        return super().denoise(model, latents, t, i)


class Recording(SyncDiffusionMethod):
    """Keeps the run, the guided model and the latents before each step."""

    run_class = RecordingRun

    def __init__(self, **options):
        super().__init__(**options)
        self.seen = []


def test_zero_weight_equals_multidiffusion(tiny_generators, lpips):
    gen = tiny_generators("tiny")
    latents = noise(1, H, 256)
    common = dict(height=H, width=256, latents=latents, num_inference_steps=2, output_type="np", progress=False)
    multi = gen(PROMPT, method="multidiffusion", stride=8, **common).images
    sync = gen(PROMPT, method="syncdiffusion", stride=8, sync_weight=0.0, perceptual_loss=lpips, **common).images
    assert np.array_equal(multi, sync)


def test_one_sync_update_matches_plain_autograd(tiny_generators, lpips):
    """Step 0 of a two-window toy, recomputed window by window as the reference does it."""
    gen = tiny_generators("tiny")
    pipe = gen.pipe
    latents = noise(2)
    weight = 50.0
    method = Recording(stride=8, loop_closure=False, sync_weight=weight, sync_decay_rate=0.9, sync_threshold=1,
                       perceptual_loss=lpips)
    captured = {}

    def keep(generator, i, t, tensors):
        captured.setdefault(i, tensors["latents"].clone())
        return {}

    run(gen, latents, method, steps=2, output_type="latent", callback_on_step_end=keep)

    # --- independent computation (reference style: one window at a time, DDIM per window) ---
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(2)
    t = scheduler.timesteps[0]
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True)
    embeds = torch.cat([uncond, cond])

    def eps(x):
        u, c = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=embeds).sample.chunk(2)
        return u + 7.5 * (c - u)

    def decoded_x0(x):
        x0 = scheduler.step(eps(x), t, x).pred_original_sample
        return (pipe.vae.decode(x0 / 0.18215).sample / 2 + 0.5).clamp(0, 1)

    views = [latents[..., 0:16], latents[..., 8:24]]
    anchor = 1  # len(views) // 2
    with torch.no_grad():
        target = decoded_x0(views[anchor])
    leaf = views[0].clone().requires_grad_(True)
    loss = lpips(2 * decoded_x0(leaf) - 1, 2 * target - 1).sum()
    (gradient,) = torch.autograd.grad(loss, leaf)
    assert gradient.abs().max() > 0
    updated = [views[0] - weight * 0.9 ** 0 * gradient, views[1]]
    value = torch.zeros_like(latents)
    count = torch.zeros_like(latents)
    with torch.no_grad():
        for (left, right), view in zip([(0, 16), (8, 24)], updated):
            value[..., left:right] += scheduler.step(eps(view), t, view).prev_sample
            count[..., left:right] += 1
    expected = value / count

    # float rounding (batched windows, channels-last kernels) is amplified by the weight of 50
    error = (captured[0] - expected).abs().max()
    assert error < 5e-5, error
    # the update really moved the result (it is not the plain MultiDiffusion step), far beyond that error
    with torch.no_grad():
        plain = torch.zeros_like(latents)
        for (left, right), view in zip([(0, 16), (8, 24)], views):
            plain[..., left:right] += scheduler.step(eps(view), t, view).prev_sample
    moved = (captured[0] - plain / count).abs().max()
    assert moved > 20 * 5e-5, moved


def test_sync_step_lowers_distance_to_anchor(tiny_generators, lpips):
    gen = tiny_generators("tiny")
    method = Recording(stride=8, sync_weight=5.0, sync_threshold=1, perceptual_loss=lpips)
    gen(PROMPT, method=method, height=H, width=256, latents=noise(3, H, 256), num_inference_steps=1,
        output_type="latent", progress=False)
    run, model, latents, t = method.seen[0]
    grid = run.grid
    windows = grid.crop(latents)
    anchor = run.anchor
    assert len(grid) == 4 and anchor == 2
    pairs = [(0, v) for v in range(len(grid)) if v != anchor]

    def distances(w):
        with torch.no_grad():
            target = run.decode_prediction(model, w[:, anchor], t, [(0, anchor)], 1)
            images = run.decode_prediction(model, torch.stack([w[0, v] for _, v in pairs]), t, pairs, 8)
            return lpips(images, target)

    gradients, _ = run.sync_gradients(model, windows, t)
    assert torch.all(gradients[:, anchor] == 0)
    before = distances(windows)
    after = distances(windows - 5.0 * gradients)
    assert torch.all(after < before), (before, after)


def test_batched_gradients_equal_one_window_at_a_time(tiny_generators):
    gen = tiny_generators("tiny")
    latents = noise(4, H, 256)
    torch.manual_seed(0)
    alex = LPIPS(net="alex", pretrained=False)  # cheaper than VGG; any perceptual module works
    common = dict(height=H, width=256, latents=latents, num_inference_steps=1, output_type="latent",
                  progress=False, stride=8, sync_weight=20.0, perceptual_loss=alex)
    one = gen(PROMPT, method="syncdiffusion", sync_batch_size=1, view_batch_size=1, **common).latents
    many = gen(PROMPT, method="syncdiffusion", sync_batch_size=4, view_batch_size=4, **common).latents
    assert torch.allclose(one, many, atol=1e-5)


def test_anchor_prediction_is_reused_and_target_features_computed_once(tiny_generators, lpips, monkeypatch):
    """One sync step with N windows: N - 1 gradient passes, N predictions without gradient (the anchor's
    is reused), and LPIPS trunk passes for the N - 1 windows plus one for the anchor."""
    gen = tiny_generators("tiny")
    calls = {"unet_grad": 0, "unet_no_grad": 0, "lpips_images": 0}
    unet_forward = gen.pipe.unet.forward
    features = lpips.features

    def counting_unet(sample, *args, **kwargs):
        calls["unet_grad" if torch.is_grad_enabled() else "unet_no_grad"] += sample.shape[0] // 2  # CFG halves
        return unet_forward(sample, *args, **kwargs)

    def counting_features(x):
        calls["lpips_images"] += x.shape[0]
        return features(x)

    monkeypatch.setattr(gen.pipe.unet, "forward", counting_unet)
    monkeypatch.setattr(lpips, "features", counting_features)
    gen(PROMPT, method="syncdiffusion", height=H, width=256, latents=noise(5, H, 256), num_inference_steps=1,
        output_type="latent", progress=False, stride=8, sync_weight=5.0, perceptual_loss=lpips)
    n = 4  # 32 latents wide, window 16, stride 8, loop closure
    assert calls == {"unet_grad": n - 1, "unet_no_grad": n, "lpips_images": n}


def test_out_of_memory_halves_the_gradient_batch_with_the_same_result(tiny_generators, lpips, monkeypatch):
    gen = tiny_generators("tiny")
    common = dict(height=H, width=256, latents=noise(6, H, 256), num_inference_steps=1, output_type="latent",
                  progress=False, stride=8, sync_weight=20.0, perceptual_loss=lpips)
    expected = gen(PROMPT, method="syncdiffusion", sync_batch_size=1, **common).latents
    sizes = []
    window_gradients = SyncDiffusionRun.window_gradients

    def limited(self, model, leaf, *args):
        sizes.append(leaf.shape[0])
        if leaf.shape[0] > 1:
            raise torch.OutOfMemoryError("pretend: 1 window fits")
        return window_gradients(self, model, leaf, *args)

    monkeypatch.setattr(SyncDiffusionRun, "window_gradients", limited)
    got = gen(PROMPT, method="syncdiffusion", sync_batch_size=4, **common).latents
    assert sizes == [3, 2, 1, 1, 1]  # 4 asked for 3 windows: 3 fails, 4 → 2 fails, 2 → 1 fits and is kept
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_missing_lpips_weights_fail_before_any_model_call(tiny_generators, monkeypatch, tmp_path):
    from pano360.errors import ModelLoadError

    gen = tiny_generators("tiny")
    monkeypatch.setenv("PANO360_WEIGHTS_DIR", str(tmp_path))  # an empty cache
    monkeypatch.setenv("PANO360_OFFLINE", "1")

    def no_model_calls(*args, **kwargs):
        raise AssertionError("a model was called before the LPIPS weights were found")

    monkeypatch.setattr(gen, "encode_prompt", no_model_calls)
    with pytest.raises(ModelLoadError, match="vgg16-397923af.pth"):
        gen(PROMPT, method="syncdiffusion", height=H, width=W, num_inference_steps=2, progress=False, stride=8,
            perceptual_net="lpips-vgg")  # tiny models default to the built-in tiny-random net, which needs no file


def test_unavailable_tiny_sync_decoder_fails_before_any_model_call(tiny_generators, monkeypatch, lpips, tmp_path):
    from huggingface_hub import constants

    from pano360.errors import ModelLoadError

    gen = tiny_generators("tiny")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # and an empty cache: taesd cannot be found
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))

    def no_model_calls(*args, **kwargs):
        raise AssertionError("a model was called before the sync decoder was found")

    monkeypatch.setattr(gen, "encode_prompt", no_model_calls)
    with pytest.raises(ModelLoadError, match="madebyollin/taesd"):
        gen(PROMPT, method="syncdiffusion", height=H, width=W, num_inference_steps=2, progress=False, stride=8,
            sync_decoder="taesd", perceptual_loss=lpips)


def test_schedule():
    method = SyncDiffusionMethod(sync_weight=20, sync_decay_rate=0.5, sync_freq=2, sync_threshold=5)
    weights = [method.sync_step_weight(i, 10) for i in range(10)]
    assert weights == [0, 20 * 0.5, 0, 20 * 0.5 ** 3, 0, 0, 0, 0, 0, 0]  # (i+1) % 2 == 0 and i < 5
    assert SyncDiffusionMethod().sync_step_weight(49, 50) == pytest.approx(20 * 0.95 ** 49)


@pytest.mark.parametrize("options,message", [
    (dict(sync_weight=-1.0), "sync_weight"),
    (dict(sync_decay_rate=-0.5), "sync_decay_rate"),
    (dict(sync_threshold=3), "beyond the number of steps"),
    (dict(sync_freq=0), "sync_freq"),
    (dict(sync_batch_size=0), "sync_batch_size"),
    (dict(sync_batch_size="many"), "sync_batch_size"),
    (dict(anchor=7), "not a window index"),
    (dict(stride=0), ">= 1"),
    (dict(window=32), "larger than the panorama"),
])
def test_bad_input_fails_before_any_model_call(tiny_generators, monkeypatch, options, message):
    gen = tiny_generators("tiny")

    def no_model_calls(*args, **kwargs):
        raise AssertionError("a model was called before the options were checked")

    monkeypatch.setattr(gen, "encode_prompt", no_model_calls)
    with pytest.raises(InvalidInputError, match=message):
        gen(PROMPT, method="syncdiffusion", height=H, width=W, num_inference_steps=2, progress=False,
            **{"stride": 8, **options})
