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
    what.add_argument("--method", default=None, choices=["circular", "multidiffusion", "syncdiffusion"],
                      help="panorama method (default: circular, or the --preset's): circular = wraparound padding "
                      "of every convolution; multidiffusion = overlapping native-size windows averaged each step; "
                      "syncdiffusion = multidiffusion + LPIPS gradient pulling windows towards an anchor window")
    what.add_argument("--preset", default=None, choices=sorted(_presets()),
                      help="reference settings (size, method, knobs; explicit options win): syncdiffusion-paper = "
                      "512x2048, stride 16, weight 20, decay 0.95, sync all 50 steps; syncdiffusion-script = 512x3072, "
                      "threshold 10; multidiffusion-paper = 512x4096, stride 8 (all without loop closure, as the "
                      "references; add --loop-closure on for a 360 seam)")
    what.add_argument("--height", type=int, default=None,
                      help="height in pixels, a multiple of 8 (default: the model's native size, 512 for SD 1/2, "
                      "1024 for SDXL)")
    what.add_argument("--width", type=int, default=None,
                      help="width in pixels, a multiple of 8 (default: 2 x height, a full 2:1 sphere; wider "
                      "gives a cylindrical band)")
    what.add_argument("--negative-prompt", default=None, help="what to avoid")
    what.add_argument("--num-images", type=int, default=1, help="panoramas to generate (seeds seed, seed+1, ...)")
    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, default=50, help="denoising steps")
    sampling.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (1 = off)")
    sampling.add_argument("--seed", type=int, default=None, help="random seed (random if omitted; always recorded)")
    sampling.add_argument("--scheduler", default=DEFAULT_SCHEDULER,
                          help="sampler: " + ", ".join(SCHEDULERS))
    sampling.add_argument("--eta", type=float, default=0.0, help="DDIM eta (0 = deterministic)")
    sampling.add_argument("--no-wrap-vae", action="store_true",
                          help="circular: do not wrap the VAE (for comparisons; leaves a pixel seam)")
    windows = parser.add_argument_group("multidiffusion / syncdiffusion (sizes in latent units = pixels / 8)")
    windows.add_argument("--window", type=int, default=None,
                         help="window size (default: the model's native size, 64 for SD 1/2, 128 for SDXL)")
    windows.add_argument("--stride", type=int, default=None,
                         help="window stride; must divide width/8 (with loop closure) or width/8 - window "
                         "(default: 8 multidiffusion, 16 syncdiffusion)")
    windows.add_argument("--loop-closure", choices=["on", "off"], default=None,
                         help="windows wrap across the left/right seam at every offset, wrapped VAE decode "
                         "(default: on)")
    windows.add_argument("--view-batch-size", type=int, default=None,
                         help="windows per UNet call (memory vs speed, same result; default 8)")
    windows.add_argument("--sync-weight", type=float, default=None, help="syncdiffusion: gradient step weight w "
                         "(default 20)")
    windows.add_argument("--sync-decay-rate", type=float, default=None,
                         help="syncdiffusion: step i uses w * decay^i (default 0.95)")
    windows.add_argument("--sync-freq", type=int, default=None, help="syncdiffusion: sync every n-th step (default 1)")
    windows.add_argument("--sync-threshold", type=int, default=None,
                         help="syncdiffusion: sync only at steps i < threshold (default: every step; the "
                         "reference script uses 10)")
    windows.add_argument("--anchor", type=int, default=None,
                         help="syncdiffusion: anchor window index, row-major (default: the middle window)")
    windows.add_argument("--sync-batch-size", default=None, metavar="N|auto",
                         help="syncdiffusion: windows per gradient pass (memory vs speed, same result; default "
                              "auto: 4 on a CPU, 8 on a GPU, halved on out-of-memory)")
    windows.add_argument("--gradient-checkpointing", action="store_true",
                         help="syncdiffusion: recompute activations in the backward pass (less memory, slower)")
    windows.add_argument("--sync-decoder", default=None,
                         help="syncdiffusion fast mode (approximate): taesd, taesdxl or an AutoencoderTiny id/folder "
                         "to compute the sync loss through instead of the VAE")
    windows.add_argument("--weights-dir", default=None, metavar="DIR",
                         help="syncdiffusion: offline folder with the LPIPS files vgg16-397923af.pth and vgg.pth "
                              "(default: ~/.cache/pano360/weights, downloaded once)")
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


