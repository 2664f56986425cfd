"""UniPano's mixture of LoRA experts against an independent, token-by-token computation of its formulas.

The independent computation follows the paper/reference definitions literally (per token: softmax
gate, the two largest probabilities, un-renormalised weighted sum of the chosen experts plus the
shared one; balance loss 0.01·Σ P_i·f_i and z-loss 0.001·mean(logsumexp²)); the layer under test uses
a batched dense dispatch. Everything in float64.
"""

from __future__ import annotations

import math

import pytest
import torch

from pano360.adapters.moe import LowRankUpdate, MixtureOfLoRAExperts

D_IN, D_OUT, RANK, EXPERTS = 12, 10, 3, 4


def _randomised(layer: MixtureOfLoRAExperts, seed: int = 0) -> MixtureOfLoRAExperts:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.5)
    return layer


def _lora(expert: LowRankUpdate, x: torch.Tensor) -> torch.Tensor:
    return expert.up.weight @ (expert.down.weight @ x)


def independent_forward(layer: MixtureOfLoRAExperts, x: torch.Tensor):
    """(update [..., D_OUT], balance + z loss) computed one token at a time from the definitions."""
    tokens = x.reshape(-1, x.shape[-1])
    outputs, probabilities, chosen, logits_all = [], [], [], []
    for token in tokens:
        logits = layer.gate.weight @ token
        p = torch.exp(logits - logits.max())
        p = p / p.sum()
        order = sorted(range(layer.num_experts), key=lambda i: -float(p[i].detach()))[: layer.top_k]
        y = _lora(layer.shared_experts, token)
        for i in order:
            y = y + p[i] * _lora(layer.experts[i], token)
        outputs.append(y)
        probabilities.append(p)
        chosen.extend(order)
        logits_all.append(logits)
    n_tokens = len(tokens)
    mean_p = torch.stack(probabilities).mean(0)
    load = [layer.num_experts * chosen.count(i) / (layer.top_k * n_tokens) for i in range(layer.num_experts)]
    balance = 0.01 * sum(mean_p[i] * load[i] for i in range(layer.num_experts))
    z = 0.001 * torch.stack([torch.log(torch.exp(v).sum()) ** 2 for v in logits_all]).mean()
    return torch.stack(outputs).reshape(*x.shape[:-1], -1), balance + z


class _StraightThrough(torch.autograd.Function):
    """Identity on ``y`` that hands gradient 1 to ``loss`` in backward (the reference's way of adding
    the auxiliary loss to the objective)."""

    @staticmethod
    def forward(ctx, y, loss):
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        return grad, torch.ones((), dtype=grad.dtype)


@pytest.mark.parametrize("training", [True, False])
def test_update_matches_the_independent_computation(training):
    layer = _randomised(MixtureOfLoRAExperts(D_IN, D_OUT, RANK, EXPERTS).double()).train(training)
    x = torch.randn(2, 9, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected, _ = independent_forward(layer, x)
    context = torch.enable_grad() if training else torch.no_grad()
    with context:
        got = layer(x)
    assert got.shape == (2, 9, D_OUT) and got.dtype == torch.float64
    assert (got - expected).abs().max().item() <= 1e-6
    assert (got - expected).abs().max().item() <= 1e-12  # in fact to rounding


def test_auxiliary_loss_value_and_gradient_match_the_straight_through_objective():
    layer = _randomised(MixtureOfLoRAExperts(D_IN, D_OUT, RANK, EXPERTS).double(), seed=3).train()
    x = torch.randn(3, 7, D_IN, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    target = torch.randn(3, 7, D_OUT, dtype=torch.float64, generator=torch.Generator().manual_seed(5))

    # The objective the reference optimises: MSE of the output, aux loss added by straight-through.
    y, aux_expected = independent_forward(layer, x)
    torch.nn.functional.mse_loss(_StraightThrough.apply(y, aux_expected), target).backward()
    expected = {name: p.grad.clone() for name, p in layer.named_parameters()}
    layer.zero_grad()

    got = layer(x)
    aux = layer.pop_auxiliary_loss()
    assert aux is not None and aux.ndim == 0
    assert abs(aux.item() - aux_expected.item()) <= 1e-12
    (torch.nn.functional.mse_loss(got, target) + aux).backward()
    for name, parameter in layer.named_parameters():
        assert (parameter.grad - expected[name]).abs().max().item() <= 1e-12, name
    assert layer.gate.weight.grad.abs().sum() > 0  # the gate learns (through P_i and the z-loss)
    assert layer.pop_auxiliary_loss() is None  # popped once


def test_auxiliary_loss_only_with_gradients_and_accumulates_over_calls():
    layer = _randomised(MixtureOfLoRAExperts(D_IN, D_OUT, RANK, EXPERTS).double())
    x = torch.randn(5, D_IN, dtype=torch.float64)
    with torch.no_grad():
        layer(x)
    assert layer.pop_auxiliary_loss() is None
    _, one = independent_forward(layer, x)
    layer(x)
    layer(x)
    assert abs(layer.pop_auxiliary_loss().item() - 2 * one.item()) <= 1e-12


def test_initial_update_is_exactly_zero_and_inits_follow_the_reference():
    torch.manual_seed(0)
    layer = MixtureOfLoRAExperts(64, 48, rank=4, num_experts=4)
    x = torch.randn(2, 30, 64)
    assert torch.equal(layer(x), torch.zeros(2, 30, 48))
    downs = torch.cat([e.down.weight.flatten() for e in [*layer.experts, layer.shared_experts]])
    assert abs(downs.std().item() - 1 / 4) < 0.03  # N(0, σ = 1/r)
    assert all(torch.count_nonzero(e.up.weight) == 0 for e in [*layer.experts, layer.shared_experts])
    bound = 1 / math.sqrt(64)  # kaiming-uniform with a = √5, as nn.Linear
    assert layer.gate.weight.abs().max() <= bound and layer.gate.weight.abs().max() > 0.8 * bound
    assert layer.gate.bias is None and tuple(layer.gate.weight.shape) == (4, 64)


def test_half_precision_input_with_float32_weights():
    layer = _randomised(MixtureOfLoRAExperts(D_IN, D_OUT, RANK, EXPERTS))
    x = torch.randn(4, D_IN).to(torch.bfloat16)
    with torch.no_grad():
        full = layer(x.float())  # same (rounded) input, float32 throughout
        half = layer(x)
    assert half.dtype == torch.bfloat16
    assert torch.allclose(half.float(), full, atol=0.02, rtol=0.01)  # only the final rounding differs


def test_inference_weight_cache_follows_weight_updates():
    layer = MixtureOfLoRAExperts(D_IN, D_OUT, RANK, EXPERTS)
    x = torch.randn(6, D_IN)
    with torch.no_grad():
        assert torch.count_nonzero(layer(x)) == 0
        layer.experts[1].up.weight.fill_(0.5)  # in place, as optimizers and load_state_dict do
        layer.shared_experts.up.weight.fill_(0.25)
        changed = layer(x)
        expected, _ = independent_forward(layer, x)
    assert torch.count_nonzero(changed) > 0
    torch.testing.assert_close(changed, expected, atol=1e-5, rtol=1e-5)


def test_top_k_checked():
    with pytest.raises(ValueError, match="top_k"):
        MixtureOfLoRAExperts(4, 4, num_experts=2, top_k=3)
