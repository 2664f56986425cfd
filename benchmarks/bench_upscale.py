"""Peak memory and time of seamless tiled upscaling to 4096×2048 and 8192×4096 at the same tile size.

    python benchmarks/bench_upscale.py [--model tiny] [--input 2048] [--tile 32] [--vae-tile 64]
                                       [--steps 2] [--strength 0.5] [--threads 1] [--markdown]

Each target size runs in a fresh process (so peak memory is its own): a synthetic seamless 2:1
panorama ``--input`` pixels wide is upscaled ×2 (→ 4096 wide for the default input) and ×4
(→ 8192 wide) with the same diffusion and VAE tiles. Reported per run: peak resident memory of the
process (VmHWM), its resident memory just before the upscale (model loaded, input in memory), the
difference (what the upscale itself needed), the wall time, the tile counts and the seam ratio of
the output (mean |first − last column| / mean adjacent-column step). On a CUDA device the peak
allocated GPU memory is reported too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def child(args) -> None:
    import numpy as np
    import torch

    from pano360.backbones.device import resolve_device, resolve_dtype
    from pano360.backbones.loading import load_backbone
    from pano360.sphere.measures import seam_ratio
    from pano360.sphere.upscale import UpscaleSettings, _grid, target_size, upscale_panorama

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    backbone = load_backbone(args.model, torch_dtype=resolve_dtype("auto", device), device=device)
    width = args.input
    height = width // 2
    y, x = np.mgrid[0:height, 0:width]
    lon = (x + 0.5) / width * 2 * np.pi
    image = np.stack([127 + 80 * np.sin(3 * lon) * np.cos(np.pi * y / height), 127 + 60 * np.cos(5 * np.pi * y / height),
                      127 + 40 * np.cos(2 * lon)], -1).astype(np.uint8)
    settings = UpscaleSettings(strength=args.strength, num_inference_steps=args.steps, tile=args.tile,
                               vae_tile=args.vae_tile, seed=0)
    out_h, out_w = target_size(height, width, args.scale)
    before = _status_kib("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    out = upscale_panorama(backbone.pipe, image, "a landscape", scale=args.scale, settings=settings)
    elapsed = time.perf_counter() - started
    result = {
        "size": f"{out_w}x{out_h}", "peak_rss_mib": _status_kib("VmHWM") / 1024, "before_mib": before / 1024,
        "seconds": elapsed, "diffusion_tiles": len(_grid((out_h // 8, out_w // 8), args.tile, None)),
        "vae_tiles": len(_grid((out_h // 8, out_w // 8), args.vae_tile, None)),
        "seam_ratio": seam_ratio(torch.from_numpy(out).permute(2, 0, 1)[None]),
    }
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--input", type=int, default=2048, help="input width in pixels (2:1 panorama)")
    parser.add_argument("--tile", type=int, default=32, help="diffusion tile, latents")
    parser.add_argument("--vae-tile", type=int, default=64, help="VAE tile, latents")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--strength", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--scale", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale is not None:
        child(args)
        return
    results = []
    for scale in (2, 4):
        command = [sys.executable, __file__, *sys.argv[1:], "--scale", str(scale)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(output.split("RESULT ", 1)[1]))
        print("#", json.dumps(results[-1]), file=sys.stderr, flush=True)
    base = results[0]
    if args.markdown:
        print("| output | diffusion / VAE tiles | peak RSS MiB | before upscale MiB | upscale's own MiB | time s | seam ratio |")
        print("|---|---|---|---|---|---|---|")
    for r in results:
        own = r["peak_rss_mib"] - r["before_mib"]
        if args.markdown:
            print(f"| {r['size']} | {r['diffusion_tiles']} / {r['vae_tiles']} | {r['peak_rss_mib']:.0f} | "
                  f"{r['before_mib']:.0f} | {own:.0f} | {r['seconds']:.1f} | {r['seam_ratio']:.3f} |")
        else:
            print(json.dumps(r))
    ratio = results[1]["peak_rss_mib"] / base["peak_rss_mib"]
    own_ratio = (results[1]["peak_rss_mib"] - results[1]["before_mib"]) / max(1e-9, base["peak_rss_mib"] - base["before_mib"])
    print(f"\npeak RSS 8K / 4K = {ratio:.3f}; upscale's own memory 8K / 4K = {own_ratio:.3f} "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}, "
          f"model {args.model}, tile {args.tile}, VAE tile {args.vae_tile})")


if __name__ == "__main__":
    main()
