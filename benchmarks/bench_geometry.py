"""Time pano360.geometry against py360convert on a 1024×2048 RGB panorama.

    python benchmarks/bench_geometry.py [--device cpu|cuda] [--repeats 5] [--threads N] [--markdown]

Operations (float32 RGB, bilinear):
  e2p   one 512×512 view, FoV 90° (py360convert: the same view),
        and 8 views of the horizon ring in one batched call (py360convert: 8 calls)
  e2c   six 512×512 faces
  c2e   1024×2048 panorama from six 512×512 faces
Each time is the best of ``--repeats`` runs after one warm-up run. py360convert caches its sampling
grid per size/angle (lru_cache), so its repeated calls skip the grid computation; ours recompute the
grid every call. py360convert always runs on the CPU (numpy/scipy, no OpenCV installed here).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from pano360 import geometry as g


def best_time(fn, repeats: int, device: torch.device) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    pano = torch.rand(1, 3, 1024, 2048, generator=generator).to(device)
    pano_np = pano[0].permute(1, 2, 0).cpu().numpy().copy()
    faces = g.equirect_to_cubemap(pano, 512, layout="stack")
    dice_np = g.faces_to_layout(faces, "dice")[0].permute(1, 2, 0).cpu().numpy().copy()
    ring = g.horizon_ring(8)

    rows = [
        ("e2p, 1 view 512×512", lambda: g.equirect_to_perspective(pano, 30.0, 10.0, 90.0, (512, 512)), None),
        ("e2p, 8 views 512×512", lambda: g.equirect_to_perspective(pano, **ring.angles(), out_hw=(512, 512)), None),
        ("e2c, face 512", lambda: g.equirect_to_cubemap(pano, 512, layout="stack"), None),
        ("c2e, 1024×2048 from face 512", lambda: g.cubemap_to_equirect(faces, (1024, 2048)), None),
    ]
    try:
        import py360convert
    except ImportError:
        py360convert = None
    if py360convert is not None:
        reference = {
            "e2p, 1 view 512×512": lambda: py360convert.e2p(pano_np, 90.0, 30.0, 10.0, (512, 512)),
            "e2p, 8 views 512×512": lambda: [py360convert.e2p(pano_np, 90.0, float(y), 0.0, (512, 512))
                                             for y in ring.yaw_deg],
            "e2c, face 512": lambda: py360convert.e2c(pano_np, 512, cube_format="horizon"),
            "c2e, 1024×2048 from face 512": lambda: py360convert.c2e(dice_np, 1024, 2048, cube_format="dice"),
        }
        rows = [(name, fn, reference[name]) for name, fn, _ in rows]

    results = []
    for name, ours, theirs in rows:
        t_ours = best_time(ours, args.repeats, device)
        t_ref = best_time(theirs, args.repeats, torch.device("cpu")) if theirs else float("nan")
        results.append((name, t_ours, t_ref))

    cpu = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, device {device}, torch threads {torch.get_num_threads()}, "
          f"{os.cpu_count()} CPU cores ({cpu}), numpy {np.__version__}")
    if args.markdown:
        print("| operation | pano360 (ms) | py360convert (ms) | speed-up |")
        print("|---|---:|---:|---:|")
        for name, t_ours, t_ref in results:
            print(f"| {name} | {t_ours * 1e3:.1f} | {t_ref * 1e3:.1f} | {t_ref / t_ours:.2f}× |")
    else:
        for name, t_ours, t_ref in results:
            print(f"{name:32s} pano360 {t_ours * 1e3:8.1f} ms   py360convert {t_ref * 1e3:8.1f} ms   "
                  f"speed-up {t_ref / t_ours:5.2f}x")


if __name__ == "__main__":
    main()
