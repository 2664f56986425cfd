"""The LoRA adapter: exact attach/detach, zero-initialised, the diffusers file equals the adapter, and
the trainable-adapter contract (frozen base allocates no gradients, only LoRA parameters train)."""

import pytest
import torch

from pano360.adapters import ADAPTER_KINDS, adapter_class, load_adapter
from pano360.adapters.lora import LoRAAdapter, parse_targets
from pano360.errors import InvalidInputError, ModelLoadError


@pytest.fixture(scope="module")
def pipe(single_torch_thread):
    from pano360.backbones.tiny import tiny_pipeline

    return tiny_pipeline("sd1")


def _call(unet, x, e):
    with torch.no_grad():
        return unet(x, 10, encoder_hidden_states=e).sample


def _random_adapter(unet, **kwargs):
    adapter = LoRAAdapter.for_unet(unet, seed=0, **kwargs)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0, 0.1)
    return adapter


def test_registered_kind_and_targets():
    assert ADAPTER_KINDS["lora"] == "pano360.adapters.lora:LoRAAdapter" and adapter_class("lora") is LoRAAdapter
    assert parse_targets("v,q") == ["to_q", "to_v"] and parse_targets("o,conv") == ["to_out.0", "conv"]
    with pytest.raises(InvalidInputError, match="q, k, v, o, conv"):
        parse_targets("q,w")


def test_target_subsets(pipe):
    cross_v = LoRAAdapter.for_unet(pipe.unet, targets="v", attention="cross")
    assert cross_v.config["layers"] and all(p.endswith("attn2.to_v") for p in cross_v.config["layers"])
    both = LoRAAdapter.for_unet(pipe.unet, targets="q,k,v,o")
    assert len(both.config["layers"]) == 8 * len(cross_v.config["layers"])


def test_fresh_adapter_is_identity_and_detach_restores_exactly(pipe):
    unet = pipe.unet
    x, e = torch.randn(1, 4, 8, 16), torch.randn(1, 77, 32)
    before = _call(unet, x, e)
    modules = dict(unet.named_modules())
    fresh = LoRAAdapter.for_unet(unet, targets="q,k,v,o,conv", seed=0)
    fresh.attach(unet)
    assert torch.equal(_call(unet, x, e), before)  # B = 0
    fresh.detach(unet)
    adapter = _random_adapter(unet, targets="q,k,v,o,conv")
    adapter.attach(unet)
    adapter.attach(unet)  # idempotent
    changed = _call(unet, x, e)
    adapter.set_scale(0.0)
    assert torch.equal(_call(unet, x, e), before)
    adapter.set_scale(1.0)
    adapter.detach(unet)
    assert (changed - before).abs().max() > 1e-3
    assert torch.equal(_call(unet, x, e), before)
    assert all(modules[name] is module for name, module in unet.named_modules())


def test_saved_diffusers_file_equals_the_adapter_and_loads_back(pipe, tmp_path):
    from pano360.backbones.tiny import tiny_pipeline

    other = tiny_pipeline("sd1")
    adapter = _random_adapter(other.unet, rank=4, alpha=2.0, targets="q,v,conv", attention="both")
    x, e = torch.randn(1, 4, 8, 16), torch.randn(1, 77, 32)
    adapter.attach(other.unet)
    ours = _call(other.unet, x, e)
    adapter.detach(other.unet)
    adapter.save(tmp_path, {"note": "test"})
    other.load_lora_weights(str(tmp_path), adapter_name="trained")  # the diffusers / --lora path
    assert (_call(other.unet, x, e) - ours).abs().max() <= 1e-6
    loaded = load_adapter(tmp_path)
    assert isinstance(loaded, LoRAAdapter) and loaded.config == adapter.config
    assert all(torch.equal(a, b) for a, b in zip(adapter.state_dict().values(), loaded.state_dict().values()))


def test_wrong_unet_is_refused(pipe):
    from pano360.backbones.tiny import tiny_pipeline

    adapter = LoRAAdapter.for_unet(tiny_pipeline("sdxl").unet)
    with pytest.raises(ModelLoadError, match="trained for another UNet"):
        adapter.attach(pipe.unet)


def test_only_lora_parameters_get_gradients(pipe):
    unet = pipe.unet.requires_grad_(False)
    adapter = LoRAAdapter.for_training(unet, {"rank": 2, "lora_targets": "q,k,v,o"}, seed=0)
    adapter.attach(unet)
    try:
        out = unet(torch.randn(1, 4, 8, 16), 10, encoder_hidden_states=torch.randn(1, 77, 32)).sample
        out.square().mean().backward()
        assert all(p.grad is None for name, p in unet.named_parameters() if ".pair." not in name)
        assert all(p.grad is not None for p in adapter.trainable_parameters())
        assert {id(p) for p in adapter.trainable_parameters()} == {id(p) for p in adapter.parameters()}
    finally:
        adapter.detach(unet)
