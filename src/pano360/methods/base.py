"""The contract every panorama method fulfils inside the shared denoising loop.

A method is configuration (:class:`PanoramaMethod`: typed options, model-free checks); calling
:meth:`PanoramaMethod.start` for one generation returns a :class:`MethodRun` that holds that
generation's state in typed attributes and declares what the loop needs::

    run = method.start(ctx)                      # ctx: RunContext (sizes, models, prompts, generators)
    with run.patches():                          # wraparound padding, adapters, attention blocks
        model = GuidedModel(run.network, encode_prompts(run.prompts, ...), guidance, controlnet)
        latents = run.init_latents(noise)        # noise has run.latent_shape per image
        for i, t in enumerate(timesteps):
            latents, output = run.denoise(model, latents, t, i)   # before_step + predict by default
            latents = scheduler.step(output, t, latents).prev_sample
        decoded = run.decode(latents)            # Decoded(images [B, 3, H, W] in [-1, 1], views=...)

A run never encodes prompts, applies guidance or steps the scheduler: the generator does that once
for all methods, and ``model`` (a :class:`~pano360.backbones.guided.GuidedModel`) is the only way to
call the network. A method that changes coordinates (rolls the latent each step) does so inside
:meth:`MethodRun.predict`, so a multistep scheduler's history stays in one frame.

This module imports no torch at import time (``--help`` lists methods and their options quickly).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .._lazy import lazy_module
from ..backbones.components import BackboneComponents
from ..errors import InvalidInputError
from ..options import Option, coerce_all, merged_options

torch = lazy_module("torch")


@dataclass(frozen=True)
class GenerationRequest:
    """What was asked for, before any model is loaded. Sizes in pixels."""

    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    batch_size: int = 1
    has_control: bool = False
    cfg: bool | None = None  # classifier-free guidance runs (None: guidance_scale != 1, the UNet rule)

    @property
    def guidance(self) -> bool:
        """True when the denoiser runs twice per latent (conditional and unconditional)."""
        return self.guidance_scale != 1.0 if self.cfg is None else self.cfg


@dataclass
class RunContext(BackboneComponents):
    """What a run can see of one generation.

    ``prompts[b]`` are image b's prompts, one per conditioning unit (one for a panorama, one per view
    for a multi-view method); ``negative_prompts[b]`` its negative prompt (None: the empty prompt).
    ``control_image`` is [B, 3, H, W] in [0, 1] or None. ``generators`` has one ``torch.Generator`` per
    image. ``adapters`` are the loaded panorama adapters (:mod:`pano360.adapters`).
    """

    request: GenerationRequest
    backbone: Any  # pano360.backbones.loading.Backbone
    scheduler: Any
    prompts: list[list[str]]
    negative_prompts: list[str] | None = None
    generators: list = field(default_factory=list)
    control_image: Any = None
    adapters: list = field(default_factory=list)
    channels_last: bool = False

    # --- shortcuts (pipe, unet, vae, controlnet, info: BackboneComponents) -----------------------
    @property
    def height(self) -> int:
        return self.request.height

    @property
    def width(self) -> int:
        return self.request.width

    @property
    def latent_height(self) -> int:
        return self.height // self.info.vae_scale_factor

    @property
    def latent_width(self) -> int:
        return self.width // self.info.vae_scale_factor

    @property
    def batch_size(self) -> int:
        return len(self.prompts)

    @property
    def latent_channels(self) -> int:
        return int(self.info.latent_channels)

    @property
    def step_generator(self):
        """What ``scheduler.step(generator=...)`` gets: one generator, or one per image."""
        return self.generators[0] if len(self.generators) == 1 else self.generators


@dataclass
class Decoded:
    """Decoded output: ``images`` [B, 3, H, W] in about [-1, 1]; ``views`` [B, V, 3, h, w] for multi-view
    methods; ``geometry`` the part of the sphere the images cover when it is not what their size says
    (``{"full_width", "full_height", "crop_top"}`` in pixels, for GPano), else None."""

    images: Any
    views: Any = None
    geometry: dict | None = None


class MethodRun:
    """One generation of one method. Subclasses override what they change.

    ``latent_shape`` (per image, latent units) decides the noise, the ``latents=`` check and
    ``output.latents``; ``prompts`` / ``negative_prompts`` the conditioning units (image-major, one row
    per unit); ``network`` what the guided model calls.
    """

    def __init__(self, method: PanoramaMethod, ctx: RunContext):
        self.method = method
        self.ctx = ctx
        self.latent_shape: tuple[int, ...] = (ctx.latent_channels, ctx.latent_height, ctx.latent_width)
        self.prompts: list[str] = [p for units in ctx.prompts for p in units]
        self.negative_prompts: list[str] | None = None
        if ctx.negative_prompts is not None:
            self.negative_prompts = [n for n, units in zip(ctx.negative_prompts, ctx.prompts) for _ in units]
        self.network = ctx.unet

    @property
    def units_per_image(self) -> int:
        return len(self.ctx.prompts[0])

    def resolved(self) -> dict[str, Any]:
        """Values this run decided that its options left open (e.g. the window size from the model's
        native size), recorded in the sidecar under ``"resolved"``; {} when there are none."""
        return {}

    # --- module patches -------------------------------------------------------------------------
    @contextlib.contextmanager
    def patches(self) -> Iterator[None]:
        """Everything patched into the models for this generation, undone on exit."""
        with contextlib.ExitStack() as stack:
            self.enter_patches(stack)
            yield

    def enter_patches(self, stack: contextlib.ExitStack) -> None:
        """Attach the loaded adapters (subclasses add wraparound padding etc. after calling this)."""
        unet = self.ctx.unet
        for adapter in self.ctx.adapters:
            network = adapter.attach(unet)
            stack.callback(adapter.detach, unet)
            if network is not unet:
                self.network = network

    # --- the loop hooks -------------------------------------------------------------------------
    def init_latents(self, noise):
        """Initial latents from unit Gaussian ``noise`` [B, *latent_shape], already scaled by the scheduler."""
        return noise

    def denoise(self, model, latents, t, i: int):
        """(latents the scheduler steps from, guided model output for them) at step ``i``."""
        latents = self.before_step(model, latents, t, i)
        from ..backbones.parameterization import model_input

        output = self.predict(model, model_input(self.ctx.scheduler, latents, t), t, i)
        return latents, output

    def before_step(self, model, latents, t, i: int):
        """Change the latents before step ``i`` (default: nothing)."""
        return latents

    def predict(self, model, model_input, t, i: int):
        """Guided model output [B, *latent_shape] for the scaled model input."""
        return model(model_input, t, control=self.ctx.control_image, size_px=(self.ctx.height, self.ctx.width))

    def decode(self, latents) -> Decoded:
        """Final latents [B, *latent_shape] → :class:`Decoded`."""
        from ..backbones.vae import decode_latents

        return Decoded(decode_latents(self.ctx.vae, latents))


class PanoramaMethod:
    """Base class of methods: typed options (``options``, merged along the class hierarchy) and checks.

    ``PanoramaMethod(**options)`` validates and normalises every option once; unknown names raise. A
    subclass sets ``name``, ``summary`` (one line for ``--help``), ``options`` and ``run_class``.
    """

    name: ClassVar[str] = "base"
    summary: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    run_class: ClassVar[type[MethodRun]] = MethodRun
    size_family: ClassVar[str] = "full"
    """``"full"``: the denoiser runs on the whole panorama (attention cost grows with its area squared);
    ``"windows"``: on native-size windows or views (cost grows with the area). Decides the size limit."""
    tiny_defaults: ClassVar[dict[str, Any]] = {}
    """Option values used with the built-in tiny models unless given (e.g. a built-in perceptual net
    instead of downloaded weights), so that every method runs offline on them."""

    def __init__(self, **values: Any):
        for key, value in coerce_all(self.option_specs(), values, f"method {self.name!r}").items():
            setattr(self, key, value)
        self.check_options()

    @classmethod
    def option_specs(cls) -> dict[str, Option]:
        return merged_options(cls)

    def check_options(self) -> None:
        """Checks across options (each option's own type and range are checked by its declaration)."""

    def values(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.option_specs()}

    def replace(self, **changes: Any) -> PanoramaMethod:
        return type(self)(**{**self.values(), **changes})

    def record(self) -> dict[str, Any]:
        """The options as recorded in the sidecar (JSON-friendly)."""
        return {name: spec.describe(getattr(self, name)) for name, spec in self.option_specs().items()}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.values().items())
        return f"{type(self).__name__}({options})"

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.values() == self.values()

    # --- before any model loads -------------------------------------------------------------------
    def prompt_units(self, prompt: str | list) -> list[list[str]]:
        """The user's ``prompt`` → per image, one prompt per conditioning unit (default: one per image)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise InvalidInputError("give at least one prompt")
        for p in prompts:
            if not isinstance(p, str):
                raise InvalidInputError(f"prompts must be text, got {type(p).__name__} ({p!r})")
        return [[p] for p in prompts]

    def default_size(self, info) -> tuple[int, int]:
        """(height, width) in pixels when the user gives none: a full 2:1 sphere at the native height."""
        return info.native_size, 2 * info.native_size

    def denoiser_positions(self, request: GenerationRequest, native_latent: int, latent_factor: int) -> int:
        """Latent positions in the largest batched denoiser call (per guidance half): what the memory
        estimate sizes. Default: the whole panorama of every image. ``native_latent`` is the model's
        native size and ``latent_factor`` its pixels per latent."""
        return request.batch_size * (request.height // latent_factor) * (request.width // latent_factor)

    def check(self, request: GenerationRequest) -> None:
        """Model-free checks of the request for this method; raise InvalidInputError."""

    def check_for_family(self, request: GenerationRequest, family: str) -> None:
        """Checks that need only the model's family (known before loading from its files): the
        pre-flight plan calls it, and :meth:`check_for_model` again after loading."""
        from ..backbones.families import DIT_FAMILIES

        if family in DIT_FAMILIES:
            step = 16  # 2 x 2-latent tokens of 8-pixel latents
            for name, value in (("height", request.height), ("width", request.width)):
                if value % step:
                    lower = max(step, value - value % step)
                    raise InvalidInputError(f"{name} {value} is not a multiple of {step} pixels, which a {family} "
                                            f"model needs (2x2-latent tokens); use {lower} or {lower + step}")

    def check_for_model(self, request: GenerationRequest, info, scheduler_name: str, adapters=()) -> None:
        """Checks that need the loaded model's facts (its downsampling, family) or its adapters."""
        self.check_for_family(request, info.family)
        if info.is_dit:
            step = info.pixel_multiple
            for name, value in (("height", request.height), ("width", request.width)):
                if value % step:
                    lower = max(step, value - value % step)
                    raise InvalidInputError(f"{name} {value} is not a multiple of {step} pixels, which a {info.family} "
                                            f"model needs (2x2-latent tokens); use {lower} or {lower + step}")
        for adapter in adapters:
            needed = getattr(adapter, "method", None)
            if needed is not None and needed != self.name:
                raise InvalidInputError(f"the {adapter.kind} adapter runs with method {needed!r}, not {self.name!r}; "
                                        f"use --method {needed}")

    def fetch_resources(self, request: GenerationRequest) -> None:
        """Make sure files the method needs besides the diffusion model are on disk (downloading them if
        allowed); raise ModelLoadError naming the fix. Called before any model call."""

    def start(self, ctx: RunContext) -> MethodRun:
        return self.run_class(self, ctx)
