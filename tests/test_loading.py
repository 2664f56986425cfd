"""Loading: diffusers folders, single files, family detection, LoRAs, embeddings, clear errors."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from support.ldm_export import sd1_single_file_state

from pano360 import PanoramaGenerator
from pano360.backbones.families import family_of_checkpoint_keys
from pano360.backbones.loading import classify_model_argument, load_backbone
from pano360.backbones.tiny import save_tiny_pipeline, tiny_pipeline
from pano360.errors import InvalidInputError, ModelLoadError

# tiny models gain nothing from threads; on a busy 2-core machine OpenMP barriers slow them down many times
pytestmark = pytest.mark.usefixtures("single_torch_thread")

H, W = 64, 128


def image(gen, prompt="a room", seed=3, **kwargs):
    return gen(prompt, height=H, width=W, num_inference_steps=2, seed=seed, output_type="np",
               progress=False, **kwargs).images[0]


def test_folder_loads_back_identically(tiny_sd1_folder, tiny_generators):
    from_folder = PanoramaGenerator.from_pretrained(str(tiny_sd1_folder), device="cpu", torch_dtype="fp32")
    assert from_folder.backbone.source.kind == "folder"
    assert np.array_equal(image(from_folder), image(tiny_generators("tiny")))


@pytest.mark.parametrize("family, prediction", [("sd1", "epsilon"), ("sd2", "v_prediction"), ("sdxl", "epsilon")])
def test_family_detection_from_folders(tmp_path, family, prediction):
    folder = save_tiny_pipeline(tmp_path / family, family)
    backbone = load_backbone(str(folder))
    assert backbone.info.family == family
    assert backbone.info.prediction_type == prediction
    assert backbone.info.vae_scale_factor == 8 and backbone.info.unet_downsampling == 4


def test_family_detection_from_checkpoint_keys():
    unet = "model.diffusion_model.input_blocks.0.0.weight"
    assert family_of_checkpoint_keys([unet, "cond_stage_model.transformer.text_model.x"]) == "sd1"
    assert family_of_checkpoint_keys([unet, "cond_stage_model.model.transformer.resblocks.0.x"]) == "sd2"
    assert family_of_checkpoint_keys([unet, "conditioner.embedders.0.transformer.x",
                                      "conditioner.embedders.1.model.x"]) == "sdxl"
    assert family_of_checkpoint_keys(["lora_unet_down_blocks_0.alpha"]) is None


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_checkpoint_loads(tmp_path, tiny_sd1_folder, tiny_generators, suffix):
    state = sd1_single_file_state(tiny_pipeline("sd1"))
    path = tmp_path / f"model{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    gen = PanoramaGenerator.from_pretrained(str(path), config=str(tiny_sd1_folder), device="cpu", torch_dtype="fp32")
    assert gen.family == "sd1"
    assert gen.backbone.source.kind == "single_file" and len(gen.backbone.source.sha256) == 64
    assert np.abs(image(gen) - image(tiny_generators("tiny"))).max() < 1e-6


class Payload:
    """An arbitrary Python object: a weights-only unpickler must refuse to build it."""


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": Payload()}}, path)
    with pytest.raises(ModelLoadError, match="weights-only"):
        load_backbone(str(path))


# --- LoRA ------------------------------------------------------------------------------------

def make_lora_state(unet, seed=0):
    """A random rank-4 LoRA on the tiny UNet's attention projections, in diffusers/peft key layout."""
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    unet = tiny_pipeline("sd1").unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=False))
    state = get_peft_model_state_dict(unet)
    return {f"unet.{k}": v * 5 for k, v in state.items()}


