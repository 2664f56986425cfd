"""A frozen transformer in 8 or 4 bits (``--quantize fp8|nf4``): the stored bytes equal the estimate the
memory benchmarks use, outputs stay close to full precision, a LoRA trains over the quantized base
(QLoRA) with the loss falling and resume exact, and the result loads on a full-precision base."""

import copy

import pytest
import torch
from support.panoramas import write_panoramas

from pano360.backbones import quantize as q
from pano360.backbones.tiny_dit import tiny_dit_pipeline
from pano360.training import TrainingConfig, train

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.usefixtures("single_torch_thread")

H = 64


def _stored_bytes(module) -> int:
    """Bytes the module's tensors really hold: parameters, plus NF4's absmax codes, their fp32 scales and offset."""
    total = 0
    for parameter in module.parameters():
        total += parameter.numel() * parameter.element_size()
        state = getattr(parameter, "quant_state", None)
        if state is not None:
            total += state.absmax.numel() * state.absmax.element_size()
            total += state.state2.absmax.numel() * state.state2.absmax.element_size() + state.offset.element_size()
    return total


@pytest.mark.parametrize("model", ["tiny-flux", "tiny-sd3", "tiny-qwen", "tiny-flux2"])
@pytest.mark.parametrize("kind", ["fp8", "nf4"])
def test_stored_bytes_equal_the_estimate_from_shapes(model, kind):
    transformer = tiny_dit_pipeline(model).transformer
    estimate = q.quantized_weight_bytes(transformer, kind, torch.float32)
    stored = q.materialise(q.quantize_module(copy.deepcopy(transformer), kind, torch.float32), "cpu")
    assert _stored_bytes(stored) == estimate
    assert estimate < 0.75 * q.quantized_weight_bytes(transformer, "none", torch.float32)
    if kind == "nf4":
        assert q.is_nf4_quantized(stored)


def test_nf4_bits_per_weight_is_qloras_double_quantization():
    count = 3072 * 12288
    assert q.nf4_weight_bytes(count) * 8 / count == pytest.approx(q.NF4_BITS_PER_WEIGHT, rel=1e-4)
    assert q.NF4_BITS_PER_WEIGHT == pytest.approx(4.127, abs=1e-3)


@pytest.mark.parametrize("kind, tolerance", [("fp8", 0.15), ("nf4", 0.3)])
def test_quantized_flux_predicts_close_to_full_precision(kind, tolerance):
    from pano360.backbones.family import get_family
    from pano360.backbones.guided import predict_noise

    transformer = tiny_dit_pipeline("tiny-flux").transformer
    quantized = q.materialise(q.quantize_module(copy.deepcopy(transformer), kind, torch.float32), "cpu")
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 16, 8, 16, generator=generator)
    embeds, pooled = torch.randn(1, 8, 32, generator=generator), torch.randn(1, 32, generator=generator)
    t = torch.full((1,), 600.0)
    args = {"family": get_family("flux"), "embedded_guidance": 3.5}
    with torch.no_grad():
        full = predict_noise(transformer, latents, t, embeds, pooled, **args)
        low = predict_noise(quantized, latents, t, embeds, pooled, **args)
    relative = ((low - full).norm() / full.norm()).item()
    assert 0 < relative < tolerance


def test_a_model_is_quantized_once_and_unknown_kinds_are_refused():
    from pano360.errors import InvalidInputError

    transformer = tiny_dit_pipeline("tiny-flux").transformer
    q.quantize_module(transformer, "fp8", torch.float32)
    with pytest.raises(InvalidInputError, match="already stored in fp8"):
        q.quantize_module(transformer, "nf4", torch.float32)
    with pytest.raises(InvalidInputError, match="none, fp8, nf4"):
        q.check_quantize("int4")


def test_lora_over_an_nf4_base_starts_at_the_base_and_trains_only_itself():
    from pano360.adapters.lora import LoRAAdapter

    linear = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))
    holder = torch.nn.Module()
    holder.transformer_blocks = torch.nn.ModuleList([torch.nn.Module()])
    holder.transformer_blocks[0].attn = torch.nn.Module()
    holder.transformer_blocks[0].attn.to_q = linear[0]
    q.quantize_module(holder, "nf4", torch.float32)
    q.materialise(holder, "cpu")
    base = holder.transformer_blocks[0].attn.to_q
    x = torch.randn(5, 64, requires_grad=True)
    before = base(x).detach()
    adapter = LoRAAdapter({"transformer_blocks.0.attn.to_q": [64, 128]}, rank=4)
    adapter.attach(holder)
    wrapped = holder.transformer_blocks[0].attn.to_q
    out = wrapped(x)
    assert torch.equal(out.detach(), before)
    out.square().sum().backward()
    assert all(p.grad is not None for p in adapter.parameters())
    assert base.weight.grad is None and not base.weight.requires_grad
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients pass through the 4-bit layer


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    write_panoramas(folder, 2, height=H)
    return folder


def _config(data, output, steps, **extra):
    return TrainingConfig(data=str(data), output=str(output), model="tiny-flux", steps=steps, batch_size=2,
                          learning_rate=1e-2, caption_dropout=0.0, adapter_options={"rank": 8}, resolution=H,
                          progress=False, checkpoint_every=2, gradient_checkpointing=True, **extra)


