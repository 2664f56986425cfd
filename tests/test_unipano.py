"""UniPano adapter on the tiny SD 1/2/SDXL UNets: placement, exact init, roll equivariance, files,
reference-checkpoint loading and its errors."""

from __future__ import annotations

import copy

import pytest
import torch

from pano360.adapters import load_adapter
from pano360.adapters.unipano import UniPanoAdapter
from pano360.backbones.guided import predict_noise
from pano360.backbones.tiny import TEXT_WIDTH, tiny_unet
from pano360.backbones.wrap import wraparound
from pano360.errors import ModelLoadError

FAMILIES = ("sd1", "sd2", "sdxl")


@pytest.fixture(scope="module")
def unets(single_torch_thread):
    return {family: tiny_unet(family) for family in FAMILIES}


def _inputs(family: str, width: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, 8, width, generator=generator)
    text_width = 2 * TEXT_WIDTH if family == "sdxl" else TEXT_WIDTH
    embeds = torch.randn(1, 6, text_width, generator=generator)
    pooled = torch.randn(1, TEXT_WIDTH, generator=generator) if family == "sdxl" else None
    return latents, embeds, pooled


def _call(unet, family, latents, embeds, pooled, t=500):
    return predict_noise(unet, latents, torch.tensor([t]), embeds, pooled=pooled)


def _randomise(adapter: UniPanoAdapter, seed: int = 1, scale: float = 0.2) -> UniPanoAdapter:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return adapter


def _reference_state(adapter: UniPanoAdapter, unet, prefix="mv_base_model.unet.") -> dict[str, torch.Tensor]:
    """The UniPano code's checkpoint layout, spelled out here from the UNet's attention modules."""
    state = {}
    for name, module in unet.named_modules():
        if not name.endswith((".attn1", ".attn2")):
            continue
        block = adapter.layers[name.replace(".", "__")]
        base = f"{prefix}{name}"
        state[f"{base}.to_v.lora_layer.down.weight"] = block.to_v.down.weight.detach().clone()
        state[f"{base}.to_v.lora_layer.up.weight"] = block.to_v.up.weight.detach().clone()
        moe = block.to_out
        for i, expert in enumerate(moe.experts):
            state[f"{base}.to_out.0.lora_layer.experts.{i}.down.weight"] = expert.down.weight.detach().clone()
            state[f"{base}.to_out.0.lora_layer.experts.{i}.up.weight"] = expert.up.weight.detach().clone()
        state[f"{base}.to_out.0.lora_layer.gate.weight"] = moe.gate.weight.detach().clone()
        state[f"{base}.to_out.0.lora_layer.shared_experts.down.weight"] = moe.shared_experts.down.weight.detach().clone()
        state[f"{base}.to_out.0.lora_layer.shared_experts.up.weight"] = moe.shared_experts.up.weight.detach().clone()
    return state


@pytest.mark.parametrize("family", FAMILIES)
def test_initial_adapter_leaves_the_unet_exactly_unchanged(unets, family):
    unet = unets[family]
    inputs = _inputs(family)
    with torch.no_grad():
        base = _call(unet, family, *inputs)
        adapter = UniPanoAdapter.for_unet(unet)
        assert adapter.attach(unet) is unet
        try:
            adapted = _call(unet, family, *inputs)
        finally:
            adapter.detach(unet)
    assert torch.equal(adapted, base)


def test_placement_v_and_o_of_every_attention_layer_no_q_k(unets):
    unet = unets["sd2"]
    adapter = UniPanoAdapter.for_unet(unet)
    paths = [n for n, _ in unet.named_modules() if n.endswith((".attn1", ".attn2"))]
    assert adapter.paths == paths and len(paths) == 14
    names = [name for name, _ in adapter.named_parameters()]
    assert names and all(".to_v." in n or ".to_out." in n for n in names)
    assert not any("to_q" in n or "to_k" in n for n in names)
    per_layer = {n.split(".", 2)[2] for n in names if n.startswith(f"layers.{paths[0].replace('.', '__')}.")}
    assert per_layer == {"to_v.down.weight", "to_v.up.weight", "to_out.gate.weight",
                         "to_out.shared_experts.down.weight", "to_out.shared_experts.up.weight",
                         *(f"to_out.experts.{i}.{p}.weight" for i in range(4) for p in ("down", "up"))}
    keys_before = list(unet.state_dict())
    adapter.attach(unet)
    try:
        for path in paths:
            attention = unet.get_submodule(path)
            assert not attention.to_q._forward_hooks and not attention.to_k._forward_hooks
            assert len(attention.to_v._forward_hooks) == 1 and len(attention.to_out[0]._forward_hooks) == 1
            assert type(attention.to_v) is torch.nn.Linear  # the attention processor is untouched
        assert list(unet.state_dict()) == keys_before
        assert adapter.attach(unet) is unet and len(unet.get_submodule(paths[0]).to_v._forward_hooks) == 1
    finally:
        adapter.detach(unet)
    assert all(not unet.get_submodule(p).to_v._forward_hooks for p in paths)
    assert adapter.config["rank"] == 4 and adapter.config["num_experts"] == 4 and adapter.config["top_k"] == 2


