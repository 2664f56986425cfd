"""Schedulers by name, built from the checkpoint's own scheduler config (betas, prediction type, shift).

Two kinds: ᾱ-based schedulers for ε/v-prediction UNets (SD 1/2/SDXL) and flow-matching schedulers for
the rectified-flow transformers (FLUX.1, SD3.x, Qwen-Image). A model accepts the schedulers of its
kind; :func:`check_scheduler_for_kind` says which to choose otherwise. Flow schedulers keep the
checkpoint's shift: a static ``shift`` (SD3), or the resolution-dependent shift μ computed from the
image's token count (FLUX, Qwen-Image: ``use_dynamic_shifting``), see :func:`set_timesteps`.
"""

from __future__ import annotations

import math

from ..errors import InvalidInputError

# name → (diffusers class name, config overrides, description, kind: "alpha" | "flow")
SCHEDULERS: dict[str, tuple[str, dict, str, str]] = {
    "ddim": ("DDIMScheduler", {}, "DDIM, deterministic with eta=0 (default for UNets; what the panorama papers use)",
             "alpha"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler (k-diffusion)", "alpha"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler ancestral (stochastic)", "alpha"),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
        "DPM++ 2M", "alpha",
    ),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M with Karras sigmas", "alpha",
    ),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC multistep", "alpha"),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PNDM (PLMS)", "alpha"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun (two model calls per step)", "alpha"),
    "flow_euler": ("FlowMatchEulerDiscreteScheduler", {}, "flow-matching Euler (default for FLUX, SD3, Qwen-Image)",
                   "flow"),
    "flow_heun": ("FlowMatchHeunDiscreteScheduler", {}, "flow-matching Heun (two model calls per step; static shift)",
                  "flow"),
    "flow_dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_flow_sigmas": True,
         "prediction_type": "flow_prediction"},
        "DPM++ 2M on flow sigmas", "flow",
    ),
    "flow_unipc": (
        "UniPCMultistepScheduler",
        {"use_flow_sigmas": True, "prediction_type": "flow_prediction"},
        "UniPC on flow sigmas", "flow",
    ),
}
DEFAULT_SCHEDULER = "ddim"
DEFAULT_FLOW_SCHEDULER = "flow_euler"
DEFAULT_SCHEDULERS = {"alpha": DEFAULT_SCHEDULER, "flow": DEFAULT_FLOW_SCHEDULER}


def check_scheduler_name(name: str) -> str:
    """Normalise ``name`` (case, ``-``/``+`` spelling) or raise a clear error listing the choices."""
    key = name.strip().lower().replace("-", "_").replace("++", "pp").replace("+", "p")
    if key not in SCHEDULERS:
        raise InvalidInputError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    return key


def scheduler_kind(name: str) -> str:
    """``"alpha"`` (ε/v UNets) or ``"flow"`` (flow-matching transformers)."""
    return SCHEDULERS[check_scheduler_name(name)][3]


def check_scheduler_for_kind(name: str, kind: str, family: str) -> str:
    """``name`` normalised, or a one-line error when a ``kind`` model (family ``family``) cannot use it."""
    key = check_scheduler_name(name)
    if SCHEDULERS[key][3] != kind:
        choices = ", ".join(n for n, entry in SCHEDULERS.items() if entry[3] == kind)
        what = "a flow-matching" if kind == "flow" else "an ε/v-prediction"
        raise InvalidInputError(f"scheduler {name!r} does not fit the {family} model ({what} model); choose one of: "
                                f"{choices}")
    return key


def resolve_scheduler(name: str | None, kind: str, family: str) -> str:
    """``name`` checked for a ``kind`` model; None → that kind's default (ddim, flow_euler)."""
    if name is None:
        return DEFAULT_SCHEDULERS[kind]
    return check_scheduler_for_kind(name, kind, family)


