"""What a diffusion network predicts, and how to turn it into a clean latent or a training target.

SD checkpoints predict ε (SD 1.x, SD 2 base, SDXL) or v (SD 2.x 768-v); ``sample`` (x0) networks exist
too. With ᾱ_t = ``scheduler.alphas_cumprod[t]`` and x_t = √ᾱ·x0 + √(1−ᾱ)·ε:

* ε-prediction: x̂0 = (x_t − √(1−ᾱ)·ε̂) / √ᾱ;
* v-prediction (v = √ᾱ·ε − √(1−ᾱ)·x0): x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂;
* sample: x̂0 is the output.

Rectified-flow / flow-matching schedulers (FLUX, SD3, Qwen-Image: ``FlowMatchEulerDiscreteScheduler``
and the flow variants of Heun/DPM/UniPC) use x_t = (1 − σ)·x0 + σ·ε with σ = t / T (T =
``num_train_timesteps``, 1000), and the network predicts the velocity v = ε − x0:

* x̂0 = x_t − σ·v̂; the training target is ε − x0; the model input is x_t itself (no scaling) and the
  initial noise is unit Gaussian.

Every function here works for both kinds, deciding by the scheduler (:func:`is_flow_scheduler`), so
the loop, the methods (SyncDiffusion's x̂0) and the trainer never branch on the schedule.
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def is_flow_scheduler(scheduler) -> bool:
    """True for flow-matching schedulers (sigmas on [0, 1], velocity prediction)."""
    config = scheduler.config
    return ("FlowMatch" in type(scheduler).__name__ or bool(config.get("use_flow_sigmas", False))
            or config.get("prediction_type") == "flow_prediction")


def _flow_sigma(scheduler, t, like: torch.Tensor) -> torch.Tensor:
    """σ_t = t / T broadcastable against ``like`` [N, ...]; ``t`` a scalar or one per row [N]."""
    total = float(scheduler.config.get("num_train_timesteps", 1000))
    sigma = torch.as_tensor(t, device=like.device, dtype=torch.float32) / total
    sigma = sigma.to(like.dtype)
    return sigma.reshape(-1, *([1] * (like.ndim - 1))) if sigma.ndim else sigma


def model_input(scheduler, latents: torch.Tensor, t) -> torch.Tensor:
    """What the network sees for the sampler's latents at ``t`` (σ-scaled for Euler-type ᾱ schedulers,
    unchanged for DDIM and flow matching)."""
    if hasattr(scheduler, "scale_model_input"):
        return scheduler.scale_model_input(latents, t)
    return latents


def initial_noise_scale(scheduler) -> float:
    """Factor on unit Gaussian noise for the first latents (σ_max for Euler-type ᾱ schedulers, else 1)."""
    return float(getattr(scheduler, "init_noise_sigma", 1.0))


def add_noise(scheduler, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t for clean ``latents`` [N, ...], ``noise`` and timesteps ``t`` [N] (training and img2img)."""
    if is_flow_scheduler(scheduler):
        sigma = _flow_sigma(scheduler, t, latents)
        return (1 - sigma) * latents + sigma * noise
    return scheduler.add_noise(latents, noise, t)


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
    if is_flow_scheduler(scheduler):
        return model_input - _flow_sigma(scheduler, t, model_input) * output
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

    ``latents`` and ``noise`` [N, ...], ``t`` [N] timesteps. Flow matching: the velocity ε − x0.
    """
    if is_flow_scheduler(scheduler):
        return noise - latents
    kind = _prediction_type(scheduler)
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return latents
    alpha = _alpha_bar(scheduler, t, latents)
    return alpha.sqrt() * noise - (1 - alpha).sqrt() * latents


def snr(scheduler, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio per timestep [N]: ᾱ_t / (1 − ᾱ_t), or ((1 − σ) / σ)² for flow matching."""
    if is_flow_scheduler(scheduler):
        sigma = _flow_sigma(scheduler, t, t.double()).double()
        return (((1 - sigma) / sigma) ** 2).float()
    alphas = scheduler.alphas_cumprod.to(t.device)[t.long()].double()
    return (alphas / (1 - alphas)).float()
