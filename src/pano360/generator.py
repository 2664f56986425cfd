"""``PanoramaGenerator``: owns the loaded components, encodes prompts and runs the one denoising loop."""

from __future__ import annotations

import dataclasses
import inspect
import os
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from . import __version__
from .backbones import adapters as lora_files
from .backbones.attention import feed_forward_chunking
from .backbones.components import BackboneComponents
from .backbones.conditioning import TextConditioning, encode_prompts
from .backbones.device import apply_memory_format, resolve_channels_last, resolve_device, resolve_dtype
from .backbones.guided import GuidedModel
from .backbones.loading import DEFAULT_MODEL, Backbone, load_backbone, load_controlnet
from .backbones.parameterization import initial_noise_scale
from .backbones.schedulers import (
    DEFAULT_SCHEDULERS,
    check_scheduler_for_kind,
    check_scheduler_name,
    make_scheduler,
    set_timesteps,
)
from .backbones.vae import tiled_decoding
from .errors import InvalidInputError
from .io.sidecar import library_versions
from .methods import GenerationRequest, PanoramaMethod, RunContext
from .numerics import check_finite, generation_hint
from .output import PanoramaOutput
from .plan import Plan, check_plan_memory, plan_generation
from .validation import (
    check_eta,
    check_prompts,
    check_seed,
    check_steps_for_scheduler,
)

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


CPU_FEED_FORWARD_ROWS = 2048  # tokens per feed-forward chunk on CPUs (fastest of 2048/8192/unchunked measured)

