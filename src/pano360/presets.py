"""Named settings that reproduce a paper's or a reference code's runs: ``--preset NAME`` / ``preset=``.

A preset names a method, generation settings (``height``, ``width``, ``num_inference_steps``,
``guidance_scale``, ``scheduler``) and method options. What the user gives explicitly wins over the
preset. :func:`register_preset` adds one (a package outside pano360 can ship its own). Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidInputError

GENERATION_KEYS = ("height", "width", "num_inference_steps", "guidance_scale", "scheduler", "model")


@dataclass(frozen=True)
class Preset:
    """A named run. ``generation`` may name the ``model``; ``loras`` are (Hub repo or file, scale, weight file
    name or None) loaded with it; ``transformer`` replaces a DiT's transformer, ``unet`` a UNet model's UNet
    (a repo with a ``unet`` folder, a UNet folder or file); ``trigger`` is a phrase the
    model was trained with, put before the prompt unless the prompt has it; ``licence`` says under which
    terms the weights come (shown in ``--help`` and ``docs/models.md``)."""

    name: str
    method: str
    description: str
    generation: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    loras: tuple[tuple[str, float, str | None], ...] = ()
    transformer: str | None = None
    unet: str | None = None
    trigger: str = ""
    licence: str = ""

    def prompt(self, prompt: str) -> str:
        """``prompt`` with the trigger phrase in front (unless it already contains it, any case)."""
        if not self.trigger or self.trigger.lower() in prompt.lower():
            return prompt
        return f"{self.trigger}, {prompt}"

    def __post_init__(self):
        unknown = set(self.generation) - set(GENERATION_KEYS)
        if unknown:
            raise ValueError(f"preset {self.name}: unknown generation keys {sorted(unknown)}")


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset, replace: bool = False) -> Preset:
    if preset.name in PRESETS and not replace:
        raise ValueError(f"a preset named {preset.name!r} exists already")
    PRESETS[preset.name] = preset
    return preset


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise InvalidInputError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


# Settings of the reference code, by entry point (shared/reference/syncdiffusion_multidiffusion.md §2.4,
# MultiDiffusion §1.1). The references have no loop closure in these runs; give loop_closure=True
# (CLI: --loop-closure on) for a 360° seam.
register_preset(Preset(
    "syncdiffusion-paper", "syncdiffusion",
    "SyncDiffusion's sample_syncdiffusion() defaults: 512x2048, stride 16, weight 20, decay 0.95, sync at all 50 steps",
    {"height": 512, "width": 2048, "num_inference_steps": 50, "guidance_scale": 7.5},
    {"stride": 16, "sync_weight": 20.0, "sync_decay_rate": 0.95, "sync_freq": 1, "sync_threshold": 50,
     "loop_closure": False},
))
register_preset(Preset(
    "syncdiffusion-script", "syncdiffusion",
    "SyncDiffusion's sample_syncdiffusion.sh: 512x3072, sync only in the first 10 of 50 steps",
    {"height": 512, "width": 3072, "num_inference_steps": 50, "guidance_scale": 7.5},
    {"stride": 16, "sync_weight": 20.0, "sync_decay_rate": 0.95, "sync_freq": 1, "sync_threshold": 10,
     "loop_closure": False},
))
register_preset(Preset(
    "multidiffusion-paper", "multidiffusion",
    "MultiDiffusion's panorama.py: 512x4096, stride 8",
    {"height": 512, "width": 4096, "num_inference_steps": 50, "guidance_scale": 7.5},
    {"stride": 8, "loop_closure": False},
))
register_preset(Preset(
    "mvdiffusion-paper", "mvdiffusion",
    "MVDiffusion's demo: 8 views of 90°, DDIM 50 steps, CFG 9, stitched on 2048x4096 (output rows 540:1508); "
    "needs --adapter pano.ckpt on stabilityai/stable-diffusion-2-base",
    {"height": 2048, "width": 4096, "num_inference_steps": 50, "guidance_scale": 9.0, "scheduler": "ddim"},
    {"num_views": 8, "fov": 90.0},
))

register_preset(Preset(
    "unipano-paper", "circular",
    "UniPano/PanFusion's sampling loop: 512x1024, DDIM 50 steps, guidance 9, the reference's pad/crop padding, "
    "90-degree roll per step, padded decode (give the trained model with --adapter)",
    {"height": 512, "width": 1024, "num_inference_steps": 50, "guidance_scale": 9.0, "scheduler": "ddim"},
    {"padding": "reference", "roll_per_step": 90.0},
))



def apply_preset(name: str | None, method, options: dict, generation: dict) -> tuple[object, dict, dict]:
    """Fill what the user did not give from preset ``name``; what was given explicitly wins.

    ``method``: a name, a method instance or None; ``generation``: keys of :data:`GENERATION_KEYS`, None
    where not given. Returns (method name or instance, options, generation settings).
    """
    given = {k: v for k, v in generation.items() if v is not None}
    if name is None:
        return (method if method is not None else "circular"), dict(options), given
    preset = get_preset(name)
    method_name = getattr(method, "name", method)
    if method_name is not None and method_name != preset.method:
        raise InvalidInputError(f"preset {name!r} is for method {preset.method!r}, not {method_name!r}; drop the "
                                f"method or choose a preset for {method_name!r}")
    if method is not None and not isinstance(method, str):  # a configured instance keeps its own options
        return method, dict(options), {**preset.generation, **given}
    settings = {**preset.generation, **given}
    merged = {**preset.options, **options}
    preset_steps, steps = preset.generation.get("num_inference_steps"), settings.get("num_inference_steps")
    if preset_steps and isinstance(steps, int) and steps > 0 and steps != preset_steps:
        # a step count in the preset's options means a share of its schedule ("synchronise during the first
        # 10 of 50 steps"): it follows --steps, so a preset never refuses a step count because of its own values
        for key in STEP_COUNT_OPTIONS:
            if key in preset.options and key not in options and isinstance(merged[key], int):
                merged[key] = max(1, min(steps, round(merged[key] * steps / preset_steps)))
    return preset.method, merged, settings


#: method options that count denoising steps (scaled with --steps when a preset sets them)
STEP_COUNT_OPTIONS = ("sync_threshold",)


from . import model_presets  # noqa: F401
