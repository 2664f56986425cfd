"""UniPano's adapter (value LoRA + mixture of LoRA experts on W_o) on the tiny FLUX.1 and SD3 transformers:
placement through the backbone contract's attention sites, exact initialisation, roll equivariance with
the exact seam, no parameters on q/k, files, the loading door and its one-line errors."""

from __future__ import annotations

import pytest
import torch

from pano360 import PanoramaGenerator
from pano360.adapters import load_adapter
from pano360.adapters.unipano import UniPanoAdapter, attention_layers
from pano360.backbones.tiny import tiny_unet
from pano360.backbones.tiny_dit import tiny_dit_pipeline
from pano360.errors import ModelLoadError

MODELS = ("tiny-flux", "tiny-sd3", "tiny-sd35")
H, W = 64, 128  # 8 x 16 latents, 4 x 8 tokens
PROMPT = "a quiet harbour at dusk"

pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def generators():
    return {name: PanoramaGenerator.from_pipe(tiny_dit_pipeline(name), name) for name in MODELS}


def _randomise(adapter: UniPanoAdapter, seed: int = 1, scale: float = 0.3) -> UniPanoAdapter:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)
    return adapter


def _latents(seed: int = 0):
    return torch.randn(1, 16, H // 8, W // 8, generator=torch.Generator().manual_seed(seed))


def _run(gen, latents, **kwargs):
    return gen(PROMPT, method="circular", latents=latents, height=H, width=W, num_inference_steps=2,
               output_type="pt", progress=False, **kwargs).images


def test_placement_follows_the_attention_sites(generators):
    flux = generators["tiny-flux"].backbone.denoiser
    layers = attention_layers(flux)
    double, single = "transformer_blocks.0.attn", "single_transformer_blocks.0.attn"
    assert set(layers) == {double, single, "single_transformer_blocks.1.attn"}
    dim = flux.single_transformer_blocks[0].attn.to_v.out_features
    assert layers[double] == [dim, dim, dim, dim, dim, dim]  # + the text stream's values (add_v_proj)
    assert flux.single_transformer_blocks[0].proj_out.in_features > dim  # [attention, MLP] -> W_o = first dim
    assert layers[single] == [dim, dim, dim, dim]
    sd3 = generators["tiny-sd3"].backbone.denoiser
    assert list(attention_layers(sd3)) == ["transformer_blocks.0.attn", "transformer_blocks.1.attn"]
    assert "transformer_blocks.0.attn2" in attention_layers(generators["tiny-sd35"].backbone.denoiser)


@pytest.mark.parametrize("name", MODELS)
def test_q_and_k_get_no_parameters_and_hooks_sit_on_v_and_o(generators, name):
    denoiser = generators[name].backbone.denoiser
    adapter = UniPanoAdapter.for_unet(denoiser)
    assert not any(part in key for key in adapter.state_dict() for part in ("to_q", "to_k", "add_q", "add_k"))
    adapter.attach(denoiser)
    try:
        hooked = {n for n, m in denoiser.named_modules() if m._forward_hooks}
    finally:
        adapter.detach(denoiser)
    assert hooked and all(n.endswith(("to_v", "add_v_proj", "to_out.0", "proj_out")) for n in hooked)
    assert not any(n.endswith("to_add_out") for n in hooked)
    assert not any(m._forward_hooks for m in denoiser.modules())


@pytest.mark.parametrize("name, seam", [("tiny-flux", "exact"), ("tiny-flux", "pad"), ("tiny-sd3", "exact"),
                                        ("tiny-sd35", "exact")])
def test_fresh_adapter_is_the_base_model_bit_for_bit(generators, name, seam):
    gen = generators[name]
    latents = _latents()
    base = _run(gen, latents, seam=seam)
    gen.load_adapter(UniPanoAdapter.fresh(gen.backbone.denoiser))
    try:
        fresh = _run(gen, latents, seam=seam)
    finally:
        gen.adapters.clear(), gen.adapter_sources.clear()
    assert torch.equal(fresh, base)


def test_flux_roll_equivariance_with_the_adapter_and_the_exact_seam(generators):
    """As tests/test_dit.py's roll test: rolling the noise by whole tokens rolls the panorama exactly."""
    gen = generators["tiny-flux"]
    gen.load_adapter(_randomise(UniPanoAdapter.for_unet(gen.backbone.denoiser)))
    try:
        latents, k = _latents(1), 4  # latent columns: two tokens
        adapted = _run(gen, latents)
        rolled = _run(gen, torch.roll(latents, k, dims=-1))
    finally:
        gen.adapters.clear(), gen.adapter_sources.clear()
    assert (torch.roll(adapted, k * 8, dims=-1) - rolled).abs().max() <= 1e-4
    assert (adapted - rolled).abs().max() > 1e-2
    assert (adapted - _run(gen, latents)).abs().max() > 1e-3  # the adapter acts


def test_sd3_contract_call_rolls_exactly_with_the_adapter(generators):
    """SD3's embedding is absolute: exact with positions rolled along, as in tests/test_dit.py."""
    gen = generators["tiny-sd3"]
    contract, transformer = gen.backbone.contract, gen.backbone.denoiser
    adapter = _randomise(UniPanoAdapter.for_unet(transformer))
    latents = _latents(2)
    text = gen.encode_prompt([PROMPT], None, guidance=False)
    t = torch.tensor(700.0)
    with torch.no_grad():
        with contract.seam(gen.backbone, vae=False, rounding="ceil"):
            plain = contract.call(transformer, latents, t, text.embeds, text.pooled)
        adapter.attach(transformer)
        try:
            with contract.seam(gen.backbone, vae=False, rounding="ceil"):
                base = contract.call(transformer, latents, t, text.embeds, text.pooled)
            with contract.seam(gen.backbone, vae=False, rounding="ceil", offset=-2):
                rolled = contract.call(transformer, torch.roll(latents, 4, -1), t, text.embeds, text.pooled)
        finally:
            adapter.detach(transformer)
    assert (base - plain).abs().max() > 1e-3  # the adapter acts
    assert (torch.roll(base, 4, -1) - rolled).abs().max() <= 1e-4


def test_folder_round_trip_and_from_pretrained(tmp_path, generators):
    gen = generators["tiny-flux"]
    adapter = _randomise(UniPanoAdapter.for_unet(gen.backbone.denoiser))
    adapter.save(tmp_path / "flux-unipano")
    loaded = load_adapter(tmp_path / "flux-unipano")
    assert loaded.backbone == "flux" and loaded.config == adapter.config
    latents = _latents(3)
    gen.load_adapter(adapter)
    try:
        expected = _run(gen, latents)
    finally:
        gen.adapters.clear(), gen.adapter_sources.clear()
    fresh = PanoramaGenerator.from_pretrained("tiny-flux", adapter=tmp_path / "flux-unipano", device="cpu",
                                              torch_dtype="fp32")
    assert torch.equal(_run(fresh, latents), expected)
    assert not any(m._forward_hooks for m in fresh.backbone.denoiser.modules())  # detached after the run


def test_adapters_for_another_backbone_fail_with_one_line(tmp_path, generators):
    flux = generators["tiny-flux"]
    unet_adapter = UniPanoAdapter.for_unet(tiny_unet("sd1"))
    with pytest.raises(ModelLoadError, match=r"made for a UNet \(SD 1/2/SDXL\), but the model is a flux") as error:
        flux.load_adapter(unet_adapter)
    assert "\n" not in str(error.value)
    # a UniPano-code (SD UNet) checkpoint on FLUX
    state = {unet_adapter.reference_name(k): v for k, v in unet_adapter.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "last.ckpt")
    with pytest.raises(ModelLoadError, match="made for a UNet"):
        flux.load_adapter(tmp_path / "last.ckpt")
    sd3_adapter = UniPanoAdapter.for_unet(generators["tiny-sd3"].backbone.denoiser)
    with pytest.raises(ModelLoadError, match="made for a sd3 transformer, but the model is a flux transformer"):
        flux.load_adapter(sd3_adapter)
    with pytest.raises(ModelLoadError, match="made for another sd3 transformer"):
        generators["tiny-sd35"].load_adapter(sd3_adapter)
    assert not flux.adapters and not generators["tiny-sd35"].adapters


def test_single_stream_w_o_update_reaches_only_the_attention_columns(generators):
    """The FLUX single-stream mixture reads proj_out's attention input only: with every other update zero
    it changes the output, and it equals a hand-computed update of proj_out's first dim columns."""
    flux = generators["tiny-flux"].backbone.denoiser
    adapter = UniPanoAdapter.fresh(flux)
    block = adapter.layers["single_transformer_blocks__0__attn"]
    _randomise(block.to_out, seed=5)
    proj_out = flux.single_transformer_blocks[0].proj_out
    x = torch.randn(1, 3, proj_out.in_features, generator=torch.Generator().manual_seed(6))
    dim = flux.single_transformer_blocks[0].attn.to_v.out_features
    with torch.no_grad():
        expected = proj_out(x) + block.to_out(x[..., :dim])
        adapter.attach(flux)
        try:
            got = proj_out(x)
        finally:
            adapter.detach(flux)
    assert torch.equal(got, expected) and (got - proj_out(x)).abs().max() > 1e-3


def test_unipano_trains_on_a_transformer_and_loads_back(tmp_path):
    """``pano360 train --adapter unipano`` on tiny FLUX: the flow-matching trainer trains only the v LoRA and
    the experts, and the saved adapter loads onto the model."""
    import numpy as np
    from PIL import Image

    from pano360.cli.main import main

    data = tmp_path / "data"
    data.mkdir()
    x = np.linspace(0, 2 * np.pi, 128, endpoint=False)[None, :, None]
    for index in range(2):
        image = 0.5 + 0.5 * np.sin(x * (index + 1) + np.linspace(0, 3, 64)[:, None, None] + index)
        Image.fromarray((np.broadcast_to(image, (64, 128, 3)) * 255).astype("uint8")).save(data / f"p{index}.png")
        (data / f"p{index}.txt").write_text(f"a room {index}")
    out = tmp_path / "adapter"
    assert main(["train", str(data), "-o", str(out), "--model", "tiny-flux", "--adapter", "unipano",
                 "--max-train-steps", "2", "--resolution", "64", "--quiet"]) == 0
    adapter = load_adapter(str(out))
    gen = PanoramaGenerator.from_pretrained("tiny-flux", device="cpu", torch_dtype="fp32")
    gen.load_adapter(adapter)
    image = gen("a room", height=64, width=128, num_inference_steps=2, seed=0, output_type="pt", progress=False)
    assert torch.isfinite(image.images).all()
