"""Cost of the UniPano adapter (v-LoRA + o-MoE-LoRA) over the plain circular UNet, and its training
step against a LoRA on q, k, v, o.

Run: ``python benchmarks/bench_unipano.py [flops time train-memory train-time]`` (CPU; a few minutes;
prints the Markdown tables named, default all four).

1. FLOPs of one UNet call (classifier-free guidance batch 2) with and without the adapter, for the
   full-size SD 2 base and SDXL architectures built on the meta device (``common.py``).
2. Time of one wrapped UNet call on the tiny random models (batch 2, as with guidance, one thread),
   adapter attached vs not, calls alternating; the fastest and the median of 15 calls each. On a
   shared machine the fastest call is the one other processes disturbed least, so its ratio is the
   adapter's own cost. The adapter's weights are random (an untrained one computes the same).
3. Training memory at full size (SD 2 base, 512×1024, batch 1, fp32, no gradient checkpointing), on
   the meta device: activations autograd saves for backward (summed over every saved tensor with
   ``saved_tensors_hooks``), plus the adapter's weights, gradients and AdamW moments; and the FLOPs of
   forward + backward. UniPano vs ``--adapter lora`` on q, k, v, o, both rank 4.
4. Training step time on the tiny model (forward with gradients, backward, AdamW step; batch 2 at
   32×64 latents; one thread; fastest and median of 15, the two adapters alternating).
"""

from __future__ import annotations

import statistics
import time

import torch
from common import SD2_BASE_UNET, SDXL_UNET, count_flops, meta_unet, tflop, unet_inputs

from pano360.adapters.unipano import UniPanoAdapter
from pano360.backbones.tiny import tiny_unet
from pano360.backbones.wrap import wraparound

FLOP_CASES = [("SD 2 base", SD2_BASE_UNET, 512, 1024), ("SD 2 base", SD2_BASE_UNET, 1024, 2048),
              ("SDXL", SDXL_UNET, 1024, 2048)]
TIME_CASES = [("sd2", 16, 32), ("sd2", 32, 64), ("sdxl", 32, 64)]