def to_kohya(state):
    """diffusers names → kohya sd-scripts names (lora_unet_<path_with_underscores>.lora_down/up + alpha)."""
    out = {}
    for key, value in state.items():
        module, kind = key[len("unet."):].rsplit(".lora_", 1)
        name = "lora_unet_" + module.replace(".", "_")
        out[f"{name}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        out[f"{name}.alpha"] = torch.tensor(float(value.shape[0] if kind.startswith("A") else value.shape[1]))
    return out


@pytest.mark.parametrize("layout", ["diffusers", "kohya"])
def test_lora_changes_output_and_scale_zero_restores(tmp_path, tiny_generators, layout):
    state = make_lora_state(None)
    if layout == "kohya":
        state = to_kohya(state)
    path = tmp_path / f"{layout}_lora.safetensors"
    save_file(state, str(path))
    base = image(tiny_generators("tiny"))
    gen = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32", loras=[(str(path), 1.0)])
    with_lora = image(gen)
    assert np.abs(with_lora - base).max() > 1e-3
    gen.set_lora_scales(0.0)
    assert np.abs(image(gen) - base).max() < 1e-6
    gen.set_lora_scales(1.0)
    assert np.abs(image(gen) - with_lora).max() < 1e-6
    assert gen.backbone.loras[0]["source"] == str(path)


def test_missing_lora_is_reported_before_loading():
    with pytest.raises(InvalidInputError, match="does not exist"):
        PanoramaGenerator.from_pretrained("tiny", loras=["./no/such/lora.safetensors"])


# --- embeddings ------------------------------------------------------------------------------

def token_rows(text_encoder, tokenizer, tokens):
    ids = tokenizer.convert_tokens_to_ids(tokens)
    return text_encoder.get_input_embeddings().weight[ids]


def test_single_encoder_embedding(tmp_path):
    vectors = torch.randn(2, 32)
    path = tmp_path / "style.pt"
    torch.save({"string_to_param": {"*": vectors}, "name": "mystyle"}, path)
    gen = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32")
    before = image(gen, prompt="a room <mystyle>")
    tokens = gen.load_embedding(str(path))
    assert tokens == ["<mystyle>", "<mystyle>_1"]
    assert torch.allclose(token_rows(gen.pipe.text_encoder, gen.pipe.tokenizer, tokens), vectors)
    assert np.abs(image(gen, prompt="a room <mystyle>") - before).max() > 1e-4


@pytest.mark.parametrize("keys", [("text_encoders_0", "text_encoders_1"), ("clip_l", "clip_g")])
def test_two_encoder_sdxl_embedding(tmp_path, keys):
    first, second = torch.randn(2, 32), torch.randn(2, 32)
    path = tmp_path / "embeddings.pti"
    save_file({keys[0]: first, keys[1]: second}, str(path))
    gen = PanoramaGenerator.from_pretrained("tiny-sdxl", device="cpu", torch_dtype="fp32",
                                            embeddings=[str(path)])
    pipe = gen.pipe
    assert gen.backbone.embeddings[0]["tokens"] == ["<s0>", "<s1>"]
    assert torch.allclose(token_rows(pipe.text_encoder, pipe.tokenizer, ["<s0>", "<s1>"]), first)
    assert torch.allclose(token_rows(pipe.text_encoder_2, pipe.tokenizer_2, ["<s0>", "<s1>"]), second)
    ids = pipe.tokenizer("hdri view in the style of <s0><s1>").input_ids
    assert pipe.tokenizer.convert_tokens_to_ids("<s0>") in ids and pipe.tokenizer.convert_tokens_to_ids("<s1>") in ids
    out = gen("hdri view in the style of <s0><s1>", height=H, width=W, num_inference_steps=2, seed=1,
              output_type="np", progress=False)
    assert np.isfinite(out.images).all()


def test_two_encoder_embedding_needs_sdxl(tmp_path):
    path = tmp_path / "embeddings.pti"
    save_file({"text_encoders_0": torch.randn(2, 32), "text_encoders_1": torch.randn(2, 32)}, str(path))
    gen = PanoramaGenerator.from_pretrained("tiny", device="cpu", torch_dtype="fp32")
    with pytest.raises(ModelLoadError, match="SDXL"):
        gen.load_embedding(str(path))


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "model, match",
    [
        ("./models/missing.safetensors", "not found"),
        ("/no/such/folder", "not found"),
        ("not a hub id!", "not found"),
    ],
)
def test_unknown_model_paths(model, match):
    with pytest.raises(InvalidInputError, match=match):
        classify_model_argument(model)


def test_uncached_hub_model_offline_says_how_to_provide_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="not in the local cache.*local folder"):
        load_backbone("someone/some-model", cache_dir=str(tmp_path), local_files_only=True)


def test_unsupported_pipeline_class(tmp_path):
    folder = tmp_path / "cascade"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableCascadeCombinedPipeline"}))
    with pytest.raises(ModelLoadError, match="SD 1.x, SD 2.x, SDXL, FLUX.1, SD3.x and Qwen-Image"):
        load_backbone(str(folder))


def test_controlnet_family_mismatch_is_explained(tmp_path):
    from pano360.backbones.loading import load_controlnet
    from pano360.backbones.tiny import tiny_controlnet

    folder = tmp_path / "controlnet_sd1"
    tiny_controlnet(tiny_pipeline("sd1").unet).save_pretrained(folder)
    gen = PanoramaGenerator.from_pretrained("tiny-sdxl", device="cpu", torch_dtype="fp32")
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_controlnet(gen.backbone, str(folder))
