"""Schedulers by name, built from the checkpoint's own scheduler config (betas, prediction type)."""

from __future__ import annotations

from ..errors import InvalidInputError

# name → (diffusers class name, config overrides, description)
SCHEDULERS: dict[str, tuple[str, dict, str]] = {
    "ddim": ("DDIMScheduler", {}, "DDIM, deterministic with eta=0 (default; what the panorama papers use)"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler (k-diffusion)"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler ancestral (stochastic)"),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False},
        "DPM++ 2M",
    ),
    "dpmpp_2m_karras": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        "DPM++ 2M with Karras sigmas",
    ),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC multistep"),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}, "PNDM (PLMS)"),
    "heun": ("HeunDiscreteScheduler", {}, "Heun (two model calls per step)"),
}
DEFAULT_SCHEDULER = "ddim"


def check_scheduler_name(name: str) -> str:
    """Normalise ``name`` (case, ``-``/``+`` spelling) or raise a clear error listing the choices."""
    key = name.strip().lower().replace("-", "_").replace("++", "pp").replace("+", "p")
    if key not in SCHEDULERS:
        raise InvalidInputError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    return key


def make_scheduler(name: str, base_config):
    """A fresh scheduler of kind ``name`` configured from ``base_config`` (the checkpoint's config)."""
    import diffusers

    class_name, overrides, _ = SCHEDULERS[check_scheduler_name(name)]
    scheduler_class = getattr(diffusers, class_name)
    return scheduler_class.from_config(base_config, **overrides)
