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
            "Start a web app (Gradio): prompt, negative prompt, method, preset, size, steps and seed;\n"
            "a progress bar; the result in the 360 viewer; downloads (PNG with 360 XMP, JSON sidecar,\n"
            "cube-map zip); and a gallery of earlier results in --out-dir. The model is loaded once and\n"
            "requests are queued, one at a time. Gradio's HTTP API comes with it (gradio_client).\n"
            "Requests only read and write inside --out-dir.\n\n"
            'needs: pip install "pano360[web]"\n\n'
            "examples:\n"
            "  pano360 serve --model tiny                # offline smoke run, http://127.0.0.1:7860\n"
            "  pano360 serve --model stabilityai/stable-diffusion-2-base --out-dir gallery\n"
            "  pano360 serve --host 0.0.0.0 --port 8080  # reachable from other machines (no login!)"
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="Hub id, diffusers folder, .safetensors/.ckpt file, or tiny / tiny-sd2 / tiny-sdxl")
    parser.add_argument("--controlnet", default=None,
                        help="a depth ControlNet (Hub id/folder/file, or tiny): requests then need a depth map")
    parser.add_argument("--out-dir", default="outputs", help="folder for results (and the gallery)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 shares the app with your network")
    parser.add_argument("--port", type=int, default=7860, help="port (0: the first free one from 7860 up)")
    parser.add_argument("--max-upload-mb", type=float, default=20.0, help="largest accepted upload in MiB")
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
    classify_model_argument(args.model)
    if args.controlnet:
        classify_controlnet_argument(args.controlnet)
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Gradio's own copies of uploads and results stay inside the output folder too.
    os.environ["GRADIO_TEMP_DIR"] = str(out_dir / ".gradio")
    from ..web.app import launch, require_gradio

    require_gradio()  # before the model loads: a missing extra costs no minutes
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"pano360 serve: warning: listening on {args.host}: anyone who can reach this machine can use the "
              "app and its GPU (there is no login); use the default 127.0.0.1 to keep it private", file=sys.stderr)
    from ..generator import PanoramaGenerator
    from ..web.service import PanoramaService

    print(f"loading {args.model} ...", file=sys.stderr)
    generator = PanoramaGenerator.from_pretrained(args.model, torch_dtype=args.dtype, device=args.device,
                                                  controlnet=args.controlnet, local_files_only=args.offline)
    service = PanoramaService(generator, out_dir, model_name=args.model,
                              max_upload_bytes=int(args.max_upload_mb * 2**20))
    try:
        launch(service, host=args.host, port=args.port or None, max_upload_bytes=service.max_upload_bytes)
    except KeyboardInterrupt:
        pass
    return 0
