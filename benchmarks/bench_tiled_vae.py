"""Wrapped VAE decode, untiled vs tiled: peak memory, time and the difference between the two.

Each measurement runs in a fresh subprocess and reports how far its resident memory rises above what
it held before the decode: the peak is reset just before (``/proc/self/clear_refs``, Linux) and read
after (``VmHWM``); on the CPU torch's tensors live in that memory, and one mode's allocations cannot
hide another's. ``--store cpu`` is what a GPU run would use to keep the
tiles' intermediate maps off the device; on the CPU it is the same memory, so it is not measured here.

    python benchmarks/bench_tiled_vae.py                       # tiny VAE, 64x256 latent (512x2048 px)
    python benchmarks/bench_tiled_vae.py --vae proportional --latent 128 256   # SD-proportioned VAE, 1024x2048 px
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(vae_name: str, height: int, width: int, mode: str, tile: int, margin: int) -> dict:
    import time

    import torch

    from pano360.backbones.vae import decode_latents, decode_latents_tiled
    from pano360.backbones.wrap import wraparound

    if vae_name == "proportional":
        from pano360.backbones.proportional import proportional_vae

        vae = proportional_vae("sd2")
    else:
        from pano360.backbones.tiny import tiny_vae

        vae = tiny_vae()
    latents = torch.randn(1, 4, height, width, generator=torch.Generator().manual_seed(0))
    def decode():
        with torch.no_grad():
            if mode == "untiled":
                with wraparound(vae):
                    return decode_latents(vae, latents)
            return decode_latents_tiled(vae, latents, tile=tile, margin=margin, wrap=True)

    decode()  # warm-up at full size: code pages, kernel caches and allocator pools are not the decode's memory
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the peak resident set size to the current one
    start = time.process_time()
    images = decode()
    seconds = time.process_time() - start
    after = _status_kib("VmHWM")
    torch.save(images, os.environ["TILED_VAE_OUT"])
    return {"mode": mode, "peak_growth_mib": round((after - before) / 1024, 1), "cpu_seconds": round(seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vae", choices=["tiny", "proportional"], default="tiny")
    parser.add_argument("--latent", type=int, nargs=2, default=[64, 256], metavar=("H", "W"))
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--margin", type=int, default=16)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.vae, *args.latent, args.child, args.tile, args.margin)))
        return
    import tempfile

    import torch

    rows, images = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for mode in ("untiled", "tiled"):
            out = os.path.join(folder, f"{mode}.pt")
            env = {**os.environ, "TILED_VAE_OUT": out}
            result = subprocess.run([sys.executable, __file__, "--child", mode, "--vae", args.vae, "--latent",
                                     *map(str, args.latent), "--tile", str(args.tile), "--margin", str(args.margin)],
                                    env=env, capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            images[mode] = torch.load(out)
    diff = float((images["tiled"] - images["untiled"]).abs().max())
    h, w = args.latent
    print(f"{args.vae} VAE, latent {h}x{w} ({8 * h}x{8 * w} px), tile {args.tile}, margin {args.margin}, "
          f"threads {torch.get_num_threads()}; max abs diff tiled vs untiled {diff:.2e}")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