@pytest.mark.parametrize("kind", ["nf4", "fp8"])
def test_qlora_on_tiny_flux_learns_resumes_exactly_and_loads_on_the_full_precision_base(two, tmp_path, kind):
    from safetensors.torch import load_file

    from pano360 import PanoramaGenerator

    result = train(_config(two, tmp_path / "straight", 24, quantize=kind, optimizer="adamw8bit"))
    losses = result.losses
    assert sum(losses[-5:]) / 5 < 0.9 * sum(losses[:5]) / 5, losses
    import json

    assert json.loads((result.output / "training_config.json").read_text())["config"]["quantize"] == kind
    train(_config(two, tmp_path / "split", 2, quantize=kind))
    resumed = train(_config(two, tmp_path / "split", 4, quantize=kind, resume="latest"))
    straight = train(_config(two, tmp_path / "straight4", 4, quantize=kind))
    a = load_file(str(straight.output / "adapter_model.safetensors"))
    b = load_file(str(resumed.output / "adapter_model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    generator = PanoramaGenerator.from_pretrained("tiny-flux", device="cpu", torch_dtype="fp32",
                                                  loras=[str(result.output)])
    image = generator("a room", height=H, width=2 * H, num_inference_steps=2, output_type="pt", progress=False)
    assert torch.isfinite(image.images).all()


@pytest.fixture(scope="module")
def flux_lora(two, tmp_path_factory):
    output = tmp_path_factory.mktemp("lora") / "lora"
    return train(TrainingConfig(data=str(two), output=str(output), model="tiny-flux", steps=4, batch_size=2,
                                learning_rate=3e-2, caption_dropout=0.0, adapter_options={"rank": 8}, resolution=H,
                                progress=False, checkpoint_every=0)).output


@pytest.mark.parametrize("kind, tolerance", [("fp8", 0.02), ("nf4", 0.05)])
def test_generate_with_a_quantized_transformer_and_a_lora_stays_close_to_full_precision(flux_lora, kind, tolerance):
    from pano360 import PanoramaGenerator

    kwargs = {"height": H, "width": 2 * H, "num_inference_steps": 2, "output_type": "pt", "progress": False}
    images = {}
    for quantize in ("none", kind):
        for loras in ([], [str(flux_lora)]):
            generator = PanoramaGenerator.from_pretrained("tiny-flux", device="cpu", torch_dtype="fp32",
                                                          quantize=quantize, loras=loras)
            if quantize == "nf4":
                assert q.is_nf4_quantized(generator.pipe.transformer)
            lora_dtypes = {p.dtype for n, p in generator.pipe.transformer.named_parameters() if "lora_" in n}
            assert lora_dtypes <= {torch.float32}  # peft's LoRA layers take the compute dtype, not float8/uint8
            image = generator("a room", generator=torch.Generator().manual_seed(0), **kwargs).images
            images[quantize, bool(loras)] = image
    lora_effect = (images["none", True] - images["none", False]).abs().mean().item()
    assert lora_effect > 0.01
    assert 0 < (images[kind, True] - images["none", True]).abs().mean().item() < tolerance
    quantized_effect = (images[kind, True] - images[kind, False]).abs().mean().item()
    assert quantized_effect == pytest.approx(lora_effect, rel=0.25)


def test_quantize_on_a_unet_model_is_refused_in_one_line(capsys):
    from pano360.backbones.loading import load_backbone
    from pano360.cli.main import main
    from pano360.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="UNet model: drop --quantize"):
        load_backbone("tiny", quantize="fp8")
    assert main(["generate", "a room", "--model", "tiny", "--quantize", "nf4", "-o", "unused.png"]) == 2
    assert "drop --quantize" in capsys.readouterr().err


@pytest.mark.parametrize("family, name", [("flux", "flux-dev"), ("sd3", "sd3-medium"), ("qwen-image", "qwen-image"),
                                          ("flux2", "flux2-klein-4b")])
def test_pre_flight_memory_counts_the_quantized_transformer_as_stored(family, name):
    from pano360.backbones.tiny_dit import full_size_transformer
    from pano360.validation import DENOISER_PARAMETERS, QUANTIZED_BYTES_PER_PARAMETER, estimate_memory

    transformer = full_size_transformer(name, device="meta")
    count = sum(p.numel() for p in transformer.parameters())
    assert count == pytest.approx(DENOISER_PARAMETERS[family], rel=0.01)
    plain = estimate_memory(1024, 2048, family=family, dtype_bytes=2)
    for kind in ("fp8", "nf4"):
        per_parameter = q.quantized_weight_bytes(transformer, kind) / count
        assert QUANTIZED_BYTES_PER_PARAMETER[kind][family] == pytest.approx(per_parameter, abs=0.002)
        quantized = estimate_memory(1024, 2048, family=family, dtype_bytes=2, quantize=kind)
        saved = DENOISER_PARAMETERS[family] * (2 - QUANTIZED_BYTES_PER_PARAMETER[kind][family])
        assert plain.weights - quantized.weights == pytest.approx(saved, rel=1e-6)
        assert (quantized.unet, quantized.vae) == (plain.unet, plain.vae)  # activations stay in bf16