@pytest.mark.parametrize("family", FAMILIES)
def test_roll_equivariance_with_the_adapter(unets, family):
    unet = unets[family]
    adapter = _randomise(UniPanoAdapter.for_unet(unet))
    latents, embeds, pooled = _inputs(family)
    shift = 4  # the tiny UNets downsample by 4
    with torch.no_grad(), wraparound(unet):
        adapter.attach(unet)
        try:
            out = _call(unet, family, latents, embeds, pooled)
            rolled = _call(unet, family, latents.roll(shift, -1), embeds, pooled)
        finally:
            adapter.detach(unet)
        base = _call(unet, family, latents, embeds, pooled)
    assert not torch.allclose(out, base, atol=1e-3)  # the adapter does something
    torch.testing.assert_close(rolled, out.roll(shift, -1), atol=2e-5, rtol=1e-4)


def test_detach_restores_and_auxiliary_loss_reaches_the_gates(unets):
    unet = copy.deepcopy(unets["sd1"]).requires_grad_(False)  # frozen, as in training
    adapter = _randomise(UniPanoAdapter.for_unet(unet))
    inputs = _inputs("sd1")
    with torch.no_grad():
        base = _call(unet, "sd1", *inputs)
    adapter.attach(unet)
    try:
        out = _call(unet, "sd1", *inputs)  # with gradients
        aux = adapter.auxiliary_loss()
        assert aux is not None and aux.ndim == 0 and aux.item() > 0
        expected = sum(0.01 * 1.0 for _ in adapter.mixtures())  # Σ P_i f_i ≥ 1 per layer (equal when balanced)
        assert aux.item() >= expected - 1e-6
        (out.square().mean() + aux).backward()
        assert adapter.auxiliary_loss() is None
        assert all(m.gate.weight.grad is not None and m.gate.weight.grad.abs().sum() > 0 for m in adapter.mixtures())
        assert all(p.grad is None for p in unet.parameters())
        assert all(p.grad is not None for p in adapter.trainable_parameters())
    finally:
        adapter.detach(unet)
    with torch.no_grad():
        assert torch.equal(_call(unet, "sd1", *inputs), base)


def test_folder_round_trip_through_the_loading_door(unets, tmp_path):
    unet = unets["sdxl"]
    adapter = _randomise(UniPanoAdapter.for_unet(unet, rank=2, num_experts=3))
    adapter.save(tmp_path / "out", metadata={"base_model": "tiny-sdxl"})
    loaded = load_adapter(tmp_path / "out")
    assert isinstance(loaded, UniPanoAdapter) and loaded.config == adapter.config
    inputs = _inputs("sdxl")
    outputs = []
    with torch.no_grad():
        for candidate in (adapter, loaded):
            candidate.attach(unet)
            try:
                outputs.append(_call(unet, "sdxl", *inputs))
            finally:
                candidate.detach(unet)
    assert torch.equal(outputs[0], outputs[1])


@pytest.mark.parametrize("prefix", ["mv_base_model.unet.", "mv_base_model.pano_unet."])
def test_reference_checkpoint_loads_and_gives_the_same_unet_output(unets, tmp_path, prefix):
    unet = unets["sd2"]
    adapter = _randomise(UniPanoAdapter.for_unet(unet))
    state = _reference_state(adapter, unet, prefix)
    # A Lightning checkpoint also saves the frozen model beside the adapter; those keys are ignored.
    state[f"{prefix}conv_in.weight"] = unet.conv_in.weight.detach().clone()
    state["vae.encoder.conv_in.weight"] = torch.zeros(2, 2)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 9, "global_step": 10}, path)
    loaded = load_adapter(path)
    assert isinstance(loaded, UniPanoAdapter)
    assert loaded.config["rank"] == 4 and loaded.config["num_experts"] == 4
    fresh = copy.deepcopy(unet)
    inputs = _inputs("sd2")
    with torch.no_grad():
        adapter.attach(unet)
        loaded.attach(fresh)
        try:
            assert torch.equal(_call(fresh, "sd2", *inputs), _call(unet, "sd2", *inputs))
        finally:
            adapter.detach(unet)
            loaded.detach(fresh)


