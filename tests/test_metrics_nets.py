"""FID Inception, VGG19 and FAED networks: official key layouts, graph details, pre-processing, loading."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pano360.nets.faed import PanoAutoEncoder, faed_features
from pano360.nets.inception import FIDInceptionV3, resize_pil_bicubic, resize_tf1_bilinear
from pano360.nets.vgg import Trunk

# tiny models gain nothing from threads; on a busy 2-core machine OpenMP barriers slow them down many times
pytestmark = pytest.mark.usefixtures("single_torch_thread")

DATA = Path(__file__).parent / "data"


def _keys(name: str) -> dict[str, list[int]]:
    return json.loads((DATA / name).read_text())["keys"]


def _shapes(module: torch.nn.Module, skip=lambda key: False) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items() if not skip(k)}


@pytest.fixture(scope="module")
def inception() -> FIDInceptionV3:
    return FIDInceptionV3(pretrained=False)


def test_inception_keys_match_the_official_file(inception):
    own = _shapes(inception, skip=lambda k: k.endswith("num_batches_tracked"))
    assert own == _keys("keys_pt_inception-2015-12-05-6726825d.json")


def test_vgg19_and_vgg16_trunks_match_torchvision_features():
    for arch, name in (("vgg19", "keys_vgg19-dcbb9e9d.json"), ("vgg16", "keys_vgg16-397923af.json")):
        official = {k: v for k, v in _keys(name).items() if k.startswith("features.")}
        assert _shapes(Trunk(arch)) == official


def test_faed_keys_match_panfusion_checkpoint():
    model = PanoAutoEncoder.random()
    own = {f"net.{k}": v for k, v in _shapes(model).items()}
    assert own == _keys("keys_faed_ckpt.json")


def test_inception_graph_shapes_and_tensorflow_pooling(inception):
    seen = {}
    hooks = [getattr(inception, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.shape))
             for name in ("Mixed_5d", "Mixed_6e", "Mixed_7c")]
    images = torch.randint(0, 256, (2, 3, 64, 128), dtype=torch.uint8)
    with torch.no_grad():
        pool, logits = inception(images)
    for hook in hooks:
        hook.remove()
    assert seen == {"Mixed_5d": (2, 288, 35, 35), "Mixed_6e": (2, 768, 17, 17), "Mixed_7c": (2, 2048, 8, 8)}
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008)
    torch.testing.assert_close(logits, pool @ inception.fc.weight.T)  # logits without the fc bias
    assert inception.Mixed_7c.max_pool_branch and not inception.Mixed_7b.max_pool_branch


def test_tf1_resize_is_tensorflow_bilinear_without_half_pixel_centres():
    image = torch.arange(2 * 6 * 8, dtype=torch.float32).view(1, 2, 6, 8)
    # exact 2x downscale samples every other pixel, starting at 0 (no half-pixel offset)
    assert torch.equal(resize_tf1_bilinear(image, (3, 4)), image[..., ::2, ::2])
    # upscale: source = i * in / out, upper neighbour clamped to the border
    out = resize_tf1_bilinear(image, (12, 16))
    src = np.arange(16) * 8 / 16
    low = np.floor(src).astype(int)
    high = np.minimum(low + 1, 7)
    row = image[0, 0, 0].numpy()
    np.testing.assert_allclose(out[0, 0, 0].numpy(), row[low] + (row[high] - row[low]) * (src - low), rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, -1].numpy(), out[0, 0, -2].numpy())  # last rows clamp to row 5


def test_preprocessing_modes(inception):
    images = torch.randint(0, 256, (1, 3, 40, 80), dtype=torch.uint8)
    inception.resize = "pytorch-fid"
    expected = 2 * F.interpolate(images.float() / 255, size=(299, 299), mode="bilinear", align_corners=False) - 1
    torch.testing.assert_close(inception.preprocess(images), expected)
    inception.resize = "tf1"
    torch.testing.assert_close(inception.preprocess(images), (resize_tf1_bilinear(images.float(), (299, 299)) - 128) / 128)
    inception.resize = "clean"
    from PIL import Image

    channel = Image.fromarray(images[0, 1].numpy().astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC)
    np.testing.assert_allclose(inception.preprocess(images)[0, 1].numpy(),
                               (np.asarray(channel).clip(0, 255) - 128) / 128, rtol=1e-6)
    assert resize_pil_bicubic(images.float(), (299, 299)).shape == (1, 3, 299, 299)
    inception.resize = "tf1"


def test_inception_refuses_other_sizes_with_real_weights():
    with pytest.raises(ValueError, match="299"):
        FIDInceptionV3(pretrained=True, input_size=75)


def test_faed_checkpoint_loads_from_a_lightning_file(tmp_path):
    source = PanoAutoEncoder.random(seed=3)
    checkpoint = {
        "epoch": 59, "global_step": 1234, "pytorch-lightning_version": "2.2.1",
        "state_dict": {f"net.{k}": v for k, v in source.state_dict().items()},
        "hyper_parameters": {"lr": 1e-4, "lr_decay": 0.99},
    }
    torch.save(checkpoint, tmp_path / "faed.ckpt")
    model = PanoAutoEncoder.from_checkpoint(tmp_path)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)
    with pytest.raises(Exception, match="faed.ckpt"):
        PanoAutoEncoder.from_checkpoint(tmp_path / "missing")


def test_faed_features_are_latitude_weighted_and_wrap_equivariant():
    model = PanoAutoEncoder.random()
    images = torch.randint(0, 256, (2, 3, 64, 128), dtype=torch.uint8)
    with torch.no_grad():
        features = faed_features(model.encoder, images)
        rolled = faed_features(model.encoder, torch.roll(images, 32, dims=-1))  # one encoder column = 32 px
        raw = model.encoder(images.float() / 127.5 - 1).mean(dim=3)
    assert features.shape == (2, 4 * 64)
    weight = torch.cos(torch.linspace(np.pi / 2, -np.pi / 2, 2))
    torch.testing.assert_close(features, (raw * weight).reshape(2, -1))
    torch.testing.assert_close(features, rolled, rtol=1e-4, atol=1e-5)  # circular padding: roll-invariant


def test_clip_loads_offline_from_weights_dir(tmp_path):
    from pano360.errors import ModelLoadError
    from pano360.nets.clip import load_clip, tiny_random_clip

    bundle = tiny_random_clip(seed=1)
    folder = tmp_path / "clip-vit-base-patch16"
    bundle.model.save_pretrained(folder)
    bundle.tokenizer.save_pretrained(folder)
    bundle.processor.save_pretrained(folder)
    loaded = load_clip(tmp_path)
    images = [np.random.default_rng(0).integers(0, 256, (40, 80, 3), dtype=np.uint8)]
    torch.testing.assert_close(loaded.image_embeddings(images), bundle.image_embeddings(images))
    torch.testing.assert_close(loaded.text_embeddings(["a room"]), bundle.text_embeddings(["a room"]))
    with pytest.raises(ModelLoadError, match="hf download openai/clip-vit-base-patch16"):
        load_clip(tmp_path / "nowhere")
