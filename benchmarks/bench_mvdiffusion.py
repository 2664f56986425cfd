"""MVDiffusion: pano360's multi-view UNet vs a reference-style one, and FLOPs / correspondence cost at full size.

1. Time (CPU, tiny SD 2-like UNet with widths 32/64/64 and random CAA blocks, 8 views, a CFG batch of
   2 groups): pano360's :class:`MultiViewUNet` (correspondences cached per rig, one ``grid_sample`` per
   block) against ``tests/support/mvdiffusion_reference.py``, written from the digest the way the
   reference computes (hand-unrolled UNet, all m² full-resolution correspondences recomputed on every
   call, a Python loop of one ``grid_sample`` per view × neighbour × tap). Same weights and inputs;
   the outputs are compared.
2. FLOPs of one 8-view forward at full size (SD 2 base, 512² views, batch 1, meta device): plain UNet on
   the 8 views vs the multi-view UNet, and what the correspondences cost (reference: per call; pano360:
   once per rig) in FLOPs and bytes.

    python benchmarks/bench_mvdiffusion.py                 # both
    python benchmarks/bench_mvdiffusion.py --flops         # FLOPs only (seconds)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")

VIEWS = 8


def tiny_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64), layers_per_block=1,
        norm_num_groups=8, cross_attention_dim=32, attention_head_dim=(2, 4, 4), use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()


def interleaved_times(fns, repeats: int) -> list[float]:
    """Best time of each function over ``repeats`` rounds, the functions run in turn within a round (so a
    busy shared machine slows all of them alike)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def time_forward(latent: int, repeats: int) -> None:
    from support.mvdiffusion_reference import multiview_reference

    from pano360.adapters.mvdiffusion import MVDiffusionAdapter, ring_cameras

    unet = tiny_unet()
    adapter = MVDiffusionAdapter.for_unet(unet)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    network = adapter.attach(unet)
    cams = ring_cameras(VIEWS, 90.0, latent * 8)
    latents = torch.randn(2, VIEWS, 4, latent, latent, generator=gen)
    embeds = torch.randn(2, VIEWS, 77, 32, generator=gen)
    R, K = cams.R[None].repeat(2, 1, 1, 1), cams.K[None].repeat(2, 1, 1, 1)
    x, e = latents.flatten(0, 1), embeds.flatten(0, 1)
    with torch.no_grad():
        start = time.perf_counter()
        ours = network(x, 500, e, cameras=cams)[0]
        first = time.perf_counter() - start
        reference = multiview_reference(unet, adapter, latents, 500, embeds, R, K).flatten(0, 1)
        slow, cached, plain = interleaved_times([
            lambda: multiview_reference(unet, adapter, latents, 500, embeds, R, K),
            lambda: network(x, 500, e, cameras=cams),
            lambda: unet(x, 500, e),
        ], repeats)
    diff = (ours - reference).abs().max().item()
    caa = f"{(slow - plain) / (cached - plain):.1f}×" if cached > plain else "n/a"
    print(f"| {latent}×{latent} ({latent * 8} px) | {slow * 1e3:.0f} | {first * 1e3:.0f} | {cached * 1e3:.0f} | "
          f"{slow / cached:.1f}× | {plain * 1e3:.0f} | {caa} | {diff:.1e} |")


def flops_table() -> None:
    from common import SD2_BASE_UNET, count_flops, meta_unet, unet_inputs

    from pano360.adapters.mvdiffusion import MVDiffusionAdapter, ring_cameras
    from pano360.adapters.mvdiffusion.correspondence import SLOTS, level_geometry

    unet = meta_unet(SD2_BASE_UNET)
    inputs = unet_inputs(SD2_BASE_UNET, VIEWS, 64, 64)
    plain = count_flops(unet, **inputs)
    with torch.device("meta"):
        adapter = MVDiffusionAdapter.for_unet(unet)
    network = adapter.attach(unet)
    cams = ring_cameras(VIEWS, 90.0, 512)
    multi = count_flops(network, cameras=cams, **inputs)
    caa_params = sum(p.numel() for p in adapter.parameters())
    # the reference's arithmetic per query pixel and block (inner = d): q and out projections, k and v
    # projections of the 18 keys, scores and mixing, the GEGLU feed-forward (8d² + 4d² multiply-adds)
    sizes = [64, 32, 16, 8, 8, 8, 16, 32, 64]  # where the 9 blocks act on 64×64 latents
    widths = adapter.config["encoder_dims"] + [adapter.config["mid_dim"]] + adapter.config["decoder_dims"]
    reference = plain + sum(VIEWS * s * s * (2 * (2 * d * d + 36 * d * d + 36 * d) + 24 * d * d)
                            for s, d in zip(sizes, widths))
    print("| forward (8 views, 512², batch 1) | TFLOP | per view |")
    print("|---|---|---|")
    print(f"| plain SD 2 base UNet | {plain / 1e12:.2f} | {plain / VIEWS / 1e12:.3f} |")
    print(f"| reference multi-view UNet (its arithmetic, analytic) | {reference / 1e12:.2f} "
          f"(+{100 * (reference / plain - 1):.0f}%) | {reference / VIEWS / 1e12:.3f} |")
    print(f"| pano360 multi-view UNet (9 CAA blocks, {caa_params / 1e6:.1f} M parameters, counted) | "
          f"{multi / 1e12:.2f} (+{100 * (multi / plain - 1):.0f}%) | {multi / VIEWS / 1e12:.3f} |")
    # correspondences: the reference recomputes m² full-resolution maps per call (a 3×3 homography
    # applied to 512² pixels: 9 multiply-adds + 2 divides per pixel), pano360 computes the subsampled
    # taps once per rig; bytes of what each keeps per call / in its cache
    pairs, pixels = VIEWS * VIEWS, 512 * 512
    ref_flops = pairs * pixels * (2 * 9 + 2)
    ref_bytes = 2 * pairs * pixels * 2 * 4  # B = 2 (CFG), (x, y) float32
    ours_bytes = 0
    ours_pe = 0
    for size, widths in ((64, (320,)), (32, (640,)), (16, (1280,)), (8, (1280,))):
        g = level_geometry(cams, size, size)
        ours_bytes += sum(t.numel() * t.element_size() for t in (g.grid, g.valid, g.delta))
        ours_pe += sum(VIEWS * size * size * SLOTS * d * 4 for d in widths)
    print()
    print("| correspondences | when | FLOP | memory |")
    print("|---|---|---|---|")
    print(f"| reference: m² = {pairs} full-resolution maps | every UNet call | {ref_flops / 1e9:.2f} G | "
          f"{ref_bytes / 2**20:.0f} MiB (CFG batch) |")
    print(f"| pano360: 16 neighbour pairs × 9 taps at 4 feature sizes | once per rig | < 0.01 G | "
          f"{ours_bytes / 2**20:.1f} MiB plan + {ours_pe / 2**20:.0f} MiB masked γ(δ) (float32) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flops", action="store_true", help="FLOPs only")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32], help="latent sizes to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not args.flops:
        print(f"Time per forward (8 views × CFG 2 = 16 latents, CPU, {args.threads} thread(s), best of "
              f"{args.repeats} interleaved rounds):\n")
        print("| latent (view) | reference-style (ms) | pano360 first call (ms) | pano360 cached (ms) | speed-up | "
              "plain UNet (ms) | speed-up of the CAA part | max abs diff |")
        print("|---|---|---|---|---|---|---|---|")
        for size in args.sizes:
            time_forward(size, args.repeats)
        print()
    flops_table()


if __name__ == "__main__":
    main()
