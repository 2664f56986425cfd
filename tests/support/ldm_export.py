"""Test support: write a diffusers SD 1.x pipeline as an original-layout (LDM / A1111) single file.

Only what the loading tests need: the inverse of the published LDM → diffusers key renaming for
UNets and VAEs with any number of blocks, and the SD 1.x text encoder (HF CLIP under a prefix).
"""

from __future__ import annotations

import re

import torch

UNET, VAE, TEXT = "model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer."
RESNET_UNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
               "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_resnet(rest: str) -> str:
    layer, _, param = rest.partition(".")
    return f"{RESNET_UNET[layer]}.{param}"


def unet_key(key: str, layers_per_block: int, num_blocks: int) -> str:
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    for new, old in fixed.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    per = layers_per_block + 1
    if m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + i * per + j}.0.{_unet_resnet(rest)}"
    if m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        i, j, rest = int(m[1]), int(m[2]), m[3]
        return f"input_blocks.{1 + i * per + j}.1.{rest}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
        return f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
        return f"middle_block.{2 * int(m[1])}.{_unet_resnet(m[2])}"
    if m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
        return f"middle_block.1.{m[1]}"
    up_per = layers_per_block + 1
    if m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key):
        return f"output_blocks.{int(m[1]) * up_per + int(m[2])}.0.{_unet_resnet(m[3])}"
    if m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key):
        return f"output_blocks.{int(m[1]) * up_per + int(m[2])}.1.{m[3]}"
    raise KeyError(key)


def unet_state(unet) -> dict[str, torch.Tensor]:
    config = unet.config
    layers, blocks = config.layers_per_block, len(config.block_out_channels)
    out = {}
    for key, value in unet.state_dict().items():
        if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            i = int(m[1])
            has_attention = "CrossAttn" in config.up_block_types[i]
            new = f"output_blocks.{i * (layers + 1) + layers}.{2 if has_attention else 1}.conv.{m[2]}"
        else:
            new = unet_key(key, layers, blocks)
        out[UNET + new] = value
    return out


def vae_state(vae) -> dict[str, torch.Tensor]:
    blocks = len(vae.config.block_out_channels)
    out = {}
    for key, value in vae.state_dict().items():
        new = key
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.",
                     lambda m: f"decoder.up.{blocks - 1 - int(m[1])}.block.", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{blocks - 1 - int(m[1])}.upsample.", new)
        new = new.replace("mid_block.resnets.0.", "mid.block_1.").replace("mid_block.resnets.1.", "mid.block_2.")
        if ".mid_block.attentions.0." in new:
            prefix, rest = new.split(".mid_block.attentions.0.")
            layer, _, param = rest.rpartition(".")
            new = f"{prefix}.mid.attn_1.{VAE_ATTENTION[layer]}.{param}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        new = new.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        out[VAE + new] = value
    return out


def sd1_single_file_state(pipe) -> dict[str, torch.Tensor]:
    """The whole SD 1.x pipeline (UNet, VAE, text encoder) in original LDM key layout."""
    state = unet_state(pipe.unet) | vae_state(pipe.vae)
    for key, value in pipe.text_encoder.state_dict().items():
        # Original checkpoints keep transformers' historical "text_model." level.
        state[TEXT + (key if key.startswith("text_model.") else "text_model." + key)] = value
    return {k: v.contiguous() for k, v in state.items()}
