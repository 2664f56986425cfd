"""Presets for the open 360° models and LoRAs: ``--preset dit360``, ``hunyuanworld-pano``, ``qwen-360``,
``flux-equirect-360`` (and the facts of ``sdxl-360``). Torch-free.

Every value comes from the model's own card or reference code; ``docs/models.md`` gives the source of each
one and says which were not stated (there the base model's pipeline defaults are used). Sizes are
HEIGHTxWIDTH in pixels. For FLUX.1-dev, ``guidance_scale`` is the distilled *embedded* guidance (FLUX has
no classifier-free guidance by default); for Qwen-Image it is the true CFG scale
(:data:`pano360.defaults.FAMILY_DEFAULTS`).

All run the ``circular`` method. On a transformer its ``seam`` option says how the network closes the
left/right seam: ``exact`` (periodic positions; the default where a model was not trained with a scheme
of its own), ``pad`` (one copied token column a side: DiT360's own scheme) or ``blend`` (HunyuanWorld's
extend-and-blend).
"""

from __future__ import annotations

from .presets import Preset, register_preset

FLUX_DEV = "black-forest-labs/FLUX.1-dev"
FLUX_FILL_DEV = "black-forest-labs/FLUX.1-Fill-dev"
QWEN_IMAGE = "Qwen/Qwen-Image"
SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"

FLUX_DEV_LICENCE = "FLUX.1-dev Non-Commercial License (base)"

MODEL_PRESETS: list[str] = []
"""Names of the presets this module registers (the model presets), in order."""


def _register(preset: Preset, replace: bool = False) -> Preset:
    MODEL_PRESETS.append(preset.name)
    return register_preset(preset, replace=replace)


# DiT360 (Insta360 Research): a LoRA on FLUX.1-dev. Reference inference.py: 2048x1024, 28 steps, guidance
# 2.8 (FLUX embedded guidance), prompts begin "This is a panorama." Its pipeline pads the token grid with
# the last token column before the first and the first after the last, position ids copied likewise:
# pano360's seam="pad".
_register(Preset(
    "dit360", "circular",
    "DiT360 (Insta360-Research/DiT360-Panorama-Image-Generation, LoRA on FLUX.1-dev) as its inference.py "
    "runs it: 1024x2048, 28 steps, embedded guidance 2.8, DiT360's one-token-column padding (seam=pad)",
    {"model": FLUX_DEV, "height": 1024, "width": 2048, "num_inference_steps": 28, "guidance_scale": 2.8,
     "scheduler": "flow_euler"},
    {"seam": "pad"},
    loras=(("Insta360-Research/DiT360-Panorama-Image-Generation", 1.0, None),),
    trigger="This is a panorama",
    licence=f"{FLUX_DEV_LICENCE}; DiT360 code MIT; the LoRA's own licence is not stated in the sources read",
))

# HunyuanWorld-1.0 PanoDiT-Text (Tencent): a LoRA on FLUX.1-dev, in the subfolder HunyuanWorld-PanoDiT-Text
# of tencent/HunyuanWorld-1 (demo_panogen.py: 960x1920, 50 steps, guidance 30, true CFG 0, blend_extend 6).
# Its seam scheme (6 latent columns of the left edge appended on the right, then blended) is not one of
# pano360's; exact periodic positions close the seam instead.
_register(Preset(
    "hunyuanworld-pano", "circular",
    "HunyuanWorld-1.0 PanoDiT-Text (tencent/HunyuanWorld-1, LoRA on FLUX.1-dev) as demo_panogen.py runs it: "
    "960x1920, 50 steps, embedded guidance 30; its extend-and-blend seam (6 latent columns)",
    {"model": FLUX_DEV, "height": 960, "width": 1920, "num_inference_steps": 50, "guidance_scale": 30.0,
     "scheduler": "flow_euler"},
    {"seam": "blend"},
    loras=(("tencent/HunyuanWorld-1", 1.0, "HunyuanWorld-PanoDiT-Text/lora.safetensors"),),
    licence=f"{FLUX_DEV_LICENCE}; LoRA: Tencent HunyuanWorld-1.0 Community License (not valid in the EU, "
            "UK and South Korea)",
))

