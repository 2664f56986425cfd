"""Benchmark models with Stable Diffusion's proportions: the real architectures, narrower channels.

Tiny test models (:mod:`pano360.backbones.tiny`) are convolution-heavy toys: their attention runs at
small token counts, so speed-ups measured on them do not carry over to real checkpoints. The models
here keep everything that decides *where time goes* in a real SD 2 base or SDXL UNet:

* the depth (``layers_per_block = 2``, SDXL's 1/2/10 transformer layers per level), the block
  types and so the attention placement: SD 2 attends at the 64×64 level of a 64-latent window
  (4096 tokens), SDXL at its 64×64 and 32×32 levels of a 128-latent window;
* the head dimension, 64: the number of heads shrinks with the width;
* the VAE's depth (four levels, two resnets each, the mid-block attention at latent resolution);

and divide every channel width by ``divisor`` (default 5, the only one that keeps SD's 320-channel
first level a multiple of the head dimension 64 with GroupNorm's 32 groups; 320/5 = 64 channels and
one head). The text encoders are small (two layers), their width a ``divisor``-th of the real one;
text encoding is run once per generation and is not what the benchmarks measure.

What the proportions do *not* preserve, and why: convolutions, linear layers and the VAE shrink by
``divisor²`` in FLOPs, but attention's ``softmax(QKᵀ)V`` shrinks by ``divisor`` only (token count is
fixed by the image size, head dimension fixed at 64). On the proportional SD 2 model attention is a
larger share of a UNet call than at full size; ``benchmarks/profile_components.py`` prints both
shares. Benchmarks on it therefore err on the attention-heavy side, the side where tiny models had
hidden losses.

Random, deterministic weights (seeded); the scheduler is the one the real checkpoints ship with.
"""

from __future__ import annotations

import torch

PROPORTIONAL_FAMILIES = ("sd2", "sdxl")
DEFAULT_DIVISOR = 5
HEAD_DIM = 64

# Published architecture hyper-parameters of the released checkpoints (diffusers configs).
# diffusers' SD 2 / SDXL configs call the number of heads "attention_head_dim" (5/10/20 heads of 64).
SD2_BASE_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True,
)
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
)
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
FULL_UNET_CONFIGS = {"sd2": SD2_BASE_UNET, "sdxl": SDXL_UNET}
SDXL_TEXT_WIDTHS = (768, 1280)  # CLIP ViT-L and OpenCLIP ViT-bigG; their concatenation is 2048
SDXL_POOLED = 1280


def _round(value: float, multiple: int) -> int:
    return max(multiple, round(value / multiple) * multiple)


