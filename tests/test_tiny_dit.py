"""Tiny random DiT pipelines (pano360.backbones.tiny_dit): fast, deterministic, offline, run by diffusers."""

from __future__ import annotations

import time

import pytest
import torch

from pano360.backbones import tiny_dit
from pano360.backbones.tiny_dit import TINY_DIT_NAMES, save_tiny_dit_pipeline, tiny_dit_pipeline

HEIGHT, WIDTH = 64, 128
NAMES = sorted(TINY_DIT_NAMES)


@pytest.fixture(autouse=True)
def _one_thread(single_torch_thread):
    yield


@pytest.fixture
def no_network(monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def pipelines():
    """One pipeline per name, built once (diffusers' lazy imports are paid here, not in the timed builds)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = tiny_dit_pipeline(name)
        return cache[name]

    return get


def _generate(pipe, seed=0, prompt="a red barn under a blue sky", height=HEIGHT, width=WIDTH, steps=2):
    """Two denoising steps through the pipeline's own ``__call__``; (batch, 3, height, width) in [0, 1]."""
    kwargs = {"prompt": prompt, "height": height, "width": width, "num_inference_steps": steps,
              "output_type": "pt", "generator": torch.Generator().manual_seed(seed),
              "max_sequence_length": 32}
    if type(pipe).__name__ == "FluxFillPipeline":
        image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(1))
        mask = torch.zeros(1, 1, height, width)
        mask[..., width // 2:] = 1.0
        kwargs.update(image=image, mask_image=mask)
    with torch.no_grad():
        return pipe(**kwargs).images


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", NAMES)
def test_builds_fast_and_deterministically(name, pipelines):
    pipelines(name)  # warm imports
    start = time.perf_counter()
    first = tiny_dit_pipeline(name, seed=3)
    elapsed = time.perf_counter() - start
    assert elapsed < 3.0, f"{name} took {elapsed:.2f} s to build"
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    second = tiny_dit_pipeline(name, seed=3)
    assert torch.equal(torch.rand(3), expected), "building disturbed the caller's random stream"
    other = tiny_dit_pipeline(name, seed=4)
    for component in ("transformer", "vae", "text_encoder"):
        assert _same_weights(getattr(first, component), getattr(second, component)), component
    assert not _same_weights(first.transformer, other.transformer)


@pytest.mark.parametrize("name", NAMES)
def test_diffusers_call_runs_two_steps(name, pipelines, no_network):
    pipe = pipelines(name)
    images = _generate(pipe)
    assert images.shape == (1, 3, HEIGHT, WIDTH)
    assert torch.isfinite(images).all()
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert images.std() > 1e-3, "a constant image: the random model is degenerate"
    assert torch.equal(images, _generate(pipe)), "not deterministic under the generator's seed"
    assert not torch.equal(images, _generate(pipe, seed=1))
    assert not torch.equal(images, _generate(pipe, prompt="a green field")), "the prompt is ignored"


def test_flux_configs_follow_the_released_models(pipelines):
    dev, schnell, fill = pipelines("tiny-flux"), pipelines("tiny-flux-schnell"), pipelines("tiny-flux-fill")
    assert type(dev).__name__ == "FluxPipeline" and type(fill).__name__ == "FluxFillPipeline"
    assert dev.transformer.config.guidance_embeds and not schnell.transformer.config.guidance_embeds
    assert dev.vae.config.latent_channels == 16 and dev.vae_scale_factor == 8
    assert (dev.vae.config.scaling_factor, dev.vae.config.shift_factor) == (0.3611, 0.1159)
    assert dev.transformer.config.in_channels == 64 and fill.transformer.config.in_channels == 384
    assert fill.transformer.config.out_channels == 64
    assert sum(dev.transformer.config.axes_dims_rope) == dev.transformer.config.attention_head_dim
    config = dev.scheduler.config
    assert config.use_dynamic_shifting
    assert (config.base_shift, config.max_shift, config.shift) == (0.5, 1.15, 3.0)
    assert (config.base_image_seq_len, config.max_image_seq_len) == (256, 4096)
    assert not schnell.scheduler.config.use_dynamic_shifting


def test_sd3_configs_follow_the_released_models(pipelines):
    sd3, sd35 = pipelines("tiny-sd3"), pipelines("tiny-sd35")
    assert type(sd3).__name__ == "StableDiffusion3Pipeline"
    assert sd3.vae.config.latent_channels == 16 and sd3.vae_scale_factor == 8
    assert (sd3.vae.config.scaling_factor, sd3.vae.config.shift_factor) == (1.5305, 0.0609)
    config = sd3.transformer.config
    assert config.patch_size == 2 and config.in_channels == config.out_channels == 16
    assert config.caption_projection_dim == config.num_attention_heads * config.attention_head_dim
    assert config.pooled_projection_dim == sum(e.config.projection_dim for e in (sd3.text_encoder,
                                                                                   sd3.text_encoder_2))
    assert config.joint_attention_dim == sd3.text_encoder_3.config.d_model
    assert config.qk_norm is None and sd35.transformer.config.qk_norm == "rms_norm"
    assert tuple(sd35.transformer.config.dual_attention_layers) == (0,)
    assert sd3.scheduler.config.shift == 3.0 and not sd3.scheduler.config.use_dynamic_shifting


def test_qwen_image_configs_and_prompt_template(pipelines):
    pipe = pipelines("tiny-qwen")
    assert type(pipe).__name__ == "QwenImagePipeline"
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.z_dim == 16
    assert len(pipe.vae.config.latents_mean) == len(pipe.vae.config.latents_std) == 16
    config = pipe.transformer.config
    assert config.in_channels == 64 and config.out_channels == 16 and config.patch_size == 2
    assert config.joint_attention_dim == pipe.text_encoder.config.text_config.hidden_size
    assert sum(config.axes_dims_rope) == config.attention_head_dim
    scheduler = pipe.scheduler.config
    assert scheduler.use_dynamic_shifting and scheduler.time_shift_type == "exponential"
    assert (scheduler.base_shift, scheduler.max_shift, scheduler.shift_terminal) == (0.5, 0.9, 0.02)
    assert (scheduler.base_image_seq_len, scheduler.max_image_seq_len) == (256, 8192)
    # the template's prefix is exactly the tokens the pipeline drops, as with the released tokenizer
    prefix = pipe.prompt_template_encode.split("{}")[0]
    ids = pipe.tokenizer(prefix).input_ids
    assert len(ids) == pipe.prompt_template_encode_start_idx == 34
    assert pipe.tokenizer.convert_ids_to_tokens(ids[:2]) == ["<|im_start|>", "system"]
    prompt = "a red barn"
    suffix = pipe.prompt_template_encode.split("{}")[1]
    embeds, mask = pipe.encode_prompt(prompt, device="cpu")
    assert embeds.shape == (1, len(pipe.tokenizer(prompt + suffix).input_ids), config.joint_attention_dim)
    assert mask is None or (mask.shape == embeds.shape[:2] and bool(mask.all()))  # None: no padding


SHAPES = [
    ("tiny-flux", {"num_attention_heads": 4, "attention_head_dim": 8, "axes_dims_rope": (2, 2, 4)}),
    ("tiny-flux", {"attention_head_dim": 24, "axes_dims_rope": (8, 8, 8), "num_layers": 2,
                   "num_single_layers": 1}),
    ("tiny-flux", {"latent_channels": 8, "vae_depth": 3}),
    ("tiny-flux-fill", {"num_attention_heads": 4, "attention_head_dim": 8, "axes_dims_rope": (2, 2, 4)}),
    ("tiny-flux-fill", {"latent_channels": 8, "vae_depth": 3}),
    ("tiny-sd3", {"num_attention_heads": 4, "attention_head_dim": 8, "num_layers": 1}),
    ("tiny-sd3", {"attention_head_dim": 24, "pos_embed_max_size": 32, "qk_norm": "rms_norm",
                  "dual_attention_layers": (0, 1)}),
    ("tiny-sd3", {"latent_channels": 8, "vae_depth": 3}),
    ("tiny-qwen", {"num_attention_heads": 4, "attention_head_dim": 8, "axes_dims_rope": (2, 2, 4)}),
    ("tiny-qwen", {"attention_head_dim": 24, "axes_dims_rope": (4, 10, 10), "num_layers": 1}),
    ("tiny-qwen", {"latent_channels": 8, "vae_depth": 3}),
]


@pytest.mark.parametrize(("name", "shape"), SHAPES,
                         ids=[f"{n}-" + "-".join(f"{k}={v}" for k, v in s.items()) for n, s in SHAPES])
def test_shape_variants_build_and_run(name, shape, pipelines):
    pipelines(name)
    pipe = tiny_dit_pipeline(name, **shape)
    config = pipe.transformer.config
    channels = pipe.vae.config.z_dim if name == "tiny-qwen" else pipe.vae.config.latent_channels
    for key, value in shape.items():
        if key == "latent_channels":
            assert channels == value
        elif key == "vae_depth":
            assert pipe.vae_scale_factor == 2 ** (value - 1)
        else:
            assert (tuple(config[key]) if isinstance(value, tuple) else config[key]) == value
    if name == "tiny-flux-fill":
        assert config.in_channels == 8 * channels + 4 * pipe.vae_scale_factor ** 2
    elif name != "tiny-sd3":
        assert config.in_channels == 4 * channels
    images = _generate(pipe)
    assert images.shape == (1, 3, HEIGHT, WIDTH) and torch.isfinite(images).all()


def test_bad_rope_axes_are_refused():
    with pytest.raises(ValueError, match="axes_dims_rope"):
        tiny_dit_pipeline("tiny-flux", attention_head_dim=16, axes_dims_rope=(4, 4, 4))
    with pytest.raises(ValueError, match="unknown tiny DiT"):
        tiny_dit_pipeline("tiny-nope")


def test_t5_tokenizer_is_offline_and_t5_shaped(no_network):
    tokenizer = tiny_dit.tiny_t5_tokenizer()
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token) == ("<pad>", "</s>", "<unk>")
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    ids = tokenizer(["a café", "x"], padding="max_length", max_length=12, truncation=True,
                    return_tensors="pt").input_ids
    assert ids.shape == (2, 12)
    assert ids[0, 7].item() == tokenizer.eos_token_id and (ids[0, 8:] == 0).all()
    assert tokenizer.decode(ids[0], skip_special_tokens=True) == "a café"
    long = tokenizer("word " * 200, padding="max_length", max_length=16, truncation=True).input_ids
    assert len(long) == 16 and long[-1] == tokenizer.eos_token_id


