"""Wraparound padding: exact roll equivariance of every wrapped component, reversibility, LoRA layers."""

import pytest
import torch
from torch import nn

from pano360.backbones.tiny import tiny_controlnet, tiny_pipeline
from pano360.backbones.wrap import (
    disable_wraparound,
    enable_wraparound,
    is_wrapped,
    total_downsampling,
    wraparound,
)

# tiny models gain nothing from threads; on a busy 2-core machine OpenMP barriers slow them down many times
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def sd1():
    return tiny_pipeline("sd1")


def unet_call(unet, latents, seed=0):
    text = torch.randn(latents.shape[0], 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(seed))
    return unet(latents, torch.tensor(500), encoder_hidden_states=text).sample


@torch.no_grad()
def test_unet_roll_equivariant_when_wrapped(sd1):
    latents = torch.randn(1, 4, 8, 24, generator=torch.Generator().manual_seed(1))
    k = total_downsampling(sd1.unet)  # 4
    assert k == 4
    with wraparound(sd1.unet):
        expected = torch.roll(unet_call(sd1.unet, latents), k, dims=-1)
        rolled = unet_call(sd1.unet, torch.roll(latents, k, dims=-1))
    assert (expected - rolled).abs().max() < 1e-5
    unwrapped = unet_call(sd1.unet, torch.roll(latents, k, dims=-1))
    assert (expected - unwrapped).abs().max() > 1e-2  # zero padding breaks it: the test can fail


@torch.no_grad()
def test_vae_decoder_and_encoder_roll_equivariant(sd1):
    vae = sd1.vae
    latents = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(2))
    image = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with wraparound(vae):
        decoded = vae.decode(latents).sample
        decoded_rolled = vae.decode(torch.roll(latents, 1, dims=-1)).sample
        encoded = vae.encode(image).latent_dist.mean
        # The encoder downsamples 8x: a roll by 8 pixels is a roll by one latent column.
        encoded_rolled = vae.encode(torch.roll(image, 8, dims=-1)).latent_dist.mean
    assert (torch.roll(decoded, 8, dims=-1) - decoded_rolled).abs().max() < 1e-4
    assert (torch.roll(encoded, 1, dims=-1) - encoded_rolled).abs().max() < 1e-4
    # Without the wrap of the encoder's asymmetric downsample pad the encoder is not equivariant.
    plain = vae.encode(torch.roll(image, 8, dims=-1)).latent_dist.mean
    assert (torch.roll(encoded, 1, dims=-1) - plain).abs().max() > 1e-3


@torch.no_grad()
def test_controlnet_roll_equivariant(sd1):
    controlnet = tiny_controlnet(sd1.unet)
    latents = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(4))
    depth = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(5))
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(6))

    def run(lat, cond):
        down, mid = controlnet(lat, 500, encoder_hidden_states=text, controlnet_cond=cond, return_dict=False)
        return [*down, mid]

    with wraparound(controlnet):
        base = run(latents, depth)
        rolled = run(torch.roll(latents, 4, -1), torch.roll(depth, 32, -1))
    for a, b in zip(base, rolled):
        shift = 4 * a.shape[-1] // 16
        assert (torch.roll(a, shift, -1) - b).abs().max() < 1e-4
    assert any(a.abs().max() > 1e-3 for a in base)  # the control path is not a no-op


@torch.no_grad()
def test_patch_is_reversible_and_idempotent(sd1):
    latents = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(7))
    before = unet_call(sd1.unet, latents)
    n = enable_wraparound(sd1.unet, sd1.vae)
    assert n > 0 and is_wrapped(sd1.unet)
    assert enable_wraparound(sd1.unet, sd1.vae) == 0  # idempotent
    wrapped = unet_call(sd1.unet, latents)
    assert disable_wraparound(sd1.unet, sd1.vae) == n
    assert not is_wrapped(sd1.unet) and not is_wrapped(sd1.vae)
    assert torch.equal(unet_call(sd1.unet, latents), before)
    assert not torch.equal(wrapped, before)
    convs = [m for m in sd1.unet.modules() if isinstance(m, nn.Conv2d)]
    assert all("_conv_forward" not in vars(m) for m in convs)


def test_context_keeps_prior_state(sd1):
    enable_wraparound(sd1.vae)
    with wraparound(sd1.vae, sd1.unet):
        assert is_wrapped(sd1.unet)
    assert is_wrapped(sd1.vae) and not is_wrapped(sd1.unet)
    disable_wraparound(sd1.vae)


@torch.no_grad()
def test_padding_modes_and_same_padding():
    conv = nn.Conv2d(2, 2, 3, padding="same")
    x = torch.randn(1, 2, 5, 8)
    with wraparound(conv):
        y = conv(x)
        y_rolled = conv(torch.roll(x, 3, -1))
    assert y.shape == x.shape
    assert torch.allclose(torch.roll(y, 3, -1), y_rolled, atol=1e-6)
    circular = nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")
    assert enable_wraparound(circular) == 0  # already circular: left alone


@torch.no_grad()
@pytest.mark.parametrize("channels_last", [False, True])
def test_wrapped_conv_equals_explicit_circular_pad_and_keeps_the_layout(channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 10)
    expected = nn.functional.conv2d(nn.functional.pad(x, (1, 1, 0, 0), mode="circular"), conv.weight, conv.bias,
                                    padding=(1, 0))
    if channels_last:
        conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with wraparound(conv):
        y = conv(x)
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-5)
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last


@torch.no_grad()
def test_lora_conv_layers_are_wrapped():
    from peft import LoraConfig

    pipe = tiny_pipeline("sd1")
    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["conv1", "conv2"], init_lora_weights=False))
    lora_convs = [m for name, m in unet.named_modules() if "lora_A" in name and isinstance(m, nn.Conv2d)]
    assert lora_convs and all(m.padding == (1, 1) for m in lora_convs)
    latents = torch.randn(1, 4, 8, 16, generator=torch.Generator().manual_seed(8))
    with wraparound(unet):
        assert all(hasattr(m, "_pano360_wrap") for m in lora_convs)
        a = torch.roll(unet_call(unet, latents), 4, -1)
        b = unet_call(unet, torch.roll(latents, 4, -1))
    assert (a - b).abs().max() < 1e-5


@torch.no_grad()
def test_low_precision_keeps_dtype():
    conv = nn.Conv2d(3, 4, 3, padding=1).to(torch.bfloat16)
    x = torch.randn(1, 3, 6, 10, dtype=torch.bfloat16)
    with wraparound(conv):
        y = conv(x)
        y_rolled = conv(torch.roll(x, 2, -1))
    assert y.dtype == torch.bfloat16
    assert torch.allclose(torch.roll(y, 2, -1).float(), y_rolled.float(), atol=1e-2)
