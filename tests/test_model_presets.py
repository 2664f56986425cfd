"""The model presets (pano360.model_presets) are well-formed; importing the presets stays torch-free."""

import subprocess
import sys

import pytest

from pano360.methods import available_methods, get_method
from pano360.model_presets import MODEL_PRESETS, UNWIRED
from pano360.presets import GENERATION_KEYS, PRESETS, apply_preset, get_preset

ALL = sorted(PRESETS)


def test_model_presets_registered():
    assert {"dit360", "hunyuanworld-pano", "qwen-360", "flux-equirect-360", "sdxl-360"} <= set(MODEL_PRESETS)
    assert set(MODEL_PRESETS) <= set(PRESETS)
    assert len(set(MODEL_PRESETS)) == len(MODEL_PRESETS)


@pytest.mark.parametrize("name", ALL)
def test_method_and_options(name):
    preset = get_preset(name)
    assert preset.method in available_methods()
    method = get_method(preset.method, **preset.options)  # unknown or invalid options raise
    assert method.name == preset.method


@pytest.mark.parametrize("name", ALL)
def test_generation_keys_and_sizes(name):
    preset = get_preset(name)
    assert set(preset.generation) <= set(GENERATION_KEYS)
    for key in ("height", "width"):
        if key in preset.generation:
            assert preset.generation[key] % 16 == 0, (name, key)
    if "num_inference_steps" in preset.generation:
        assert preset.generation["num_inference_steps"] > 0
    if "guidance_scale" in preset.generation:
        assert preset.generation["guidance_scale"] >= 0


@pytest.mark.parametrize("name", ALL)
def test_trigger_applied_once(name):
    preset = get_preset(name)
    prompt = "a misty forest at dawn"
    once = preset.prompt(prompt)
    assert prompt in once
    assert preset.prompt(once) == once  # not twice
    if preset.trigger:
        assert once.lower().count(preset.trigger.lower()) == 1
        assert once.startswith(preset.trigger)
        assert preset.prompt(preset.trigger.upper() + " " + prompt) == preset.trigger.upper() + " " + prompt
    else:
        assert once == prompt


@pytest.mark.parametrize("name", MODEL_PRESETS)
def test_model_presets_facts(name):
    preset = get_preset(name)
    assert preset.licence.strip()
    assert preset.description.strip()
    assert preset.method == "circular"
    model = preset.generation.get("model")
    assert model and "/" in model
    assert preset.generation["width"] == 2 * preset.generation["height"]  # equirectangular 2:1
    for source, scale, weight_name in preset.loras:
        assert "/" in source and scale > 0
        assert weight_name is None or weight_name.endswith(".safetensors")
    if preset.loras:  # the transformer presets: a flow scheduler and a seam scheme
        assert preset.generation.get("scheduler") == "flow_euler"
        assert preset.options.get("seam") in ("exact", "periodic", "pad", "blend", "none")


def test_dit360_uses_its_padding_and_reference_settings():
    preset = get_preset("dit360")
    assert preset.options == {"seam": "pad"}
    assert (preset.generation["height"], preset.generation["width"]) == (1024, 2048)
    assert (preset.generation["num_inference_steps"], preset.generation["guidance_scale"]) == (28, 2.8)


def test_explicit_settings_win_over_a_model_preset():
    method, options, generation = apply_preset("dit360", None, {"seam": "exact"},
                                               {"height": 512, "width": 1024, "num_inference_steps": None})
    assert method == "circular" and options == {"seam": "exact"}
    assert (generation["height"], generation["width"], generation["num_inference_steps"]) == (512, 1024, 28)


def test_unwired_records_are_complete():
    for record in UNWIRED.values():
        assert record["height"] % 16 == 0 and record["width"] % 16 == 0 and record["licence"]


def test_presets_import_is_torch_free():
    code = "import pano360.presets, sys; assert 'torch' not in sys.modules; assert 'dit360' in pano360.presets.PRESETS"
    subprocess.run([sys.executable, "-c", code], check=True)
