"""The adapter trainer: 🤗 accelerate (one GPU, DDP over many, CPU processes with gloo), frozen base.

One optimizer step (``batch_size × processes × accumulation`` panoramas, see
:mod:`pano360.training.sampler`)::

    for each micro-batch:   latents x0 (cached), text c, per-sample t ~ U{0..T-1} and ε ~ N(0, I)
        x_t  = add_noise(x0, ε, t)                          # √ᾱ_t·x0 + √(1−ᾱ_t)·ε
        out  = predict_noise(network, x_t, t, c, ...)       # the same call sampling makes
        loss = mean_b w_b · ‖out − target_b‖² / (C·h·w)    # target: ε, v or x0; w_b: Min-SNR or 1
             + adapter.auxiliary_loss()
        backward (no gradient sync until the last micro-batch)
    clip ‖g‖ to max_grad_norm, AdamW step, LR schedule step

Transformer backbones (FLUX.1, SD3.x, Qwen-Image) train with flow matching through the same loop:
σ per sample from the weighting scheme (:mod:`pano360.training.flow`), x_t = (1 − σ)·x0 + σ·ε, target
ε − x0, loss weighted per scheme; the model call is the family's (packing, position ids, timestep
scale, FLUX's embedded guidance), with the transformer's seam (``--seam``) active, so a padded seam's
prediction is cropped before the loss. DiT360's yaw and cube losses (:mod:`pano360.training.pano_losses`)
are added after ``cube_loss_start_step`` optimizer steps.

The base model (UNet or transformer, VAE, text encoders) has ``requires_grad`` off, so autograd allocates no
gradient for it; only ``adapter.trainable_parameters()`` are optimised. Each sample's t and ε come from
a generator keyed by its position, so resume is exact and DDP matches one process with the total batch.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.guided import predict_noise
from ..backbones.parameterization import add_noise, snr, training_target
from ..errors import InvalidInputError
from .augment import STREAM_NOISE, AugmentConfig, sample_generator

STREAM_YAW = 3  # the yaw loss's angle per sample (a stream of its own: adding it changes no other draw)
from .config import TrainingConfig
from .sampler import micro_batch_positions

LOG_NAME = "log.jsonl"
CONFIG_NAME = "training_config.json"


class TrainingNetwork(nn.Module):
    """``network`` (the UNet with the adapter inside, or the adapter's wrapper around it) called through
    :func:`predict_noise`; holding the adapter too makes its parameters the module's trainable ones.

    ``family``: the backbone's contract for transformers (its call packs tokens, sets position ids and
    the timestep scale), None for the UNet call; ``embedded_guidance``: FLUX.1-dev's guidance input.
    """

    def __init__(self, network: nn.Module, adapter: nn.Module, family=None, embedded_guidance: float | None = None):
        super().__init__()
        self.network = network
        self.adapter = adapter
        self.family = family
        self.embedded_guidance = embedded_guidance

    def forward(self, latents, t, embeds, pooled=None, size_px=None, inputs=None, mask=None):
        inputs = dict(inputs or {})
        if self.family is not None:
            inputs.update(mask=mask, embedded_guidance=self.embedded_guidance)
            return predict_noise(self.network, latents, t, embeds, pooled, size_px, family=self.family, **inputs)
        return predict_noise(self.network, latents, t, embeds, pooled, size_px, **inputs)


@dataclass
class FlowSetup:
    """What a flow-matching step needs besides the config: the σ table (with the resolution shift) and
    the latent-column multiple of a whole token (the yaw loss rolls by whole tokens)."""

    timesteps: object  # pano360.training.flow.FlowTimesteps
    roll_multiple: int = 1


@dataclass
class TrainingResult:
    output: Path
    steps: int
    losses: list[float] = field(default_factory=list)  # per optimizer step (this run)
    adapter: object = None


def draw_noise(seed: int, positions: list[int], shape: tuple[int, ...], num_timesteps: int,
               noise_offset: float = 0.0, draw_u=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ε [B, *shape] and t [B] (int64), each a pure function of (seed, position).

    ``draw_u(generator) -> float`` (flow matching): each sample draws u ∈ [0, 1) instead of an integer
    timestep, and t [B] is returned as u (float64; the caller maps u to σ)."""
    noises, steps = [], []
    for position in positions:
        generator = sample_generator(seed, position, STREAM_NOISE)
        if draw_u is not None:
            steps.append(torch.tensor([draw_u(generator)], dtype=torch.float64))
        else:
            steps.append(torch.randint(0, num_timesteps, (1,), generator=generator))
        noise = torch.randn(shape, generator=generator)
        if noise_offset:
            channels = shape[-3]
            offset = torch.randn((*shape[:-2], 1, 1), generator=generator) if channels else 0.0
            noise = noise + noise_offset * offset
        noises.append(noise)
    return torch.stack(noises), torch.cat(steps)


