"""``pano360 serve``: the web app (Gradio) with a 360° preview, on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HELP = "web app: generate in the browser with a 360° preview (needs pano360[web])"
"""The one line ``pano360 --help`` shows for this command."""


def register(subparsers) -> argparse.ArgumentParser:
    from ..defaults import DEFAULT_MODEL
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "serve",
        help=HELP,
        description=(
            "Start the panorama studio (Gradio): generate from a prompt (every method and preset), turn a\n"
            "photo into a 360 panorama, paint a region in the 360 viewer and inpaint it (the rest kept\n"
            "exactly), refine poles, upscale; downloads (PNG with 360 XMP, JSON sidecar, cube-map zip); a\n"
            "gallery of --out-dir (open, re-run, vary seed, delete to --out-dir/trash). Jobs are queued (the\n"
            "page shows the queue position, step k/n and an ETA; Cancel stops a job), --concurrency at a\n"
            "time. Every job is in the HTTP API (gradio_client or curl, see docs/studio.md). Requests only\n"
            "read and write inside --out-dir, and are limited in size, steps, prompt length and rate.\n"
            "Listening on anything but 127.0.0.1 requires a login (--auth or --token-file).\n\n"
            'needs: pip install "pano360[web]"\n\n'
            "examples:\n"
            "  pano360 serve --model tiny                # offline smoke run, http://127.0.0.1:7860\n"
            "  pano360 serve --model stabilityai/stable-diffusion-2-base --out-dir gallery\n"
            "  pano360 serve --host 0.0.0.0 --port 8080 --token-file ~/.pano360-token --max-size 512x1024"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="Hub id, diffusers folder, .safetensors/.ckpt file, or tiny / tiny-sd2 / tiny-sdxl")
    parser.add_argument("--controlnet", default=None,
                        help="a depth ControlNet (Hub id/folder/file, or tiny): requests then need a depth map")
    parser.add_argument("--lora", action="append", default=[], metavar="SOURCE",
                        help="a LoRA loaded for every request (Hub id, folder or .safetensors; repeatable)")
    parser.add_argument("--lora-scale", action="append", type=float, default=[], metavar="SCALE",
                        help="scale of each --lora in order (one value applies to all; default 1.0)")
    parser.add_argument("--adapter", default=None, metavar="PATH",
                        help="a trained panorama adapter folder loaded for every request")
    parser.add_argument("--out-dir", default="outputs", help="folder for results (and the gallery)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 shares the app with your network")
    parser.add_argument("--port", type=int, default=7860, help="port (0: the first free one from 7860 up)")
    parser.add_argument("--auth", default=None, metavar="USER:PASS",
                        help="require this login (needed for any --host other than 127.0.0.1)")
    parser.add_argument("--token-file", default=None, metavar="FILE",
                        help="require a login whose password is the secret token on the first line of FILE "
                        "(any user name; at least 16 characters)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload in MiB")
    limits = parser.add_argument_group("limits for web users")
    limits.add_argument("--max-size", default="1024x2048", metavar="HxW",
                        help="largest panorama a request may ask for, HEIGHTxWIDTH in pixels")
    limits.add_argument("--max-steps", type=int, default=100, help="most denoising steps a request may ask for")
    limits.add_argument("--max-prompt-chars", type=int, default=1000, help="longest prompt (and negative prompt)")
    limits.add_argument("--rate-limit", type=int, default=30,
                        help="jobs per minute one client (login or address) may start; 0 = no limit")
    limits.add_argument("--concurrency", type=int, default=1,
                        help="jobs running at once on the device (one model copy each; the rest wait in the queue)")
    limits.add_argument("--max-queue", type=int, default=100, help="most jobs waiting; more are refused")
    parser.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"], help="weights dtype")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--offline", action="store_true", help="use only models already in the cache")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..backbones.loading import classify_controlnet_argument, classify_model_argument
    from ..errors import InvalidInputError

    if not 0 <= args.port <= 65535:
        raise InvalidInputError(f"--port must be between 0 and 65535, got {args.port}")
    if not args.max_upload_mb > 0:
        raise InvalidInputError(f"--max-upload-mb must be positive, got {args.max_upload_mb:g}")
    from ..web.limits import (
        JobGate,
        RateLimiter,
        RequestLimits,
        check_exposure,
        login_check,
        parse_auth,
        parse_size_limit,
        read_token_file,
    )

    check_exposure(args.host, args.auth, args.token_file)
    users = dict([parse_auth(args.auth)]) if args.auth else {}
    token = read_token_file(args.token_file) if args.token_file else None
    max_height, max_width = parse_size_limit(args.max_size)
    for flag, value in (("--max-steps", args.max_steps), ("--max-prompt-chars", args.max_prompt_chars),
                        ("--max-queue", args.max_queue)):
        if value < 1:
            raise InvalidInputError(f"{flag} must be >= 1, got {value}")
    RateLimiter(args.rate_limit)
    JobGate(args.concurrency)
    limits = RequestLimits(max_height, max_width, args.max_steps, args.max_prompt_chars)
    if args.lora_scale and not args.lora:
        raise InvalidInputError("--lora-scale needs --lora SOURCE (the LoRA it scales); add --lora or drop --lora-scale")
    if args.lora_scale and len(args.lora_scale) not in (1, len(args.lora)):
        raise InvalidInputError(f"{len(args.lora_scale)} --lora-scale values for {len(args.lora)} --lora; give one "
                                "scale, or one per --lora")
    scales = args.lora_scale * len(args.lora) if len(args.lora_scale) == 1 else args.lora_scale or [1.0] * len(args.lora)
    loras = list(zip(args.lora, scales))
    classify_model_argument(args.model)
    if args.controlnet:
        classify_controlnet_argument(args.controlnet)
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Gradio's own copies of uploads and results stay inside the output folder too.
    os.environ["GRADIO_TEMP_DIR"] = str(out_dir / ".gradio")
    from ..web.app import launch, require_gradio

    require_gradio()  # before the model loads: a missing extra costs no minutes
    from ..generator import PanoramaGenerator
    from ..web.service import PanoramaService

    print(f"loading {args.model} ...", file=sys.stderr)
    generators = [PanoramaGenerator.from_pretrained(args.model, torch_dtype=args.dtype, device=args.device,
                                                    controlnet=args.controlnet, local_files_only=args.offline,
                                                    loras=loras or None, adapter=args.adapter)
                  for _ in range(args.concurrency)]
    model_keys = {"lora": args.lora, "lora_scale": scales if args.lora else [], "adapter": args.adapter}
    service = PanoramaService(generators, out_dir, model_name=args.model, model_keys=model_keys,
                              max_upload_bytes=int(args.max_upload_mb * 2**20), limits=limits,
                              rate_limit=args.rate_limit)
    auth = login_check(users, token) if users or token else None
    try:
        launch(service, host=args.host, port=args.port or None, max_upload_bytes=service.max_upload_bytes,
               auth=auth, max_queue=args.max_queue)
    except KeyboardInterrupt:
        pass
    return 0
