"""MVDiffusion's multi-view UNet: cameras, correspondences, the CAA block, placement, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from support.mvdiffusion_reference import multiview_reference

from pano360.adapters import load_adapter
from pano360.adapters.mvdiffusion import MVDiffusionAdapter, get_k_r, ring_cameras
from pano360.adapters.mvdiffusion.caa import CAABlock
from pano360.adapters.mvdiffusion.checkpoint import SD2_BASE, SD2_INPAINTING
from pano360.adapters.mvdiffusion.correspondence import level_geometry
from pano360.errors import ModelLoadError

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def sd2_like_unet(in_channels: int = 4, seed: int = 0):
    """A 3-level SD 2-like UNet (linear projections, head widths) at toy size, widths 32/64/64."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=in_channels, out_channels=4, block_out_channels=(32, 64, 64),
        layers_per_block=1, norm_num_groups=8, cross_attention_dim=32, attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ).eval()


def randomised(adapter: MVDiffusionAdapter, seed: int = 1, std: float = 0.2) -> MVDiffusionAdapter:
    """Non-zero to_out and last FF layers (fresh blocks are identities), LayerNorms away from (1, 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in adapter.named_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * std)
    return adapter


@pytest.fixture(scope="module")
def unet():
    return sd2_like_unet()


@pytest.fixture(scope="module")
def inputs():
    gen = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 8, 4, 8, 8, generator=gen)  # 2 groups (a CFG batch) of 8 views, 64-pixel views
    embeds = torch.randn(2, 8, 77, 32, generator=gen)  # a prompt per view
    return latents, embeds


def test_cameras_are_get_k_r_in_float32():
    cams = ring_cameras(8, 90.0, 64)
    assert cams.K.dtype == cams.R.dtype == torch.float32
    assert torch.equal(cams.K[3], torch.tensor([[32.0, 0, 31.5], [0, 32.0, 31.5], [0, 0, 1]]))
    for i in range(8):
        angle = np.float64(np.float32(np.radians(45 * i)))  # numpy 1.23 kept the rotation vector float32
        c, s = np.float32(math.cos(angle)), np.float32(math.sin(angle))
        expected = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float32)
        assert torch.equal(cams.R[i], expected)
    # positive yaw turns right: the forward axis of view 2 (yaw 90°) is world +x
    assert torch.allclose(cams.R[2] @ torch.tensor([0.0, 0, 1]), torch.tensor([1.0, 0, 0]), atol=1e-7)
    _, R = get_k_r(90, 0, 30, 64, 64)  # positive pitch looks up (y is down)
    assert (R @ np.array([0, 0, 1.0], np.float32))[1] < 0


def independent_caa(block: CAABlock, x: torch.Tensor, cams, views: int) -> torch.Tensor:
    """One CAA block from the digest's formulas in float64, pixel by pixel: rays through pure rotations,
    hand-written bilinear taps, masking by zeroing, shared LayerNorm, softmax over 18 keys."""
    n, c, h, w = x.shape
    X = x.double().view(-1, views, c, h, w)
    s = cams.height // h
    K = cams.K.double()
    R = cams.R.double()
    p = {k: v.double() for k, v in block.state_dict().items()}
    bands = p["pe.freq_bands"].reshape(-1)

    def gamma(d):
        a = d[:, None] * bands  # [2, N]
        return torch.cat([torch.sin(a).reshape(-1), torch.cos(a).reshape(-1)])

    def ln(v, name):
        return torch.nn.functional.layer_norm(v, (c,), p[name + ".weight"], p[name + ".bias"])

    def bilinear(feature, u, v):  # feature [c, h, w], index coordinates, zero outside
        x0, y0 = math.floor(u), math.floor(v)
        out = torch.zeros(c, dtype=torch.float64)
        for xi, wx in ((x0, 1 - (u - x0)), (x0 + 1, u - x0)):
            for yi, wy in ((y0, 1 - (v - y0)), (y0 + 1, v - y0)):
                if 0 <= xi < w and 0 <= yi < h:
                    out += wx * wy * feature[:, yi, xi]
        return out

    heads = block.transformer.attn1.heads
    out = torch.empty_like(X)
    for g in range(X.shape[0]):
        for i in range(views):
            for ky in range(h):
                for kx in range(w):
                    q_pix = torch.tensor([s * kx + s // 2, s * ky + s // 2, 1.0], dtype=torch.float64)
                    ray = R[i] @ torch.linalg.solve(K[i], q_pix)
                    keys = []
                    for j in ((i - 1) % views, (i + 1) % views):
                        hit = K[j] @ R[j].T @ ray
                        u, v = hit[0] / hit[2] / s - 0.5, hit[1] / hit[2] / s - 0.5
                        for dx in (-1, 0, 1):
                            for dy in (-1, 0, 1):
                                tu, tv = float(u + dx), float(v + dy)
                                px, py = (tu + 0.5) * s, (tv + 0.5) * s
                                if not (0 < px < cams.width and 0 < py < cams.height):
                                    keys.append(torch.zeros(c, dtype=torch.float64))
                                    continue
                                back = K[i] @ R[i].T @ R[j] @ torch.linalg.solve(
                                    K[j], torch.tensor([px, py, 1.0], dtype=torch.float64))
                                delta = (back[:2] / back[2] - q_pix[:2]) / s
                                keys.append(bilinear(X[g, j], tu, tv) + gamma(delta))
                    keys = torch.stack(keys)  # [18, c]
                    q0 = X[g, i, :, ky, kx]
                    qn = ln(q0 + gamma(torch.zeros(2, dtype=torch.float64)), "transformer.norm1")
                    kn = ln(keys, "transformer.norm1")
                    q = (p["transformer.attn1.to_q.weight"] @ qn).view(heads, -1)
                    k = (kn @ p["transformer.attn1.to_k.weight"].T).view(18, heads, -1)
                    vv = (kn @ p["transformer.attn1.to_v.weight"].T).view(18, heads, -1)
                    att = torch.softmax(torch.einsum("hd,jhd->hj", q, k) / math.sqrt(q.shape[-1]), dim=-1)
                    mixed = torch.einsum("hj,jhd->hd", att, vv).reshape(-1)
                    y = q0 + p["transformer.attn1.to_out.weight"] @ mixed + p["transformer.attn1.to_out.bias"]
                    proj = p["transformer.ff.net.0.proj.weight"] @ ln(y, "transformer.norm2") + p["transformer.ff.net.0.proj.bias"]
                    value, gate = proj.chunk(2)
                    gelu = 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))
                    y = y + p["transformer.ff.net.2.weight"] @ (value * gelu) + p["transformer.ff.net.2.bias"]
                    out[g, i, :, ky, kx] = y
    return out.view(n, c, h, w)


def test_caa_block_matches_an_independent_computation():
    """8-view ring at 32-pixel views, 4×4 features (s = 8), width 16 (frequencies 1…8), 2 groups."""
    torch.manual_seed(0)
    block = CAABlock(16)
    with torch.no_grad():
        for param in block.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    cams = ring_cameras(8, 90.0, 32)
    x = torch.randn(16, 16, 4, 4)
    ours = block(x, level_geometry(cams, 4, 4))
    assert torch.allclose(ours.double(), independent_caa(block, x, cams, 8), atol=1e-4)


def test_geometry_masks_and_taps():
    cams = ring_cameras(8, 90.0, 64)
    g = level_geometry(cams, 8, 8)
    assert g.grid.shape == (16, 72, 8, 2) and g.valid.shape == (8, 8, 8, 18, 1) and g.delta.shape == (8, 8, 8, 18, 2)
    # the centre tap (slot 4 / 13) maps back onto the query pixel; about half the view overlaps each neighbour
    assert g.delta[..., [4, 13], :].abs().max() < 1e-4
    assert 0.3 < g.valid[..., 4, 0].mean() < 0.7
    # view 0's left neighbour (view 7) covers its left half, the right neighbour its right half
    assert g.valid[0, :, 0, 4, 0].all() and not g.valid[0, :, 7, 4, 0].any()
    assert g.valid[0, :, 7, 13, 0].all() and not g.valid[0, :, 0, 13, 0].any()


def test_fresh_blocks_are_an_exact_identity(unet, inputs):
    latents, embeds = inputs
    network = MVDiffusionAdapter.for_unet(unet).attach(unet)
    with torch.no_grad():
        multi = network(latents.flatten(0, 1), 500, embeds.flatten(0, 1))[0]
        plain = unet(latents.flatten(0, 1), 500, embeds.flatten(0, 1), return_dict=False)[0]
    assert torch.equal(multi, plain)


def test_network_matches_the_reference_style_model(unet, inputs):
    latents, embeds = inputs
    adapter = randomised(MVDiffusionAdapter.for_unet(unet))
    network = adapter.attach(unet)
    cams = ring_cameras(8, 90.0, 64)
    with torch.no_grad():
        ours = network(latents.flatten(0, 1), 500, embeds.flatten(0, 1), cameras=cams)[0]
        R, K = cams.R[None].repeat(2, 1, 1, 1), cams.K[None].repeat(2, 1, 1, 1)
        reference = multiview_reference(unet, adapter, latents, 500, embeds, R, K)
        plain = unet(latents.flatten(0, 1), 500, embeds.flatten(0, 1), return_dict=False)[0]
    assert (ours - reference.flatten(0, 1)).abs().max() < 1e-4
    assert (ours - plain).abs().max() > 1e-2  # the blocks matter
    assert len(network.cache) == 3  # one plan per feature size (8, 4, 2), reused by encoder and decoder
    adapter.detach(unet)
    with torch.no_grad():
        after = unet(latents.flatten(0, 1), 500, embeds.flatten(0, 1), return_dict=False)[0]
    assert torch.equal(after, plain)


def test_rotating_the_rig_commutes(unet, inputs):
    """Shifting the views by one with the cameras (and a ring that starts 45° later) shifts the output."""
    latents, embeds = inputs
    network = randomised(MVDiffusionAdapter.for_unet(unet), seed=5).attach(unet)
    x, e = latents.flatten(0, 1), embeds.flatten(0, 1)

    def shifted(t):
        return torch.roll(t.view(2, 8, *t.shape[1:]), 1, dims=1).flatten(0, 1)

    with torch.no_grad():
        base = network(x, 500, e, cameras=ring_cameras(8, 90.0, 64))[0]
        rolled = network(shifted(x), 500, shifted(e), cameras=ring_cameras(8, 90.0, 64).roll(1))[0]
        turned = network(shifted(x), 500, shifted(e), cameras=ring_cameras(8, 90.0, 64, start_deg=-45.0))[0]
    assert torch.allclose(rolled, shifted(base), atol=1e-5)
    assert torch.allclose(turned, shifted(base), atol=1e-4)


def official_checkpoint(tmp_path, unet, adapter, **models):
    path = tmp_path / "pano.ckpt"
    state = adapter.reference_state_dict(unet=unet, **models)
    torch.save({"epoch": 9, "global_step": 100, "state_dict": state, "hyper_parameters": {"config": {"a": 1}}}, path)
    return path


def test_official_layout_loads_with_the_same_output(tmp_path, unet, inputs):
    from pano360.backbones.tiny import tiny_text_encoder, tiny_vae

    latents, embeds = inputs
    adapter = randomised(MVDiffusionAdapter.for_unet(unet), seed=7)
    vae, text = tiny_vae("sd2", 4), tiny_text_encoder(openclip_style=True, seed=5)
    path = official_checkpoint(tmp_path, unet, adapter, vae=vae, text_encoder=text)
    raw = torch.load(path, weights_only=True)["state_dict"]
    assert "mv_base_model.cp_blocks_encoder.0.transformer.attn1.to_out.weight" in raw
    assert "mv_base_model.cp_blocks_mid.pe.freq_bands" in raw
    assert "text_encoder.text_model.embeddings.position_ids" in raw
    assert raw["text_encoder.text_model.final_layer_norm.weight"].dtype == torch.float16
    assert any(".attentions.0.query." in k for k in raw) and not any(".attentions.0.to_q." in k for k in raw
                                                                     if k.startswith("vae."))
    loaded = load_adapter(path)
    assert isinstance(loaded, MVDiffusionAdapter) and loaded.base == SD2_BASE
    fresh_vae, fresh_text, fresh_unet = tiny_vae("sd2", 9), tiny_text_encoder(openclip_style=True, seed=9), sd2_like_unet(seed=4)
    assert sorted(loaded.load_components({"vae": fresh_vae, "text_encoder": fresh_text, "unet": fresh_unet})) == \
        ["text_encoder", "unet", "vae"]
    assert all(torch.equal(a, b) for a, b in zip(fresh_vae.state_dict().values(), vae.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(fresh_unet.state_dict().values(), unet.state_dict().values()))
    assert torch.equal(fresh_text.state_dict()["final_layer_norm.weight"],
                       text.state_dict()["final_layer_norm.weight"].half().float())
    with torch.no_grad():
        x, e = latents.flatten(0, 1), embeds.flatten(0, 1)
        a = adapter.attach(unet)(x, 500, e)[0]
        b = loaded.attach(unet)(x, 500, e)[0]
    adapter.detach(unet)
    loaded.detach(unet)
    assert torch.equal(a, b)


def test_checkpoint_that_does_not_fit_fails_with_the_right_base(tmp_path, unet):
    inpaint = sd2_like_unet(in_channels=9)
    path = official_checkpoint(tmp_path, inpaint, MVDiffusionAdapter.for_unet(inpaint))
    adapter = load_adapter(path)
    assert adapter.base == SD2_INPAINTING
    with pytest.raises(ModelLoadError, match="9-channel inpainting UNet.*stable-diffusion-2-inpainting"):
        adapter.attach(unet)
    adapter.attach(inpaint)  # fits its own base
    adapter.detach(inpaint)

    from pano360.backbones.tiny import tiny_unet

    with pytest.raises(ModelLoadError, match="do not fit this UNet.*stable-diffusion-2-base"):
        load_adapter(official_checkpoint(tmp_path, unet, MVDiffusionAdapter.for_unet(unet))).attach(tiny_unet("sd2"))


def test_wrong_layout_is_rejected_in_one_line(tmp_path, unet):
    state = MVDiffusionAdapter.for_unet(unet).reference_state_dict()
    del state["mv_base_model.cp_blocks_decoder.1.transformer.ff.net.2.bias"]
    torch.save({"state_dict": state}, tmp_path / "broken.ckpt")
    with pytest.raises(ModelLoadError, match="1 missing key.*cp_blocks_decoder.1.transformer.ff.net.2.bias"):
        load_adapter(tmp_path / "broken.ckpt")
    state = MVDiffusionAdapter.for_unet(unet).reference_state_dict()
    state["mv_base_model.cp_blocks_mid.pe.freq_bands"] = state["mv_base_model.cp_blocks_mid.pe.freq_bands"] * 2
    with pytest.raises(ModelLoadError, match="frequency bands"):
        MVDiffusionAdapter.from_reference_checkpoint(state)


def test_adapter_folder_round_trip(tmp_path, unet):
    adapter = randomised(MVDiffusionAdapter.for_unet(unet, base="tiny-sd2"))
    adapter.save(tmp_path / "adapter")
    loaded = load_adapter(tmp_path / "adapter")
    assert loaded.config == adapter.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), adapter.state_dict().values()))


def test_batches_must_be_whole_view_groups(unet):
    network = MVDiffusionAdapter.for_unet(unet).attach(unet)
    with pytest.raises(ValueError, match="whole number of 8-view groups"):
        network(torch.zeros(12, 4, 8, 8), 1, torch.zeros(12, 77, 32))
    with pytest.raises(ValueError, match="cameras describe 128×128"):
        network(torch.zeros(8, 4, 8, 8), 1, torch.zeros(8, 77, 32), cameras=ring_cameras(8, 90.0, 128))


def test_only_the_blocks_train_and_gradients_reach_all_of_them(unet, inputs):
    """With the UNet frozen (no gradients), an ε-MSE step gives every CAA block a gradient, through the
    gathered keys of later blocks too; gradient checkpointing gives the same gradients."""
    latents, embeds = inputs
    adapter = randomised(MVDiffusionAdapter.for_unet(unet), seed=11)
    unet.requires_grad_(False)
    network = adapter.attach(unet)
    x, e = latents[:1].flatten(0, 1), embeds[:1].flatten(0, 1)

    def grads():
        adapter.zero_grad()
        loss = torch.nn.functional.mse_loss(network(x, 300, e)[0], torch.zeros_like(x))
        loss.backward()
        return {n: p.grad.clone() for n, p in adapter.named_parameters()}

    plain = grads()
    assert set(plain) == {n for n, _ in adapter.named_parameters()}
    assert all(g.abs().sum() > 0 for n, g in plain.items() if "norm" not in n or "weight" in n)
    assert all(p.grad is None for p in unet.parameters())
    assert [p for p in adapter.trainable_parameters()] == list(adapter.parameters())
    adapter.set_gradient_checkpointing(True)
    checkpointed = grads()
    adapter.set_gradient_checkpointing(False)
    adapter.detach(unet)
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)


def test_half_precision_keeps_the_frequency_bands(unet, inputs):
    import copy

    latents, embeds = inputs
    adapter = randomised(MVDiffusionAdapter.for_unet(unet), seed=2)
    half_unet = copy.deepcopy(unet).to(torch.bfloat16)
    half = copy.deepcopy(adapter).to(torch.bfloat16)
    assert half.cp_blocks_mid.pe.freq_bands.dtype == torch.float32
    assert half.cp_blocks_encoder[0].transformer.norm1.weight.dtype == torch.bfloat16
    x, e = latents.flatten(0, 1), embeds.flatten(0, 1)
    with torch.no_grad():
        full = adapter.attach(unet)(x, 500, e)[0]
        low = half.attach(half_unet)(x.bfloat16(), 500, e.bfloat16())[0]
    adapter.detach(unet)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert torch.nn.functional.cosine_similarity(low.float().flatten(), full.flatten(), dim=0) > 0.98