def min_snr_weights(scheduler, t: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-γ loss weights [B] (Hang et al. 2023, as in diffusers' scripts): min(SNR, γ)/SNR for ε,
    min(SNR, γ)/(SNR + 1) for v."""
    ratio = snr(scheduler, t)
    clipped = torch.clamp(ratio, max=gamma)
    if prediction_type == "v_prediction":
        return clipped / (ratio + 1)
    if prediction_type == "epsilon":
        return clipped / ratio
    return clipped  # x0-prediction: weight min(SNR, γ)


def training_loss(model, adapter, batch, scheduler, config: TrainingConfig, weight_dtype,
                  flow: FlowSetup | None = None, step: int = 0, pano_loss_start: int = 0,
                  yaw_multiple: int | None = None) -> torch.Tensor:
    """The loss of one micro-batch (see the module docstring); gradients flow to the adapter only.

    ``flow``: set for flow-matching models (σ sampling and loss weights of ``config.weighting_scheme``);
    ``step``: optimizer steps done so far (the yaw and cube losses count from ``pano_loss_start``, see
    :meth:`TrainingConfig.pano_loss_start`); ``yaw_multiple``: latent columns the yaw loss's rolls are a
    multiple of (a DiT's patch, a UNet's total downsampling; default the flow setup's or 1).
    """
    from . import flow as flow_math

    example = adapter.training_example(batch)
    latents = example.latents.float()
    count = latents.shape[0]
    scheme = getattr(config, "weighting_scheme", None) or "none"  # (callers may pass a partial config)
    yaw_weight, cube_weight = getattr(config, "yaw_loss", 0.0), getattr(config, "cube_loss", 0.0)
    draw_u = None
    if flow is not None:
        def draw_u(generator):
            return flow_math.draw_u(scheme, generator, config.logit_mean, config.logit_std, config.mode_scale)
    noise, t = draw_noise(config.seed, batch.positions, tuple(latents.shape[1:]),
                          scheduler.config.num_train_timesteps, config.noise_offset, draw_u=draw_u)
    if flow is not None:
        t = flow.timesteps(t.tolist())  # float timesteps σ·T
    noise, t = noise.to(latents.device), t.to(latents.device)
    noisy = add_noise(scheduler, latents, noise, t)
    target = training_target(scheduler, latents, noise, t)
    views = latents.shape[1] if latents.ndim == 5 else 1
    flat = lambda x: None if x is None else x.reshape(-1, *x.shape[2:]) if latents.ndim == 5 else x
    t_flat = t.repeat_interleave(views)
    embeds, pooled = flat(example.embeds), flat(example.pooled)
    mask = getattr(batch, "mask", None) if latents.ndim == 4 else None
    cast = lambda x: None if x is None else x.to(weight_dtype)

    def network(x):
        return model(x.to(weight_dtype), t_flat, embeds.to(weight_dtype), cast(pooled), example.size_px,
                     example.inputs, mask=mask)

    x_t = flat(noisy)
    prediction = network(x_t)
    per_sample = F.mse_loss(prediction.float(), flat(target).float(), reduction="none")
    per_sample = per_sample.reshape(count, -1).mean(dim=1)
    pano_losses = (yaw_weight or cube_weight) and step >= pano_loss_start
    if pano_losses:
        from .pano_losses import YAW_ANGLES_DEG, cube_loss, turned_pair_loss, yaw_columns, yaw_loss

        if cube_weight:
            sigma2 = (t.float() / scheduler.config.num_train_timesteps) ** 2 if flow is not None else None
            cube = cube_loss(prediction, flat(target))
            if config.cube_loss_space == "x0" and sigma2 is not None:
                cube = cube * sigma2
            per_sample = per_sample + cube_weight * cube
        if yaw_weight:
            multiple = yaw_multiple or (flow.roll_multiple if flow is not None else 1)
            angles = []
            for position in batch.positions:  # the angle: a pure function of (seed, position)
                generator = sample_generator(config.seed, position, STREAM_YAW)
                angles.append(YAW_ANGLES_DEG[int(torch.randint(len(YAW_ANGLES_DEG), (1,), generator=generator))])
            if getattr(config, "yaw_loss_form", "equivariance") == "dit360-code":
                yaw = turned_pair_loss(prediction, flat(target), angles)
            else:
                yaw = yaw_loss(network, x_t, prediction, [yaw_columns(a, x_t.shape[-1], multiple) for a in angles])
            per_sample = per_sample + yaw_weight * yaw
    if config.snr_gamma:
        per_sample = per_sample * min_snr_weights(scheduler, t, config.snr_gamma,
                                                  scheduler.config.prediction_type)
    if flow is not None:
        per_sample = per_sample * flow_math.loss_weighting(scheme, t.float() / scheduler.config.num_train_timesteps)
    loss = per_sample.mean()
    extra = adapter.auxiliary_loss()
    return loss if extra is None else loss + extra


def _weight_dtype(mixed_precision: str) -> torch.dtype:
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed_precision]


def check_output(config: TrainingConfig) -> None:
    """OUT must be writable, and a finished or started run there needs --resume or --overwrite."""
    from .checkpoints import CHECKPOINTS

    output = Path(os.path.expanduser(config.output))
    # Under `accelerate launch` only the first process judges the folder (the others may see it created).
    first = os.environ.get("RANK", "0") == "0"
    existing = first and output.is_dir() and any(output.iterdir())
    if output.exists() and not output.is_dir():
        raise InvalidInputError(f"output {config.output!r} is a file; give a folder for the adapter")
    if existing and config.resume is None and not config.overwrite:
        raise InvalidInputError(f"output folder {config.output!r} is not empty; pass --resume latest to continue "
                                "its run, --overwrite to start again there, or choose another -o")
    probe_root = output if output.is_dir() else next((p for p in output.parents if p.exists()), Path("."))
    if not probe_root.is_dir():
        raise InvalidInputError(f"cannot create output folder {config.output!r}: {probe_root} is a file; choose "
                                "another -o")
    if not os.access(probe_root, os.W_OK):
        raise InvalidInputError(f"cannot write to {probe_root} (for output {config.output!r}); choose a writable -o")
    if first and config.overwrite and config.resume is None and output.is_dir():
        import shutil

        shutil.rmtree(output / CHECKPOINTS, ignore_errors=True)
        for name in (LOG_NAME,):
            (output / name).unlink(missing_ok=True)


TRAINS_TRANSFORMERS = True
"""The trainer trains adapters on FLUX.1, SD3 and Qwen-Image (flow matching) as well as on UNets."""


def train(config: TrainingConfig, dataset=None, progress_callback=None) -> TrainingResult:
    """Run a training job described by ``config`` (already checked by the CLI or :meth:`TrainingConfig.check`).

    ``dataset``: an opened :class:`~pano360.training.datasets.PanoramaDataset` (default: open
    ``config.data``). Returns the output folder, which holds the final adapter.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from ..adapters import adapter_class
    from ..backbones.loading import load_backbone
    from ..backbones.wrap import wraparound
    from . import checkpoints as ckpt
    from .cache import BatchBuilder
    from .datasets import open_dataset
    from .report import write_model_card, write_report

    config.check()
    adapter_cls = adapter_class(config.adapter)
    adapter_cls.check_training_options(config.adapter_options)
    if dataset is None:
        dataset = open_dataset(config.data, caption_column=config.caption_column, image_column=config.image_column,
                               skip_invalid=config.skip_invalid, default_caption=config.default_caption,
                               license=config.data_license)
    output = Path(os.path.expanduser(config.output))
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # a second run in this process may use another precision (the process
    # group, held by PartialState, is kept)
    accelerator = Accelerator(mixed_precision=config.mixed_precision,
                              log_with=None if config.report_to == "none" else config.report_to,
                              project_dir=str(output), cpu=config.cpu)
    processes, rank, is_main = accelerator.num_processes, accelerator.process_index, accelerator.is_main_process
    if config.batch_size * processes > len(dataset):
        raise InvalidInputError(f"batch of {config.batch_size} x {processes} process(es) is larger than the "
                                f"{len(dataset)} panoramas; lower --batch-size or add data")
    if is_main:
        output.mkdir(parents=True, exist_ok=True)
    if config.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
    set_seed(config.seed)

    # --- model: frozen base, adapter attached ----------------------------------------------------
    weight_dtype = _weight_dtype(config.mixed_precision)
    backbone = load_backbone(config.model, torch_dtype=weight_dtype, device=accelerator.device,
                             prediction_type=config.prediction_type, quantize=config.quantize)
    pipe = backbone.pipe
    family = backbone.contract
    is_dit = family.kind == "dit"
    denoiser = backbone.denoiser
    config.check_family(backbone.info.family, family.kind, family.schedule, family.seam_schemes,
                        bool(is_dit and denoiser.config.get("guidance_embeds", False)))
    for module in _frozen_modules(pipe):
        module.requires_grad_(False)
        module.eval()
    if config.dtype_vae_fp32:
        pipe.vae.to(torch.float32)
    unet = denoiser
    patch = int(backbone.info.patch_size or 1) if is_dit else 1
    # the yaw loss rolls x_t by what the network is equivariant to: whole tokens, or the UNet's downsampling
    yaw_multiple = patch if is_dit else int(backbone.info.unet_downsampling)
    downsampling = backbone.info.unet_downsampling * backbone.info.vae_scale_factor
    if config.resolution % downsampling:
        raise InvalidInputError(f"--resolution must be a multiple of {downsampling} for this model, got "
                                f"{config.resolution}")
    flow = None
    if family.schedule == "flow":
        from .flow import FlowTimesteps

        noise_scheduler = pipe.scheduler
        mu = None
        if config.resolution_shift and noise_scheduler.config.get("use_dynamic_shifting", False):
            h = config.resolution // backbone.info.vae_scale_factor
            mu = family.shift_mu(family.image_seq_len(h, 2 * h, backbone.info), 1, noise_scheduler.config)
        flow = FlowSetup(FlowTimesteps(noise_scheduler, mu), roll_multiple=patch)
    else:
        from diffusers import DDPMScheduler

        noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    adapter = adapter_cls.for_training(unet, config.adapter_options, config.seed).to(accelerator.device)
    adapter.train()
    network = adapter.attach(unet)
    if config.gradient_checkpointing:
        if is_dit:
            unet.enable_gradient_checkpointing(seam_aware_checkpointing(unet))
        else:
            unet.enable_gradient_checkpointing()
    embedded_guidance = None
    if is_dit and denoiser.config.get("guidance_embeds", False):
        embedded_guidance = 1.0 if config.guidance_scale is None else float(config.guidance_scale)
    model = TrainingNetwork(network, adapter, family if is_dit else None, embedded_guidance)
    parameters = adapter.trainable_parameters()
    learning_rate = config.learning_rate
    if config.scale_lr:
        learning_rate *= config.batch_size * processes * config.gradient_accumulation_steps
    optimizer = _optimizer_class(config.optimizer)(parameters, lr=learning_rate,
                                                   betas=(config.adam_beta1, config.adam_beta2),
                                                   weight_decay=config.adam_weight_decay, eps=config.adam_epsilon)
    from diffusers.optimization import get_scheduler

    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer, num_warmup_steps=config.warmup_steps,
                                 num_training_steps=config.steps, num_cycles=config.lr_num_cycles,
                                 power=config.lr_power)
    model, optimizer = accelerator.prepare(model, optimizer)

    # --- data -------------------------------------------------------------------------------------
    # yaw rolls by whole tokens (a DiT's patch: 2 latents = 16 px for FLUX), whole latents for a UNet
    augment = AugmentConfig(config.random_roll, config.random_flip, config.caption_dropout,
                            roll_step_px=backbone.info.vae_scale_factor * patch)
    builder = BatchBuilder(dataset, pipe, config.resolution, augment, config.seed, accelerator.device,
                           cache=config.cache, views=adapter.training_views,
                           progress=config.progress and is_main, vae=backbone.vae)
    if config.cache and not config.validate_every and adapter.training_views is None:
        _unload_text_encoders(pipe)  # every caption is cached: the text encoders are not needed again

    # --- resume -----------------------------------------------------------------------------------
    step, samples_seen, loss_ema = 0, 0, None
    resume_from = ckpt.resolve_resume(config.resume, output)
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, adapter, rank)
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
        step, samples_seen, loss_ema = state["step"], state["samples_seen"], state.get("loss_ema")
    if is_main:
        _truncate_log(output / LOG_NAME, step)
        _write_json(output / CONFIG_NAME, {"config": config.to_dict(), "data": dataset.summary(),
                                           "model_family": backbone.info.family, "processes": processes})
    if config.report_to != "none":
        accelerator.init_trackers("pano360-train", config=_flat_config(config))

    metadata = {"base_model": config.model, "family": backbone.info.family, "resolution": config.resolution,
                "prediction_type": noise_scheduler.config.get("prediction_type") or backbone.info.prediction_type,
                "data": dataset.summary()}

    def save_checkpoint_now():
        state = {"step": step, "samples_seen": samples_seen, "loss_ema": loss_ema,
                 "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                 "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None}
        ckpt.save_checkpoint(output, step, adapter, state, metadata | {"step": step}, config.checkpoints_total_limit,
                             is_main, rank, accelerator.wait_for_everyone)

    # --- loop -------------------------------------------------------------------------------------
    per_step = config.batch_size * processes * config.gradient_accumulation_steps
    pano_loss_start = config.pano_loss_start(len(dataset), per_step)
    losses: list[float] = []
    bar = None
    if is_main and config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=step, desc=f"train {config.adapter}", unit="step", dynamic_ncols=True)
    started = time.perf_counter()
    if is_dit:
        scheme = "none" if not config.wrap_unet else (config.seam or "exact")
        wrap = family.seam(backbone, network=True, vae=False, scheme=scheme)
    else:
        wrap = wraparound(unet) if config.wrap_unet else contextlib.nullcontext()
    with wrap:
        model.train()
        while step < config.steps:
            accumulated = torch.zeros((), device=accelerator.device)
            for micro in range(config.gradient_accumulation_steps):
                positions = micro_batch_positions(samples_seen, micro, rank, processes, config.batch_size)
                batch = builder.build(positions)
                last = micro == config.gradient_accumulation_steps - 1
                sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
                with sync:
                    loss = training_loss(model, adapter, batch, noise_scheduler, config, weight_dtype, flow, step,
                                         pano_loss_start, yaw_multiple)
                    accelerator.backward(loss / config.gradient_accumulation_steps)
                accumulated += loss.detach() / config.gradient_accumulation_steps
            if config.max_grad_norm:
                grad_norm = accelerator.clip_grad_norm_(parameters, config.max_grad_norm)
            else:
                grads = [p.grad.detach().float().norm() for p in parameters if p.grad is not None]
                grad_norm = torch.stack(grads).norm() if grads else torch.zeros(())
            step_loss = float(accelerator.reduce(accumulated, reduction="mean"))
            _stop_if_non_finite(step_loss, step + 1, output, "loss")  # before the step: weights stay good
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            samples_seen += per_step
            _stop_if_non_finite(_non_finite_parameter(adapter), step, output, "weights")
            losses.append(step_loss)
            loss_ema = step_loss if loss_ema is None else 0.95 * loss_ema + 0.05 * step_loss
            lr = lr_scheduler.get_last_lr()[0]
            if is_main and (step % config.log_every == 0 or step == config.steps):
                record = {"step": step, "loss": step_loss, "loss_smoothed": loss_ema, "lr": lr,
                          "grad_norm": float(grad_norm), "samples": samples_seen,
                          "elapsed_s": round(time.perf_counter() - started, 3)}
                _append_jsonl(output / LOG_NAME, record)
                if config.report_to != "none":
                    accelerator.log({k: record[k] for k in ("loss", "loss_smoothed", "lr", "grad_norm")}, step=step)
            if bar is not None:
                bar.set_postfix(loss=f"{loss_ema:.4f}", lr=f"{lr:.2e}", refresh=False)
                bar.update(1)
            if progress_callback is not None:
                progress_callback(step, step_loss)
            if config.validate_every and step % config.validate_every == 0:
                _validate(accelerator, pipe, adapter, config, step, output, model)
            if config.checkpoint_every and step % config.checkpoint_every == 0:
                save_checkpoint_now()
    if bar is not None:
        bar.close()

    # --- final adapter ------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    if is_main:
        final_metadata = metadata | {"steps": step, "samples_seen": samples_seen,
                                     "hyper_parameters": _hyper_parameters(config, processes)}
        adapter.save(output, final_metadata)
        write_model_card(output, config, dataset.summary(), final_metadata)
        write_report(output)
    accelerator.wait_for_everyone()
    if config.report_to != "none":
        accelerator.end_training()
    adapter.detach(unet)
    if config.gradient_checkpointing:
        unet.disable_gradient_checkpointing()
    return TrainingResult(output=output, steps=step, losses=losses, adapter=adapter)


