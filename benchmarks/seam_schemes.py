"""The seam schemes of the transformer families, compared on FLUX- and SD3-proportioned transformers.

Run: ``OMP_NUM_THREADS=2 python benchmarks/seam_schemes.py`` (CPU, random weights, a few minutes).

The transformers keep what decides the seam: FLUX.1's head dimension 128 and RoPE axes (16, 56, 56)
with θ = 10000 on 2 × 2-latent tokens; SD3's 2-D sin-cos embedding with its released geometry
(``pos_embed_max_size`` 192, ``sample_size`` 128, patch 2). Widths and depths are small (random
weights; the positional geometry is the released one). One model call per scheme at σ = 0.5 on latents
of 512×1024 and 1024×2048 px, measuring:

* ``roll``: max |f(roll(x)) − roll(f(x))| / std f(x), for a roll by two tokens (exact: ~1e-7);
* ``seam``: on smooth periodic latents, the jump between the last and the first latent column of f(x),
  divided by the median jump between neighbouring columns inside (1 = the seam is like any column);
* ``change``: mean |f_scheme(x) − f_released(x)| / mean |f_released(x)| over columns at least 8 latents
  away from the seam: how far the scheme moves the model from the released one where no seam is;
* ``gap``: how differently the model's positions relate the seam's two columns than two neighbouring
  columns inside: |sim(P−1, 0) − sim(0, 1)| with sim the width-axis positional similarity (RoPE: mean
  cos ω·Δ over the width frequencies; SD3: cosine similarity of the sin-cos embeddings). 0 = the seam's
  columns are neighbours like any others; the released positions put them a whole panorama apart;
* ``time``: seconds per call relative to the released model (median of 3, interleaved).

With random weights the transformer's output depends little on its positions (``roll`` of the released
FLUX-shaped model is 1e-2), so ``seam`` cannot single out a scheme here; ``gap``, ``roll`` and ``change``
are properties of the positions and hold for trained weights too.

Results go to stdout as a Markdown table (copied into docs/seams.md).
"""

from __future__ import annotations

import argparse
import time

import torch

from pano360.backbones.family import get_family
from pano360.backbones.token_seam import TokenSeam, token_seam

SIGMA = 0.5


def flux_proportioned(seed: int = 0):
    """FLUX.1's attention geometry (head dim 128, axes 16/56/56) at 2 heads, 2 double + 4 single blocks."""
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=4,
                                  attention_head_dim=128, num_attention_heads=2, joint_attention_dim=256,
                                  pooled_projection_dim=64, guidance_embeds=True, axes_dims_rope=(16, 56, 56)).eval()


def sd3_proportioned(seed: int = 0):
    """SD3's position embedding geometry (max grid 192, sample size 128, patch 2) at 2 heads × 64, 4 blocks."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=4, attention_head_dim=64,
                                 num_attention_heads=2, joint_attention_dim=256, caption_projection_dim=128,
                                 pooled_projection_dim=64, out_channels=16, pos_embed_max_size=192).eval()


def smooth_latents(channels: int, height: int, width: int, seed: int) -> torch.Tensor:
    """Low-frequency latents, periodic across the width, unit variance [1, channels, height, width]."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(height).float()[:, None]
    x = torch.arange(width).float()[None]
    latents = torch.zeros(1, channels, height, width)
    for channel in range(channels):
        for kx in (1, 2, 3):
            phase = torch.rand(2, generator=generator) * 2 * torch.pi
            latents[0, channel] += torch.cos(2 * torch.pi * kx * x / width + phase[0]) * torch.cos(
                torch.pi * (y + 0.5) / height + phase[1])
    return latents / latents.std()


