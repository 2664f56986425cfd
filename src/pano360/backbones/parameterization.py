"""What a diffusion network predicts, and how to turn it into a clean latent or a training target.

SD checkpoints predict ε (SD 1.x, SD 2 base, SDXL) or v (SD 2.x 768-v); ``sample`` (x0) networks exist
too. With ᾱ_t = ``scheduler.alphas_cumprod[t]`` and x_t = √ᾱ·x0 + √(1−ᾱ)·ε:

* ε-prediction: x̂0 = (x_t − √(1−ᾱ)·ε̂) / √ᾱ;
* v-prediction (v = √ᾱ·ε − √(1−ᾱ)·x0): x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂;
* sample: x̂0 is the output.
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _prediction_type(scheduler) -> str:
    kind = scheduler.config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ValueError(f"unsupported prediction type {kind!r}; pano360 handles {', '.join(PREDICTION_TYPES)}")
    return kind


def _alpha_bar(scheduler, t, like: torch.Tensor) -> torch.Tensor:
    """ᾱ_t broadcastable against ``like`` [N, ...]: ``t`` a scalar or one timestep per row [N]."""
    alphas = scheduler.alphas_cumprod.to(like.device)
    t = torch.as_tensor(t, device=like.device).long()
    alpha = alphas[t].to(like.dtype)
    return alpha.reshape(-1, *([1] * (like.ndim - 1))) if alpha.ndim else alpha


def predicted_original(scheduler, model_input: torch.Tensor, output: torch.Tensor, t) -> torch.Tensor:
    """x̂0 [N, C, h, w] from the scaled model input x_t and the (guided) network output.

    The scaled model input is the variance-preserving x_t for DDIM/DDPM-style and for σ-scaled
    (Euler-type) schedulers alike, so the formulas hold for both.
    """
    kind = _prediction_type(scheduler)
    if kind == "sample":
        return output
    alpha = _alpha_bar(scheduler, t, model_input)
    sqrt_alpha, sqrt_one_minus = alpha.sqrt(), (1 - alpha).sqrt()
    if kind == "epsilon":
        return (model_input - sqrt_one_minus * output) / sqrt_alpha
    return sqrt_alpha * model_input - sqrt_one_minus * output


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network should output for x_t = add_noise(latents, noise, t): ε, v or x0.

    ``latents`` and ``noise`` [N, ...], ``t`` [N] integer timesteps.
    """
    kind = _prediction_type(scheduler)
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return latents
    alpha = _alpha_bar(scheduler, t, latents)
    return alpha.sqrt() * noise - (1 - alpha).sqrt() * latents


def snr(scheduler, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) per timestep [N] (for Min-SNR loss weighting)."""
    alphas = scheduler.alphas_cumprod.to(t.device)[t.long()].double()
    return (alphas / (1 - alphas)).float()
