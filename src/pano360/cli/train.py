"""``pano360 train DATA --model M --adapter KIND -o OUT``: train a panorama adapter on a folder of panoramas.

Flags follow diffusers' training scripts in the CLI's dashed style (``--learning-rate``/``--lr``,
``--max-train-steps``/``--steps``, ``--checkpointing-steps``/``--checkpoint-every``, ...). Every
argument and the data are checked before any model loads. Multi-GPU: ``accelerate launch -m pano360
train ...`` (each process gets ``--batch-size`` panoramas per micro-step).
"""

from __future__ import annotations

import argparse
import sys

ADAPTER_SPECIFIC = {"rank"}


def _adapter_classes() -> dict:
    """kind -> a class with the kind's ``add_training_arguments`` and ``training_presets``: the torch-free
    flags classes of :mod:`pano360.adapters.flags` (so ``train --help`` never imports torch), or the
    adapter class itself for a kind registered without one."""
    from ..adapters import ADAPTER_KINDS, adapter_class
    from ..adapters.flags import ADAPTER_FLAGS

    classes = {}
    for kind in ADAPTER_KINDS:
        if kind in ADAPTER_FLAGS:
            classes[kind] = ADAPTER_FLAGS[kind]
            continue
        try:
            classes[kind] = adapter_class(kind)
        except ImportError:  # a kind whose module is not importable here (missing optional dependency)
            continue
    return classes


HELP = "train a panorama adapter (LoRA, ...) on a folder of 2:1 panoramas"
"""The one line ``pano360 --help`` shows for this command."""


def _training_presets(classes: dict) -> dict[str, dict]:
    """``--preset`` name → settings, from the adapter classes' ``training_presets``."""
    return {name: preset for cls in classes.values() for name, preset in getattr(cls, "training_presets", {}).items()}


def apply_training_preset(args) -> None:
    """Fill the options still at their defaults from ``args.preset`` (an option given with another value wins)."""
    if not getattr(args, "preset", None):
        return
    preset = _training_presets(_adapter_classes())[args.preset]
    for dest, value in preset.items():
        if dest != "description" and getattr(args, dest, None) == args.train_defaults.get(dest):
            setattr(args, dest, value)


