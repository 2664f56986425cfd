"""The training run's settings as one validated dataclass (the CLI flags map onto its fields)."""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field

from ..errors import InvalidInputError

MIXED_PRECISION = ("no", "fp16", "bf16")
OPTIMIZERS = ("adamw", "adamw8bit")
YAW_LOSS_FORMS = ("equivariance", "dit360-code")
REPORT_TO = ("none", "tensorboard", "wandb")
MAX_STEPS = 10_000_000
MAX_RESOLUTION = 4096  # panorama height; 4096 x 8192 is far beyond any released panorama model
WEIGHTING_SCHEMES = ("none", "sigma_sqrt", "logit_normal", "mode", "cosmap")
TRAINING_SEAMS = ("exact", "pad", "none")
PANO_LOSS_SPACES = ("velocity", "x0")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


@dataclass
class TrainingConfig:
    """Everything a ``pano360 train`` run needs. Sizes in pixels; steps are optimizer steps.

    ``resolution`` is the panorama height H (images are resized to H × 2H, a multiple of 8 · the UNet's
    downsampling). ``batch_size`` is per process; one optimizer step sees
    ``batch_size × processes × gradient_accumulation_steps`` panoramas. ``adapter_options`` holds the
    adapter kind's own flags (``rank`` and e.g. ``lora_targets``).
    """

    data: str
    output: str
    model: str = "stabilityai/stable-diffusion-2-base"
    adapter: str = "lora"
    adapter_options: dict = field(default_factory=lambda: {"rank": 4})
    steps: int = 1000
    batch_size: int = 1
    learning_rate: float = 1e-4
    scale_lr: bool = False
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    lr_num_cycles: int = 1
    lr_power: float = 1.0
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    optimizer: str = "adamw"
    quantize: str = "none"  # the frozen transformer base: none | fp8 | nf4 (QLoRA-style)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    snr_gamma: float | None = None
    prediction_type: str | None = None
    noise_offset: float = 0.0
    resolution: int = 512
    seed: int = 0
    random_roll: bool = True
    random_flip: bool = True
    caption_dropout: float = 0.2
    cache: bool = True
    wrap_unet: bool = True
    caption_column: str = "text"
    image_column: str = "image"
    default_caption: str | None = None
    skip_invalid: bool = False
    data_license: str | None = None
    checkpoint_every: int = 500
    checkpoints_total_limit: int | None = 3
    resume: str | None = None
    overwrite: bool = False
    validate_every: int = 0
    validation_prompts: list[str] = field(default_factory=list)
    validation_steps: int = 25
    validation_guidance: float = 7.5
    validation_seed: int = 0
    report_to: str = "none"
    log_every: int = 1
    progress: bool = True
    dtype_vae_fp32: bool = False
    allow_tf32: bool = False
    cpu: bool = False
    # --- flow matching (FLUX.1, SD3.x, Qwen-Image); None = the family's default, refused on UNets ---
    weighting_scheme: str | None = None  # timestep density / loss weight (diffusers' SD3/FLUX scripts)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    mode_scale: float = 1.29
    resolution_shift: bool = True  # FLUX/Qwen: shift σ for the training size as sampling does
    guidance_scale: float | None = None  # FLUX.1-dev's embedded guidance during training (default 1.0)
    seam: str | None = None  # transformer seam while training: exact (periodic ids) | pad | none
    # --- DiT360's panorama losses (pano360.training.pano_losses) ---
    yaw_loss: float = 0.0  # weight λ_yaw (DiT360: 0.5)
    yaw_loss_form: str = "equivariance"  # ‖f(R·x_t) − R·f(x_t)‖² | dit360-code: MSE(R·v̂, R·target)
    cube_loss: float = 0.0  # weight λ_cube (DiT360: 0.5)
    cube_loss_start_step: int = 0  # optimizer steps before the yaw and cube losses switch on
    cube_loss_start_epochs: int = 0  # or passes over the data (DiT360: 2); the later of the two wins
    cube_loss_space: str = "velocity"  # velocity (DiT360's code) | x0
    lr_warmup_ratio: float = 0.0  # warm-up as a fraction of --steps (DiT360: 0.05); the larger of the two wins

    @property
    def warmup_steps(self) -> int:
        """Linear warm-up steps: ``lr_warmup_steps`` or ``lr_warmup_ratio · steps``, whichever is larger."""
        return max(int(self.lr_warmup_steps), round(self.lr_warmup_ratio * self.steps))

    def pano_loss_start(self, panoramas: int, total_batch: int) -> int:
        """The optimizer step from which the yaw and cube losses count (``cube_loss_start_step`` or
        ``cube_loss_start_epochs`` passes over ``panoramas`` at ``total_batch`` per step)."""
        per_epoch = -(-int(panoramas) // max(1, int(total_batch)))
        return max(int(self.cube_loss_start_step), int(self.cube_loss_start_epochs) * per_epoch)

    def check_family(self, family: str, kind: str, schedule: str, seam_schemes: tuple[str, ...] = ("exact",),
                     guidance_embeds: bool = False) -> None:
        """Checks that need the model family (run once it is known: from a tiny model's name before
        loading, else right after loading, before any caching); one line naming the fix."""
        what = f"this {family} model"
        if schedule != "flow":
            if self.cube_loss and self.cube_loss_space == "x0":
                raise InvalidInputError(f"--cube-loss-space x0 is for flow-matching models; {what} predicts ε/v: "
                                        "use --cube-loss-space velocity (the prediction's own space)")
            for name in ("weighting_scheme", "guidance_scale"):
                if getattr(self, name) is not None:
                    raise InvalidInputError(f"--{name.replace('_', '-')} is for flow-matching models (FLUX, SD3, "
                                            f"Qwen-Image); {what} is trained with ε/v targets: drop it")
        else:
            if self.snr_gamma is not None:
                raise InvalidInputError(f"--snr-gamma is for ε/v models; {what} is flow matching: use "
                                        "--weighting-scheme (sigma_sqrt, logit_normal, mode, cosmap) instead")
            if self.prediction_type is not None:
                raise InvalidInputError(f"--prediction-type does not apply to {what} (it predicts a flow "
                                        "velocity): drop it")
            if self.guidance_scale is not None and not guidance_embeds:
                raise InvalidInputError(f"--guidance-scale sets FLUX.1-dev's embedded guidance; {what} has no "
                                        "guidance embedding: drop it")
        if self.seam is not None and self.seam not in seam_schemes:
            raise InvalidInputError(f"--seam {self.seam} is not available for {what}; choose one of "
                                    f"{', '.join(s for s in TRAINING_SEAMS if s in seam_schemes)}")
        if kind != "dit" and self.quantize != "none":
            raise InvalidInputError(f"--quantize stores a FLUX/SD3/Qwen-Image transformer base in fewer bits; {what} "
                                    "is a UNet: drop it (use --mixed-precision fp16/bf16)")
        if kind == "dit" and self.adapter_options.get("lora_attention", "both") != "both":
            raise InvalidInputError(f"--lora-attention self/cross is for UNets; {what} has joint attention: drop it")
        if kind == "dit" and "conv" in str(self.adapter_options.get("lora_targets", "")):
            raise InvalidInputError(f"--lora-targets conv is for UNets; {what} has no convolutions in its "
                                    "denoiser: use q, k, v, o")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> None:
        """Model-free checks of every number and choice; raises with one line naming the fix."""
        def positive(name, value, minimum=1):
            if value is None or value < minimum:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")

        import math

        for name in ("learning_rate", "lr_power", "adam_beta1", "adam_beta2", "adam_weight_decay", "adam_epsilon",
                     "max_grad_norm", "snr_gamma", "noise_offset", "caption_dropout", "validation_guidance"):
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
                raise InvalidInputError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        for name, limit in (("steps", MAX_STEPS), ("batch_size", 4096), ("gradient_accumulation_steps", 4096),
                            ("validation_steps", 1000), ("resolution", MAX_RESOLUTION)):
            if getattr(self, name) is not None and getattr(self, name) > limit:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be at most {limit}, got {getattr(self, name)}"
                                        + ("; panoramas are trained at H x 2H, so this is the height"
                                           if name == "resolution" else ""))
        if not 0.0 <= self.adam_beta1 < 1.0 or not 0.0 <= self.adam_beta2 < 1.0:
            raise InvalidInputError(f"--adam-beta1 and --adam-beta2 must be in [0, 1), got {self.adam_beta1} and "
                                    f"{self.adam_beta2}")
        if not self.adam_epsilon > 0:
            raise InvalidInputError(f"--adam-epsilon must be positive, got {self.adam_epsilon}")
        positive("steps", self.steps)
        positive("batch_size", self.batch_size)
        positive("gradient_accumulation_steps", self.gradient_accumulation_steps)
        positive("validation_steps", self.validation_steps)
        positive("log_every", self.log_every)
        if self.resolution < 16 or self.resolution % 8:
            raise InvalidInputError(f"--resolution (panorama height) must be a multiple of 8 and at least 16, "
                                    f"got {self.resolution}")
        if not self.learning_rate > 0:
            raise InvalidInputError(f"--learning-rate must be positive, got {self.learning_rate}")
        for name in ("checkpoint_every", "validate_every", "lr_warmup_steps"):
            if getattr(self, name) < 0:
                raise InvalidInputError(f"--{name.replace('_', '-')} must be 0 (off) or more, got {getattr(self, name)}")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise InvalidInputError("--checkpoints-total-limit must be at least 1 (or omitted to keep all)")
        if self.mixed_precision not in MIXED_PRECISION:
            raise InvalidInputError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            raise InvalidInputError(f"--lr-scheduler must be one of {', '.join(LR_SCHEDULERS)}")
        from ..backbones.quantize import check_quantize

        check_quantize(self.quantize)
        if self.yaw_loss_form not in YAW_LOSS_FORMS:
            raise InvalidInputError(f"--yaw-loss-form must be one of {', '.join(YAW_LOSS_FORMS)}")
        if self.optimizer not in OPTIMIZERS:
            raise InvalidInputError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}")
        if self.optimizer == "adamw8bit" and importlib.util.find_spec("bitsandbytes") is None:
            raise InvalidInputError("--optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes "
                                    "(or use --optimizer adamw)")
        if self.report_to not in REPORT_TO:
            raise InvalidInputError(f"--report-to must be one of {', '.join(REPORT_TO)}")
        if self.report_to != "none" and importlib.util.find_spec(self.report_to) is None:
            raise InvalidInputError(f"--report-to {self.report_to} needs the {self.report_to} package: "
                                    f"pip install {self.report_to} (or drop --report-to)")
        if self.snr_gamma is not None and not self.snr_gamma > 0:
            raise InvalidInputError(f"--snr-gamma must be positive, got {self.snr_gamma}")
        if self.prediction_type not in (None, "epsilon", "v_prediction"):
            raise InvalidInputError("--prediction-type must be epsilon or v_prediction")
        if not 0.0 <= self.caption_dropout <= 1.0:
            raise InvalidInputError(f"--caption-dropout must be in [0, 1], got {self.caption_dropout}")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise InvalidInputError("--max-grad-norm must be 0 (off) or positive")
        if self.weighting_scheme is not None and self.weighting_scheme not in WEIGHTING_SCHEMES:
            raise InvalidInputError(f"--weighting-scheme must be one of {', '.join(WEIGHTING_SCHEMES)}")
        if self.seam is not None and self.seam not in TRAINING_SEAMS:
            raise InvalidInputError(f"--seam must be one of {', '.join(TRAINING_SEAMS)}")
        if self.cube_loss_space not in PANO_LOSS_SPACES:
            raise InvalidInputError(f"--cube-loss-space must be one of {', '.join(PANO_LOSS_SPACES)}")
        for name in ("logit_mean", "logit_std", "mode_scale", "yaw_loss", "cube_loss", "lr_warmup_ratio"):
            if not math.isfinite(getattr(self, name)):
                raise InvalidInputError(f"--{name.replace('_', '-')} must be a finite number")
        if self.logit_std <= 0:
            raise InvalidInputError(f"--logit-std must be positive, got {self.logit_std}")
        if self.yaw_loss < 0 or self.cube_loss < 0:
            raise InvalidInputError("--yaw-loss and --cube-loss are loss weights: 0 (off) or positive")
        if self.cube_loss_start_step < 0 or self.cube_loss_start_epochs < 0:
            raise InvalidInputError("--cube-loss-start-step and --cube-loss-start-epochs must be 0 or more")
        if not 0.0 <= self.lr_warmup_ratio < 1.0:
            raise InvalidInputError(f"--lr-warmup-ratio must be in [0, 1), got {self.lr_warmup_ratio}")
        if self.guidance_scale is not None and not (math.isfinite(self.guidance_scale) and self.guidance_scale >= 0):
            raise InvalidInputError(f"--guidance-scale must be a finite number >= 0, got {self.guidance_scale}")
        if self.validate_every and not self.validation_prompts:
            raise InvalidInputError("--validate-every needs at least one --validation-prompt")
