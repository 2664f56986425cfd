"""``pano360 generate PROMPT``: a panorama from a prompt, saved with 360 metadata and a sidecar.

All arguments are checked before any model is loaded, so a typo costs no download and no minutes.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

DEFAULT_OUTPUT_DIR = "outputs"



def register(subparsers) -> argparse.ArgumentParser:
    from ..backbones.loading import DEFAULT_MODEL
    from ..backbones.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
    from ..methods import available_methods, method_class
    from ..presets import PRESETS
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "generate",
        help="generate a 360° panorama from a text prompt",
        description=(
            "Generate a seamless 360° panorama from a text prompt and save it as PNG/JPEG with GPano 360\n"
            "metadata and a JSON sidecar holding every parameter (enough to reproduce the image).\n\n"
            "examples:\n"
            '  pano360 generate "a cozy cabin interior, warm light"\n'
            '  pano360 generate "a room" --model tiny --steps 4 -o room.png      # offline smoke run\n'
            '  pano360 generate "hdri view, a beach in the style of <s0><s1>" --model stabilityai/stable-diffusion-xl-base-1.0 \\\n'
            "      --lora jbilcke-hf/sdxl-panorama --lora-scale 0.8 --embedding embeddings.pti \\\n"
            "      --depth depth.png --controlnet-scale 0.5 --height 512 --width 1024"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("prompt", help="what the panorama shows")
    what = parser.add_argument_group("what to generate")
    what.add_argument("--method", default=None, choices=available_methods(), metavar="METHOD",
                      help="panorama method (default: circular, or the --preset's): " + "; ".join(
                          f"{name} = {method_class(name).summary}" for name in available_methods()))
    what.add_argument("--preset", default=None, choices=sorted(PRESETS), metavar="PRESET",
                      help="reference settings (method, size, steps, options; explicit options win): " + "; ".join(
                          f"{name} = {PRESETS[name].description}" for name in sorted(PRESETS)))
    what.add_argument("--height", type=int, default=None,
                      help="height in pixels, a multiple of 8 (default: the model's native size, 512 for SD 1/2, "
                      "1024 for SDXL)")
    what.add_argument("--width", type=int, default=None,
                      help="width in pixels, a multiple of 8 (default: 2 x height, a full 2:1 sphere; wider "
                      "gives a cylindrical band)")
    what.add_argument("--negative-prompt", default=None, help="what to avoid")
    what.add_argument("--num-images", type=int, default=1, help="panoramas to generate (seeds seed, seed+1, ...)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, default=None, help="denoising steps (default: 50, or the preset's)")
    sampling.add_argument("--guidance", type=float, default=None,
                          help="classifier-free guidance scale, 1 = off (default: 7.5, or the preset's)")
    sampling.add_argument("--seed", type=int, default=None, help="random seed (random if omitted; always recorded)")
    sampling.add_argument("--scheduler", default=None,
                          help=f"sampler (default: {DEFAULT_SCHEDULER}, or the preset's): " + ", ".join(SCHEDULERS))
    sampling.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    add_method_options(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=DEFAULT_MODEL,
                       help="Hub id, diffusers folder, .safetensors/.ckpt file, or tiny / tiny-sd2 / tiny-sdxl "
                       "(built-in random models, offline)")
    model.add_argument("--config", default=None,
                       help="for a single-file --model offline: diffusers folder or cached Hub id with its configs")
    model.add_argument("--variant", default=None, help="weights variant to download, e.g. fp16")
    model.add_argument("--prediction-type", choices=["epsilon", "v_prediction"], default=None,
                       help="override the model's prediction type (e.g. v_prediction for SD 2.x 768-v files)")
    model.add_argument("--lora", action="append", default=[], metavar="SOURCE",
                       help="LoRA .safetensors file or Hub repo; repeat for several")
    model.add_argument("--lora-scale", action="append", type=float, default=[], metavar="SCALE",
                       help="scale of each --lora in order (one value applies to all; default 1.0)")
    model.add_argument("--embedding", action="append", default=[], metavar="FILE",
                       help="textual-inversion file (.pt/.safetensors/.pti, incl. SDXL two-encoder files); repeat")
    model.add_argument("--embedding-token", action="append", default=[], metavar="TOKEN",
                       help="token for each --embedding in order (default: from the file, or <s0><s1>... "
                       "for SDXL pivotal-tuning files)")
    model.add_argument("--adapter", action="append", default=[], metavar="PATH",
                       help="trained panorama adapter: a folder from 'pano360 train' or a reference checkpoint "
                       "(MVDiffusion pano.ckpt, UniPano .ckpt); repeat for several")
    model.add_argument("--depth", default=None, metavar="IMAGE",
                       help="depth image for a depth ControlNet (360 depth, resized to the panorama)")
    model.add_argument("--controlnet", default=None,
                       help="ControlNet Hub id/folder/file (default with --depth: the family's depth ControlNet)")
    model.add_argument("--controlnet-scale", type=float, default=1.0, help="ControlNet conditioning scale")
    model.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                       help="weights dtype (auto: fp16 on GPU, fp32 on CPU)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    model.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                       help="channels-last memory layout for convolutions (auto: on for the CPU, where it is faster; "
                            "same results up to float rounding)")
    model.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HOME)")
    model.add_argument("--offline", action="store_true", help="use only models already in the cache")
    output = parser.add_argument_group("output")
    output.add_argument("-o", "--output", default=None,
                        help=f"image path (.png or .jpg); default: {DEFAULT_OUTPUT_DIR}/<prompt>-<seed>.png")
    output.add_argument("--overwrite", action="store_true", help="replace existing files")
    output.add_argument("--no-metadata", action="store_true", help="do not embed GPano 360 XMP")
    output.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality (1-100)")
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    output.add_argument("--view", action="store_true",
                        help="open the panorama in the offline 360 viewer when done (Ctrl+C to stop)")
    parser.set_defaults(func=run)
    return parser


OPTION_PREFIX = "method_option__"  # argparse dest of a method option's flag


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """One argument per CLI flag of the registered methods' options, built from their declarations.

    A flag shared by several methods (``--stride``) appears once; its help names the methods and
    their defaults. Every flag defaults to "not given", so the method's own default (or a preset's
    value) applies unless the user gives one.
    """
    from ..methods import cli_options

    group = parser.add_argument_group("method options (sizes in latent units = pixels / 8 unless stated)")
    for flag, entries in cli_options().items():
        option = entries[0][1]
        defaults = ", ".join(f"{name} {_shown(opt)}" for name, opt in entries)
        text = f"{option.help} [{defaults}]"
        kwargs = {"dest": OPTION_PREFIX + flag[2:].replace("-", "_"), "default": None, "help": text}
        if option.kind == "bool" and option.switch:
            kwargs.update(action="store_const", const=True)
        elif option.kind == "bool":
            kwargs.update(choices=["on", "off"])
        elif option.kind == "choice":
            kwargs.update(choices=list(option.choices))
        else:
            kwargs["metavar"] = option.metavar or option.kind.upper()
        group.add_argument(flag, **kwargs)


def _shown(option) -> str:
    value = option.describe(option.default)
    if option.kind == "bool":
        return "on" if value else "off"
    return "default" if value is None else str(value)


def apply_preset(args: argparse.Namespace) -> None:
    """Fill the method and size the user did not give from ``--preset`` (explicit arguments win)."""
    from ..backbones.schedulers import DEFAULT_SCHEDULER
    from ..presets import apply_preset as resolve

    method, options, settings = resolve(args.preset, args.method, {}, {
        "height": args.height, "width": args.width, "num_inference_steps": args.steps,
        "guidance_scale": args.guidance, "scheduler": args.scheduler})
    args.method = method
    args.height, args.width = settings.get("height"), settings.get("width")
    args.steps = settings.get("num_inference_steps", 50)
    args.guidance = settings.get("guidance_scale", 7.5)
    args.scheduler = settings.get("scheduler", DEFAULT_SCHEDULER)
    args.preset_options = options


def method_options(args: argparse.Namespace) -> dict:
    """The method options given on the command line, parsed by their declarations (the preset's
    options are added by the generator; explicit ones win). A flag the chosen method does not have is
    an error naming the methods that have it."""
    from ..errors import InvalidInputError
    from ..methods import cli_options, method_class

    specs = {spec.cli_flag: spec for spec in method_class(args.method).option_specs().values() if spec.cli}
    options = {}
    for flag, entries in cli_options().items():
        value = getattr(args, OPTION_PREFIX + flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        if flag not in specs:
            owners = ", ".join(name for name, _ in entries)
            raise InvalidInputError(f"{flag} applies to --method {owners} only, not {args.method}")
        spec = specs[flag]
        options[spec.name] = value if value is True else spec.parse_cli(str(value))
    return options


def _slug(text: str, limit: int = 40) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "panorama"


def default_output_path(prompt: str, seed: int | None) -> Path:
    """outputs/<prompt-slug>-<seed>.png, numbered if taken (never replaces a file)."""
    stem = f"{_slug(prompt)}-{seed if seed is not None else time.strftime('%Y%m%d-%H%M%S')}"
    candidate = Path(DEFAULT_OUTPUT_DIR) / f"{stem}.png"
    counter = 1
    while candidate.exists() or candidate.with_suffix(".json").exists():
        candidate = Path(DEFAULT_OUTPUT_DIR) / f"{stem}-{counter}.png"
        counter += 1
    return candidate


def check_arguments(args: argparse.Namespace) -> None:
    """Every check that needs no model; raises InvalidInputError naming the fix."""
    from ..backbones.adapters import check_adapter_path
    from ..backbones.loading import classify_controlnet_argument, classify_model_argument
    from ..backbones.schedulers import check_scheduler_name
    from ..errors import InvalidInputError
    from ..io.atomic import ensure_writable
    from ..io.images import image_format_for
    from ..io.sidecar import sidecar_path
    from ..methods import GenerationRequest, get_method
    from ..validation import check_existing_file, check_generation_args, check_nonnegative

    apply_preset(args)
    height = args.height or (1024 if "xl" in args.model.lower() else 512)
    width = args.width or 2 * height
    check_generation_args(height=height, width=width, num_inference_steps=args.steps,
                          guidance_scale=args.guidance, num_images_per_prompt=args.num_images)
    method = get_method(args.method, **{**args.preset_options, **method_options(args)})
    request = GenerationRequest(height=height, width=width, num_inference_steps=args.steps,
                                guidance_scale=args.guidance, batch_size=args.num_images,
                                has_control=bool(args.depth))
    method.check(request)
    check_scheduler_name(args.scheduler)
    check_nonnegative(args.eta, "--eta")
    check_nonnegative(args.controlnet_scale, "--controlnet-scale")
    classify_model_argument(args.model)
    for lora in args.lora:
        check_adapter_path(lora)
    if args.lora_scale and len(args.lora_scale) not in (1, len(args.lora)):
        raise InvalidInputError(f"{len(args.lora_scale)} --lora-scale values for {len(args.lora)} --lora; "
                                "give one scale, or one per --lora")
    for embedding in args.embedding:
        check_adapter_path(embedding, what="embedding")
    for adapter in args.adapter:
        check_adapter_path(adapter, what="adapter")
    if len(args.embedding_token) > len(args.embedding):
        raise InvalidInputError("more --embedding-token values than --embedding files")
    if args.depth:
        check_existing_file(args.depth, "depth image")
    if args.controlnet:
        if not args.depth:
            raise InvalidInputError("--controlnet needs a control image: add --depth IMAGE")
        classify_controlnet_argument(args.controlnet)
    if not 1 <= args.jpeg_quality <= 100:
        raise InvalidInputError(f"--jpeg-quality must be between 1 and 100, got {args.jpeg_quality}")
    if args.output:
        image_format_for(args.output)
        output = Path(args.output)
        targets = [output] if args.num_images == 1 else [
            output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(args.num_images)]
        ensure_writable([p for t in targets for p in (t, sidecar_path(t))], args.overwrite)
    method.fetch_resources(request)  # last, after the cheap checks: SyncDiffusion's LPIPS weights


def run(args: argparse.Namespace) -> int:
    check_arguments(args)
    from ..backbones.loading import DEFAULT_DEPTH_CONTROLNETS
    from ..backbones.tiny import TINY_MODEL_NAMES
    from ..generator import PanoramaGenerator

    scales = args.lora_scale or [1.0]
    loras = [(source, scales[i] if len(scales) > 1 else scales[0]) for i, source in enumerate(args.lora)]
    tokens = args.embedding_token + [None] * (len(args.embedding) - len(args.embedding_token))
    embeddings = list(zip(args.embedding, tokens))
    controlnet = args.controlnet
    if args.depth and controlnet is None and args.model in TINY_MODEL_NAMES:
        controlnet = "tiny"

    _status(args, f"loading {args.model} ...")
    generator = PanoramaGenerator.from_pretrained(
        args.model, torch_dtype=args.dtype, device=args.device, scheduler=args.scheduler, loras=loras,
        embeddings=embeddings, config=args.config, variant=args.variant, cache_dir=args.cache_dir,
        local_files_only=args.offline, prediction_type=args.prediction_type, adapter=args.adapter,
        channels_last={"on": True, "off": False}.get(args.channels_last, "auto"),
    )
    if args.depth:
        if controlnet is None:
            controlnet = DEFAULT_DEPTH_CONTROLNETS[generator.family]
            _status(args, f"loading depth ControlNet {controlnet} ...")
        generator.load_controlnet(controlnet)
    for entry in generator.backbone.embeddings:
        _status(args, f"embedding {entry['source']}: write {''.join(entry['tokens'])} in the prompt")

    options = method_options(args)
    result = generator(
        args.prompt, method=args.method, preset=args.preset, height=args.height, width=args.width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance, negative_prompt=args.negative_prompt, num_images_per_prompt=args.num_images,
        seed=args.seed, eta=args.eta, control_image=args.depth, controlnet_conditioning_scale=args.controlnet_scale,
        progress=not args.quiet, **options,
    )
    output = Path(args.output) if args.output else default_output_path(args.prompt, result.parameters["seeds"][0])
    paths = result.save(output, overwrite=args.overwrite, metadata=not args.no_metadata,
                        jpeg_quality=args.jpeg_quality)
    for path in paths:
        print(path)
    if args.view:
        from ..viewer import open_viewer

        open_viewer(paths[0])
    return 0


def _status(args, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)