def register(subparsers) -> argparse.ArgumentParser:
    from ..defaults import DEFAULT_MODEL
    from ..training.config import (
        LR_SCHEDULERS,
        MIXED_PRECISION,
        OPTIMIZERS,
        PANO_LOSS_SPACES,
        REPORT_TO,
        TRAINING_SEAMS,
        WEIGHTING_SCHEMES,
        YAW_LOSS_FORMS,
    )
    from .main import HelpFormatter

    classes = _adapter_classes()
    parser = subparsers.add_parser(
        "train",
        help=HELP,
        description=(
            "Train a panorama adapter on equirectangular images with captions (.txt beside each image, or\n"
            "metadata.jsonl with file_name + text), a Matterport3D skybox tree, or hf:NAME. Images are resized\n"
            "to H x 2H (never cropped), rolled in yaw and mirrored at random; latents and text embeddings are\n"
            "cached. The result folder loads with 'pano360 generate --lora OUT' and diffusers' load_lora_weights.\n\n"
            "examples:\n"
            "  pano360 train panos/ --model stabilityai/stable-diffusion-2-base -o my-lora --steps 2000 \\\n"
            "      --mixed-precision bf16 --gradient-checkpointing --validation-prompt \"a beach at dusk\"\n"
            "  accelerate launch --multi_gpu -m pano360 train panos/ -o my-lora      # every GPU\n"
            "  pano360 train panos/ --model tiny -o /tmp/lora --steps 20 --resolution 32   # offline smoke run"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("data", help="folder of panoramas (recursive), a Matterport3D skybox folder, or "
                        "hf:NAME[:split] (a Hugging Face dataset)")
    parser.add_argument("-o", "--output", "--output-dir", dest="output", required=True,
                        help="folder for the adapter, checkpoints, log.jsonl, report.html")
    model = parser.add_argument_group("model and adapter")
    model.add_argument("--model", "--pretrained-model-name-or-path", dest="model", default=DEFAULT_MODEL,
                       help="base model: Hub id, diffusers folder, .safetensors file, or tiny / tiny-sd2 / tiny-sdxl")
    model.add_argument("--adapter", default="lora", choices=sorted(classes), help="adapter kind to train")
    presets = _training_presets(classes)
    model.add_argument("--preset", default=None, choices=sorted(presets) or None,
                       help="a reference's training settings for the options you leave at their defaults: "
                            + "; ".join(f"{name} = {p['description']}" for name, p in sorted(presets.items()))
                       .replace("%", "%%"))
    model.add_argument("--rank", type=int, default=4, help="adapter rank (LoRA inner width)")
    model.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default=None,
                       help="train for this target instead of the model's own")
    for kind, cls in sorted(classes.items()):
        group = parser.add_argument_group(f"--adapter {kind}")
        cls.add_training_arguments(group)
    data = parser.add_argument_group("data")
    data.add_argument("--resolution", type=int, default=512, help="panorama height H in pixels (images become H x 2H)")
    data.add_argument("--caption-column", default="text", help="caption key in metadata.jsonl / the HF dataset")
    data.add_argument("--image-column", default="image", help="image column of a HF dataset")
    data.add_argument("--default-caption", default=None, metavar="TEXT",
                      help="caption for images that have none (default: such images are an error)")
    data.add_argument("--skip-invalid", action="store_true",
                      help="leave out non-2:1 or unreadable images (counted) instead of stopping")
    data.add_argument("--caption-dropout", type=float, default=0.2,
                      help="probability of training a sample with the empty prompt (for guidance)")
    data.add_argument("--no-random-roll", dest="random_roll", action="store_false",
                      help="do not roll panoramas in yaw at random")
    data.add_argument("--no-random-flip", dest="random_flip", action="store_false",
                      help="do not mirror panoramas at random")
    data.add_argument("--no-cache", dest="cache", action="store_false",
                      help="encode images and captions every step instead of once (slower, same result)")
    data.add_argument("--no-wrap", dest="wrap_unet", action="store_false",
                      help="train without wraparound padding in the UNet (default: wrapped, as circular sampling)")
    data.add_argument("--data-license", default=None, metavar="TEXT",
                      help="licence of the training data, written to the model card (default: from a LICENSE file)")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--steps", "--max-train-steps", dest="steps", type=int, default=1000, help="optimizer steps")
    opt.add_argument("--batch-size", "--train-batch-size", dest="batch_size", type=int, default=1,
                     help="panoramas per process per micro-step")
    opt.add_argument("--gradient-accumulation-steps", type=int, default=1, help="micro-steps per optimizer step")
    opt.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float, default=1e-4, help="learning rate")
    opt.add_argument("--scale-lr", action="store_true", help="multiply the LR by the total batch size")
    opt.add_argument("--lr-scheduler", default="constant", choices=LR_SCHEDULERS, help="LR schedule (diffusers')")
    opt.add_argument("--lr-warmup-steps", type=int, default=0, help="linear warm-up steps")
    opt.add_argument("--lr-num-cycles", type=int, default=1, help="cycles of cosine_with_restarts")
    opt.add_argument("--lr-power", type=float, default=1.0, help="power of the polynomial schedule")
    opt.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS,
                     help="adamw, or adamw8bit (bitsandbytes' 8-bit AdamW)")
    opt.add_argument("--use-8bit-adam", dest="optimizer", action="store_const", const="adamw8bit",
                     help="same as --optimizer adamw8bit")
    opt.add_argument("--adam-beta1", type=float, default=0.9)
    opt.add_argument("--adam-beta2", type=float, default=0.999)
    opt.add_argument("--adam-weight-decay", type=float, default=1e-2)
    opt.add_argument("--adam-epsilon", type=float, default=1e-8)
    opt.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0 = off)")
    opt.add_argument("--snr-gamma", type=float, default=None, help="Min-SNR weighting gamma (5 is common; off by default)")
    opt.add_argument("--noise-offset", type=float, default=0.0, help="noise offset (per-channel constant added to noise)")
    opt.add_argument("--seed", type=int, default=0, help="seed of data order, augmentation, noise and adapter init")
    opt.add_argument("--lr-warmup-ratio", type=float, default=0.0,
                     help="warm-up as a fraction of --steps (the larger of this and --lr-warmup-steps)")
    fm = parser.add_argument_group("flow matching (FLUX.1, SD3.x, Qwen-Image; refused for UNet models)")
    fm.add_argument("--weighting-scheme", default=None, choices=WEIGHTING_SCHEMES,
                    help="timestep density and loss weight, as diffusers' SD3/FLUX scripts (default: none = "
                         "uniform σ, weight 1)")
    fm.add_argument("--logit-mean", type=float, default=0.0, help="mean of the logit_normal density")
    fm.add_argument("--logit-std", type=float, default=1.0, help="std of the logit_normal density")
    fm.add_argument("--mode-scale", type=float, default=1.29, help="scale of the mode density")
    fm.add_argument("--no-resolution-shift", dest="resolution_shift", action="store_false",
                    help="FLUX/Qwen-Image: sample σ without the resolution-dependent shift sampling uses")
    fm.add_argument("--guidance-scale", type=float, default=None,
                    help="FLUX.1-dev's embedded guidance value during training (default 1.0, as DiT360)")
    fm.add_argument("--seam", default=None, choices=TRAINING_SEAMS,
                    help="the transformer's seam while training: exact (periodic position ids, default), pad "
                         "(DiT360: one token column copied a side, cropped before the loss) or none")
    pl = parser.add_argument_group("panorama losses (DiT360)")
    pl.add_argument("--yaw-loss", type=float, default=0.0, metavar="LAMBDA",
                    help="weight of the yaw (rotation-consistency) loss; DiT360: 0.5")
    pl.add_argument("--yaw-loss-form", default="equivariance", choices=YAW_LOSS_FORMS,
                    help="equivariance: ||f(R x_t) - R f(x_t)||^2, zero for a roll-equivariant network (default); "
                         "dit360-code: MSE of prediction and target turned together, as DiT360's code does "
                         "(docs/training.md)")
    pl.add_argument("--cube-loss", type=float, default=0.0, metavar="LAMBDA",
                    help="weight of the cube-face MSE; DiT360: 0.5")
    pl.add_argument("--cube-loss-start-step", type=int, default=0,
                    help="optimizer steps before the yaw and cube losses switch on")
    pl.add_argument("--cube-loss-start-epochs", type=int, default=0,
                    help="or passes over the data (DiT360: 2); the later wins")
    pl.add_argument("--cube-loss-space", default="velocity", choices=PANO_LOSS_SPACES,
                    help="cube faces of the velocity (DiT360's code) or of x0 (= velocity loss x sigma^2)")
    mem = parser.add_argument_group("precision and memory")
    mem.add_argument("--mixed-precision", default="no", choices=MIXED_PRECISION,
                     help="no (fp32), fp16 or bf16: frozen weights in that dtype, adapter in fp32, autocast")
    mem.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (less memory)")
    mem.add_argument("--quantize", default="none", choices=["none", "fp8", "nf4"],
                     help="FLUX/SD3/Qwen-Image: keep the frozen transformer in fewer bits while the adapter trains "
                          "in fp32: fp8 (float8 weights, any device) or nf4 (QLoRA: bitsandbytes 4-bit NormalFloat, "
                          "double quantization). FLUX.1-dev at 1024x2048 with --gradient-checkpointing: about 19.6 GiB "
                          "(fp8) or 11.2 GiB (nf4) instead of 27.5 GiB (docs/benchmarks.md)")
    mem.add_argument("--allow-tf32", action="store_true", help="TF32 matmuls on Ampere+ GPUs")
    mem.add_argument("--cpu", action="store_true",
                     help="train on the CPU even if a GPU is present; with 'accelerate launch --multi_gpu "
                          "--num_processes N' this runs N CPU processes over gloo")
    ck = parser.add_argument_group("checkpoints")
    ck.add_argument("--checkpoint-every", "--checkpointing-steps", dest="checkpoint_every", type=int, default=500,
                    help="save a resumable checkpoint every N steps (0 = only the final adapter)")
    ck.add_argument("--checkpoints-total-limit", type=int, default=3, help="keep the last K checkpoints")
    ck.add_argument("--resume", "--resume-from-checkpoint", dest="resume", default=None, metavar="latest|PATH",
                    help="continue from the newest checkpoint in OUT (latest) or a checkpoint folder")
    ck.add_argument("--overwrite", action="store_true", help="start again in a non-empty OUT (deletes its checkpoints)")
    val = parser.add_argument_group("validation and logging")
    val.add_argument("--validation-prompt", dest="validation_prompts", action="append", default=[], metavar="PROMPT",
                     help="prompt for validation panoramas; repeat for several")
    val.add_argument("--validate-every", dest="validate_every", type=int, default=0,
                     help="generate validation panoramas every N steps (0 = off)")
    val.add_argument("--validation-inference-steps", dest="validation_steps", type=int, default=25,
                     help="denoising steps of the validation panoramas")
    val.add_argument("--validation-guidance", type=float, default=7.5, help="guidance of validation panoramas")
    val.add_argument("--validation-seed", type=int, default=0, help="seed of validation prompt k is this + k")
    val.add_argument("--report-to", default="none", choices=REPORT_TO,
                     help="also log to tensorboard or wandb (through accelerate; the package must be installed)")
    val.add_argument("--log-every", type=int, default=1, help="write log.jsonl every N steps")
    val.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    parser.set_defaults(train_defaults={a.dest: a.default for a in parser._actions})
    return parser


