"""Peak GPU memory of one LoRA training step of full-size SD 2 base at 512×1024 (batch 1), estimated on
the ``meta`` device (no weights, no memory, any machine), and measured with CUDA's allocator when a
GPU is present (``--cuda``).

Accounting (bytes):

* weights: the UNet in the weight dtype (bf16/fp16/fp32); the VAE and text encoder too unless
  ``--offload-frozen`` (the latents and text embeddings are cached, so they are idle while training);
* the LoRA: fp32 parameters, gradients and AdamW's two moments;
* activations saved for the backward pass, counted exactly with ``saved_tensors_hooks`` during the
  pano360 training forward pass (the UNet with the LoRA attached, wraparound padding, through
  ``predict_noise``), deduplicated by storage. With gradient checkpointing diffusers keeps only each
  checkpointed block's inputs; the backward pass then recomputes one block at a time, so the peak adds
  the largest single block's saved activations (measured the same way, per block) and twice the largest
  activation tensor (its output gradient and input gradient) as the working set;
* attention: on a GPU PyTorch's SDPA runs flash / memory-efficient kernels, which save q, k, v, the
  output and a log-sum-exp row per query (no N×N matrix); the meta device would take the math path, so
  the estimate swaps in an autograd function that saves exactly those tensors.

It omits allocator fragmentation and the CUDA context (~0.5 GB), so read it as a lower bound with
±15 % allocator overhead.

    python benchmarks/training_memory.py [--dtype bf16] [--no-checkpointing] [--height 512] [--rank 4]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

GB = 1024 ** 3


class _FlashLikeAttention(torch.autograd.Function):
    """Shapes and saved tensors of a flash-attention SDPA call: saves q, k, v, out and lse [B, h, N]."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = torch.empty(q.shape[:-1], dtype=torch.float32, device=q.device)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _flash_like_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    return _FlashLikeAttention.apply(query, key, value)


class SavedBytes:
    """Bytes of tensors saved for backward (deduplicated by storage) while active."""

    def __init__(self):
        self.storages: dict[int, int] = {}
        self.largest = 0

    def pack(self, tensor):
        storage = tensor.untyped_storage()
        self.storages.setdefault(storage._cdata, storage.nbytes())
        self.largest = max(self.largest, tensor.numel() * tensor.element_size())
        return tensor

    @property
    def total(self) -> int:
        return sum(self.storages.values())

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)


def largest_block_saved_bytes(measure) -> int:
    """The most bytes one checkpointed block saves for its backward pass, which its recomputation holds
    during the backward pass. ``measure(run_checkpointing, hooks=(pre, post))`` runs a training forward
    and backward pass with ``pre``/``post`` as forward pre-/post-hooks on every block."""
    stack: list[tuple[SavedBytes, object]] = []
    totals: list[int] = []

    def enter(_module, _args):
        counter = SavedBytes()
        context = counter.hooks()
        context.__enter__()
        stack.append((counter, context))

    def leave(_module, _args, _out):
        counter, context = stack.pop()
        context.__exit__(None, None, None)
        totals.append(counter.total)

    measure(False, hooks=(enter, leave))
    return max(totals)


def _parameter_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def estimate(height: int = 512, dtype: torch.dtype = torch.bfloat16, checkpointing: bool = True, rank: int = 4,
             offload_frozen: bool = False) -> dict:
    from common import SD2_BASE_UNET, meta_unet, meta_vae

    from pano360.adapters.lora import LoRAAdapter
    from pano360.backbones.guided import predict_noise
    from pano360.backbones.wrap import wraparound

    unet = meta_unet(SD2_BASE_UNET).to(dtype).requires_grad_(False)
    with torch.device("meta"):
        adapter = LoRAAdapter.for_unet(unet, rank=rank, targets="q,k,v,o")
    lora_params = sum(p.numel() for p in adapter.parameters())
    adapter.to(dtype)  # activations in the LoRA branch run in the autocast dtype on a GPU
    adapter.attach(unet)
    latents = torch.empty(1, 4, height // 8, height // 4, device="meta", dtype=dtype)
    embeds = torch.empty(1, 77, SD2_BASE_UNET["cross_attention_dim"], device="meta", dtype=dtype)
    t = torch.tensor([500], device="meta")

    # The units diffusers checkpoints one by one (each ResNet and each transformer block).
    blocks = [m for m in unet.modules() if type(m).__name__ in ("ResnetBlock2D", "BasicTransformerBlock")]

    def measure(run_checkpointing: bool, hooks=()) -> SavedBytes:
        counter = SavedBytes()
        handles = [block.register_forward_pre_hook(pre) for block in blocks for pre in hooks[:1]] + \
            [block.register_forward_hook(post) for block in blocks for post in hooks[1:]]
        (unet.enable_gradient_checkpointing if run_checkpointing else unet.disable_gradient_checkpointing)()
        with wraparound(unet), _patched_sdpa():  # the backward pass recomputes under the same patches
            with counter.hooks():
                out = predict_noise(unet, latents, t, embeds)
            for handle in handles:
                handle.remove()
            out.float().square().mean().backward()
        return counter

    block_inputs = SavedBytes()  # checkpointing keeps each block's inputs alive (outside the hooks)

    def record_input(_module, args):
        block_inputs.pack(args[0])

    kept = measure(checkpointing, hooks=(record_input,) if checkpointing else ())
    # the backward pass recomputes one block at a time: each block's own saved tensors
    largest_block = largest_block_saved_bytes(measure) if checkpointing else 0
    adapter.detach(unet)

    weights = _parameter_bytes(unet)
    element = torch.finfo(dtype).bits // 8
    vae_bytes = sum(p.numel() for p in meta_vae().parameters()) * element
    text_bytes = _sd2_text_encoder_parameters() * element
    frozen_extra = 0 if offload_frozen else vae_bytes + text_bytes
    lora_state = lora_params * 4 * 4  # fp32 parameters, gradients, AdamW exp_avg and exp_avg_sq
    saved = kept.total + (block_inputs.total if checkpointing else 0)
    working = 2 * kept.largest
    total = weights + frozen_extra + lora_state + saved + largest_block + working
    return {"height": height, "width": 2 * height, "dtype": str(dtype).replace("torch.", ""),
            "checkpointing": checkpointing, "unet_weights_gb": weights / GB, "vae_text_gb": frozen_extra / GB,
            "lora_params": lora_params, "lora_state_gb": lora_state / GB, "saved_activations_gb": saved / GB,
            "recompute_block_gb": largest_block / GB, "working_set_gb": working / GB, "peak_estimate_gb": total / GB}


def _sd2_text_encoder_parameters() -> int:
    """Parameters of SD 2's OpenCLIP ViT-H/14 text tower as diffusers ships it (23 layers, width 1024)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                            num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu")
    with torch.device("meta"):
        return sum(p.numel() for p in CLIPTextModel(config).parameters())


@contextlib.contextmanager
def _patched_sdpa():
    original = F.scaled_dot_product_attention
    F.scaled_dot_product_attention = _flash_like_sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--offload-frozen", action="store_true")
    args = parser.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    result = estimate(args.height, dtype, not args.no_checkpointing, args.rank, args.offload_frozen)
    for key, value in result.items():
        print(f"{key}: {value:.2f}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
