"""Peak GPU memory of one FLUX.1-dev LoRA training step at 1024×2048 (batch 1), estimated on the ``meta``
device (no weights, no memory, any machine), and measured with CUDA's allocator when a GPU is present
(``--cuda``, random weights: memory does not depend on their values).

Accounting (bytes), as ``benchmarks/training_memory.py`` does for SD 2:

* weights: the 11.9 B-parameter transformer (``full_size_transformer("flux-dev")``) in bf16, or stored as
  ``pano360 train --quantize`` stores it (``--quantize fp8``: diffusers' layerwise casting, 1 byte per
  stored weight; ``nf4``: every Linear in bitsandbytes NF4 with double quantization, 4.127 bits), counted
  by :func:`pano360.backbones.quantize.quantized_weight_bytes` (equal to the real bytes, tested on the
  tiny models), plus the working copy of the largest Linear a quantized layer casts to bf16 while it
  runs; the VAE only if ``--keep-vae`` (latents and T5/CLIP embeddings are cached, and pano360 drops the
  text encoders after caching);
* the LoRA: fp32 parameters, gradients and AdamW's two moments (``--adam8bit``: 2 bytes of moments);
* activations saved for the backward pass, counted with ``saved_tensors_hooks`` during pano360's
  training call (``family.call`` through ``predict_noise``: packing, ids, FLUX's guidance embedding,
  the seam), deduplicated by storage, with flash-attention-style SDPA (q, k, v, out and a log-sum-exp
  row saved, no N×N matrix). With gradient checkpointing diffusers keeps each block's inputs; the
  backward pass recomputes one block at a time, so the peak adds the largest block's saved tensors and
  twice the largest activation (its output and input gradients).

Omitted: CUDA context (~0.5 GB) and allocator fragmentation (budget +15 %).

    python benchmarks/training_memory_dit.py [--height 1024] [--rank 64] [--no-checkpointing] [--quantize fp8|nf4]
    python benchmarks/training_memory_dit.py --cuda [--quantize nf4] [--adam8bit]   # on a GPU: real steps
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_memory import GB, SavedBytes, _patched_sdpa, largest_block_saved_bytes

TEXT_TOKENS = 512
BLOCKS = ("FluxTransformerBlock", "FluxSingleTransformerBlock")


def _vae_bytes() -> int:
    from common import meta_vae

    return sum(p.numel() for p in meta_vae().parameters()) * 2  # FLUX's VAE: SD's layout, 16 channels


def estimate(height: int = 1024, rank: int = 64, checkpointing: bool = True, quantize: str = "none",
             adam8bit: bool = False, keep_vae: bool = False, seam: str = "pad") -> dict:
    from pano360.adapters.lora import LoRAAdapter
    from pano360.backbones.family import get_family
    from pano360.backbones.guided import predict_noise
    from pano360.backbones.quantize import largest_linear_bytes, quantized_weight_bytes
    from pano360.backbones.tiny_dit import full_size_transformer
    from pano360.backbones.token_seam import TokenSeam, token_seam
    from pano360.training.trainer import seam_aware_checkpointing

    dtype = torch.bfloat16
    transformer = full_size_transformer("flux-dev", device="meta").to(dtype).requires_grad_(False)
    with torch.device("meta"):
        adapter = LoRAAdapter.for_unet(transformer, rank=rank, alpha=rank, targets="q,k,v,o")
    lora_params = sum(p.numel() for p in adapter.parameters())
    adapter.to(dtype)  # the LoRA branch's activations run in the autocast dtype
    adapter.attach(transformer)
    family = get_family("flux")
    meta = {"device": "meta", "dtype": dtype}
    latents = torch.empty(1, 16, height // 8, height // 4, **meta)
    embeds, pooled = torch.empty(1, TEXT_TOKENS, 4096, **meta), torch.empty(1, 768, **meta)
    t = torch.full((1,), 500.0, device="meta")
    blocks = [m for m in transformer.modules() if type(m).__name__ in BLOCKS]

    def measure(run_checkpointing: bool, hooks=()) -> SavedBytes:
        counter = SavedBytes()
        handles = [b.register_forward_pre_hook(pre) for b in blocks for pre in hooks[:1]] + \
            [b.register_forward_hook(post) for b in blocks for post in hooks[1:]]
        if run_checkpointing:
            transformer.enable_gradient_checkpointing(seam_aware_checkpointing(transformer))
        else:
            transformer.disable_gradient_checkpointing()
        with token_seam(transformer, TokenSeam(seam)), _patched_sdpa():
            with counter.hooks():
                out = predict_noise(transformer, latents, t, embeds, pooled, family=family, embedded_guidance=1.0)
            for handle in handles:
                handle.remove()
            out.float().square().mean().backward()
        return counter

    block_inputs = SavedBytes()

    def record_input(_module, args, *rest):
        block_inputs.pack(args[0] if args else rest[0]["hidden_states"])

    kept = measure(checkpointing, hooks=(record_input,) if checkpointing else ())
    largest_block = largest_block_saved_bytes(measure) if checkpointing else 0
    adapter.detach(transformer)

    parameters = sum(p.numel() for p in transformer.parameters())
    weights = quantized_weight_bytes(transformer, quantize, dtype)
    if quantize != "none":  # one layer's weight cast to bf16 while it runs
        weights += largest_linear_bytes(transformer, dtype)
    vae = _vae_bytes() if keep_vae else 0
    lora_state = lora_params * (4 + 4 + (2 if adam8bit else 8))  # fp32 weights + grads, AdamW moments
    # block inputs that an op outside the blocks also saved are one storage: count the union
    union = {**kept.storages, **block_inputs.storages} if checkpointing else kept.storages
    saved = sum(union.values())
    outside = sum(v for k, v in kept.storages.items() if k not in block_inputs.storages)
    working = 2 * kept.largest
    total = weights + vae + lora_state + saved + largest_block + working
    return {"height": height, "width": 2 * height, "seam": seam, "checkpointing": checkpointing,
            "base": "bf16" if quantize == "none" else quantize, "transformer_parameters": parameters,
            "transformer_weights_gb": weights / GB, "vae_gb": vae / GB, "lora_params": lora_params,
            "lora_state_gb": lora_state / GB, "saved_activations_gb": saved / GB,
            "saved_outside_blocks_gb": outside / GB, "block_inputs_gb": block_inputs.total / GB,
            "recompute_block_gb": largest_block / GB, "working_set_gb": working / GB, "peak_estimate_gb": total / GB}


def measure_cuda(height: int = 1024, rank: int = 64, checkpointing: bool = True, seam: str = "pad",
                 quantize: str = "none", adam8bit: bool = False, device: str = "cuda") -> dict:
    """Two LoRA training steps (forward, backward, AdamW) of a random-weight FLUX.1-dev on the GPU, its
    base in bf16 or stored as ``quantize`` (as ``pano360 train --quantize`` does). ``device`` other than
    CUDA runs the same steps without a memory figure (a smoke test of this function)."""
    from pano360.adapters.lora import LoRAAdapter
    from pano360.backbones.family import get_family
    from pano360.backbones.guided import predict_noise
    from pano360.backbones.quantize import materialise, quantize_module
    from pano360.backbones.tiny_dit import full_size_transformer
    from pano360.backbones.token_seam import TokenSeam, token_seam
    from pano360.training.trainer import _optimizer_class, seam_aware_checkpointing

    device = torch.device(device)
    cuda = device.type == "cuda"
    transformer = full_size_transformer("flux-dev", device="meta").to(torch.bfloat16).requires_grad_(False)
    # random bf16 weights on the GPU, then stored as --quantize says; the peak is counted from after this
    transformer = transformer.to_empty(device=device)
    with torch.no_grad():
        for parameter in transformer.parameters():
            parameter.normal_(std=0.02)
    quantize_module(transformer, quantize, torch.bfloat16)
    transformer = materialise(transformer, device)
    adapter = LoRAAdapter.for_unet(transformer, rank=rank, alpha=rank, targets="q,k,v,o", seed=0).to(device)
    adapter.attach(transformer)
    if checkpointing:
        transformer.enable_gradient_checkpointing(seam_aware_checkpointing(transformer))
    optimizer = _optimizer_class("adamw8bit" if adam8bit else "adamw")(adapter.parameters(), lr=1e-5)
    latents = torch.randn(1, 16, height // 8, height // 4, device=device)
    embeds, pooled = torch.randn(1, TEXT_TOKENS, 4096, device=device), torch.randn(1, 768, device=device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    import time

    times = []
    for _ in range(2):  # the second step has AdamW's moments allocated
        start = time.perf_counter()
        with token_seam(transformer, TokenSeam(seam)), torch.autocast(device.type, dtype=torch.bfloat16):
            out = predict_noise(transformer, latents.bfloat16(), torch.full((1,), 500.0, device=device),
                                embeds.bfloat16(), pooled.bfloat16(), family=get_family("flux"), embedded_guidance=1.0)
            loss = out.float().square().mean()
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"height": height, "checkpointing": checkpointing, "seam": seam, "base": quantize, "adam8bit": adam8bit,
            "max_memory_allocated_gb": torch.cuda.max_memory_allocated() / GB if cuda else float("nan"),
            "step_s": times[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--quantize", default="none", choices=["none", "fp8", "nf4"],
                        help="the frozen base as pano360 train --quantize stores it")
    parser.add_argument("--adam8bit", action="store_true", help="8-bit AdamW moments")
    parser.add_argument("--keep-vae", action="store_true", help="count the VAE as resident")
    parser.add_argument("--seam", default="pad", choices=["pad", "exact", "none"],
                        help="the seam while training (exact needs --cuda: its RoPE tables do not build on meta)")
    parser.add_argument("--cuda", action="store_true", help="measure one real step on the GPU")
    args = parser.parse_args()
    if args.seam == "exact" and not args.cuda:
        parser.error("--seam exact runs only with --cuda (estimate with pad: the preset's seam, within 1 % of exact)")
    if args.cuda:
        result = measure_cuda(args.height, args.rank, not args.no_checkpointing, args.seam, args.quantize,
                              args.adam8bit)
    else:
        result = estimate(args.height, args.rank, not args.no_checkpointing, args.quantize, args.adam8bit,
                          args.keep_vae, args.seam)
    for key, value in result.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