def _presets() -> dict:
    from ..methods.syncdiffusion import PRESETS

    return PRESETS


_WINDOW_OPTIONS = {  # CLI attribute -> method option
    "window": "window", "stride": "stride", "view_batch_size": "view_batch_size", "sync_weight": "sync_weight",
    "sync_decay_rate": "sync_decay_rate", "sync_freq": "sync_freq", "sync_threshold": "sync_threshold",
    "anchor": "anchor", "sync_batch_size": "sync_batch_size", "sync_decoder": "sync_decoder",
    "weights_dir": "weights_dir",
}
_SYNC_ONLY = {"sync_weight", "sync_decay_rate", "sync_freq", "sync_threshold", "anchor", "sync_batch_size",
              "sync_decoder", "gradient_checkpointing", "weights_dir"}


def apply_preset(args: argparse.Namespace) -> None:
    """Fill what the user did not give from ``--preset`` (explicit arguments win)."""
    if getattr(args, "preset", None) is None:
        args.method = args.method or "circular"
        return
    preset = _presets()[args.preset]
    args.method = args.method or preset["method"]
    args.height = args.height or preset["height"]
    args.width = args.width or preset["width"]
    args.preset_options = dict(preset["options"])


def method_options(args: argparse.Namespace) -> dict:
    """Method options from the CLI arguments (and the preset)."""
    from ..errors import InvalidInputError

    options = dict(getattr(args, "preset_options", {}) or {})
    if args.method == "circular":
        given = [f"--{k.replace('_', '-')}" for k in [*_WINDOW_OPTIONS, "loop_closure"]
                 if getattr(args, k, None) is not None] + (["--gradient-checkpointing"]
                                                           if getattr(args, "gradient_checkpointing", False) else [])
        if given:
            raise InvalidInputError(f"{', '.join(given)} apply to --method multidiffusion/syncdiffusion, "
                                    "not circular")
        return {"wrap_vae": False} if args.no_wrap_vae else {}
    for attribute, option in _WINDOW_OPTIONS.items():
        value = getattr(args, attribute, None)
        if value is not None:
            options[option] = value
    if isinstance(options.get("sync_batch_size"), str) and options["sync_batch_size"] != "auto":
        try:
            options["sync_batch_size"] = int(options["sync_batch_size"])
        except ValueError:
            raise InvalidInputError(f"--sync-batch-size must be 'auto' or a whole number, "
                                    f"got {options['sync_batch_size']!r}") from None
    if getattr(args, "gradient_checkpointing", False):
        options["gradient_checkpointing"] = True
    if getattr(args, "loop_closure", None) is not None:
        options["loop_closure"] = args.loop_closure == "on"
    if args.no_wrap_vae:
        options["decode_wrap"] = "none"
    if args.method == "multidiffusion":
        sync = sorted(k for k in options if k in _SYNC_ONLY)
        if sync:
            raise InvalidInputError(f"{', '.join('--' + k.replace('_', '-') for k in sync)} apply to --method "
                                    "syncdiffusion only")
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
    from ..methods import get_method
    from ..validation import check_existing_file, check_generation_args, check_nonnegative

    apply_preset(args)
    height = args.height or (1024 if "xl" in args.model.lower() else 512)
    width = args.width or 2 * height
    check_generation_args(height=height, width=width, num_inference_steps=args.steps,
                          guidance_scale=args.guidance, num_images_per_prompt=args.num_images)
    method = get_method(args.method, **method_options(args))
    method.check_size(height, width)
    if hasattr(method, "check_options"):
        method.check_options(args.steps)
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
    method.fetch_resources(args.steps)  # last, after the cheap checks: SyncDiffusion's LPIPS weights


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
        local_files_only=args.offline, prediction_type=args.prediction_type,
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
        args.prompt, method=args.method, height=args.height, width=args.width, num_inference_steps=args.steps,
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
