"""``pano360 generate PROMPT``: a panorama from a prompt, saved with 360 metadata and a sidecar.

All arguments are checked before any model is loaded, so a typo costs no download and no minutes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..defaults import DEFAULT_OUTPUT_DIR

HELP = "generate a 360° panorama from a text prompt"
"""The one line ``pano360 --help`` shows for this command."""


def register(subparsers) -> argparse.ArgumentParser:
    from ..backbones.schedulers import DEFAULT_SCHEDULER, SCHEDULERS
    from ..defaults import DEFAULT_MODEL
    from ..methods import available_methods, method_class
    from ..presets import PRESETS
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "generate",
        help=HELP,
        description=(
            "Generate a seamless 360° panorama from a text prompt and save it as PNG/JPEG with GPano 360\n"
            "metadata and a JSON sidecar holding every parameter (enough to reproduce the image).\n\n"
            "examples:\n"
            '  pano360 generate "a cozy cabin interior, warm light"\n'
            '  pano360 generate "a room" --model tiny --steps 4 -o room.png      # offline smoke run\n'
            '  pano360 generate "hdri view, a beach in the style of <s0><s1>" --model stabilityai/stable-diffusion-xl-base-1.0 \\\n'
            "      --lora jbilcke-hf/sdxl-panorama --lora-scale 0.8 --embedding embeddings.pti \\\n"
            "      --depth depth.png --controlnet-scale 0.5 --height 512 --width 1024\n"
            "  pano360 generate --from outputs/a-room-7.png.json --steps 30     # re-run a sidecar, 30 steps\n\n"
            "Sizes are HEIGHTxWIDTH pixels everywhere. Limits (docs/cli.md): 16384 px per side; 8.4 MP for\n"
            "circular, 16.8 MP for the windowed methods; a run whose memory estimate exceeds the device's\n"
            "free memory is refused. --allow-large lifts both."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("prompt", nargs="?", default=None, help="what the panorama shows (optional with --from)")
    parser.add_argument("--from", dest="from_sidecar", default=None, metavar="SIDECAR.json",
                        help="re-run a recorded generation: every value from this pano360 sidecar (or the image it "
                        "belongs to); flags given here override the recorded ones")
    what = parser.add_argument_group("what to generate")
    what.add_argument("--method", default=None, choices=available_methods(), metavar="METHOD",
                      help="panorama method (default: circular, or the --preset's): " + "; ".join(
                          f"{name} = {method_class(name).summary}" for name in available_methods()))
    what.add_argument("--preset", default=None, choices=sorted(PRESETS), metavar="PRESET",
                      help="reference settings (method, size, steps, options; explicit options win): " + "; ".join(
                          f"{name} = {PRESETS[name].description}" for name in sorted(PRESETS)))
    what.add_argument("--height", type=int, default=None,
                      help="height in pixels, a multiple of 8 (default: the model's native size, 512 for SD 1/2, "
                      "1024 for SDXL, 128 for the tiny models)")
    what.add_argument("--width", type=int, default=None,
                      help="width in pixels, a multiple of 8 (default: 2 x height, a full 2:1 sphere; wider "
                      "gives a cylindrical band)")
    what.add_argument("--negative-prompt", default=None, help="what to avoid")
    what.add_argument("--num-images", type=int, default=1, help="panoramas to generate (seeds seed, seed+1, ...)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, default=None,
                          help="denoising steps (default: 50 for SD/SDXL and Qwen-Image, 28 for FLUX and SD3, or "
                          "the preset's)")
    sampling.add_argument("--guidance", "--guidance-scale", dest="guidance", type=float, default=None,
                          help="guidance scale, 1 = off (default: the preset's, else the model's: classifier-free 7.5 "
                          "for SD/SDXL, 7.0 for SD3; FLUX.1-dev's embedded guidance 3.5; Qwen-Image's true CFG 4.0, "
                          "used with --negative-prompt)")
    sampling.add_argument("--true-cfg-scale", type=float, default=None,
                          help="FLUX: real classifier-free guidance with --negative-prompt when > 1 (two passes per "
                          "step; --guidance stays the embedded value)")
    sampling.add_argument("--seed", type=int, default=None, help="random seed (random if omitted; always recorded)")
    sampling.add_argument("--scheduler", default=None,
                          help=f"sampler (default: the preset's, else {DEFAULT_SCHEDULER} for SD/SDXL and flow_euler for "
                          "FLUX/SD3/Qwen-Image; flow_* samplers are for those): " + ", ".join(SCHEDULERS))
    sampling.add_argument("--eta", type=float, default=0.0,
                          help="DDIM eta in [0, 1], --scheduler ddim only (0 = deterministic)")
    add_method_options(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None,
                       help="Hub id, diffusers folder, .safetensors/.ckpt/.gguf file (SD, SDXL, FLUX.1, SD3.x, "
                       "Qwen-Image; the family is read from the files), or a built-in random model (offline): tiny, "
                       "tiny-sd2, tiny-sdxl, tiny-flux, tiny-flux-schnell, tiny-flux-fill, tiny-sd3, tiny-sd35, tiny-qwen, "
                       "tiny-flux2; "
                       "default: the --preset's model, else the sdxl-360 preset's (a true 360° model: "
                       "ProGamerGov/sdxl-360-diffusion's UNet on SDXL base, docs/models.md); SD 2 base is "
                       f"--model {DEFAULT_MODEL}")
    model.add_argument("--config", default=None,
                       help="for a single-file --model offline: diffusers folder or cached Hub id with its configs "
                       "(a FLUX/SD3/Qwen-Image transformer-only file: the base repo with its text encoders and VAE)")
    model.add_argument("--transformer", default=None, metavar="REPO_OR_FILE",
                       help="FLUX/SD3/Qwen-Image: replace the model's transformer (a fine-tune repo, folder, "
                       ".safetensors or .gguf file)")
    model.add_argument("--unet", default=None, metavar="REPO_OR_FILE",
                       help="SD/SDXL: replace the model's UNet (a repo or folder with a unet/ folder, a UNet folder "
                       "or file), e.g. ProGamerGov/sdxl-360-diffusion on SDXL base")
    model.add_argument("--quantize", default="none", choices=["none", "fp8", "nf4"],
                       help="store the transformer in fewer bits: fp8 (float8 weights, computes in --dtype), nf4 "
                       "(bitsandbytes 4-bit, CPU or CUDA); .gguf files are quantized already")
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
    model.add_argument("--controlnet-scale", type=float, default=None,
                       help="ControlNet conditioning scale, with --depth (default: 1.0)")
    model.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                       help="weights dtype (auto: fp16 on GPU, fp32 on CPU)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    model.add_argument("--channels-last", default="auto", choices=["auto", "on", "off"],
                       help="channels-last memory layout for convolutions (auto: on for the CPU, where it is faster; "
                            "same results up to float rounding)")
    model.add_argument("--offload", default="none", choices=["none", "model", "sequential", "auto"],
                       help="keep models in CPU memory for small GPUs: model = each model moves to the GPU when "
                            "called; sequential = each layer's weights (least memory, slow); auto = from the free "
                            "GPU memory (same results)")
    model.add_argument("--tiled-decode", default="auto", choices=["auto", "on", "off"],
                       help="decode the VAE in exact, seam-wrapping tiles (auto: when the decode would not fit)")
    model.add_argument("--compile", action="store_true",
                       help="torch.compile the UNet (first steps slower; eager fallback where unsupported)")
    model.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HOME)")
    model.add_argument("--offline", action="store_true", help="use only models already in the cache")
    output = parser.add_argument_group("output")
    output.add_argument("-o", "--output", default=None,
                        help=f"image path (.png or .jpg); default: {DEFAULT_OUTPUT_DIR}/<prompt>-<seed>.png")
    output.add_argument("--overwrite", action="store_true", help="replace existing files")
    output.add_argument("--no-metadata", action="store_true", help="do not embed GPano 360 XMP")
    output.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality (1-100)")
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    sphere = parser.add_argument_group("full sphere (see pano360 poles / upscale)")
    sphere.add_argument("--refine-poles", action="store_true",
                        help="regenerate the zenith and nadir through perspective pole views (a strip becomes a 2:1 "
                        "sphere)")
    sphere.add_argument("--upscale", type=int, choices=[2, 4], default=None,
                        help="then upscale 2x or 4x with wrapping tiles (img2img with the same model, strength 0.3)")
    output.add_argument("--view", action="store_true",
                        help="open the panorama in the offline 360 viewer when done (Ctrl+C to stop)")
    output.add_argument("--allow-large", action="store_true",
                        help="skip the size limit and the memory estimate check (for runs you know fit)")
    from .parsing import option_dests

    parser.set_defaults(func=run, option_dests=option_dests(parser))
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
    from ..defaults import DEFAULT_MODEL, DEFAULT_PRESET
    from ..presets import apply_preset as resolve
    from ..presets import get_preset

    if args.model is None and args.preset is None and not getattr(args, "from_sidecar", None):
        default = get_preset(DEFAULT_PRESET)  # the default true-360 model
        if args.method in (None, default.method):
            args.preset = DEFAULT_PRESET
        else:  # another method: the default model (and its trigger phrase), not the preset's settings
            args.model, args.unet = default.generation["model"], args.unet or default.unet
            args.prompt = default.prompt(args.prompt) if args.prompt else args.prompt
    method, options, settings = resolve(args.preset, args.method, {}, {
        "height": args.height, "width": args.width, "num_inference_steps": args.steps,
        "guidance_scale": args.guidance, "scheduler": args.scheduler})
    args.method = method
    args.height, args.width = settings.get("height"), settings.get("width")
    args.steps = settings.get("num_inference_steps")  # None: the model family's default (plan.py)
    args.guidance = settings.get("guidance_scale")
    args.scheduler = settings.get("scheduler")
    args.preset_options = options
    args.model = args.model or settings.get("model") or DEFAULT_MODEL
    if args.preset is not None:
        from ..presets import get_preset

        chosen = get_preset(args.preset)
        if chosen.loras and not args.lora and args.model == settings.get("model"):
            args.lora = [source for source, _, _ in chosen.loras]
            args.lora_scale = args.lora_scale or [scale for _, scale, _ in chosen.loras]
            args.lora_weight_names = [name for _, _, name in chosen.loras]
        if chosen.transformer and args.transformer is None and args.model == settings.get("model"):
            args.transformer = chosen.transformer
        if chosen.unet and args.unet is None and args.model == settings.get("model"):
            args.unet = chosen.unet


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


def default_output_path(prompt: str, seed: int | None) -> Path:
    """outputs/<prompt-slug>-<seed>.png (non-ASCII words kept), numbered if taken (never replaces a file)."""
    from ..io.paths import slugify
    from ..io.sidecar import sidecar_paths

    stem = f"{slugify(prompt)}-{seed if seed is not None else time.strftime('%Y%m%d-%H%M%S')}"
    candidate = Path(DEFAULT_OUTPUT_DIR) / f"{stem}.png"
    counter = 1
    while candidate.exists() or any(p.exists() for p in sidecar_paths(candidate)):
        candidate = Path(DEFAULT_OUTPUT_DIR) / f"{stem}-{counter}.png"
        counter += 1
    return candidate


def check_arguments(args: argparse.Namespace) -> None:
    """Every check that needs no model; raises InvalidInputError naming the fix (CLI flags, not API
    names). Cheap checks first: a 100000-px request is refused before torch is even imported."""
    from ..defaults import TINY_MODEL_NAMES
    from ..errors import InvalidInputError
    from ..io.images import image_format_for
    from ..io.paths import check_output_folder, check_output_targets
    from ..io.sidecar import sidecar_path
    from ..plan import check_plan_memory, model_facts, plan_generation
    from ..validation import (
        SD_SCHEDULER_DEFAULTS,
        check_eta,
        check_finite,
        check_nonnegative,
        check_seed,
        check_steps_for_scheduler,
    )

    if args.prompt is None:
        raise InvalidInputError("give a PROMPT (what the panorama shows), or --from SIDECAR.json to re-run one")
    given_size = (args.height, args.width)
    apply_preset(args)
    facts = model_facts(args.model, cache_dir=args.cache_dir)
    options = {**args.preset_options, **method_options(args)}
    try:
        plan = plan_generation(facts, method=args.method, options=options, height=args.height, width=args.width,
                               num_inference_steps=args.steps, guidance_scale=args.guidance, scheduler=args.scheduler,
                               num_images=args.num_images, has_control=bool(args.depth), allow_large=args.allow_large,
                               cli=True)
    except InvalidInputError as error:
        from_preset = [f for f, g, v in zip(("--height", "--width"), given_size, (args.height, args.width))
                       if g is None and v is not None]
        if from_preset and any(word in str(error) for word in ("height", "width")):  # not the user's values
            raise InvalidInputError(f"{error} ({'/'.join(from_preset)} from --preset {args.preset}; give "
                                    f"{' and '.join(from_preset)} to change)") from None
        raise
    check_seed(args.seed, args.num_images, "--seed")
    check_finite(args.eta, "--eta")
    if args.true_cfg_scale is not None:
        check_finite(args.true_cfg_scale, "--true-cfg-scale")
        check_nonnegative(args.true_cfg_scale, "--true-cfg-scale")
    # every family trains with 1000 steps (SD's "leading" spacing runs at most 999); checked again on load
    check_steps_for_scheduler(plan.num_inference_steps, 1000 if facts.is_dit else SD_SCHEDULER_DEFAULTS)
    if args.lora_scale and not args.lora:
        raise InvalidInputError("--lora-scale needs --lora SOURCE (the LoRA it scales); add --lora or drop --lora-scale")
    if args.controlnet_scale is not None and not args.depth:
        raise InvalidInputError("--controlnet-scale needs --depth IMAGE (the control it scales); add --depth or "
                                "drop --controlnet-scale")
    if len(args.embedding_token) > len(args.embedding):
        raise InvalidInputError("more --embedding-token values than --embedding files")
    if args.controlnet and not args.depth:
        raise InvalidInputError("--controlnet needs a control image: add --depth IMAGE")
    if not 1 <= args.jpeg_quality <= 100:
        raise InvalidInputError(f"--jpeg-quality must be between 1 and 100, got {args.jpeg_quality}")
    if args.output:  # before any file is read or model loaded: folder creatable and writable, names free
        output = Path(args.output)
        if args.output.endswith(("/", "\\")) or output.is_dir():
            check_output_targets([args.output])  # the one-line "names a folder" error
        image_format_for(args.output)
        targets = [output] if args.num_images == 1 else [
            output.with_name(f"{output.stem}_{i}{output.suffix}") for i in range(args.num_images)]
        check_output_targets([p for t in targets for p in (t, sidecar_path(t))], args.overwrite, flag="-o/--output")
    else:
        check_output_folder(DEFAULT_OUTPUT_DIR, flag=f"default output folder ./{DEFAULT_OUTPUT_DIR}")

    from ..backbones.adapters import check_adapter_path
    from ..backbones.loading import classify_controlnet_argument, classify_model_argument
    from ..backbones.schedulers import DEFAULT_SCHEDULERS, check_scheduler_for_kind, check_scheduler_name
    from ..io.images import read_image

    kind = "flow" if facts.is_dit else "alpha"
    if args.scheduler is not None:
        args.scheduler = (check_scheduler_for_kind(args.scheduler, kind, facts.family) if facts.family
                          else check_scheduler_name(args.scheduler))
    check_eta(args.eta, args.scheduler or DEFAULT_SCHEDULERS[kind])
    if args.depth and facts.is_dit:
        raise InvalidInputError(f"--depth conditions through an SD/SDXL depth ControlNet; {args.model} is a "
                                f"{facts.family} model: drop --depth or use an SD/SDXL model")
    if args.unet is not None:
        if facts.is_dit:
            raise InvalidInputError(f"--unet replaces an SD/SDXL UNet; {args.model} is a {facts.family} transformer "
                                    "model (use --transformer)")
        classify_model_argument(args.unet)
    if args.transformer is not None:
        if facts.family is not None and not facts.is_dit:
            raise InvalidInputError(f"--transformer replaces a FLUX/SD3/Qwen-Image transformer; {args.model} is a "
                                    f"{facts.family} UNet model")
        classify_model_argument(args.transformer)
    if args.quantize != "none":
        from ..backbones.quantize import check_quantize, unet_model_error

        if facts.family is not None and not facts.is_dit:
            raise unet_model_error(args.model, facts.family)
        check_quantize(args.quantize)
    if args.controlnet_scale is not None:
        check_nonnegative(args.controlnet_scale, "--controlnet-scale")
    classify_model_argument(args.model)
    for lora in args.lora:
        check_adapter_path(lora)
    if args.lora_scale and len(args.lora_scale) not in (1, len(args.lora)):
        raise InvalidInputError(f"{len(args.lora_scale)} --lora-scale values for {len(args.lora)} --lora; "
                                "give one scale, or one per --lora")
    for scale in args.lora_scale:
        check_finite(scale, "--lora-scale")
    for embedding in args.embedding:
        check_adapter_path(embedding, what="embedding")
    for adapter in args.adapter:
        check_adapter_path(adapter, what="adapter")
    if args.depth:
        read_image(args.depth, "--depth image")  # decodes it: truncated or corrupt files are refused here
    if args.controlnet:
        classify_controlnet_argument(args.controlnet)
    if not args.allow_large:  # before loading: the estimated peak memory (weights included) against the device's
        device = str(args.device)
        if device == "auto":
            from ..backbones.device import resolve_device

            device = str(resolve_device("auto"))
        dtype_bytes = 4 if args.dtype == "fp32" or (args.dtype == "auto" and device == "cpu") else 2
        check_plan_memory(plan, facts, device, dtype_bytes, parameters=1e6 if args.model in TINY_MODEL_NAMES else None,
                          cli=True, quantize=args.quantize)
    plan.method.fetch_resources(plan.request)  # last, after the cheap checks: SyncDiffusion's LPIPS weights


def apply_from_sidecar(args: argparse.Namespace) -> None:
    """``--from SIDECAR.json``: fill every argument the command line did not give from the record."""
    from ..methods import method_class
    from .parsing import given_options
    from .rerun import apply_sidecar, read_sidecar_file, sidecar_arguments

    values = sidecar_arguments(read_sidecar_file(args.from_sidecar))
    given = given_options(getattr(args, "option_dests", {}), getattr(args, "argv", []))
    if args.prompt is not None:
        given.add("prompt")
    method = args.method if "method" in given else values.get("method", args.method)
    specs = method_class(method).option_specs() if method else {}
    for name in [n for n in values if n in specs]:
        spec, value = specs[name], values.pop(name)
        if not spec.cli or value is None or (spec.switch and not value):
            continue
        if spec.switch:
            text = True
        elif spec.kind == "bool":
            text = "on" if value else "off"
        elif isinstance(value, (list, tuple)):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        values[OPTION_PREFIX + spec.cli_flag[2:].replace("-", "_")] = text
    unknown = apply_sidecar(args, values, given)
    if unknown and not args.quiet:
        print(f"pano360 generate: note: --from: recorded values without a flag here are ignored: {', '.join(unknown)}",
              file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.from_sidecar:
        apply_from_sidecar(args)
    check_arguments(args)
    from ..backbones.loading import DEFAULT_DEPTH_CONTROLNETS
    from ..backbones.tiny import TINY_MODEL_NAMES
    from ..generator import PanoramaGenerator

    scales = args.lora_scale or [1.0]
    names = getattr(args, "lora_weight_names", None) or [None] * len(args.lora)
    loras = [(source, scales[i] if len(scales) > 1 else scales[0], names[i]) for i, source in enumerate(args.lora)]
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
        channels_last={"on": True, "off": False}.get(args.channels_last, "auto"), transformer=args.transformer,
        quantize=args.quantize, unet=args.unet,
    )
    if args.depth:
        if controlnet is None:
            controlnet = DEFAULT_DEPTH_CONTROLNETS[generator.family]
            _status(args, f"loading depth ControlNet {controlnet} ...")
        generator.load_controlnet(controlnet)
    for entry in generator.backbone.embeddings:
        _status(args, f"embedding {entry['source']}: write {''.join(entry['tokens'])} in the prompt")
    generator.configure_memory(offload=args.offload, compile=args.compile or None,
                               tiled_decode={"on": True, "off": False}.get(args.tiled_decode, "auto"))

    options = method_options(args)
    result = generator(
        args.prompt, method=args.method, preset=args.preset, height=args.height, width=args.width,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance, negative_prompt=args.negative_prompt, num_images_per_prompt=args.num_images,
        true_cfg_scale=args.true_cfg_scale,
        seed=args.seed, eta=args.eta, control_image=args.depth,
        controlnet_conditioning_scale=1.0 if args.controlnet_scale is None else args.controlnet_scale,
        progress=not args.quiet, allow_large=args.allow_large, **options,
    )
    if args.refine_poles or args.upscale:
        from ..sphere.pipeline import finish_output

        finish_output(result, generator.pipe, args.prompt, refine=args.refine_poles, upscale=args.upscale,
                      negative_prompt=args.negative_prompt, num_inference_steps=result.parameters["num_inference_steps"],
                      guidance_scale=result.parameters["guidance_scale"], quiet=args.quiet)
    output = Path(args.output) if args.output else default_output_path(args.prompt, result.parameters["seeds"][0])
    # fallback: a write that fails now (disk full, folder gone) rescues the result elsewhere and says where
    paths = result.save(output, overwrite=args.overwrite, metadata=not args.no_metadata,
                        jpeg_quality=args.jpeg_quality, fallback=True)
    for path in paths:
        print(path)
    if paths and os.path.abspath(Path(paths[0]).parent) != os.path.abspath(output.parent):
        return 1  # rescued elsewhere (the line above says where): not written where asked, so not a success
    if args.view:
        from ..viewer import open_viewer

        open_viewer(paths[0])
    return 0


def _status(args, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)
