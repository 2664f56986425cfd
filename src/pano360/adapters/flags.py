"""The training flags and presets of each adapter kind, torch-free.

``pano360 train --help`` builds its parser from these, so it answers without importing torch (it
took 7.7 s on a loaded machine when the adapter classes were imported for their flags). Each adapter
class inherits its kind's flags class, so ``LoRAAdapter.add_training_arguments`` is the same code.
"""

from __future__ import annotations

from typing import ClassVar

#: LoRA's attention choices (``adapters.lora.ATTENTIONS`` maps them onto the blocks)
LORA_ATTENTIONS = ("both", "cross", "self")


class LoRAFlags:
    #: ``pano360 train --preset dit360``: DiT360's shipped recipe (``train.sh`` + ``train.py`` +
    #: ``src/dit360.py`` of Insta360-Research-Team/DiT360): FLUX.1-dev, LoRA r=64/α=64/dropout 0.05 on
    #: attn.to_{q,k,v,out.0}, AdamW lr 5e-5 wd 1e-5 eps 1e-6, batch 1 × accumulation 4, constant LR after
    #: a 5% warm-up, no clipping, embedded guidance 1.0, uniform σ without resolution shift, padded seam
    #: (one token column a side), yaw and cube losses λ=0.5 from the third epoch, 1024×2048, flip + roll,
    #: no caption dropout. Deviations (docs/training.md): bf16 instead of Lightning's fp16 autocast,
    #: pano360's yaw-loss form, and --steps instead of 25 epochs.
    training_presets: ClassVar[dict[str, dict]] = {"dit360": {
        "description": "DiT360's FLUX.1-dev recipe: LoRA r=64 alpha=64 dropout 0.05 on q,k,v,o, lr 5e-5, "
                       "5% warm-up, accumulation 4, yaw+cube losses 0.5 after 2 epochs, padded seam, 1024x2048",
        "adapter": "lora", "model": "black-forest-labs/FLUX.1-dev", "resolution": 1024, "rank": 64,
        "lora_alpha": 64.0, "lora_dropout": 0.05, "lora_targets": "q,k,v,o", "learning_rate": 5e-5,
        "adam_weight_decay": 1e-5, "adam_epsilon": 1e-6, "batch_size": 1, "gradient_accumulation_steps": 4,
        "lr_scheduler": "constant_with_warmup", "lr_warmup_ratio": 0.05, "max_grad_norm": 0.0,
        "guidance_scale": 1.0, "weighting_scheme": "none", "resolution_shift": False, "seam": "pad",
        "yaw_loss": 0.5, "cube_loss": 0.5, "cube_loss_start_epochs": 2, "caption_dropout": 0.0,
        "random_flip": True, "random_roll": True, "mixed_precision": "bf16",
    }}

    @classmethod
    def add_training_arguments(cls, group) -> None:
        group.add_argument("--lora-alpha", type=float, default=None,
                           help="LoRA alpha; the LoRA branch is scaled by alpha / rank (default: alpha = rank)")
        group.add_argument("--lora-targets", default="q,k,v,o",
                           help="layers to adapt: a comma list of the attention projections q, k, v, o, and conv "
                                "(the UNet's conv_in/conv_out and ResNet convolutions, LoCon-style)")
        group.add_argument("--lora-attention", default="both", choices=sorted(LORA_ATTENTIONS),
                           help="which attention blocks: self (attn1), cross (attn2, text) or both")
        group.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the LoRA input")


class UniPanoFlags:
    #: ``pano360 train --preset unipano``: the reference code's training defaults (§1.4 of the digest:
    #: PanFusion's PanoGenerator/main.py, which UniPano runs with). Differences that remain: diffusers'
    #: per-step cosine to 0 instead of Lightning's per-epoch CosineAnnealingLR to 1e-7, and the
    #: reference's un-padded VAE encode of the training panoramas (pano360 wraps the VAE).
    training_presets: ClassVar[dict[str, dict]] = {"unipano": {
        "description": "UniPano's training defaults: SD 2 base, 512x1024, AdamW lr 2e-4, cosine, rank 4, "
                       "4 experts top-2, caption dropout 0.2, flip 0.5, no yaw roll, no gradient clipping, fp32",
        "adapter": "unipano", "model": "stabilityai/stable-diffusion-2-base", "resolution": 512,
        "learning_rate": 2e-4, "optimizer": "adamw", "lr_scheduler": "cosine", "rank": 4,
        "unipano_experts": 4, "unipano_top_k": 2, "caption_dropout": 0.2, "random_flip": True,
        "random_roll": False, "max_grad_norm": 0.0, "batch_size": 1, "mixed_precision": "no",
    }}

    @classmethod
    def add_training_arguments(cls, group) -> None:
        group.add_argument("--unipano-experts", type=int, default=4, metavar="N",
                           help="routed LoRA experts per W_o (UniPano: 4; plus one shared expert)")
        group.add_argument("--unipano-top-k", type=int, default=2, metavar="K",
                           help="experts each token is routed to (UniPano: 2; weights not renormalised)")


class MVDiffusionFlags:
    training_presets: ClassVar[dict[str, dict]] = {}

    @classmethod
    def add_training_arguments(cls, group) -> None:
        group.add_argument("--mvdiffusion-view-size", type=int, default=None, metavar="PX",
                           help="size of the 8 training views in pixels (default: the model's native size, "
                                "512 for SD 2, as in the reference)")
        group.add_argument("--mvdiffusion-checkpointing", default="on", choices=("on", "off"),
                           help="recompute the CAA blocks in the backward pass (the reference does; saves memory)")


#: kind -> its flags class (a kind registered without one is imported for its flags)
ADAPTER_FLAGS: dict[str, type] = {"lora": LoRAFlags, "unipano": UniPanoFlags, "mvdiffusion": MVDiffusionFlags}