def make_scheduler(name: str, base_config):
    """A fresh scheduler of kind ``name`` configured from ``base_config`` (the checkpoint's config).

    Flow variants built from a FLUX/Qwen config with dynamic shifting keep it where the diffusers class
    supports it (DPM: exponential time shift; Heun has a static ``shift`` only).
    """
    import diffusers

    class_name, overrides, _, kind = SCHEDULERS[check_scheduler_name(name)]
    scheduler_class = getattr(diffusers, class_name)
    overrides = dict(overrides)
    if kind == "flow" and class_name in ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler"):
        overrides["flow_shift"] = float(base_config.get("shift", 1.0))
        if class_name == "DPMSolverMultistepScheduler" and base_config.get("use_dynamic_shifting", False):
            overrides.update(use_dynamic_shifting=True, time_shift_type="exponential")
    import inspect

    accepted = set(inspect.signature(scheduler_class.__init__).parameters)
    config = {key: value for key, value in dict(base_config).items() if key in accepted or key.startswith("_")}
    return scheduler_class.from_config(config, **overrides)


def dynamic_shift(image_seq_len: int, config) -> float:
    """μ of the resolution-dependent shift for ``image_seq_len`` image tokens: linear between
    (``base_image_seq_len``, ``base_shift``) and (``max_image_seq_len``, ``max_shift``), as FLUX and
    Qwen-Image's pipelines compute it (defaults 256 → 0.5, 4096 → 1.15)."""
    base_len = config.get("base_image_seq_len", 256)
    max_len = config.get("max_image_seq_len", 4096)
    base_shift = config.get("base_shift", 0.5)
    max_shift = config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return image_seq_len * slope + (base_shift - slope * base_len)


def set_timesteps(scheduler, num_inference_steps: int, device, image_seq_len: int | None = None,
                  base_config=None, linear_sigmas: bool = True, shift_mu=None) -> None:
    """``scheduler.set_timesteps`` as the model's own pipeline calls it.

    ᾱ schedulers: the number of steps. Flow-matching Euler: with ``linear_sigmas`` σ from 1 to 1/N (FLUX
    and Qwen-Image pipelines' ``linspace(1, 1/N, N)``; SD3's pipeline lets the scheduler space them), with μ = :func:`dynamic_shift` of ``image_seq_len`` when the checkpoint
    uses dynamic shifting; DPM/UniPC on flow sigmas with μ (``flow_shift = e^μ``) where supported.
    ``shift_mu(image_seq_len, num_inference_steps, config)`` replaces :func:`dynamic_shift` where the
    family's pipeline computes μ otherwise (FLUX.2: from the tokens *and* the number of steps).
    """
    import inspect

    import numpy as np

    from .parameterization import is_flow_scheduler

    config = scheduler.config
    if not is_flow_scheduler(scheduler):
        scheduler.set_timesteps(num_inference_steps, device=device)
        return
    accepted = set(inspect.signature(scheduler.set_timesteps).parameters)
    kwargs = {}
    dynamic = bool(config.get("use_dynamic_shifting", False))
    if dynamic and "mu" in accepted:
        shift_config = base_config if base_config is not None else config
        if image_seq_len is None:  # unknown size: the shift of the base sequence length
            image_seq_len = int(shift_config.get("base_image_seq_len", 256))
        if shift_mu is not None:
            mu = shift_mu(image_seq_len, num_inference_steps, shift_config)
        else:
            mu = dynamic_shift(image_seq_len, shift_config)
        if type(scheduler).__name__ == "DPMSolverMultistepScheduler" and config.get("time_shift_type") != "exponential":
            scheduler.config.flow_shift = math.exp(mu)
        else:
            kwargs["mu"] = mu
    if linear_sigmas and "sigmas" in accepted and type(scheduler).__name__ == "FlowMatchEulerDiscreteScheduler":
        kwargs["sigmas"] = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps)
    scheduler.set_timesteps(num_inference_steps, device=device, **kwargs)
    import torch

    if not bool(torch.isfinite(torch.as_tensor(scheduler.timesteps, dtype=torch.float64)).all()):
        # Qwen-Image's terminal shift stretches σ so that the last one is shift_terminal: undefined for 1 step
        raise InvalidInputError(f"{num_inference_steps} step(s) cannot be scheduled with this model's flow shift "
                                "(its terminal shift needs at least 2 steps); use --steps 2 or more")