ROUND_TRIP = {"tiny-flux": "FluxPipeline", "tiny-sd35": "StableDiffusion3Pipeline",
              "tiny-qwen": "QwenImagePipeline"}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP))
def test_save_and_load_round_trip_offline(name, tmp_path, no_network):
    import diffusers

    folder = save_tiny_dit_pipeline(tmp_path / name, name, seed=2)
    assert (folder / "model_index.json").is_file()
    loaded = getattr(diffusers, ROUND_TRIP[name]).from_pretrained(folder)
    built = tiny_dit_pipeline(name, seed=2)
    assert _same_weights(loaded.transformer, built.transformer)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}
    assert public(loaded.scheduler.config) == public(built.scheduler.config)
    for component in ("vae", "text_encoder"):
        assert _same_weights(getattr(loaded, component), getattr(built, component)), component
    # Bitwise-equal weights; outputs may still differ in the last bits: the loaded weights are memory-mapped
    # safetensors, whose alignment can send CPU matmuls down another SIMD path (seen with Qwen-Image).
    torch.testing.assert_close(_generate(loaded), _generate(built), rtol=0, atol=1e-5)


def test_full_size_configs_build_on_meta_with_the_released_sizes():
    assert tiny_dit.full_size_config("tiny-flux") == tiny_dit.full_size_config("flux-dev")
    assert tiny_dit.full_size_config("flux-fill")["in_channels"] == 384
    sd3 = tiny_dit.full_size_transformer("sd3-medium")
    assert sd3.device.type == "meta"
    assert 2.0e9 < sum(p.numel() for p in sd3.parameters()) < 2.1e9  # SD3-medium: "2B"
    config = tiny_dit.full_size_config("sd3.5-large")
    assert (config["num_layers"], config["num_attention_heads"], config["qk_norm"]) == (38, 38, "rms_norm")
    assert tiny_dit.full_size_config("qwen")["num_layers"] == 60
    # every tiny model stands for a released one
    assert all(tiny_dit.full_size_config(name) for name in TINY_DIT_NAMES)
    with pytest.raises(ValueError, match="no full-size config"):
        tiny_dit.full_size_config("flux-pro")


def test_proportional_flux_keeps_depth_and_head_dim():
    config = tiny_dit.proportional_flux_config(8)
    full = tiny_dit.full_size_config("flux-dev")
    assert config["num_attention_heads"] == 3
    assert config["attention_head_dim"] == full["attention_head_dim"] == 128
    assert (config["num_layers"], config["num_single_layers"]) == (19, 38)
    assert tuple(config["axes_dims_rope"]) == (16, 56, 56) and config["in_channels"] == 64
    assert (config["joint_attention_dim"], config["pooled_projection_dim"]) == (512, 96)
    model = tiny_dit.proportional_flux_transformer(8)
    assert model.device.type == "meta" and model.config.guidance_embeds
    parameters = sum(p.numel() for p in model.parameters())
    assert 11.9e9 / 64 * 0.9 < parameters < 11.9e9 / 64 * 1.1  # widths / 8: parameters / 64
    with pytest.raises(ValueError, match="divide"):
        tiny_dit.proportional_flux_config(5)
