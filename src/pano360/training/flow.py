"""Flow-matching training for the transformer families (FLUX.1, SD3.x, Qwen-Image): timestep sampling
and loss weighting as diffusers' SD3/FLUX training scripts do them, plus FLUX's resolution shift.

With x_t = (1 − σ)·x0 + σ·ε and the network predicting the velocity v = ε − x0
(:mod:`pano360.backbones.parameterization`), one sample's σ is drawn as:

1. u ∈ [0, 1) from the weighting scheme (``compute_density_for_timestep_sampling`` in diffusers):
   ``logit_normal``: u = sigmoid(N(logit_mean, logit_std)); ``mode``: u ~ U then
   u ← 1 − u − mode_scale·(cos²(πu/2) − 1 + u) (SD3 paper eq. 20); otherwise u ~ U[0, 1);
2. the scheduler's training table: t = timesteps[⌊u·T⌋], σ = t / T (T = 1000; SD3's static
   ``shift`` is already in that table, FLUX's and Qwen-Image's tables are unshifted because their
   schedulers shift dynamically);
3. for dynamically shifting schedulers (``use_dynamic_shifting``: FLUX.1, Qwen-Image) with
   ``resolution_shift``: σ ← e^μ / (e^μ + 1/σ − 1), μ the family's resolution shift for the image's
   token count (the same μ sampling uses at that size).

Loss weight per sample (``compute_loss_weighting_for_sd3``): ``sigma_sqrt``: σ⁻²; ``cosmap``:
2 / (π·(1 − 2σ + 2σ²)); otherwise 1.
"""

from __future__ import annotations

import math

import torch

WEIGHTING_SCHEMES = ("none", "sigma_sqrt", "logit_normal", "mode", "cosmap")


def draw_u(scheme: str, generator: torch.Generator, logit_mean: float = 0.0, logit_std: float = 1.0,
           mode_scale: float = 1.29) -> float:
    """One u ∈ [0, 1) for ``scheme`` from ``generator`` (one draw per sample: a pure function of it)."""
    if scheme == "logit_normal":
        value = torch.randn((), generator=generator, dtype=torch.float64) * logit_std + logit_mean
        return float(torch.sigmoid(value))
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    if scheme == "mode":
        u = 1.0 - u - mode_scale * (math.cos(math.pi * u / 2) ** 2 - 1.0 + u)
    return u


class FlowTimesteps:
    """Training timesteps t = σ·T [B] (float) of a flow-matching scheduler, from per-sample u.

    ``scheduler``: the pipeline's flow scheduler (its config is copied); ``mu``: the resolution-shift μ
    for the training size, or None for no shift.
    """

    def __init__(self, scheduler, mu: float | None = None):
        from diffusers import FlowMatchEulerDiscreteScheduler

        fresh = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config)
        self.total = int(fresh.config.num_train_timesteps)
        self.timesteps = fresh.timesteps.double().clone()  # [T], descending, the training table
        self.mu = None if mu is None else float(mu)

    def sigma(self, u: float) -> float:
        index = min(int(u * self.total), self.total - 1)
        sigma = float(self.timesteps[index]) / self.total
        if self.mu is not None:
            sigma = math.exp(self.mu) / (math.exp(self.mu) + (1.0 / sigma - 1.0))
        return sigma

    def __call__(self, us: list[float]) -> torch.Tensor:
        return torch.tensor([self.sigma(u) * self.total for u in us], dtype=torch.float32)


def loss_weighting(scheme: str, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample loss weights [B] for σ [B] (diffusers' ``compute_loss_weighting_for_sd3``)."""
    if scheme == "sigma_sqrt":
        return (sigma.float() ** -2.0)
    if scheme == "cosmap":
        bottom = 1 - 2 * sigma.float() + 2 * sigma.float() ** 2
        return 2 / (math.pi * bottom)
    return torch.ones_like(sigma, dtype=torch.float32)
