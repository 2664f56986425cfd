"""pano360 qkvo on transformers (tiny FLUX.1 / SD3): the projections through the attention sites, subsets
for the switching experiment, and both experiments end to end on given (untrained) LoRAs. Training the
LoRAs on a transformer needs the flow-matching trainer; without it the run stops with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pano360.adapters.lora import LoRAAdapter
from pano360.analysis.qkvo import lora_subset, projection_layers, projection_letter, study_lora
from pano360.backbones.tiny import tiny_unet
from pano360.backbones.tiny_dit import tiny_dit_pipeline
from pano360.cli.main import main

CAPTIONS = ("a red room", "a blue hall", "a green garden", "a white kitchen")

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def transformers():
    return {name: tiny_dit_pipeline(name).transformer for name in ("tiny-flux", "tiny-sd3")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qkvo-dit-data")
    x = np.linspace(0, 2 * np.pi, 128, endpoint=False)[None, :, None]
    y = np.linspace(0, np.pi, 64)[:, None, None]
    for index, caption in enumerate(CAPTIONS):
        image = 0.5 + 0.5 * np.sin(x * (index + 1) + y * np.array([1.0, 2.0, 3.0]) + index)
        Image.fromarray((image * 255).astype("uint8")).save(folder / f"p{index}.png")
        (folder / f"p{index}.txt").write_text(caption)
    return folder


def test_projection_letters_cover_unet_and_mmdit_names():
    assert [projection_letter(p) for p in ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
                                           "transformer_blocks.0.attn.add_k_proj", "transformer_blocks.0.attn.to_add_out",
                                           "single_transformer_blocks.1.proj_out", "a.attn2.to_v", "a.conv1")] \
        == ["o", "k", "o", "o", "v", None]


def test_projection_layers_through_the_attention_sites(transformers):
    flux = projection_layers(transformers["tiny-flux"])
    assert {"transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.add_q_proj",
            "transformer_blocks.0.attn.to_out.0", "transformer_blocks.0.attn.to_add_out",
            "single_transformer_blocks.0.attn.to_v", "single_transformer_blocks.0.proj_out"} <= set(flux)
    assert all(projection_letter(p) is not None for p in flux)
    q = projection_layers(transformers["tiny-flux"], "q")
    assert set(q) == {p for p in flux if projection_letter(p) == "q"} and len(q) == 4  # 1 double (2) + 2 single
    sd3 = projection_layers(transformers["tiny-sd3"], "o")
    assert set(sd3) == {"transformer_blocks.0.attn.to_out.0", "transformer_blocks.0.attn.to_add_out",
                        "transformer_blocks.1.attn.to_out.0"}  # the last block has no text output
    unet = tiny_unet("sd1")
    assert projection_layers(unet) == LoRAAdapter.target_paths(unet, ["to_q", "to_k", "to_v", "to_out.0"], "both")


@pytest.mark.parametrize("name", ["tiny-flux", "tiny-sd3"])
def test_switching_subsets_split_the_all_four_lora(transformers, name):
    lora = study_lora(transformers[name], "qkvo", rank=2, seed=0)
    with torch.no_grad():
        for parameter in lora.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    vo, qk = lora_subset(lora, "vo"), lora_subset(lora, "qk")
    assert set(vo.config["layers"]) | set(qk.config["layers"]) == set(lora.config["layers"])
    assert not set(vo.config["layers"]) & set(qk.config["layers"])
    assert {projection_letter(p) for p in vo.config["layers"]} == {"v", "o"}
    full = lora.state_dict()
    for part in (vo, qk):
        assert all(torch.equal(v, full[k]) for k, v in part.state_dict().items())
    assert lora_subset(lora, "") is None


def _given_loras(root, transformer):
    """Folders of untrained (v) and randomised (qkvo) LoRAs, as ``--loras`` takes them."""
    study_lora(transformer, "v", rank=2, seed=0).save(root / "v")
    lora = study_lora(transformer, "qkvo", rank=2, seed=0)
    with torch.no_grad():
        for parameter in lora.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(2)) * 0.3)
    lora.save(root / "qkvo")


def test_both_experiments_on_tiny_flux_with_given_loras(data, tmp_path, transformers):
    _given_loras(tmp_path / "loras", transformers["tiny-flux"])
    output = tmp_path / "out"
    assert main(["qkvo", str(data), "-o", str(output), "--model", "tiny-flux", "--loras", str(tmp_path / "loras"),
                 "--subsets", "v", "--switches", "vo", "none", "--resolution", "64", "--eval-count", "2",
                 "--eval-steps", "1", "--metrics", "fid", "--random-metric-weights", "--device", "cpu",
                 "--quiet"]) == 0
    record = json.loads((output / "results.json").read_text())
    assert set(record["isolation"]) == {"v"} and set(record["switching"]) == {"vo", "none"}
    assert record["training"]["qkvo"]["steps"] == "given"
    assert record["config"]["model"] == "tiny-flux"
    # the untrained v LoRA and the all-off switch are the base model: the base's perspective images
    assert record["isolation"]["v"]["metrics"]["perspective_lpips"] == 0.0
    assert record["switching"]["none"]["metrics"]["perspective_lpips"] == 0.0
    assert record["switching"]["vo"]["metrics"]["perspective_lpips"] > 0.0
    assert (output / "variants" / "switching-vo" / "panoramas" / "001.png").is_file()
    assert "LoRAs from" in (output / "report.html").read_text()


def test_training_on_a_transformer_without_the_flow_trainer_is_one_line(data, tmp_path, capsys, monkeypatch):
    import pano360.generator
    from pano360.training import trainer

    monkeypatch.setattr(trainer, "TRAINS_TRANSFORMERS", False)  # a trainer without transformer support

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(pano360.generator.PanoramaGenerator, "from_pretrained", refuse)
    monkeypatch.setattr(trainer, "train", refuse)
    assert main(["qkvo", str(data), "-o", str(tmp_path / "out"), "--model", "tiny-flux", "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert "flux transformer" in err and "--loras" in err and len(err.strip().splitlines()) == 1
    assert main(["qkvo", str(data), "-o", str(tmp_path / "out"), "--model", "tiny-sd3",
                 "--loras", str(tmp_path / "nothing"), "--subsets", "v", "--switches"]) == 2
    assert "no LoRA for subset 'v'" in capsys.readouterr().err


def test_the_study_trains_its_loras_on_a_transformer(data, tmp_path):
    """With the flow-matching trainer, ``pano360 qkvo --model tiny-flux`` trains the subsets' LoRAs itself."""
    import json

    from safetensors.torch import load_file

    output = tmp_path / "out"
    assert main(["qkvo", str(data), "-o", str(output), "--model", "tiny-flux", "--steps", "2", "--subsets", "v",
                 "qkvo", "--switches", "vo", "none", "--resolution", "64", "--eval-count", "1", "--eval-steps", "2",
                 "--metrics", "clip", "--random-metric-weights", "--quiet"]) == 0
    record = json.loads((output / "results.json").read_text())
    assert set(record["isolation"]) == {"v", "qkvo"}
    weights = load_file(next((output / "loras" / "v").glob("*.safetensors")))
    assert weights and all("to_v" in key or "add_v_proj" in key for key in weights)  # v only: q/k/o untouched