def config_from_args(args):
    """A checked :class:`TrainingConfig` from parsed arguments (no model is loaded)."""
    from ..adapters import adapter_class
    from ..backbones.loading import classify_model_argument
    from ..training.config import TrainingConfig

    apply_training_preset(args)
    fields = set(TrainingConfig.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in fields}
    cls = adapter_class(args.adapter)
    own = {k: v for k, v in vars(args).items() if k.startswith(f"{args.adapter}_") or k in ADAPTER_SPECIFIC}
    values["adapter_options"] = own
    values["progress"] = not args.quiet
    if values.get("checkpoints_total_limit") == 0:
        values["checkpoints_total_limit"] = None
    config = TrainingConfig(**values)
    config.check()
    cls.check_training_options(own)
    classify_model_argument(config.model)
    _check_tiny_family(config)
    return config


def _check_tiny_family(config) -> None:
    """The family checks of :meth:`TrainingConfig.check_family` before loading, where the model's name
    says its family (the tiny models); other models are checked right after loading."""
    from ..defaults import TINY_MODEL_NAMES

    family = TINY_MODEL_NAMES.get(config.model)
    if family is None:
        return
    from ..backbones.family import get_family

    contract = get_family(family)
    config.check_family(family, contract.kind, contract.schedule, contract.seam_schemes,
                        guidance_embeds=config.model == "tiny-flux")


def run(args) -> int:
    from ..training.datasets import open_dataset
    from ..training.trainer import check_output, train

    config = config_from_args(args)
    dataset = open_dataset(config.data, caption_column=config.caption_column, image_column=config.image_column,
                           skip_invalid=config.skip_invalid, default_caption=config.default_caption,
                           license=config.data_license)
    if config.batch_size > len(dataset):
        from ..errors import InvalidInputError

        raise InvalidInputError(f"--batch-size {config.batch_size} is larger than the {len(dataset)} panoramas "
                                f"in {config.data}; lower it or add data")
    check_output(config)
    if dataset.skipped and not args.quiet:
        print(f"pano360 train: skipped {len(dataset.skipped)} image(s) (not 2:1 or unreadable)", file=sys.stderr)
    result = train(config, dataset=dataset)
    if not args.quiet:
        flag = "--lora" if config.adapter == "lora" else "--adapter"
        print(f"adapter written to {result.output} after {result.steps} steps "
              f"(load it with: pano360 generate PROMPT --model {config.model} {flag} {result.output})")
    return 0
