"""LPIPS: official key layout, metric properties, autograd, and agreement with an independent computation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pano360.nets.lpips import LPIPS

# tiny models gain nothing from threads; on a busy 2-core machine OpenMP barriers slow them down many times
pytestmark = pytest.mark.usefixtures("single_torch_thread")

DATA = Path(__file__).parent / "data"


def _keys(name: str) -> dict[str, list[int]]:
    return json.loads((DATA / name).read_text())["keys"]


@pytest.fixture(scope="module")
def vgg_lpips() -> LPIPS:
    return LPIPS("vgg", pretrained=False)


@pytest.fixture(scope="module")
def alex_lpips() -> LPIPS:
    return LPIPS("alex", pretrained=False)


@pytest.mark.parametrize("net, trunk_file, head_file", [
    ("vgg", "keys_vgg16-397923af.json", "keys_lpips-v0.1-vgg.json"),
    ("alex", "keys_alexnet-owt-7be5be79.json", "keys_lpips-v0.1-alex.json"),
])
def test_state_dict_matches_the_official_files(net, trunk_file, head_file, request):
    model = request.getfixturevalue(f"{net}_lpips")
    state = {k: list(v.shape) for k, v in model.state_dict().items()}
    trunk = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    heads = {k: v for k, v in state.items() if not k.startswith("net.")}
    official_trunk = {k: v for k, v in _keys(trunk_file).items() if k.startswith("features.")}
    assert trunk == official_trunk
    assert heads == _keys(head_file)


def test_identical_inputs_give_zero_and_distance_is_symmetric(vgg_lpips):
    torch.manual_seed(0)
    x = torch.rand(3, 3, 48, 48) * 2 - 1
    y = torch.rand(3, 3, 48, 48) * 2 - 1
    assert torch.equal(vgg_lpips(x, x), torch.zeros(3))
    d_xy, d_yx = vgg_lpips(x, y), vgg_lpips(y, x)
    assert d_xy.shape == (3,) and d_xy.dtype == torch.float32
    assert torch.all(d_xy > 0)
    torch.testing.assert_close(d_xy, d_yx, rtol=1e-6, atol=0)


def test_gradients_flow_to_inputs_in_batches_and_anchor_broadcasts(vgg_lpips):
    torch.manual_seed(1)
    views = (torch.rand(4, 3, 32, 32) * 2 - 1).requires_grad_()
    anchor = torch.rand(1, 3, 32, 32) * 2 - 1
    distances = vgg_lpips(views, anchor)
    assert distances.shape == (4,)
    (grad,) = torch.autograd.grad(distances.sum(), views)
    assert grad.shape == views.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # each window's gradient depends on its own distance only
    (grad_first,) = torch.autograd.grad(vgg_lpips(views[:1], anchor).sum(), views)
    torch.testing.assert_close(grad_first[0], grad[0], rtol=1e-4, atol=1e-8)
    assert grad_first[1:].abs().sum() == 0
    assert all(not p.requires_grad for p in vgg_lpips.parameters())
    # broadcasting the anchor equals repeating it
    repeated = vgg_lpips(views.detach(), anchor.expand(4, -1, -1, -1))
    torch.testing.assert_close(distances.detach(), repeated, rtol=1e-5, atol=1e-9)


def test_precomputed_target_features_give_the_same_distance_and_gradient(vgg_lpips):
    """``distance(features(x), features(y))`` is ``forward(x, y)``; with gradients, the target side
    (no grad) gets no backward pass of its own (SyncDiffusion compares many windows with one anchor)."""
    torch.manual_seed(2)
    views = (torch.rand(3, 3, 32, 32) * 2 - 1).requires_grad_()
    anchor = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        anchor_features = vgg_lpips.features(anchor)
    direct = vgg_lpips(views, anchor.expand(3, -1, -1, -1))
    prepared = vgg_lpips.distance(vgg_lpips.features(views), anchor_features)
    torch.testing.assert_close(prepared, direct, rtol=1e-5, atol=1e-9)
    (g_direct,) = torch.autograd.grad(direct.sum(), views)
    (g_prepared,) = torch.autograd.grad(prepared.sum(), views)
    torch.testing.assert_close(g_prepared, g_direct, rtol=1e-4, atol=1e-9)


def _independent_lpips(model: LPIPS, x: torch.Tensor, y: torch.Tensor, taps: list[int]) -> torch.Tensor:
    """LPIPS written out from the published definition with plain functional ops on the same weights."""
    state = model.state_dict()
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def features(image):
        h = (image - shift) / scale
        outs = []
        for index, layer in enumerate(model.net.features):
            if isinstance(layer, torch.nn.Conv2d):
                h = F.conv2d(h, state[f"net.features.{index}.weight"], state[f"net.features.{index}.bias"],
                             stride=layer.stride, padding=layer.padding)
            elif isinstance(layer, torch.nn.ReLU):
                h = torch.clamp(h, min=0)
            else:
                h = F.max_pool2d(h, layer.kernel_size, layer.stride)
            if index in taps:
                outs.append(h)
            if index == taps[-1]:
                return outs

    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for k, (a, b) in enumerate(zip(features(x), features(y))):
        a = a.double() / (a.double().pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b.double() / (b.double().pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        weight = state[f"lin{k}.model.1.weight"].double()
        total += F.conv2d((a - b) ** 2, weight).mean(dim=(1, 2, 3))
    return total


@pytest.mark.parametrize("net, taps", [("vgg", [3, 8, 15, 22, 29]), ("alex", [1, 4, 7, 9, 11])])
def test_random_weight_case_matches_an_independent_computation(net, taps, request):
    model = request.getfixturevalue(f"{net}_lpips")
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    y = torch.rand(2, 3, 64, 64, generator=generator) * 2 - 1
    expected = _independent_lpips(model, x, y, taps)
    torch.testing.assert_close(model(x, y).double(), expected, rtol=1e-4, atol=1e-7)


def test_low_precision_trunk_matches_float32(alex_lpips):
    import copy

    torch.manual_seed(2)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    y = torch.rand(2, 3, 64, 64) * 2 - 1
    reference = alex_lpips(x, y)
    low = copy.deepcopy(alex_lpips).to(torch.bfloat16)
    value = low(x.to(torch.bfloat16), y.to(torch.bfloat16))
    assert value.dtype == torch.float32 and torch.isfinite(value).all()
    torch.testing.assert_close(value, reference, rtol=0.1, atol=1e-4)


def test_loads_official_files_by_key_name_from_weights_dir(tmp_path, alex_lpips):
    """A file laid out like torchvision's (features only; the classifier is not read) and lpips' heads."""
    generator = torch.Generator().manual_seed(5)
    trunk = {k: torch.randn(v, generator=generator) for k, v in _keys("keys_alexnet-owt-7be5be79.json").items()
             if k.startswith("features.")}
    heads = {k: torch.rand(v, generator=generator) for k, v in _keys("keys_lpips-v0.1-alex.json").items()}
    torch.save(trunk, tmp_path / "alexnet-owt-7be5be79.pth")
    torch.save(heads, tmp_path / "alex.pth")
    model = LPIPS("alex", weights_dir=tmp_path)
    state = model.state_dict()
    for key, value in trunk.items():
        assert torch.equal(state[f"net.{key}"], value)
    for key, value in heads.items():
        assert torch.equal(state[key], value)
    assert not model.training


def test_missing_weights_name_the_file_url_and_option(tmp_path):
    from pano360.errors import ModelLoadError

    with pytest.raises(ModelLoadError) as info:
        LPIPS("vgg", weights_dir=tmp_path)
    message = str(info.value)
    assert "vgg16-397923af.pth" in message
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in message
    assert "--weights-dir" in message
