"""SpotDiffusion (method="spot") vs MultiDiffusion stride 8: time, UNet work and seam/coherence metrics.

Both run on the proportional SD 2 model (:mod:`pano360.backbones.proportional`: SD 2 base's depth and
attention placement, channels / 5) at 512×2048 px from the same initial latent, interleaved, every
step seamless: multidiffusion with loop closure (32 windows of 64 latents, stride 8), spot with 4
non-overlapping windows rolled by a random offset every step. Metrics on the decoded panoramas:

* Discontinuity Score at the wrap seam (:func:`pano360.metrics.seam.discontinuity_score`, lower is
  smoother; weight-free);
* Intra-LPIPS over 256-px crops with a *random-weight* narrowed LPIPS VGG (the official weights cannot be
  downloaded here), so it compares structure, not perceived quality;

CLIP score needs trained CLIP and UNet weights; with random UNet weights it would say nothing.

    python benchmarks/bench_spot.py --steps 2 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

PROMPT = "a mountain lake at sunrise"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (use with OMP_NUM_THREADS=1 on a shared machine)")
    args = parser.parse_args()
    now = time.process_time if args.clock == "cpu" else time.perf_counter

    from pano360.backbones.proportional import proportional_lpips, proportional_pipeline
    from pano360.generator import PanoramaGenerator
    from pano360.metrics.perceptual import intra_lpips
    from pano360.metrics.seam import discontinuity_score

    gen = PanoramaGenerator.from_pipe(proportional_pipeline("sd2"), name="proportional-sd2")
    latents = torch.randn(1, 4, args.height // 8, args.width // 8, generator=torch.Generator().manual_seed(0))
    common = dict(height=args.height, width=args.width, num_inference_steps=args.steps, latents=latents,
                  output_type="pt", progress=False, seed=0)
    runs = {
        "multidiffusion stride 8 (loop closure)": dict(method="multidiffusion", stride=8, loop_closure=True),
        "spot": dict(method="spot"),
    }
    calls = {name: 0 for name in runs}
    current = {"name": None}
    handle = gen.unet.register_forward_pre_hook(
        lambda module, a, k: calls.__setitem__(current["name"], calls[current["name"]] + a[0].shape[0]),
        with_kwargs=True)
    best = {name: float("inf") for name in runs}
    images = {}
    for _ in range(args.repeats):
        for name, options in runs.items():
            current["name"] = name
            calls[name] = 0
            start = now()
            images[name] = gen(PROMPT, **options, **common).images
            best[name] = min(best[name], now() - start)
    handle.remove()
    lpips = proportional_lpips()
    print(f"threads {torch.get_num_threads()}, {args.height}x{args.width}, {args.steps} steps, clock {args.clock}")
    base = best["multidiffusion stride 8 (loop closure)"]
    for name in runs:
        image = images[name]
        uint8 = (image[0].clamp(0, 1) * 255).round().to(torch.uint8)
        row = {"run": name, "seconds": round(best[name], 2), "vs_multidiffusion": round(best[name] / base, 3),
               "unet_samples_per_run": calls[name],
               "discontinuity": round(float(discontinuity_score(image.clamp(0, 1))[0]), 4),
               "intra_lpips_random_vgg": round(intra_lpips(uint8, lpips, crop=256), 4)}
        print(row, flush=True)


if __name__ == "__main__":
    main()
