"""Cost of the evaluation networks: FLOPs per call (meta device) and, optionally, measured time.

    python benchmarks/bench_metrics.py            # FLOPs only (any machine, seconds)
    python benchmarks/bench_metrics.py --time     # + wall time per call with random weights

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the full architectures at the
protocols' input sizes; random weights time the same as real ones.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from pano360.metrics.perceptual import STYLE_TAPS
from pano360.nets.faed import PanoAutoEncoder, faed_features
from pano360.nets.inception import FIDInceptionV3
from pano360.nets.lpips import LPIPS
from pano360.nets.vgg import build_trunk


def _cases(device: str):
    inception = FIDInceptionV3(pretrained=False).to(device)
    lpips = LPIPS("vgg", pretrained=False).to(device)
    vgg19 = build_trunk("vgg19", pretrained=False).to(device)
    faed = PanoAutoEncoder.random().encoder.to(device)
    pano = torch.randint(0, 256, (1, 3, 512, 1024), dtype=torch.uint8, device=device)
    crop = torch.rand(1, 3, 512, 512, device=device) * 2 - 1

    def lpips_grad():
        x = crop.clone().requires_grad_()
        lpips(x, crop.flip(-1)).sum().backward()

    return [
        ("FID Inception, one 299x299 view (any input is resized)", lambda: inception(pano), False),
        ("FAED encoder, one 512x1024 panorama", lambda: faed_features(faed, pano), False),
        ("LPIPS-VGG, one pair of 512x512 crops", lambda: lpips(crop, crop.flip(-1)), False),
        ("LPIPS-VGG forward+backward (SyncDiffusion loss), 512x512", lpips_grad, True),
        ("VGG19 conv1_1..conv3_1 (Intra-Style-L), one 512x512 crop", lambda: vgg19(crop, STYLE_TAPS), False),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--time", action="store_true", help="also measure wall time per call")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| network, input | GFLOP per call | time per call (s) |")
    print("|---|---|---|")
    for name, call, needs_grad in _cases(args.device):
        context = torch.enable_grad() if needs_grad else torch.no_grad()
        with context:
            counter = FlopCounterMode(display=False)
            with counter:
                call()
            gflop = counter.get_total_flops() / 1e9
            seconds = "–"
            if args.time:
                call()  # warm-up (oneDNN / cuDNN set-up)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.repeats):
                    call()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                seconds = f"{(time.perf_counter() - start) / args.repeats:.3f}"
        print(f"| {name} | {gflop:.1f} | {seconds} |")
    per_pano = 1 + 1 + 20 + 20 + 8 + 6
    print(f"\nInception calls per panorama and set for the PanFusion protocol plus OmniFID: {per_pano} "
          f"(full, rolled, 20 random, 20 seam, 8 horizon views, 6 cube faces)")


if __name__ == "__main__":
    main()
