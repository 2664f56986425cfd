"""MultiDiffusion: pano360 vs. diffusers' StableDiffusionPanoramaPipeline, and FLOPs at full size.

1. Time (CPU), both at identical settings (window 64, stride 8, DDIM, CFG 7.5, same latent), without
   wrap and with circular padding / loop closure; the decoded images are compared. diffusers runs its
   default view_batch_size=1 and with view_batch_size=8 (pano360's default). Models (``--model``):
   ``proportional`` (default): SD 2 base's architecture with channels / 5 and head dimension 64
   (:mod:`pano360.backbones.proportional`; attention at 4096 tokens as in SD); ``window64``: the
   convolution-heavy tiny model of the first measurements (attention at 256 tokens only).
   ``--components`` adds the per-component time breakdown of each run (benchmarks/components.py).
2. FLOPs per panorama for full-size SD 2 base (meta device), 50 steps, CFG.

    python benchmarks/bench_multidiffusion.py --steps 3 --repeats 2 --components   # proportional model
    python benchmarks/bench_multidiffusion.py --model window64 --steps 3 20         # the old tiny model
    python benchmarks/bench_multidiffusion.py --flops                               # FLOPs only
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

PROMPT = "a mountain lake at sunrise"


def build_pipeline(model: str):
    """A fresh, deterministic copy of the benchmark model (a diffusers ``StableDiffusionPipeline``)."""
    if model == "proportional":
        from pano360.backbones.proportional import proportional_pipeline

        return proportional_pipeline("sd2")
    from pano360.backbones.tiny import tiny_window64_pipeline

    return tiny_window64_pipeline()


def window64_models(channels_last="auto", model: str = "proportional"):
    """(pano360 generator, diffusers panorama pipeline) on two separately built copies of the same
    deterministic model, so pano360's memory layout does not leak into diffusers' modules."""
    from diffusers import DDIMScheduler, StableDiffusionPanoramaPipeline

    from pano360.generator import PanoramaGenerator

    reference = build_pipeline(model)
    panorama = StableDiffusionPanoramaPipeline(
        **{**reference.components, "scheduler": DDIMScheduler.from_config(reference.scheduler.config)},
        requires_safety_checker=False)
    panorama.set_progress_bar_config(disable=True)
    ours = PanoramaGenerator.from_pipe(build_pipeline(model), name=f"bench-{model}", channels_last=channels_last)
    return ours, panorama


def time_comparison(repeats: int = 3, steps: int = 3, height: int = 512, width: int = 1024,
                    channels_last="auto", model: str = "proportional", wraps=(False, True),
                    components: bool = False, pano360_options: dict | None = None, clock: str = "wall") -> list[dict]:
    """Best-of-``repeats`` wall times; the three runs are interleaved so that load from other processes
    on a shared machine hits them alike. With ``components`` each row also holds the per-component
    seconds of the fastest run of each side (:class:`components.ComponentTimer`)."""
    from components import ComponentTimer, clock_named

    now = clock_named(clock)

    generator, panorama = window64_models(channels_last, model)
    parts = {"pano360": dict(unet=generator.unet, vae=generator.vae),
             "diffusers_vbs1": dict(unet=panorama.unet, vae=panorama.vae),
             "diffusers_vbs8": dict(unet=panorama.unet, vae=panorama.vae)}
    latents = torch.randn(1, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(0))
    rows = []
    options = dict(pano360_options or {})
    for wrap in wraps:
        common = dict(height=height, width=width, num_inference_steps=steps, guidance_scale=7.5, latents=latents,
                      output_type="np")
        runs = {
            "pano360": lambda wrap=wrap, common=common: generator(PROMPT, method="multidiffusion", window=64, stride=8, loop_closure=wrap,
                                         decode_wrap="pad", progress=False, **options, **common).images[0],
            "diffusers_vbs1": lambda wrap=wrap, common=common: panorama(PROMPT, circular_padding=wrap, view_batch_size=1, **common).images[0],
            "diffusers_vbs8": lambda wrap=wrap, common=common: panorama(PROMPT, circular_padding=wrap, view_batch_size=8, **common).images[0],
        }
        best = {name: float("inf") for name in runs}
        images, breakdown = {}, {}
        for _ in range(repeats):
            for name, fn in runs.items():
                timer = ComponentTimer(**parts[name], clock=now) if components else contextlib.nullcontext()
                start = now()
                with timer:
                    images[name] = fn()
                elapsed = now() - start
                if elapsed < best[name]:
                    best[name] = elapsed
                    if components:
                        breakdown[name] = timer.row()
        for view_batch in (1, 8):
            name = f"diffusers_vbs{view_batch}"
            rows.append(dict(size=f"{height}x{width}", loop_closure=wrap, steps=steps, channels_last=channels_last,
                             diffusers_view_batch_size=view_batch, diffusers_s=round(best[name], 2),
                             pano360_s=round(best["pano360"], 2), speedup=round(best[name] / best["pano360"], 2),
                             max_abs_image_diff=float(np.abs(images[name] - images["pano360"]).max()),
                             model=model, clock=clock, **({"components": {"pano360": breakdown["pano360"], name: breakdown[name]}}
                                             if components else {})))
    return rows


def flops_table() -> list[dict]:
    from common import SD2_BASE_UNET, unet_call_flops, vae_decode_flops

    from pano360.methods.windows import WindowGrid

    unet = unet_call_flops(SD2_BASE_UNET, 2, 64, 64)
    rows = []
    for width in (2048, 3072):
        for stride, wrap in ((8, False), (8, True), (16, True)):
            n = len(WindowGrid.make((64, width // 8), (64, 64), (stride, stride), wrap=wrap))
            decode = vae_decode_flops(64, width // 8)  # a wrapped decode costs the same (pad: +16 columns)
            rows.append(dict(size=f"512x{width}", stride=stride, loop_closure=wrap, windows=n,
                             unet_tflop=50 * n * unet / 1e12, decode_tflop=decode / 1e12,
                             total_tflop=(50 * n * unet + decode) / 1e12))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flops", action="store_true", help="FLOPs only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, nargs="+", default=[3, 20])
    parser.add_argument("--channels-last", choices=["auto", "on", "off"], default="auto",
                        help="pano360's layout (auto: channels-last on the CPU); diffusers keeps its default")
    parser.add_argument("--model", choices=["proportional", "window64"], default="proportional")
    parser.add_argument("--wrap", choices=["both", "off", "on"], default="both",
                        help="loop closure / circular_padding off, on, or both")
    parser.add_argument("--components", action="store_true", help="per-component time breakdown")
    parser.add_argument("--view-batch-size", type=int, default=None, help="pano360's view_batch_size")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this process's CPU time (use with OMP_NUM_THREADS=1 on a shared machine)")
    args = parser.parse_args()
    for row in flops_table():
        print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()})
    if not args.flops:
        layout = {"on": True, "off": False}.get(args.channels_last, "auto")
        wraps = {"both": (False, True), "off": (False,), "on": (True,)}[args.wrap]
        options = {} if args.view_batch_size is None else {"view_batch_size": args.view_batch_size}
        print(f"threads {torch.get_num_threads()}, model {args.model}", flush=True)
        for steps in args.steps:
            for row in time_comparison(args.repeats, steps, channels_last=layout, model=args.model, wraps=wraps,
                                       components=args.components, pano360_options=options, clock=args.clock):
                print(row, flush=True)


if __name__ == "__main__":
    main()