def proportional_unet_config(family: str = "sd2", divisor: int = DEFAULT_DIVISOR) -> dict:
    """The real UNet config with every width divided by ``divisor`` (heads of 64 channels).

    Raises ``ValueError`` when a level's width would not be a whole number of 64-channel heads.
    """
    if family not in FULL_UNET_CONFIGS:
        raise ValueError(f"proportional models exist for {PROPORTIONAL_FAMILIES}, not {family!r}")
    config = dict(FULL_UNET_CONFIGS[family])
    widths = []
    for width in config["block_out_channels"]:
        if width % divisor or (width // divisor) % HEAD_DIM:
            raise ValueError(f"divisor {divisor} gives {width / divisor:g} channels from {width}; each level must "
                             f"stay a multiple of the head dimension {HEAD_DIM} (use 1 or 5)")
        widths.append(width // divisor)
    config["block_out_channels"] = tuple(widths)
    config["attention_head_dim"] = tuple(w // HEAD_DIM for w in widths)  # number of heads, diffusers' naming
    if family == "sdxl":
        text = tuple(_text_width(w, divisor) for w in SDXL_TEXT_WIDTHS)
        config["cross_attention_dim"] = sum(text)
        config["addition_time_embed_dim"] = _round(256 / divisor, 8)
        config["projection_class_embeddings_input_dim"] = 6 * config["addition_time_embed_dim"] + text[1]
    else:
        config["cross_attention_dim"] = _text_width(1024, divisor)
    return config


def proportional_vae_config(family: str = "sd2", divisor: int = DEFAULT_DIVISOR) -> dict:
    """SD's VAE with widths divided by ``divisor`` (rounded to multiples of 8, GroupNorm with 8 groups)."""
    config = dict(SD_VAE)
    config["block_out_channels"] = tuple(_round(w / divisor, 8) for w in SD_VAE["block_out_channels"])
    config["norm_num_groups"] = 8 if divisor > 1 else 32
    config["sample_size"] = 1024 if family == "sdxl" else 512
    config["scaling_factor"] = 0.13025 if family == "sdxl" else 0.18215
    config["force_upcast"] = family == "sdxl"
    return config


def _text_width(width: int, divisor: int) -> int:
    return _round(width / divisor, 16)


def _text_encoder(width: int, with_projection: bool, openclip_style: bool, seed: int, projection: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, projection_dim=projection or width,
        hidden_act="gelu" if openclip_style else "quick_gelu", bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def proportional_unet(family: str = "sd2", divisor: int = DEFAULT_DIVISOR, seed: int = 0, device=None):
    """A random ``UNet2DConditionModel`` with SD 2 base's or SDXL's proportions (see the module docstring).

    ``device="meta"`` builds it without memory (for FLOP counts)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        return UNet2DConditionModel(**proportional_unet_config(family, divisor)).eval()


def proportional_vae(family: str = "sd2", divisor: int = DEFAULT_DIVISOR, seed: int = 1, device=None):
    """A random ``AutoencoderKL`` with SD's VAE depth and widths divided by ``divisor``."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        return AutoencoderKL(**proportional_vae_config(family, divisor)).eval()


def proportional_pipeline(family: str = "sd2", divisor: int = DEFAULT_DIVISOR, seed: int = 0, device=None):
    """A complete random SD 2 base (``StableDiffusionPipeline``) or SDXL (``StableDiffusionXLPipeline``)
    with the real depth and attention placement and ``divisor``-times narrower channels.

    ``divisor=1`` builds the full-size architecture (865 M / 2.6 G UNet parameters: minutes on a CPU;
    pass ``device="cuda"`` to build and initialise it directly on a GPU, in seconds).
    """
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from .tiny import tiny_scheduler, tiny_tokenizer

    unet = proportional_unet(family, divisor, seed, device)
    vae = proportional_vae(family, divisor, seed + 1, device)
    scheduler = tiny_scheduler("sd1")  # SD 2 base and SDXL predict ε with scaled-linear DDIM
    if family == "sdxl":
        first, second = (_text_width(w, divisor) for w in SDXL_TEXT_WIDTHS)
        return StableDiffusionXLPipeline(
            vae=vae, unet=unet, scheduler=scheduler,
            text_encoder=_text_encoder(first, False, False, seed + 2).to(unet.device),
            text_encoder_2=_text_encoder(second, True, True, seed + 3, projection=_text_width(SDXL_POOLED, divisor)
                                         ).to(unet.device),
            tokenizer=tiny_tokenizer(), tokenizer_2=tiny_tokenizer(),
        )
    return StableDiffusionPipeline(
        vae=vae, unet=unet, scheduler=scheduler,
        text_encoder=_text_encoder(_text_width(1024, divisor), False, True, seed + 2).to(unet.device),
        tokenizer=tiny_tokenizer(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def proportional_lpips(divisor: int = DEFAULT_DIVISOR, seed: int = 0):
    """LPIPS-VGG16 (random weights) with every trunk width divided by ``divisor``, the same taps and heads.

    SyncDiffusion's loss at SD's proportions: VGG16 shrinks like the UNet and the VAE, so its share of a
    sync step stays what it is at full size instead of dominating it.
    """
    from torch import nn

    from ..nets.lpips import LPIPS

    lpips = LPIPS(net="vgg", pretrained=False)
    generator = torch.Generator().manual_seed(seed)
    features = lpips.net.features
    previous = 3
    for index, layer in enumerate(features):
        if isinstance(layer, nn.Conv2d):
            width = max(1, round(layer.out_channels / divisor))
            conv = nn.Conv2d(previous, width, layer.kernel_size, layer.stride, layer.padding)
            with torch.no_grad():
                conv.weight.normal_(0.0, (2.0 / (previous * 9)) ** 0.5, generator=generator)
                conv.bias.zero_()
            features[index] = conv
            previous = width
    widths = [features[i - 1].out_channels if isinstance(features[i - 1], nn.Conv2d) else None
              for i in (3, 8, 15, 22, 29)]
    for k, width in enumerate(widths):
        head = nn.Conv2d(width, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            head.weight.copy_(torch.rand(head.weight.shape, generator=generator) / width)
        getattr(lpips, f"lin{k}").model[1] = head
    return lpips.requires_grad_(False).eval()