class PanoramaGenerator(BackboneComponents):
    """Text → 360° panorama with any method, on SD 1.x/2.x/SDXL backbones.

    Build it with :meth:`from_pretrained`, then call it::

        gen = PanoramaGenerator.from_pretrained()          # the default true-360 model (sdxl-360)
        out = gen("a misty forest", preset="sdxl-360", seed=1)    # its size, trigger phrase
        gen = PanoramaGenerator.from_pretrained("stabilityai/stable-diffusion-2-base")
        out = gen("a misty forest", method="circular", height=512, width=1024, seed=1)
        out.images[0].save("forest.png")   # or out.save("forest.png") for XMP + sidecar
    """

    def __init__(self, backbone: Backbone, scheduler: str | None = None, channels_last: bool | str = "auto"):
        self.backbone = backbone
        self.scheduler_name = self._check_scheduler(scheduler)
        self.base_scheduler_config = backbone.pipe.scheduler.config
        self.channels_last = channels_last
        resolve_channels_last(channels_last, self.device)  # checks the value
        self.adapters: list = []  # trained panorama adapters (pano360.adapters), attached for each run
        self.adapter_sources: list[dict] = []
        # memory and speed modes (configure_memory): offload, tiled VAE decoding, compiled UNet
        self.offload = "none"
        self.tiled_decode: bool | str = "auto"
        self.compiled_unet = None
        self.last_memory_plan = None

    def configure_memory(self, offload: str | None = None, tiled_decode: bool | str | None = None,
                         compile: bool | str | None = None) -> None:
        """Memory and speed modes (None leaves a setting as it is).

        Args:
            offload: ``"none"``, ``"model"`` (each model moves to the GPU whole when called),
                ``"sequential"`` (each layer's weights move for its call: least memory, slow) or
                ``"auto"`` (chosen from the free GPU memory before each generation); see
                :mod:`pano360.backbones.memory`. Results do not change.
            tiled_decode: decode the VAE in exact, wrap-aware tiles (``True``), never (``False``), or
                ``"auto"``: when the untiled decode would not fit in the free GPU memory.
            compile: ``torch.compile`` the UNet (``True`` or a backend name); falls back to the eager UNet
                with a warning where compiling is unsupported.
        """
        from .backbones.memory import OFFLOAD_MODES, CompiledNetwork, disable_offload, enable_offload

        if offload is not None:
            if offload not in OFFLOAD_MODES:
                raise InvalidInputError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
            if offload in ("model", "sequential"):
                enable_offload(self.backbone, offload, self.device)
            elif getattr(self.backbone, "offload", None) is not None:
                disable_offload(self.backbone)
            self.offload = offload
        if tiled_decode is not None:
            if tiled_decode not in (True, False, "auto"):
                raise InvalidInputError(f"tiled_decode must be True, False or 'auto', got {tiled_decode!r}")
            self.tiled_decode = tiled_decode
        if compile is not None:
            if compile is False:
                self.compiled_unet = None
            else:
                backend = compile if isinstance(compile, str) else "inductor"
                self.compiled_unet = CompiledNetwork(self.unet, backend=backend)

    def _memory_plan(self, height: int, width: int):
        """(offload mode in use, tiled decode?) for this generation; applies an "auto" offload choice."""
        from .backbones.memory import auto_memory_plan, enable_offload

        device = self.device
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
        plan = auto_memory_plan(self.backbone, height, width, free, torch.empty((), dtype=self.dtype).element_size())
        self.last_memory_plan = plan
        if self.offload == "auto" and plan.offload != "none":
            enable_offload(self.backbone, plan.offload, device)
        tiled = plan.tiled_decode if self.tiled_decode == "auto" else bool(self.tiled_decode)
        return getattr(self.backbone, "offload", None) or "none", tiled

    def _check_scheduler(self, name: str | None) -> str:
        """``name`` normalised (None: the family's default), refused when it does not fit the model's kind."""
        contract = self.backbone.contract
        if name is None:
            return DEFAULT_SCHEDULERS[contract.schedule]
        return check_scheduler_for_kind(name, contract.schedule, self.backbone.info.family)

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        model: str | None = None,
        *,
        torch_dtype: torch.dtype | str | None = "auto",
        device: torch.device | str | None = "auto",
        scheduler: str | None = None,
        controlnet: str | None = None,
        loras: Sequence[str | tuple[str, float]] | None = None,
        embeddings: Sequence[str | tuple[str, str]] | None = None,
        config: str | None = None,
        variant: str | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        prediction_type: str | None = None,
        channels_last: bool | str = "auto",
        adapter: str | Sequence[str] | None = None,
        offload: str = "none",
        tiled_decode: bool | str = "auto",
        compile: bool | str = False,
        transformer: str | None = None,
        quantize: str = "none",
        preset: str | None = None,
        unet: str | None = None,
    ) -> PanoramaGenerator:
        """Load a backbone (Hub id, diffusers folder, single ``.safetensors``/``.ckpt`` file, or ``tiny``).

        Args:
            model: what to load (SD 1/2, SDXL, FLUX.1, SD3.x, Qwen-Image; the family is read from the files);
                None with no ``preset``: :data:`pano360.defaults.DEFAULT_PRESET`, a true 360° model;
                ``"tiny"``, ``"tiny-sd2"``, ``"tiny-sdxl"``, ``"tiny-flux"``, ``"tiny-flux-schnell"``,
                ``"tiny-flux-fill"``, ``"tiny-sd3"``, ``"tiny-qwen"`` are built-in random models.
            torch_dtype: ``"auto"`` (fp16 on GPU, fp32 on CPU), ``"fp32"``, ``"fp16"``, ``"bf16"`` or a dtype.
            device: ``"auto"`` (cuda, then mps, then cpu) or a device.
            scheduler: default scheduler name (``ddim``, ``euler``, ``euler_a``, ``dpmpp_2m``, … for SD/SDXL;
                ``flow_euler``, ``flow_heun``, ``flow_dpmpp_2m``, ``flow_unipc`` for the transformers; default:
                the family's, ddim or flow_euler).
            controlnet: a ControlNet (Hub id, folder, file, or ``"tiny"``) for depth conditioning.
            loras: LoRA files or Hub repos, each optionally as ``(source, scale)`` or ``(source, scale,
                weight_name)`` (scale 1 by default; the weight file inside a Hub repo that holds several).
            embeddings: textual-inversion files, each optionally as ``(path, token)``.
            config: for single files offline, a diffusers folder/Hub id to take component configs from.
            prediction_type: override the scheduler's (``"epsilon"`` or ``"v_prediction"``).
            channels_last: run convolutions in channels-last memory layout: ``"auto"`` (on the CPU, where
                it is measurably faster), True or False. Results agree to float rounding.
            adapter: trained panorama adapter(s): a pano360 adapter folder (``pano360 train``) or a
                reference checkpoint (MVDiffusion, UniPano), see :func:`pano360.adapters.load_adapter`.
            offload, tiled_decode, compile: memory and speed modes, see :meth:`configure_memory`.
            transformer: FLUX/SD3/Qwen-Image: a transformer to use instead of the model's (fine-tune repo,
                folder, ``.safetensors`` or ``.gguf`` file).
            unet: SD/SDXL: a UNet to use instead of the model's (a repo or folder with a ``unet`` folder,
                a UNet folder or file), e.g. ``ProGamerGov/sdxl-360-diffusion`` on SDXL base.
            quantize: ``"none"``, ``"fp8"`` (float8 weights, computes in ``torch_dtype``) or ``"nf4"``
                (bitsandbytes 4-bit with double quantization, CPU or CUDA) for the transformer.
            preset: a preset naming a model (:mod:`pano360.model_presets`, ``docs/models.md``): its model,
                LoRAs and transformer are loaded unless given here; pass the same ``preset=`` when generating
                for its size, steps, guidance, seam scheme and trigger phrase.
        """
        from .backbones.memory import OFFLOAD_MODES

        if model is None and preset is None:
            from .defaults import DEFAULT_PRESET

            preset = DEFAULT_PRESET
        if preset is not None:
            from .presets import get_preset

            chosen = get_preset(preset)
            if model is None or model == chosen.generation.get("model"):
                model = chosen.generation.get("model", DEFAULT_MODEL)
                loras = loras if loras else list(chosen.loras)
                transformer = transformer or chosen.transformer
                unet = unet or chosen.unet
        if scheduler is not None:
            check_scheduler_name(scheduler)
        if offload not in OFFLOAD_MODES:
            raise InvalidInputError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, got {offload!r}")
        if tiled_decode not in (True, False, "auto"):
            raise InvalidInputError(f"tiled_decode must be True, False or 'auto', got {tiled_decode!r}")
        device = resolve_device(device)
        resolve_channels_last(channels_last, device)
        dtype = resolve_dtype(torch_dtype, device)
        lora_list = [(entry, 1.0, None) if isinstance(entry, (str, os.PathLike)) else (*tuple(entry), None)[:3]
                     for entry in loras or []]
        embedding_list = [(entry, None) if isinstance(entry, (str, os.PathLike)) else tuple(entry)
                          for entry in embeddings or []]
        for source, _, _ in lora_list:
            lora_files.check_adapter_path(str(source))
        for source, _ in embedding_list:
            lora_files.check_adapter_path(str(source), what="embedding")
        adapter_list = [adapter] if isinstance(adapter, (str, os.PathLike)) else list(adapter or [])
        for source in adapter_list:
            lora_files.check_adapter_path(str(source), what="adapter")
        backbone = load_backbone(
            model, torch_dtype=dtype, device=device, config=config, variant=variant, cache_dir=cache_dir,
            local_files_only=local_files_only, token=token, prediction_type=prediction_type,
            transformer=transformer, quantize=quantize, unet=unet,
        )
        generator = cls(backbone, scheduler=scheduler, channels_last=channels_last)
        if controlnet:
            load_controlnet(backbone, controlnet, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        if lora_list:
            lora_files.load_loras(backbone, [(str(s), float(w)) for s, w, _ in lora_list],
                                  weight_names=[name for _, _, name in lora_list], cache_dir=cache_dir,
                                  local_files_only=local_files_only, token=token)
        for source, embedding_token in embedding_list:
            lora_files.load_embedding(backbone, str(source), token=embedding_token)
        for source in adapter_list:
            generator.load_adapter(source)
        generator.configure_memory(offload=offload, tiled_decode=tiled_decode, compile=compile or None)
        return generator

    @classmethod
    def from_pipe(cls, pipe, name: str = "custom", scheduler: str | None = None,
                  channels_last: bool | str = "auto") -> PanoramaGenerator:
        """Wrap an already built diffusers SD/SDXL pipeline (its modules are shared, not copied; with
        channels-last, their convolution weights are switched to that layout when generating)."""
        from .backbones.loading import ModelSource, family_info

        backbone = Backbone(pipe=pipe, info=family_info(pipe), source=ModelSource(name, "pipeline"))
        return cls(backbone, scheduler, channels_last=channels_last)

    # --- components (pipe, unet, vae, controlnet, info: BackboneComponents) ---------------------
    @property
    def device(self) -> torch.device:
        """Where the models compute (the GPU for an offloaded backbone whose weights rest on the CPU)."""
        return getattr(self.backbone, "execution_device", None) or self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def family(self) -> str:
        return self.backbone.info.family

    def load_lora(self, source: str, scale: float = 1.0, weight_name: str | None = None) -> None:
        """Add a LoRA (file or Hub repo) with ``scale``; earlier LoRAs stay active."""
        lora_files.load_loras(self.backbone, [(source, scale)], weight_names=[weight_name])
        lora_files.set_lora_scales(self.backbone, [entry["scale"] for entry in self.backbone.loras])

    def set_lora_scales(self, *scales: float) -> None:
        """New scales for the loaded LoRAs, in load order (0 disables one exactly)."""
        lora_files.set_lora_scales(self.backbone, list(scales))

    def load_embedding(self, path: str, token: str | None = None) -> list[str]:
        """Load a textual-inversion embedding; returns the tokens to use in prompts."""
        return lora_files.load_embedding(self.backbone, path, token=token)

    def load_adapter(self, source) -> None:
        """Add a trained panorama adapter (folder, reference checkpoint, or a PanoramaAdapter object)."""
        from .adapters import load_adapter
        from .adapters.base import PanoramaAdapter

        adapter = source if isinstance(source, PanoramaAdapter) else load_adapter(source)
        adapter.check_backbone(self.unet)
        adapter.to(device=self.device, dtype=self.dtype)
        self.adapters.append(adapter)
        self.adapter_sources.append({"source": str(getattr(source, "kind", source)), "kind": adapter.kind})

    def load_controlnet(self, controlnet: str) -> None:
        load_controlnet(self.backbone, controlnet)

    # --- prompts ---------------------------------------------------------------------------
    def encode_prompt(self, prompt: list[str], negative_prompt: list[str] | None, guidance: bool) -> TextConditioning:
        """Encode B prompts (and negative prompts when ``guidance``) with the backbone's text encoder(s)."""
        return encode_prompts(self.pipe, prompt, negative_prompt, guidance, self.device)

    # --- generation ------------------------------------------------------------------------
    def __call__(
        self,
        prompt: str | list,
        method: str | PanoramaMethod | None = None,
        *,
        preset: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | list[str] | None = None,
        true_cfg_scale: float | None = None,
        num_images_per_prompt: int = 1,
        seed: int | Sequence[int] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        scheduler: str | None = None,
        eta: float = 0.0,
        control_image: Any = None,
        controlnet_conditioning_scale: float = 1.0,
        output_type: str = "pil",
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        progress: bool = True,
        allow_large: bool = False,
        **method_options,
    ) -> PanoramaOutput:
        """Generate panoramas.

        Args:
            prompt: one prompt or a list (one panorama per prompt, times ``num_images_per_prompt``);
                multi-view methods also take one prompt per view (see the method's documentation).
            method: a name from :func:`pano360.available_methods` (default ``"circular"``, or the preset's)
                or a configured method; ``**method_options`` are its options.
            preset: settings of a reference run (:mod:`pano360.presets`); explicit arguments win.
            height, width: pixels, multiples of 8, height ≤ width. Default: the model's native height
                (512 for SD 1/2, 1024 for SDXL) and twice that width (a full 2:1 sphere).
            num_inference_steps, guidance_scale, negative_prompt, eta: as in the family's diffusers
                pipeline (defaults: 50 and 7.5 for SD/SDXL; FLUX 28 and 3.5 embedded guidance; SD3 28 and
                7.0; Qwen-Image 50 and 4.0, its true CFG, used only with a negative prompt).
            true_cfg_scale: FLUX: real classifier-free guidance with ``negative_prompt`` when > 1 (its
                ``guidance_scale`` is the embedded guidance value); ignored by the other families.
            seed: base seed; image i uses ``seed + i`` (or a list of seeds). Random if neither ``seed``
                nor ``generator`` is given; the seeds used are in ``output.parameters["seeds"]``.
            generator: a ``torch.Generator`` or one per image (diffusers style), instead of ``seed``.
            latents: initial noise [B, *latent shape] (unit variance; scaled by the scheduler here); the
                latent shape is the method's: [B, 4, H/8, W/8] for equirect methods.
            control_image: depth image for the ControlNet (PIL image, path, array or [B|1, 3, H, W]
                tensor in [0, 1]); resized to the panorama size.
            output_type: ``"pil"``, ``"np"`` ([B, H, W, 3] in [0, 1]), ``"pt"`` or ``"latent"``.
            callback_on_step_end: ``fn(generator, step, timestep, {"latents": ...}) -> dict``; a returned
                ``"latents"`` entry replaces the latents.
            allow_large: skip the size limit (:data:`pano360.validation.MAX_PIXELS`) and the memory
                estimate check (CLI: ``--allow-large``).
        """
        started = time.perf_counter()
        info = self.backbone.info
        check_prompts(prompt)
        if negative_prompt is not None:
            check_prompts(negative_prompt, "negative_prompt")
        if output_type not in OUTPUT_TYPES:
            raise InvalidInputError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
        if preset is not None:
            from .presets import get_preset

            prompt = _with_trigger(get_preset(preset), prompt)
        plan = plan_generation(info, method=method, preset=preset, options=method_options, height=height, width=width,
                               num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                               scheduler=scheduler, num_images=num_images_per_prompt, prompt=prompt,
                               has_control=control_image is not None, allow_large=allow_large,
                               tiny=self.backbone.source.kind == "tiny")
        method_obj, height, width = plan.method, plan.height, plan.width
        num_inference_steps, guidance_scale = plan.num_inference_steps, plan.guidance_scale
        contract = self.backbone.contract
        scheduler_name = self._check_scheduler(plan.scheduler or self.scheduler_name)
        cfg_scale, embedded_guidance = contract.guidance_plan(self.pipe, guidance_scale, true_cfg_scale,
                                                              negative_prompt is not None)
        check_eta(eta, scheduler_name, "eta")
        check_steps_for_scheduler(num_inference_steps, self.base_scheduler_config, "num_inference_steps")
        units = method_obj.prompt_units(prompt)
        batch = len(units) * num_images_per_prompt
        if generator is None:
            check_seed(seed, batch)
        request = dataclasses.replace(plan.request, cfg=cfg_scale != 1.0)
        method_obj.check_for_model(request, info, scheduler_name, self.adapters)
        if control_image is not None and self.controlnet is None:
            raise InvalidInputError("a control image was given but no ControlNet is loaded; pass controlnet=... "
                                    "to from_pretrained (CLI: --controlnet)")
        if self.controlnet is not None and control_image is None:
            raise InvalidInputError("a ControlNet is loaded: give a control_image (CLI: --depth IMAGE)")
        self._check_memory(request, method_obj, allow_large)
        method_obj.fetch_resources(request)

        prompts = [u for u in units for _ in range(num_images_per_prompt)]
        negatives = _expand_negative(negative_prompt, len(units), num_images_per_prompt)
        generators, seeds = _make_generators(seed, generator, batch)
        control = _prepare_control_image(control_image, batch, height, width, self.device, self.dtype)
        offloaded, tiled = self._memory_plan(height, width)
        # channels-last speeds up convolutions: the UNets' (a transformer has none worth it; video VAEs are 5-D)
        channels_last = resolve_channels_last(self.channels_last, self.device) and not info.is_dit
        if offloaded != "sequential":  # sequential offload keeps the weights on the meta device
            apply_memory_format(channels_last, self.unet, self.vae, self.controlnet)
        sched = make_scheduler(scheduler_name, self.base_scheduler_config)
        factor = info.vae_scale_factor
        set_timesteps(sched, num_inference_steps, self.device,
                      contract.image_seq_len(height // factor, width // factor, info), self.base_scheduler_config,
                      linear_sigmas=contract.linear_sigmas, shift_mu=contract.shift_mu)
        ctx = RunContext(request=request, backbone=self.backbone, scheduler=sched, prompts=prompts,
                         negative_prompts=negatives, generators=generators, control_image=control,
                         adapters=list(self.adapters), channels_last=channels_last)
        run = method_obj.start(ctx)
        noise = _initial_noise(latents, generators, batch, run.latent_shape, self.device, self.dtype)
        step_kwargs = _scheduler_step_kwargs(sched, eta, ctx.step_generator)
        text = self.encode_prompt(run.prompts, run.negative_prompts, guidance=request.guidance)

        iterator = sched.timesteps
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc=f"{method_obj.name} {height}x{width}", unit="step")
        # On CPUs the transformer blocks' feed-forward runs in token chunks that stay in cache: same
        # result bit for bit, about 12 % faster for batched 64-latent windows (docs/benchmarks.md).
        with run.patches(), tiled_decoding(self.vae, enabled=tiled), \
                feed_forward_chunking(self.unet, rows=CPU_FEED_FORWARD_ROWS, enabled=self.device.type == "cpu"):
            network = run.network  # read inside the patches: attached adapters may wrap the UNet
            if self.compiled_unet is not None and network is self.unet:
                network = self.compiled_unet
            model = GuidedModel(network, text, cfg_scale, controlnet=self.controlnet,
                                controlnet_scale=controlnet_conditioning_scale, family=contract,
                                embedded_guidance=embedded_guidance)
            state = run.init_latents(noise * initial_noise_scale(sched))
            for i, t in enumerate(iterator):
                with torch.no_grad():
                    state, output = run.denoise(model, state, t, i)
                    state = sched.step(output, t, state, **step_kwargs).prev_sample
                if callback_on_step_end is not None:
                    tensors = {"latents": state} if "latents" in callback_on_step_end_tensor_inputs else {}
                    returned = callback_on_step_end(self, i, t, tensors) or {}
                    state = returned.get("latents", state)
            check_finite(state, "the latents", hint=generation_hint(self, guidance_scale))  # issue 24: no NaN image
            decoded = None
            if output_type != "latent":
                with torch.no_grad():
                    decoded = run.decode(state)
                check_finite(decoded.images, "the decoded image", hint=generation_hint(self, guidance_scale))
        parameters = self._parameters(
            prompts, negatives, method_obj, height, width, num_inference_steps, guidance_scale, scheduler_name,
            eta, seeds, control_image, controlnet_conditioning_scale, latents is not None,
        )
        if true_cfg_scale is not None:
            parameters["true_cfg_scale"] = true_cfg_scale
        parameters["preset"] = preset
        resolved = run.resolved()
        if resolved:
            parameters["resolved"] = resolved
        parameters["channels_last"] = channels_last
        parameters["offload"] = offloaded
        parameters["tiled_decode"] = tiled
        if self.compiled_unet is not None:
            parameters["compiled_unet"] = self.compiled_unet.failed is None
        if any(text.truncated):
            parameters["truncated_prompts"] = [p for p, cut in zip(run.prompts, text.truncated) if cut]
        if decoded is not None and decoded.geometry is not None:
            parameters["pano_geometry"] = decoded.geometry
        parameters["elapsed_seconds"] = round(time.perf_counter() - started, 3)
        return PanoramaOutput(
            images=None if decoded is None else _postprocess(decoded.images, output_type),
            latents=state.detach().float().cpu(), parameters=parameters,
            views=None if decoded is None or decoded.views is None else _postprocess_views(decoded.views, output_type),
        )

    def _check_memory(self, request: GenerationRequest, method_obj, allow_large: bool) -> None:
        """Refuse a run whose estimated activations (the weights are loaded already) exceed the free
        memory of the device (:func:`pano360.plan.check_plan_memory`)."""
        plan = Plan(method_obj, None, request.height, request.width, request.num_inference_steps,
                    request.guidance_scale, None, request)
        check_plan_memory(plan, self.backbone.info, str(self.device), torch.finfo(self.dtype).bits // 8, parameters=0,
                          allow_large=allow_large)

    def _parameters(self, prompts, negatives, method_obj, height, width, steps, guidance, scheduler_name, eta,
                    seeds, control_image, control_scale, custom_latents) -> dict:
        backbone = self.backbone
        flat = [p[0] if len(p) == 1 else list(p) for p in prompts]
        record = {
            "prompt": flat[0] if all(p == flat[0] for p in flat) else flat,
            "negative_prompt": (negatives[0] if negatives and len(set(negatives)) == 1 else negatives),
            "method": method_obj.name,
            "method_options": method_obj.record(),
            "height": height,
            "width": width,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "scheduler": scheduler_name,
            "eta": eta,
            "seeds": seeds,
            "custom_latents": custom_latents,
            "model": backbone.source.as_dict(),
            "family": backbone.info.family,
            "prediction_type": backbone.info.prediction_type,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "loras": [dict(entry) for entry in backbone.loras],
            "embeddings": [dict(entry) for entry in backbone.embeddings],
            "adapters": [dict(entry) for entry in self.adapter_sources],
            "versions": library_versions() | {"pano360": __version__},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if backbone.denoiser_source is not None:
            record["transformer" if backbone.info.is_dit else "unet"] = backbone.denoiser_source.as_dict()
        if backbone.controlnet is not None:
            record["controlnet"] = backbone.controlnet_source.as_dict()
            record["controlnet_conditioning_scale"] = control_scale
            if isinstance(control_image, (str, os.PathLike)):
                record["control_image"] = os.fspath(control_image)
        return record


# --- helpers (module level: pure functions of their inputs) -----------------------------------

def _with_trigger(preset, prompt):
    """The prompt(s) with the preset's trigger phrase (per prompt, per view prompt)."""
    if isinstance(prompt, str):
        return preset.prompt(prompt)
    return [_with_trigger(preset, p) if isinstance(p, (str, list, tuple)) else p for p in prompt]


def _expand_negative(negative_prompt, num_prompts: int, per_prompt: int) -> list[str] | None:
    if negative_prompt is None:
        return None
    negatives = [negative_prompt] * num_prompts if isinstance(negative_prompt, str) else list(negative_prompt)
    if len(negatives) != num_prompts:
        raise InvalidInputError(f"{len(negatives)} negative prompts for {num_prompts} prompts; give one per prompt")
    return [n for n in negatives for _ in range(per_prompt)]


def _make_generators(seed, generator, batch: int) -> tuple[list[torch.Generator], list[int]]:
    """One generator per image and the seeds they start from."""
    if generator is not None:
        generators = list(generator) if isinstance(generator, (list, tuple)) else [generator]
        if len(generators) == 1 and batch > 1:
            raise InvalidInputError(f"give {batch} generators (one per image) or use seed= instead")
        if len(generators) != batch:
            raise InvalidInputError(f"{len(generators)} generators for {batch} images; give one per image")
        return generators, [g.initial_seed() for g in generators]
    if seed is None:
        base = secrets.randbelow(2**31)
        seeds = [base + i for i in range(batch)]
    elif isinstance(seed, int):
        seeds = [seed + i for i in range(batch)]
    else:
        seeds = [int(s) for s in seed]
        if len(seeds) != batch:
            raise InvalidInputError(f"{len(seeds)} seeds for {batch} images; give one per image")
    return [torch.Generator("cpu").manual_seed(s) for s in seeds], seeds


def _initial_noise(latents, generators, batch, shape, device, dtype) -> torch.Tensor:
    """Unit Gaussian noise [B, *shape] (shape: the method's latent shape per image); drawn on the
    generator's device (CPU by default, so a seed gives the same panorama on every machine)."""
    if latents is not None:
        latents = torch.as_tensor(latents)
        if latents.ndim == len(shape):
            latents = latents[None]
        if tuple(latents.shape[1:]) != shape or latents.shape[0] not in (1, batch):
            raise InvalidInputError(
                f"latents have shape {tuple(latents.shape)}, expected ({batch}, {', '.join(map(str, shape))}) "
                "for this method and size (latent units = pixels / the VAE's factor, 8 for the released models)"
            )
        return latents.expand(batch, *shape).to(device=device, dtype=dtype)
    noise = [torch.randn(shape, generator=g, device=g.device, dtype=torch.float32) for g in generators]
    return torch.stack(noise).to(device=device, dtype=dtype)


def _prepare_control_image(image, batch: int, height: int, width: int, device, dtype) -> torch.Tensor | None:
    """Control image → [B, 3, H, W] in [0, 1], resized (bicubic) to the panorama size in pixels."""
    if image is None:
        return None
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        from .io.images import read_image

        image = read_image(image, "control image").convert("RGB")  # truncated or corrupt files: one line
    if isinstance(image, Image.Image):
        if image.size != (width, height):
            image = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
        image = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    elif isinstance(image, np.ndarray):
        array = image.astype(np.float32)
        if array.ndim == 2:
            array = array[..., None]
        if array.max() > 1.0:
            array = array / 255.0
        image = torch.from_numpy(array).permute(2, 0, 1)
    image = torch.as_tensor(image, dtype=torch.float32)
    if image.ndim == 3:
        image = image[None]
    if image.shape[1] == 1:
        image = image.expand(-1, 3, -1, -1)
    if image.shape[-2:] != (height, width):
        image = torch.nn.functional.interpolate(image, size=(height, width), mode="bicubic", align_corners=False)
    if image.shape[0] not in (1, batch):
        raise InvalidInputError(f"{image.shape[0]} control images for {batch} panoramas; give 1 or {batch}")
    return image.clamp(0, 1).expand(batch, -1, -1, -1).to(device=device, dtype=dtype)


def _scheduler_step_kwargs(scheduler, eta: float, generator) -> dict:
    accepted = set(inspect.signature(scheduler.step).parameters)
    kwargs = {}
    if "eta" in accepted:
        kwargs["eta"] = eta
    if "generator" in accepted:
        kwargs["generator"] = generator
    return kwargs


def _postprocess(images: torch.Tensor | None, output_type: str):
    if images is None:
        return None
    images = (images.float() / 2 + 0.5).clamp(0, 1)
    if output_type == "pt":
        return images.cpu()
    array = images.permute(0, 2, 3, 1).cpu().numpy()
    if output_type == "np":
        return array
    from PIL import Image

    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]


def _postprocess_views(views: torch.Tensor, output_type: str):
    """[B, V, 3, h, w] in [-1, 1] → per image, the V views in the output type (latent: None)."""
    if output_type == "latent":
        return None
    processed = [_postprocess(v, output_type) for v in views]
    return torch.stack(processed) if output_type == "pt" else (np.stack(processed) if output_type == "np" else processed)