def seam_aware_checkpointing(transformer: nn.Module):
    """A ``gradient_checkpointing_func`` for diffusers transformers whose blocks are recomputed in the
    backward pass with the attention function they ran with in the forward pass.

    The exact/periodic seam (:func:`pano360.backbones.token_seam.intercept_attention`) swaps the
    module-level ``dispatch_attention_fn`` of the transformer's module only while the model call runs;
    the backward pass recomputes each block after that call has returned, so the default checkpointing
    would recompute without the seam (a different graph, which torch refuses). This function captures the
    attention function at forward time and puts it back for the recomputation.
    """
    import sys

    from torch.utils.checkpoint import checkpoint

    module = sys.modules.get(type(transformer).__module__)
    has_dispatch = module is not None and hasattr(module, "dispatch_attention_fn")

    def run_checkpointed(block, *args):
        if not has_dispatch:
            return checkpoint(block.__call__, *args, use_reentrant=False)
        captured = module.dispatch_attention_fn

        def forward(*inner):
            current = module.dispatch_attention_fn
            module.dispatch_attention_fn = captured
            try:
                return block(*inner)
            finally:
                module.dispatch_attention_fn = current

        return checkpoint(forward, *args, use_reentrant=False)

    return run_checkpointed


def _frozen_modules(pipe) -> list[nn.Module]:
    """Every model of the pipeline (denoiser, VAE, text encoders): all frozen during adapter training."""
    return [module for module in pipe.components.values() if isinstance(module, nn.Module)]