def flops_table() -> None:
    print("| model | size (H×W px) | UNet call, CFG batch 2 (TFLOP) | with UniPano (TFLOP) | overhead | "
          "adapter parameters |")
    print("|---|---|---|---|---|---|")
    for name, config, height, width in FLOP_CASES:
        unet = meta_unet(config)
        inputs = unet_inputs(config, 2, height // 8, width // 8)
        plain = count_flops(unet, **inputs)
        adapter = UniPanoAdapter.for_unet(unet)
        adapter.attach(unet)
        adapted = count_flops(unet, **inputs)
        adapter.detach(unet)
        parameters = sum(p.numel() for p in adapter.parameters())
        print(f"| {name} | {height}×{width} | {tflop(plain)} | {tflop(adapted)} | "
              f"{100 * (adapted / plain - 1):+.2f}% | {parameters / 1e6:.2f} M |")


def times_ms_interleaved(call, adapter, unet, repeats: int = 15) -> dict[bool, list[float]]:
    times = {False: [], True: []}
    call()
    for _ in range(repeats):
        for attached in (False, True):
            if attached:
                adapter.attach(unet)
            start = time.perf_counter()
            call()
            times[attached].append((time.perf_counter() - start) * 1e3)
            adapter.detach(unet)
    return times


@torch.no_grad()
def time_table() -> None:
    torch.set_num_threads(1)
    print("| model | latent (units) | wrapped UNet, fastest / median (ms) | + UniPano (ms) | overhead, fastest / median |")
    print("|---|---|---|---|---|")
    for family, latent_h, latent_w in TIME_CASES:
        unet = tiny_unet(family)
        adapter = UniPanoAdapter.for_unet(unet)
        generator = torch.Generator().manual_seed(0)
        for parameter in adapter.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        latents = torch.randn(2, 4, latent_h, latent_w)
        text = torch.randn(2, 77, unet.config.cross_attention_dim)
        extra = {}
        if family == "sdxl":
            extra["added_cond_kwargs"] = {"text_embeds": torch.randn(2, 32), "time_ids": torch.zeros(2, 6)}

        def call(unet=unet, latents=latents, text=text, extra=extra):
            unet(latents, 500, encoder_hidden_states=text, **extra)

        with wraparound(unet):
            times = times_ms_interleaved(call, adapter, unet)
        (p_min, a_min), (p_med, a_med) = ((min(times[False]), min(times[True])),
                                          (statistics.median(times[False]), statistics.median(times[True])))
        print(f"| tiny {family} | {latent_h}×{latent_w} | {p_min:.1f} / {p_med:.1f} | {a_min:.1f} / {a_med:.1f} | "
              f"{100 * (a_min / p_min - 1):+.0f}% / {100 * (a_med / p_med - 1):+.0f}% |")


def _training_adapters(unet):
    from pano360.adapters.lora import LoRAAdapter

    return {"UniPano (v LoRA + o MoE)": UniPanoAdapter.for_unet(unet),
            "LoRA q,k,v,o": LoRAAdapter.for_unet(unet, rank=4, targets="q,k,v,o")}


def training_memory_table() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    print("| adapter (SD 2 base, 512×1024, batch 1, fp32) | parameters | saved activations (GiB) | "
          "weights + grads + AdamW (MiB) | forward + backward (TFLOP) |")
    print("|---|---|---|---|---|")
    unet = meta_unet(SD2_BASE_UNET).requires_grad_(False)
    inputs = unet_inputs(SD2_BASE_UNET, 1, 64, 128)
    for name, adapter in _training_adapters(unet).items():
        adapter.to("meta")
        network = adapter.attach(unet)
        saved = [0]

        def pack(tensor, saved=saved):
            saved[0] += tensor.numel() * tensor.element_size()
            return tensor

        with FlopCounterMode(display=False) as counter:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                out = network(**inputs).sample
            loss = out.square().mean()
            aux = adapter.auxiliary_loss()
            (loss if aux is None else loss + aux).backward()
        adapter.detach(unet)
        parameters = sum(p.numel() for p in adapter.parameters())
        print(f"| {name} | {parameters / 1e6:.2f} M | {saved[0] / 2**30:.2f} | {parameters * 16 / 2**20:.1f} | "
              f"{counter.get_total_flops() / 1e12:.2f} |")


def training_time_table(repeats: int = 15) -> None:
    torch.set_num_threads(1)
    unet = tiny_unet("sd2").requires_grad_(False)
    latents = torch.randn(2, 4, 32, 64)
    text = torch.randn(2, 77, unet.config.cross_attention_dim)
    adapters = _training_adapters(unet)
    optimizers = {name: torch.optim.AdamW(a.parameters(), lr=1e-4) for name, a in adapters.items()}

    def step(name):
        adapter = adapters[name]
        adapter.attach(unet)
        out = unet(latents, 500, encoder_hidden_states=text).sample
        aux = adapter.auxiliary_loss()
        loss = out.square().mean() + (0 if aux is None else aux)
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)
        adapter.detach(unet)

    times = {name: [] for name in adapters}
    with wraparound(unet):
        for name in adapters:
            step(name)
        for _ in range(repeats):
            for name in adapters:
                start = time.perf_counter()
                step(name)
                times[name].append((time.perf_counter() - start) * 1e3)
    print("| adapter (tiny sd2, 32×64 latent, batch 2) | step, fastest / median (ms) | vs LoRA q,k,v,o |")
    print("|---|---|---|")
    reference = min(times["LoRA q,k,v,o"]), statistics.median(times["LoRA q,k,v,o"])
    for name, values in times.items():
        fastest, median = min(values), statistics.median(values)
        print(f"| {name} | {fastest:.1f} / {median:.1f} | {fastest / reference[0]:.2f}× / {median / reference[1]:.2f}× |")


if __name__ == "__main__":
    import sys

    tables = sys.argv[1:] or ["flops", "time", "train-memory", "train-time"]
    for table in tables:
        {"flops": flops_table, "time": time_table, "train-memory": training_memory_table,
         "train-time": training_time_table}[table]()
        print()
