"""The benchmark FLUX.1-dev with narrower widths (backbones/proportional_dit.py): the released depths, head
dimension and channel layout are kept, the widths agree between components, and pano360 loads the saved
pipeline as a FLUX model whose prompts are 512 T5 tokens."""

import pytest
import torch

from pano360.backbones.proportional_dit import (
    CLIP_L,
    T5_XXL,
    flux_clip_config,
    flux_t5_config,
    flux_vae_config,
    proportional_flux_pipeline,
)
from pano360.backbones.tiny_dit import FLUX_DEV_SCHEDULER, full_size_config, proportional_flux_config

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.mark.parametrize("divisor", [1, 8, 24])
def test_depths_head_dimension_and_channel_layout_are_flux_dev_s(divisor):
    transformer = proportional_flux_config(divisor)
    assert (transformer["num_layers"], transformer["num_single_layers"], transformer["attention_head_dim"]) == (19, 38, 128)
    assert transformer["num_attention_heads"] == 24 // divisor
    t5, clip, vae = flux_t5_config(divisor), flux_clip_config(divisor), flux_vae_config(divisor)
    assert t5["num_layers"] == 24 and t5["feed_forward_proj"] == "gated-gelu" and t5["d_kv"] == 64
    assert t5["d_model"] == transformer["joint_attention_dim"]  # T5's sequence feeds the transformer
    assert clip["num_hidden_layers"] == 12 and clip["hidden_size"] == transformer["pooled_projection_dim"]
    assert clip["hidden_size"] % clip["num_attention_heads"] == 0
    assert len(vae["block_out_channels"]) == 4 and vae["layers_per_block"] == 2 and vae["latent_channels"] == 16
    assert (vae["scaling_factor"], vae["shift_factor"]) == (0.3611, 0.1159)
    assert all(w % vae["norm_num_groups"] == 0 for w in vae["block_out_channels"])
    if divisor == 1:  # the released configs
        assert transformer == full_size_config("flux-dev")
        assert {k: t5[k] for k in T5_XXL} == T5_XXL and {k: clip[k] for k in CLIP_L} == CLIP_L
        assert vae["block_out_channels"] == (128, 256, 512, 512) and vae["norm_num_groups"] == 32
    with pytest.raises(ValueError, match="divide"):
        proportional_flux_config(5)


def test_saved_pipeline_loads_as_flux_and_encodes_512_t5_tokens(tmp_path):
    from pano360.backbones.conditioning import encode_prompts
    from pano360.backbones.loading import load_backbone

    folder = tmp_path / "flux"
    proportional_flux_pipeline(24).save_pretrained(folder)
    backbone = load_backbone(str(folder), hash_single_files=False)
    pipe = backbone.pipe
    assert backbone.info.family == "flux"
    assert pipe.transformer.config.num_attention_heads == 1
    assert pipe.text_encoder_2.config.num_layers == 24 and pipe.text_encoder.config.num_hidden_layers == 12
    assert pipe.scheduler.config.use_dynamic_shifting
    assert pipe.scheduler.config.max_shift == FLUX_DEV_SCHEDULER["max_shift"]
    text = encode_prompts(pipe, ["a room with a window"], guidance=False)
    assert text.embeds.shape == (1, 512, 176) and text.pooled.shape == (1, 32)
    assert torch.isfinite(text.embeds).all() and torch.isfinite(text.pooled).all()
