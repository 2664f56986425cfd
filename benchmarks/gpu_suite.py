"""One prepared GPU run: full-size random-weight SD 2 base, SDXL, FLUX.1-dev, SD3-medium and Qwen-Image,
every method at its standard sizes.

For each case it reports seconds for the run, steps per second (it/s), the seconds a 50-step panorama
takes (measured fixed part + 50 steps at the measured rate), peak GPU memory, and the fraction of the
device's measured matrix-multiply ceiling that the run's FLOPs reach. FLOPs are counted with
``torch.utils.flop_counter`` on 1- and 2-step runs (per step = the difference), so text encoding and
the final decode are included once. The ceiling is a large fp16/bf16 matrix product timed on the same
GPU (METHOD.md: measure ceilings, do not trust datasheets). Channels-last is measured beside the
default layout for the circular and MultiDiffusion cases (that is how ``channels_last="auto"`` is set).

The models are the published architectures built directly on the GPU with random weights
(:func:`pano360.backbones.proportional.proportional_pipeline` with ``divisor=1``); speed does not
depend on the weights' values. Text encoders are two-layer stand-ins of the real widths. For the
transformers (:func:`dit_pipeline`) the denoiser is the released architecture
(:func:`pano360.backbones.tiny_dit.full_size_transformer`) and the VAE the released configuration, while the
text encoders are the tiny models' with the transformer's text input layers sized to them (a
``context_embedder`` of 32 inputs instead of 4096: under 0.1 % of a call's FLOPs); the exact seam is on.

    python benchmarks/gpu_suite.py                       # on a GPU: a few minutes, writes docs/benchmarks.md
    python benchmarks/gpu_suite.py --steps 5 --only sd2  # quicker
    python benchmarks/gpu_suite.py --dry-run             # CPU, tiny models, seconds (what the test runs)

The table replaces the block between ``<!-- gpu_suite:begin -->`` and ``<!-- gpu_suite:end -->`` in
``--docs`` (default docs/benchmarks.md), together with the command, the GPU's name and the versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

BEGIN, END = "<!-- gpu_suite:begin -->", "<!-- gpu_suite:end -->"
PROMPT = "a mountain lake at sunrise, 360 panorama"
STANDARD_STEPS = 50


@dataclass
class Case:
    family: str  # "sd2" | "sdxl" | "flux" | "sd3" | "qwen-image"
    method: str
    height: int
    width: int
    options: dict = field(default_factory=dict)
    channels_last: bool = False

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.options.items() if k != "perceptual_loss")
        layout = ", channels-last" if self.channels_last else ""
        return f"{self.method} {self.height}×{self.width}" + (f" ({extra}{layout})" if extra or layout else "")


def standard_cases(families=("sd2", "sdxl"), methods: set[str] | None = None) -> list[Case]:
    """The standard sizes: SD 2 at 512 px height, SDXL at 1024 px height, 2:1 (circular) or 4:1 (windows)."""
    cases = []
    if "sd2" in families:
        cases += [
            Case("sd2", "circular", 512, 1024), Case("sd2", "circular", 512, 1024, channels_last=True),
            Case("sd2", "circular", 1024, 2048),
            Case("sd2", "multidiffusion", 512, 2048, {"stride": 8}),
            Case("sd2", "multidiffusion", 512, 2048, {"stride": 8}, channels_last=True),
            Case("sd2", "multidiffusion", 512, 2048, {"stride": 16}),
            Case("sd2", "syncdiffusion", 512, 2048, {"stride": 16}),
            Case("sd2", "spot", 512, 2048),
        ]
    if "flux" in families:
        cases += [
            Case("flux", "circular", 1024, 2048), Case("flux", "circular", 1024, 2048, {"seam": "none"}),
            Case("flux", "circular", 512, 1024),
            Case("flux", "multidiffusion", 1024, 4096, {"stride": 32}), Case("flux", "spot", 1024, 4096),
        ]
    if "sd3" in families:
        cases += [Case("sd3", "circular", 1024, 2048), Case("sd3", "spot", 1024, 4096)]
    if "qwen-image" in families:
        cases += [Case("qwen-image", "circular", 1024, 2048), Case("qwen-image", "circular", 512, 1024)]
    if "sdxl" in families:
        cases += [
            Case("sdxl", "circular", 1024, 2048), Case("sdxl", "circular", 1024, 2048, channels_last=True),
            Case("sdxl", "multidiffusion", 1024, 2048, {"stride": 16}),
            Case("sdxl", "syncdiffusion", 1024, 2048, {"stride": 32}),
            Case("sdxl", "spot", 1024, 2048),
        ]
    return [c for c in cases if methods is None or c.method in methods]


def dry_run_cases() -> list[Case]:
    """Tiny models on the CPU: the same code path, sizes that take a second."""
    return [Case("sd2", "circular", 64, 128), Case("sd2", "multidiffusion", 64, 256, {"window": 8, "stride": 4}),
            Case("sd2", "syncdiffusion", 64, 128, {"window": 8, "stride": 4}), Case("sd2", "spot", 64, 256, {"window": 8}),
            Case("sdxl", "circular", 64, 128), Case("flux", "circular", 64, 128),
            Case("flux", "multidiffusion", 64, 256, {"window": 8, "stride": 4}), Case("sd3", "circular", 64, 128),
            Case("qwen-image", "circular", 64, 128)]


DIT_TINY_NAMES = {"flux": "tiny-flux", "sd3": "tiny-sd3", "qwen-image": "tiny-qwen"}
DIT_FULL_NAMES = {"flux": "flux-dev", "sd3": "sd3-medium", "qwen-image": "qwen-image"}
TEXT_INPUT_KEYS = ("joint_attention_dim", "pooled_projection_dim")


def dit_pipeline(family: str, device: torch.device, dtype: torch.dtype, dry_run: bool):
    """A transformer pipeline: the tiny one (dry run), or the tiny one with the released transformer
    (text input layers sized to the tiny text encoders) and the released VAE configuration."""
    import diffusers

    from pano360.backbones.tiny_dit import full_size_config, tiny_dit_pipeline

    pipe = tiny_dit_pipeline(DIT_TINY_NAMES[family])
    if dry_run:
        return pipe
    class_name = type(pipe.transformer).__name__
    config = {**full_size_config(DIT_FULL_NAMES[family]),
              **{key: pipe.transformer.config[key] for key in TEXT_INPUT_KEYS if key in pipe.transformer.config}}
    with torch.device(device):
        pipe.transformer = getattr(diffusers, class_name)(**config).to(dtype).eval()
        if family == "qwen-image":
            pipe.vae = diffusers.AutoencoderKLQwenImage().to(dtype).eval()  # the released configuration
        else:
            pipe.vae = diffusers.AutoencoderKL(
                in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, use_quant_conv=False, use_post_quant_conv=False,
                scaling_factor=pipe.vae.config.scaling_factor, shift_factor=pipe.vae.config.shift_factor,
            ).to(dtype).eval()
    pipe.default_sample_size = 128  # the released models' native 1024 px
    return pipe


def available_methods() -> set[str]:
    import pano360

    lister = getattr(pano360, "available_methods", None)
    return set(lister()) if callable(lister) else {"circular", "multidiffusion", "syncdiffusion"}


def build_generator(family: str, device: torch.device, dtype: torch.dtype, dry_run: bool):
    from pano360.generator import PanoramaGenerator

    if family in DIT_TINY_NAMES:
        pipe = dit_pipeline(family, device, dtype, dry_run)
    elif dry_run:
        from pano360.backbones.tiny import tiny_pipeline

        pipe = tiny_pipeline(family)
    else:
        from pano360.backbones.proportional import proportional_pipeline

        pipe = proportional_pipeline(family, divisor=1, device=device)
    pipe.to(device=device, dtype=dtype)
    return PanoramaGenerator.from_pipe(pipe, name=f"random-{family}{'-tiny' if dry_run else ''}", channels_last=False)


def perceptual_loss(device, dtype, dry_run: bool):
    from pano360.nets.lpips import LPIPS

    if dry_run:
        from pano360.backbones.proportional import proportional_lpips

        return proportional_lpips(divisor=16).to(device=device, dtype=dtype)
    return LPIPS(net="vgg", pretrained=False).to(device=device, dtype=dtype)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_ceiling(device: torch.device, dtype: torch.dtype, size: int = 8192, repeats: int = 20) -> float:
    """Measured FLOP/s of a large square matrix product (the rate the UNet's matmuls and convs aim at)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return 2 * size ** 3 / times[len(times) // 2]


def run_case(gen, case: Case, steps: int, device: torch.device, lpips=None) -> float:
    options = dict(case.options)
    if case.method == "syncdiffusion" and lpips is not None:
        options["perceptual_loss"] = lpips
    gen.channels_last = case.channels_last
    synchronize(device)
    start = time.perf_counter()
    gen(PROMPT, method=case.method, height=case.height, width=case.width, num_inference_steps=steps, seed=0,
        output_type="pt", progress=False, **options)
    synchronize(device)
    return time.perf_counter() - start


def count_flops(gen, case: Case, steps: int, device, lpips=None) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run_case(gen, case, steps, device, lpips)
    return counter.get_total_flops()


def measure(case: Case, gen, steps: int, device, lpips, ceiling: float) -> dict:
    run_case(gen, case, 1, device, lpips)  # warm-up: kernels, cuDNN autotuning, allocator
    one = count_flops(gen, case, 1, device, lpips)
    two = count_flops(gen, case, 2, device, lpips)
    per_step, fixed_flops = two - one, 2 * one - two
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base = run_case(gen, case, 1, device, lpips)
    seconds = run_case(gen, case, steps, device, lpips)
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    step_seconds = max(1e-9, (seconds - base) / max(1, steps - 1))
    fixed_seconds = max(0.0, base - step_seconds)
    flops = fixed_flops + steps * per_step
    return {
        "family": case.family, "case": case.label, "steps": steps, "seconds": round(seconds, 2),
        "it_per_s": round(1 / step_seconds, 2),
        "s_per_panorama_50": round(fixed_seconds + STANDARD_STEPS * step_seconds, 1),
        "peak_gib": round(peak, 2), "tflop": round(flops / 1e12, 1),
        "fraction_of_ceiling": round(flops / seconds / ceiling, 3),
    }


def markdown(rows: list[dict], header: dict) -> str:
    lines = [BEGIN, "", f"Command: `{header['command']}`", "",
             f"Device: {header['device']} ({header['dtype']}); torch {header['torch']}, diffusers {header['diffusers']}; "
             f"measured {header['dtype']} matmul ceiling {header['ceiling_tflops']:.0f} TFLOP/s; {header['date']}.", "",
             "| model | case | steps run | s (run) | it/s | s per 50-step panorama | peak GiB | TFLOP (run) | "
             "fraction of ceiling |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['family']} | {r['case']} | – | – | – | – | – | – | {r['error']} |")
            continue
        lines.append(f"| {r['family']} | {r['case']} | {r['steps']} | {r['seconds']} | {r['it_per_s']} | "
                     f"{r['s_per_panorama_50']} | {r['peak_gib']} | {r['tflop']} | {r['fraction_of_ceiling']:.1%} |")
    lines += ["", END]
    return "\n".join(lines)


def write_docs(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        before, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n## GPU suite (full-size random-weight SD 2 base and SDXL)\n\n" + block + "\n"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="steps per timed run (>= 2)")
    parser.add_argument("--only", choices=["sd2", "sdxl", "flux", "sd3", "qwen-image"], default=None)
    parser.add_argument("--methods", nargs="+", default=None)
    parser.add_argument("--dtype", choices=["fp16", "bf16"], default="fp16")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny models, fp32 (tests this script)")
    parser.add_argument("--docs", default=str(Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"))
    parser.add_argument("--no-docs", action="store_true", help="print the table only")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be >= 2 (the per-step rate is the difference to a 1-step run)")
    if args.dry_run:
        device, dtype = torch.device("cpu"), torch.float32
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU is visible; use --dry-run to check the script on a CPU")
        device, dtype = torch.device("cuda"), {"fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    families = (args.only,) if args.only else ("sd2", "sdxl", "flux", "sd3", "qwen-image")
    methods = available_methods() & (set(args.methods) if args.methods else available_methods())
    cases = dry_run_cases() if args.dry_run else standard_cases(families, methods)
    cases = [c for c in cases if c.family in families and c.method in methods]
    ceiling = matmul_ceiling(device, dtype, size=256 if args.dry_run else 8192, repeats=3 if args.dry_run else 20)
    rows = []
    for family in families:
        family_cases = [c for c in cases if c.family == family]
        if not family_cases:
            continue
        gen = build_generator(family, device, dtype, args.dry_run)
        lpips = perceptual_loss(device, dtype, args.dry_run) if any(c.method == "syncdiffusion" for c in family_cases) else None
        for case in family_cases:
            try:
                row = measure(case, gen, args.steps, device, lpips, ceiling)
            except Exception as error:  # noqa: BLE001  one failing case (e.g. out of memory) must not lose the others
                row = {"family": family, "case": case.label, "error": f"{type(error).__name__}: {str(error)[:80]}"}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
        del gen
        if device.type == "cuda":
            torch.cuda.empty_cache()
    import diffusers

    header = {
        "command": "python benchmarks/gpu_suite.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.machine()})",
        "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__, "diffusers": diffusers.__version__,
        "ceiling_tflops": ceiling / 1e12, "date": time.strftime("%Y-%m-%d"),
    }
    block = markdown(rows, header)
    print(block)
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows, "cases": [asdict(c) for c in cases]},
                                              indent=1))
    if not args.no_docs:
        write_docs(Path(args.docs), block)
    return rows


if __name__ == "__main__":
    main()