def test_wrong_reference_layouts_name_the_keys(unets, tmp_path):
    unet = unets["sd1"]
    adapter = UniPanoAdapter.for_unet(unet)
    state = _reference_state(adapter, unet)
    first = next(iter(state))
    path = first.split(".to_v.")[0]

    missing = dict(state)
    missing.pop(f"{path}.to_out.0.lora_layer.experts.2.up.weight")
    with pytest.raises(ModelLoadError, match=r"1 missing key\(s\) such as .*experts\.2\.up\.weight"):
        UniPanoAdapter.from_reference_checkpoint(missing)

    unexpected = dict(state)
    unexpected[f"{path}.to_q.lora_layer.down.weight"] = torch.zeros(4, 16)
    with pytest.raises(ModelLoadError, match=r"unexpected key\(s\) such as .*to_q\.lora_layer"):
        UniPanoAdapter.from_reference_checkpoint(unexpected)

    wrong = dict(state)
    wrong[f"{path}.to_out.0.lora_layer.gate.weight"] = torch.zeros(4, 3)
    with pytest.raises(ModelLoadError, match="wrong shape"):
        UniPanoAdapter.from_reference_checkpoint(wrong)

    with pytest.raises(ModelLoadError, match="no UniPano adapter keys"):
        UniPanoAdapter.from_reference_checkpoint({"mv_base_model.unet.conv_in.weight": torch.zeros(1)})

    # A PanFusion-style q/k/v/o LoRA checkpoint is not mistaken for UniPano.
    assert UniPanoAdapter.matches_reference_keys(state)
    assert not UniPanoAdapter.matches_reference_keys([f"{path}.to_q.lora_layer.down.weight"])

    # An adapter for one UNet refuses another.
    with pytest.raises(ModelLoadError, match="made for another UNet"):
        adapter.attach(unets["sdxl"])


def test_training_door_options_and_seed(unets):
    from pano360.errors import InvalidInputError

    unet = unets["sd1"]
    options = {"rank": 2, "unipano_experts": 3, "unipano_top_k": 2}
    first = UniPanoAdapter.for_training(unet, options, seed=7)
    second = UniPanoAdapter.for_training(unet, options, seed=7)
    assert first.config["rank"] == 2 and first.config["num_experts"] == 3
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    key = next(iter(first.layers))
    other = UniPanoAdapter.for_training(unet, options, seed=8)
    assert not torch.equal(other.layers[key].to_out.gate.weight, first.layers[key].to_out.gate.weight)
    for bad, flag in (({"rank": 0}, "--rank"), ({"unipano_experts": 0}, "--unipano-experts"),
                      ({"unipano_top_k": 5}, "--unipano-top-k")):
        with pytest.raises(InvalidInputError, match=flag):
            UniPanoAdapter.check_training_options(bad)


def test_gradient_checkpointing_gives_the_same_gradients(unets):
    """The auxiliary loss is collected once per forward pass, not again in a checkpoint recomputation."""
    grads = []
    for checkpointing in (False, True):
        unet = copy.deepcopy(unets["sd2"]).requires_grad_(False).train()
        if checkpointing:
            unet.enable_gradient_checkpointing()
        adapter = _randomise(UniPanoAdapter.for_unet(unet)).train()
        adapter.attach(unet)
        out = _call(unet, "sd2", *_inputs("sd2"))
        (out.square().mean() + adapter.auxiliary_loss()).backward()
        assert adapter.auxiliary_loss() is None  # nothing left over from the recomputation
        grads.append([p.grad.clone() for p in adapter.parameters()])
        adapter.detach(unet)
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain, atol=1e-6, rtol=1e-5)


def test_unreadable_reference_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="could not read"):
        UniPanoAdapter.from_reference_checkpoint(path)