def positional_gap(family_name: str, network, columns: int, scheme: str, rounding: str) -> float:
    """|sim(P−1, 0) − sim(0, 1)| of the width positions a scheme gives the columns (see the module doc)."""
    from pano360.backbones.token_seam import rope_frequencies, snap_frequencies

    periodic = scheme in ("exact", "periodic")
    if family_name == "sd3":
        from pano360.backbones.family_sd3 import sd3_position_embedding

        embedding = sd3_position_embedding(network.pos_embed, 1, columns, TokenSeam(scheme, rounding) if periodic
                                           else None)[0]
        width = embedding[:, : embedding.shape[1] // 2].double()  # the width half
        width = width / width.norm(dim=1, keepdim=True)
        return abs(float(width[-1] @ width[0] - width[0] @ width[1]))
    freqs = rope_frequencies(network.config.axes_dims_rope[2], 10000.0)
    if periodic:
        freqs = snap_frequencies(freqs, columns, rounding)
    similarity = lambda delta: float(torch.cos(freqs * delta).mean())  # noqa: E731
    return abs(similarity(columns - 1) - similarity(1))


def measure(family_name: str, network, latent_hw: tuple[int, int], schemes: list[tuple[str, str]]) -> list[dict]:
    family = get_family(family_name)
    height, width = latent_hw
    text = torch.randn(1, 128, network.config.joint_attention_dim, generator=torch.Generator().manual_seed(1))
    pooled = torch.randn(1, network.config.pooled_projection_dim, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(1, 16, height, width, generator=torch.Generator().manual_seed(3))
    smooth = smooth_latents(16, height, width, seed=4)
    t = torch.tensor(SIGMA * 1000)

    def call(latents, seam):
        with torch.no_grad(), token_seam(network, seam):
            return family.call(network, latents, t, text, pooled, embedded_guidance=3.5)

    def seconds(seam) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            call(noise, seam)
            times.append(time.perf_counter() - start)
        return sorted(times)[1]

    reference = call(noise, None)
    interior = slice(8, width - 8)
    rows = []
    for scheme, rounding in schemes:
        seam = None if scheme == "none" else TokenSeam(scheme, rounding)
        base = call(noise, seam)
        relative_time = seconds(seam) / seconds(None)
        rolled = call(torch.roll(noise, 4, -1), seam)
        roll = ((torch.roll(base, 4, -1) - rolled).abs().max() / base.std()).item()
        out = call(smooth, seam)
        jumps = (out[..., 1:] - out[..., :-1]).abs().mean(dim=(0, 1, 2))
        seam_ratio = ((out[..., 0] - out[..., -1]).abs().mean() / jumps.median()).item()
        change = ((base - reference)[..., interior].abs().mean() / reference[..., interior].abs().mean()).item()
        rows.append({"family": family_name, "size": f"{height * 8}x{width * 8}", "scheme": scheme,
                     "rounding": rounding if scheme in ("exact", "periodic") else "", "roll": roll,
                     "seam": seam_ratio, "change": change, "time": relative_time,
                     "gap": positional_gap(family_name, network, width // 2, scheme, rounding)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64x128,128x256", help="latent HEIGHTxWIDTH list (8 px per latent)")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    flux_schemes = [("none", ""), ("pad", ""), ("blend", ""), ("periodic", "nearest"), ("periodic", "ceil"),
                    ("exact", "nearest"), ("exact", "ceil")]
    sd3_schemes = [("none", ""), ("pad", ""), ("blend", ""), ("exact", "nearest"), ("exact", "ceil")]
    rows = []
    for size in sizes:
        rows += measure("flux", flux_proportioned(), size, flux_schemes)
        rows += measure("sd3", sd3_proportioned(), size, sd3_schemes)
    print("| family | size (px) | scheme | rounding | positional gap | roll error | seam / interior jump "
          "| change inside | time |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['size']} | {r['scheme']} | {r['rounding']} | {r['gap']:.3f} | {r['roll']:.1e} "
              f"| {r['seam']:.2f} | {r['change']:.3f} | {r['time']:.2f}x |")


if __name__ == "__main__":
    main()