def _unload_text_encoders(pipe) -> None:
    """Drop the text encoders once every caption's embedding is cached (FLUX's T5-XXL alone is 9.5 GB
    in bf16); the pipeline keeps its tokenizers."""
    import gc

    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if getattr(pipe, name, None) is not None:
            setattr(pipe, name, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _optimizer_class(name: str):
    """AdamW, or bitsandbytes' 8-bit AdamW (one line if bitsandbytes is missing)."""
    if name != "adamw8bit":
        return torch.optim.AdamW
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise InvalidInputError("--optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes "
                                "(or use --optimizer adamw)") from None
    return bnb.optim.AdamW8bit


def _non_finite_parameter(adapter) -> str | None:
    from ..numerics import is_finite

    for name, parameter in adapter.named_parameters():
        if parameter.requires_grad and not is_finite(parameter.detach()):
            return name
    return None


def _stop_if_non_finite(value, step: int, output: Path, what: str) -> None:
    """Stop training (one line) at a non-finite loss or weight; nothing non-finite is ever saved, and the
    last good checkpoint (if any) stays in place for ``--resume``."""
    import math

    from ..numerics import NonFiniteError
    from .checkpoints import list_checkpoints

    if what == "loss" and math.isfinite(value):
        return
    if what == "weights" and value is None:
        return
    found = list_checkpoints(output)
    kept = (f"the last good checkpoint {found[-1][1]} is kept (resume from it with --resume latest)"
            if found else "no adapter was saved")
    subject = "the training loss" if what == "loss" else f"adapter weight {value}"
    raise NonFiniteError(f"{subject} became non-finite at step {step}, so training stopped; {kept}; lower "
                         "--learning-rate, set --max-grad-norm, or check --mixed-precision and the data")


def _validate(accelerator, pipe, adapter, config: TrainingConfig, step: int, output: Path, model) -> None:
    """Validation panoramas with the in-training adapter (main process), then everyone continues."""
    if accelerator.is_main_process:
        from .report import write_report
        from .validation import generate_validation

        inner = accelerator.unwrap_model(model)
        inner.eval()
        denoiser = pipe.transformer if getattr(pipe, "transformer", None) is not None else pipe.unet
        adapter.detach(denoiser)
        try:
            generate_validation(pipe, adapter, config, step, output)
        finally:
            inner.network = adapter.attach(denoiser)
            inner.train()
        write_report(output)
    accelerator.wait_for_everyone()


def _hyper_parameters(config: TrainingConfig, processes: int) -> dict:
    keys = ("steps", "batch_size", "gradient_accumulation_steps", "learning_rate", "lr_scheduler", "lr_warmup_steps",
            "mixed_precision", "gradient_checkpointing", "optimizer", "max_grad_norm", "snr_gamma", "resolution",
            "seed", "random_roll", "random_flip", "caption_dropout", "cache", "wrap_unet", "weighting_scheme",
            "logit_mean", "logit_std", "mode_scale", "guidance_scale", "seam", "yaw_loss", "cube_loss",
            "cube_loss_start_step", "cube_loss_start_epochs", "cube_loss_space", "lr_warmup_ratio", "quantize",
            "yaw_loss_form")
    values = {k: getattr(config, k) for k in keys}
    return values | {"adapter": config.adapter, "adapter_options": config.adapter_options, "processes": processes,
                     "total_batch": config.batch_size * processes * config.gradient_accumulation_steps}


def _flat_config(config: TrainingConfig) -> dict:
    flat = {}
    for key, value in config.to_dict().items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items() if isinstance(v, (int, float, str, bool))})
        elif isinstance(value, (int, float, str, bool)):
            flat[key] = value
    return flat


def _append_jsonl(path: Path, record: dict) -> None:
    from ..io.atomic import disk_full_error, is_disk_full

    line = json.dumps(record) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
    except OSError as error:
        if is_disk_full(error):
            raise disk_full_error(path, len(line), error) from None
        raise


def _truncate_log(path: Path, step: int) -> None:
    """Keep only log lines up to ``step`` (a resumed run rewrites what came after its checkpoint);
    rewritten atomically, so a full disk cannot cut the log of the run so far."""
    from ..io.atomic import atomic_write_text

    if not path.is_file():
        return
    kept = [json.dumps(r) for r in read_log(path.parent) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(line + "\n" for line in kept), overwrite=True)


def _write_json(path: Path, record: dict) -> None:
    from ..io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(record, indent=2, default=str) + "\n", overwrite=True)


def read_log(output: str | os.PathLike) -> list[dict]:
    path = Path(output) / LOG_NAME
    if not path.is_file():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            records.append(json.loads(line))
        except ValueError:
            if number == len(lines):  # the last line, cut by a crash or a full disk mid-write: dropped
                break
            raise InvalidInputError(f"{path}:{number} is not a JSON record; fix or delete that line") from None
    return records

