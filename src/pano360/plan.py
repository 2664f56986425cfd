"""The pre-flight plan: every decision and check of a generation that needs no model weights.

One place resolves a request: the preset, the tiny models' method defaults, the default size (from
the method and the model's native size), the family's default steps and guidance, the argument
checks, the size limit (by what the method runs: whole panorama or windows), the method's own checks
and the memory estimate (the method's largest denoiser call, the family's parameter count). The CLI,
batch, the web app and :class:`~pano360.generator.PanoramaGenerator` all call it, so a request is
refused with the same line everywhere, before a download or a minute of compute.

What is known of a model before loading (:class:`ModelFacts`) comes from its files, never from its
name: ``model_index.json`` / component configs of a folder or of the Hub cache, or a single file's
key names. A Hub model not in the cache is unknown until loaded; its plan is made again with the
loaded model's facts. Torch-free.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .defaults import FAMILY_DEFAULTS, NATIVE_SIZES, TINY_MODEL_NAMES, TINY_NATIVE_SIZE


@dataclass(frozen=True)
class ModelFacts:
    """What a model is, as far as its small files say. ``family`` None: unknown before loading."""

    family: str | None
    native_size: int  # pixels
    vae_scale_factor: int = 8
    tiny: bool = False

    @property
    def is_dit(self) -> bool:
        from .backbones.families import DIT_FAMILIES

        return self.family in DIT_FAMILIES


def _facts_from_configs(index: dict, read) -> ModelFacts | None:
    """Facts from a model_index dict and ``read(name) -> dict | None`` for component configs."""
    from .backbones.families import family_of_model_index

    family = family_of_model_index(index)
    if family is not None:
        transformer = read("transformer/config.json") or {}
        sample = transformer.get("sample_size") if family == "sd3" else None
        return ModelFacts(family, int(sample) * 8 if sample else NATIVE_SIZES[family])
    unet = read("unet/config.json")
    if unet is None:
        return None
    from .backbones.families import family_of_unet_config

    family = family_of_unet_config(unet, str(index.get("_class_name", "")))
    return ModelFacts(family, int(unet.get("sample_size", 64)) * 8)


def _safetensors_keys(path: Path) -> list[str]:
    """Tensor names of a ``.safetensors`` file from its JSON header (no tensor is read)."""
    with open(path, "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        if size <= 0 or size > 100_000_000:
            return []
        header = json.loads(handle.read(size))
    return [key for key in header if key != "__metadata__"]


def model_facts(model: str, *, cache_dir: str | None = None) -> ModelFacts:
    """The facts of a ``--model`` argument without loading weights or touching the network."""
    from .backbones.families import family_of_checkpoint_keys, family_of_transformer_keys

    if model in TINY_MODEL_NAMES:
        return ModelFacts(TINY_MODEL_NAMES[model], TINY_NATIVE_SIZE, tiny=True)
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        def read(name):
            file = path / name
            return json.loads(file.read_text()) if file.is_file() else None
        index = read("model_index.json")
        if index is None:  # a transformer-only folder
            config = read("config.json") or {}
            from .backbones.families import TRANSFORMER_CLASSES

            family = TRANSFORMER_CLASSES.get(str(config.get("_class_name", "")))
            return ModelFacts(family, NATIVE_SIZES.get(family, NATIVE_SIZES["sd2"]))
        return _facts_from_configs(index, read) or ModelFacts(None, NATIVE_SIZES["sd2"])
    if path.is_file():
        keys = _safetensors_keys(path) if path.suffix.lower() == ".safetensors" else []
        family = (family_of_transformer_keys(keys) or family_of_checkpoint_keys(keys)) if keys else None
        return ModelFacts(family, NATIVE_SIZES.get(family, NATIVE_SIZES["sd2"]))
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency
        return ModelFacts(None, NATIVE_SIZES["sd2"])

    def read(name):
        try:
            cached = try_to_load_from_cache(model, name, cache_dir=cache_dir)
        except Exception:  # noqa: BLE001 (not a valid repo id: the loader says why)
            return None
        return json.loads(Path(cached).read_text()) if isinstance(cached, str) and Path(cached).is_file() else None
    index = read("model_index.json")
    facts = _facts_from_configs(index, read) if index is not None else None
    return facts or ModelFacts(None, NATIVE_SIZES["sd2"])


@dataclass
class Plan:
    """A resolved, checked request. Sizes in pixels."""

    method: Any  # a PanoramaMethod
    preset: str | None
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    scheduler: str | None  # None: the model's default
    request: Any  # a GenerationRequest


def plan_generation(
    facts, *, method=None, preset: str | None = None, options: dict | None = None, height: int | None = None,
    width: int | None = None, num_inference_steps: int | None = None, guidance_scale: float | None = None,
    scheduler: str | None = None, num_images: int = 1, units: int = 1, prompt=None, has_control: bool = False,
    cfg: bool | None = None, allow_large: bool = False, tiny: bool | None = None, cli: bool = False,
) -> Plan:
    """Resolve and check a request for a model with ``facts`` (:class:`ModelFacts`, or a loaded model's
    :class:`~pano360.backbones.families.FamilyInfo`); raise :class:`InvalidInputError` with one line.

    ``units``: prompts per request (the batch is ``units × num_images``), or ``prompt`` to count them by
    the method's rule; ``cfg``: whether guidance
    doubles the denoiser batch (None: ``guidance_scale != 1``). Messages name CLI flags when ``cli``.
    """
    from .methods import GenerationRequest, get_method, method_class
    from .presets import apply_preset
    from .validation import API_NAMES, CLI_FLAGS, check_generation_args, check_size_limit, resolve_size

    chosen, options, settings = apply_preset(preset, method, options or {}, {
        "height": height, "width": width, "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale, "scheduler": scheduler})
    tiny = getattr(facts, "tiny", False) if tiny is None else tiny
    if tiny and isinstance(chosen, str):  # every method offline on the tiny models
        options = {**method_class(chosen).tiny_defaults, **options}
    method_obj = get_method(chosen, **options) if isinstance(chosen, str) else chosen
    default_height, default_width = method_obj.default_size(facts)
    flags = CLI_FLAGS if cli else API_NAMES
    resolve_size(settings.get("height"), settings.get("width"), default_height,
                 (flags["height"], flags["width"]))  # 0 or negative: error
    height = settings.get("height") or default_height
    width = settings.get("width") or (2 * height if settings.get("height") else default_width)
    steps, guidance = FAMILY_DEFAULTS.get(facts.family or "sd2", FAMILY_DEFAULTS["sd2"])
    steps = settings.get("num_inference_steps", steps)
    guidance = settings.get("guidance_scale", guidance)
    check_generation_args(height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                          num_images_per_prompt=num_images, flags=flags)
    check_size_limit(height, width, method_obj, allow_large, "--allow-large" if cli else "allow_large=True")
    if prompt is not None:
        units = len(method_obj.prompt_units(prompt))
    request = GenerationRequest(height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                                batch_size=units * num_images, has_control=has_control, cfg=cfg)
    method_obj.check(request)
    if facts.family is not None:
        method_obj.check_for_family(request, facts.family)
    return Plan(method_obj, preset, height, width, steps, guidance, settings.get("scheduler"), request)


def estimate_plan_memory(plan: Plan, facts, dtype_bytes: int, parameters: float | None = None,
                         quantize: str = "none"):
    """The plan's peak-memory estimate (:func:`pano360.validation.estimate_memory`), with the method's
    own largest denoiser call."""
    from .validation import estimate_memory

    values = plan.method.values()
    window = values.get("window")
    factor = getattr(facts, "vae_scale_factor", 8)
    positions = plan.method.denoiser_positions(plan.request, facts.native_size // factor, factor)
    return estimate_memory(
        plan.height, plan.width, family=facts.family or "sd2", method=plan.method, dtype_bytes=dtype_bytes,
        batch_size=plan.request.batch_size, guidance=plan.request.guidance,
        window=max(window) if isinstance(window, tuple) else window, view_batch_size=values.get("view_batch_size", 8),
        sync_batch_size=1 if "sync_weight" in values else 0, parameters=parameters, positions=positions,
        quantize=quantize,
    )


def check_plan_memory(plan: Plan, facts, device: str, dtype_bytes: int, parameters: float | None = None,
                      allow_large: bool = False, cli: bool = False, quantize: str = "none") -> None:
    """Refuse a plan whose estimate exceeds the device's free memory (no-op with ``allow_large``)."""
    if allow_large:
        return
    from .validation import available_memory, check_memory

    estimate = estimate_plan_memory(plan, facts, dtype_bytes, parameters, quantize)
    if cli:
        check_memory(estimate, available_memory(device), device)
    else:
        check_memory(estimate, available_memory(device), device, flag="allow_large=True")