# Recorded, not registered: HunyuanWorld-PanoDiT-Image (image -> panorama outpainting), the LoRA in the
# subfolder HunyuanWorld-PanoDiT-Image of tencent/HunyuanWorld-1 on FLUX.1-Fill-dev, 960x1920, 50 steps,
# guidance 30, true CFG 2.0, blend_extend 6 (demo_panogen.py). It needs a masked outpainting method.
UNWIRED = {
    "hunyuanworld-pano-image": {
        "base": FLUX_FILL_DEV,
        "lora": ("tencent/HunyuanWorld-1", 1.0, "HunyuanWorld-PanoDiT-Image/lora.safetensors"),
        "height": 960, "width": 1920, "num_inference_steps": 50, "guidance_scale": 30.0, "true_cfg_scale": 2.0,
        "licence": "FLUX.1 [dev] Non-Commercial License (FLUX.1-Fill-dev); LoRA: Tencent HunyuanWorld-1.0 "
                   "Community License",
    },
}

# qwen-360-diffusion (ProGamerGov): a rank-128 MIT LoRA on Qwen-Image trained on equirectangular images
# resized to 2048x1024. The card's steps/CFG/trigger were not available to us: Qwen-Image's own defaults
# (50 steps, true CFG 4.0) and no trigger (docs/models.md).
_register(Preset(
    "qwen-360", "circular",
    "qwen-360-diffusion (ProGamerGov, MIT LoRA on Qwen-Image, trained at 2048x1024): 1024x2048, Qwen-Image's "
    "default 50 steps and true CFG 4.0, seam closed exactly; needs --quantize nf4 and --offload under 24 GB",
    {"model": QWEN_IMAGE, "height": 1024, "width": 2048, "num_inference_steps": 50, "guidance_scale": 4.0,
     "scheduler": "flow_euler"},
    {"seam": "exact"},
    loras=(("ProGamerGov/qwen-360-diffusion", 1.0, "qwen-360-diffusion-int8-bf16-v1.safetensors"),),
    licence="Qwen-Image Apache-2.0 (base); LoRA MIT",
))

# jbilcke-hf/flux-dev-panorama-lora-2: a FLUX.1-dev LoRA trained on 2:1 (2048x1024) Google Street View
# samples; the card's prompts read "HDRI panoramic view of TOK, ...". Steps and guidance are not stated:
# FLUX.1-dev's defaults.
_register(Preset(
    "flux-equirect-360", "circular",
    "jbilcke-hf/flux-dev-panorama-lora-2 (FLUX.1-dev LoRA, trained at 2048x1024): 1024x2048, FLUX.1-dev's "
    "default 28 steps and embedded guidance 3.5, seam closed exactly; non-commercial use only",
    {"model": FLUX_DEV, "height": 1024, "width": 2048, "num_inference_steps": 28, "guidance_scale": 3.5,
     "scheduler": "flow_euler"},
    {"seam": "exact"},
    loras=(("jbilcke-hf/flux-dev-panorama-lora-2", 1.0, None),),
    trigger="HDRI panoramic view of TOK",
    licence=f"{FLUX_DEV_LICENCE}; LoRA: FLUX.1-dev non-commercial, and the card limits it to "
            "non-commercial, personal or demonstration use (Google Street View training data)",
))

# sdxl-360: SDXL fine-tuned on tens of thousands of equirectangular images at 2048x1024 (model card of
# ProGamerGov/sdxl-360-diffusion). The repository is not a diffusers pipeline: it holds the fine-tuned UNet
# in its ``unet`` folder (and single-file checkpoints), so the preset loads SDXL base with that UNet. The
# card asks for "equirectangular 360 view" in the prompt. pano360's default model (README, docs/models.md).
_register(Preset(
    "sdxl-360", "circular",
    "ProGamerGov/sdxl-360-diffusion (SDXL's UNet trained on 2048x1024 equirect images, on SDXL base) at "
    "1024x2048 with wraparound padding; the trigger 'equirectangular 360 view' is put before the prompt",
    {"model": SDXL_BASE, "height": 1024, "width": 2048},
    {"wrap": True, "wrap_vae": True},
    unet="ProGamerGov/sdxl-360-diffusion",
    trigger="equirectangular 360 view",
    licence="no licence stated by the model card; base SDXL 1.0: CreativeML Open RAIL++-M",
))
