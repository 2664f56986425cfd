"""Low-rank updates for linear layers: a plain LoRA and UniPano's mixture of LoRA experts.

Both are *updates*: they map the input ``x`` [..., d_in] of a frozen ``nn.Linear`` to a correction
[..., d_out] that is added to the layer's output, and they start at exactly zero (up projections are
zero-initialised), so an untrained update leaves the base model unchanged.

:class:`LowRankUpdate` is ``up(down(x))`` with no α/r scaling (UniPano's ``network_alpha=None``), the
down projection initialised N(0, σ = 1/r) and the up projection at zero, like diffusers' LoRA layer.

:class:`MixtureOfLoRAExperts` is UniPano's layer on W_o (reference: ``SparseMoeLoRA`` with its
``MoEGate``, adapted from DiT-MoE; ``reference/unipano_panfusion.md`` §1.3). For every token x:

    logits = W_g·x                      (bias-free gate, W_g [N, d_in], kaiming-uniform init)
    p      = softmax(logits)            over all N experts
    S      = the top-k experts by p     (k = 2; weights p_i are NOT renormalised over S)
    y      = Σ_{i∈S} p_i · E_i(x) + E_shared(x)

with every expert E_i and the always-on shared expert E_shared a :class:`LowRankUpdate`. Training adds
(per layer, over the T tokens of the call):

    load balance  0.01 · Σ_i P_i · f_i,   P_i = mean_t p_i(t),  f_i = N · (#top-k slots given to i) / (k·T)
    router z-loss 0.001 · mean_t logsumexp(logits(t))²

``f_i`` carries no gradient (it counts assignments), so the balance loss trains the gate through P_i.
The reference adds this term to the objective with a straight-through autograd function (identity in
forward, gradient 1 for the loss in backward); pano360's trainer adds :meth:`pop_auxiliary_loss`'s sum
to the ε-MSE instead, which gives the same gradient and also shows the term in the logged loss.

Dispatch is vectorised: because every expert is rank r, the gate and all N + 1 down projections are
one [d_in → N + (N+1)·r] matmul, the per-token weights (p_i on the chosen experts, 0 elsewhere, 1
for the shared expert) scale the rank-r slices, and one [(N+1)·r → d_out] matmul sums them. That
equals the reference's gather (training) and sorted-scatter (inference) paths in value (experts
outside S contribute an exact zero), costs (N+1)·r·(d_in + d_out) + N·d_in multiply-adds per token
(0.2-0.3 % of a full-size SD UNet call), and has no Python loop over tokens or experts.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BALANCE_WEIGHT = 0.01  # α of the load-balancing loss (reference MoEGate.alpha)
Z_LOSS_WEIGHT = 0.001  # weight of the router z-loss (reference constant)


def _in_backward() -> bool:
    """True while autograd runs a backward pass (e.g. a gradient-checkpoint recomputation)."""
    task_id = getattr(torch._C, "_current_graph_task_id", None)
    return task_id is not None and task_id() != -1


class LowRankUpdate(nn.Module):
    """``x [..., in_features] → up(down(x)) [..., out_features]``, rank ``rank``, no α/r scaling.

    Computed in the weights' dtype; the result is cast back to the input's dtype (so float32 adapter
    weights work inside a float16 UNet).
    """

    def __init__(self, in_features: int, out_features: int, rank: int = 4):
        super().__init__()
        self.in_features, self.out_features, self.rank = int(in_features), int(out_features), int(rank)
        self.down = nn.Linear(self.in_features, self.rank, bias=False)
        self.up = nn.Linear(self.rank, self.out_features, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.down.weight, std=1.0 / self.rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x.to(self.down.weight.dtype))).to(x.dtype)


class MixtureOfLoRAExperts(nn.Module):
    """UniPano's mixture of LoRA experts: ``x [..., in_features] → update [..., out_features]``.

    Args:
        in_features, out_features: the wrapped linear layer's sizes (W_o: the attention width, twice).
        rank: r of every expert (routed and shared).
        num_experts: N routed experts (UniPano: 4).
        top_k: experts per token (2).
        balance_weight, z_loss_weight: weights of the two auxiliary terms (0.01, 0.001).

    Parameters (names as in the reference checkpoint's ``lora_layer``): ``experts.<i>.down/up.weight``,
    ``gate.weight`` [N, in_features], ``shared_experts.down/up.weight``.

    The auxiliary loss of each forward pass made with gradients enabled (and outside a backward pass)
    is accumulated until :meth:`pop_auxiliary_loss` collects it.
    """

    def __init__(self, in_features: int, out_features: int, rank: int = 4, num_experts: int = 4, top_k: int = 2,
                 balance_weight: float = BALANCE_WEIGHT, z_loss_weight: float = Z_LOSS_WEIGHT):
        super().__init__()
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.rank, self.num_experts, self.top_k = int(rank), int(num_experts), int(top_k)
        self.balance_weight, self.z_loss_weight = float(balance_weight), float(z_loss_weight)
        self.experts = nn.ModuleList(LowRankUpdate(in_features, out_features, rank) for _ in range(num_experts))
        self.gate = nn.Linear(in_features, num_experts, bias=False)
        nn.init.kaiming_uniform_(self.gate.weight, a=math.sqrt(5))
        self.shared_experts = LowRankUpdate(in_features, out_features, rank)
        self._pending: torch.Tensor | None = None
        self._cache = None

    # --- routing ---------------------------------------------------------------------------------
    @staticmethod
    def _logits_t(logits: torch.Tensor) -> torch.Tensor:
        """Half-precision logits in float32 (a half-precision softmax loses the ranking)."""
        return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits

    def auxiliary_terms(self, logits: torch.Tensor, probabilities: torch.Tensor,
                        selected: torch.Tensor) -> torch.Tensor:
        """balance_weight·Σ_i P_i·f_i + z_loss_weight·mean(logsumexp(logits)²), a scalar (see module doc).

        Takes the expert-major tensors of :meth:`forward`: logits, probabilities and the boolean top-k
        mask, all [N, T].
        """
        mean_probability = probabilities.mean(dim=1)  # P_i [N]
        counts = selected.sum(dim=1).to(probabilities.dtype)  # top-k slots given to each expert
        load = counts * (self.num_experts / (self.top_k * selected.shape[1]))  # f_i [N], no gradient
        balance = (mean_probability * load).sum() * self.balance_weight
        z_loss = torch.logsumexp(logits, dim=0).square().mean() * self.z_loss_weight
        return balance + z_loss

    # --- forward ---------------------------------------------------------------------------------
    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[gate; routed downs; shared down] [N + (N+1)·r, in] and the ups [out, (N+1)·r].

        Cached while no weight changes (inference); rebuilt on every call when gradients are on, so
        that they flow to the experts' own parameters.
        """
        experts = [*self.experts, self.shared_experts]
        weights = [self.gate.weight, *(e.down.weight for e in experts), *(e.up.weight for e in experts)]
        if torch.is_grad_enabled():
            self._cache = None
        else:
            key = tuple((w.data_ptr(), w._version, w.dtype, w.device) for w in weights)
            if self._cache is not None and self._cache[0] == key:
                return self._cache[1]
        down = torch.cat(weights[: 2 + self.num_experts], dim=0)
        up = torch.cat(weights[2 + self.num_experts:], dim=1)
        if not torch.is_grad_enabled():
            self._cache = (key, (down, up))
        return down, up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Expert-major layout ([N, T] rather than [T, N]): reductions over the few experts then run
        # along memory-contiguous token rows, many times faster on the CPU for N = 4.
        shape, dtype = x.shape, x.dtype
        n, r = self.num_experts, self.rank
        tokens = x.reshape(-1, shape[-1]).to(self.gate.weight.dtype)  # [T, in]
        down, up = self._stacked()
        projected = F.linear(down, tokens)  # [N + (N+1)·r, T]: gate logits, then each expert's r rows
        logits = self._logits_t(projected[:n])
        probabilities = logits.softmax(dim=0)  # p [N, T]
        # The top k per token: experts with fewer than k experts strictly more probable (a comparison of
        # the N² pairs, cheaper than a sort along the short expert axis; a k-th-place tie, possible only
        # for equal logits, keeps every tied expert). Weights p_i on them, 0 elsewhere.
        ahead = (probabilities.unsqueeze(0) > probabilities.unsqueeze(1)).sum(dim=1)  # [N, T]
        selected = ahead < self.top_k
        weights = (probabilities * selected).to(tokens.dtype).unsqueeze(1)  # [N, 1, T]
        hidden = projected[n:].view(n + 1, r, -1)  # [N+1, r, T]; the shared expert's rows keep weight 1
        if torch.is_grad_enabled():
            hidden = torch.cat([hidden[:n] * weights, hidden[n:]])
        else:  # inference: scale the routed rows in place (one kernel less per layer)
            hidden[:n].mul_(weights)
        update = F.linear(hidden.view((n + 1) * r, -1).t(), up)  # [T, out]
        if torch.is_grad_enabled() and (self.balance_weight or self.z_loss_weight):
            # Computed in a gradient-checkpoint recomputation too (it must save the same tensors as the
            # first pass) but only collected in the first pass.
            aux = self.auxiliary_terms(logits, probabilities, selected)
            if not _in_backward():
                self._pending = aux if self._pending is None else self._pending + aux
        return update.reshape(*shape[:-1], self.out_features).to(dtype)

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """The auxiliary loss accumulated since the last call (None if none), and clear it."""
        pending, self._pending = self._pending, None
        return pending

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"num_experts={self.num_experts}, top_k={self.top_k}")
