"""The multi-view hook for adapters such as MVDiffusion: a ViewRequest makes every batch carry
perspective-view latents with per-view captions, and a [B, V, ...] TrainingExample trains with one
timestep per sample."""

import pytest
import torch
from support.panoramas import write_panoramas

from pano360.adapters.base import TrainingExample
from pano360.adapters.lora import LoRAAdapter
from pano360.training.augment import Augmentation, AugmentConfig
from pano360.training.cache import BatchBuilder, ViewRequest, _nearest_view_caption
from pano360.training.datasets import open_dataset

VIEWS = tuple(f"view {d}" for d in range(0, 360, 45))


def test_view_captions_follow_roll_and_mirror():
    width = 64
    assert _nearest_view_caption(VIEWS, 90.0, Augmentation(), width) == "view 90"
    assert _nearest_view_caption(VIEWS, 90.0, Augmentation(roll_px=width // 8), width) == "view 45"
    assert _nearest_view_caption(VIEWS, 90.0, Augmentation(flip=True), width) == "view 270"


class _MultiViewLoRA(LoRAAdapter):
    kind = "test-multiview"
    training_views = ViewRequest(yaw_deg=(0.0, 90.0, 180.0, 270.0), size_px=32)

    def training_example(self, batch):
        return TrainingExample(batch.view_latents, batch.view_embeds, batch.view_pooled, (32, 32))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, single_torch_thread):
    from pano360.backbones.tiny import tiny_pipeline

    folder = tmp_path_factory.mktemp("views")
    write_panoramas(folder, 2, height=32)
    for deg in range(0, 360, 45):
        (folder / f"pano0_{deg}.txt").write_text(f"view {deg}")
    pipe = tiny_pipeline("sd1")
    pipe.unet.requires_grad_(False)
    builder = BatchBuilder(open_dataset(folder), pipe, 32, AugmentConfig(caption_dropout=0.0), seed=0, device="cpu",
                           views=_MultiViewLoRA.training_views, shuffle=False)
    return pipe, builder


def test_batches_carry_views_with_per_view_captions(setup):
    _, builder = setup
    batch = builder.build([0, 1])
    assert batch.latents.shape == (2, 4, 4, 8)
    assert batch.view_latents.shape == (2, 4, 4, 4, 4) and batch.view_embeds.shape == (2, 4, 77, 32)
    assert batch.view_yaw_deg.tolist()[0] == [0.0, 90.0, 180.0, 270.0]


def test_multi_view_examples_train(setup):
    from diffusers import DDPMScheduler

    from pano360.training.config import TrainingConfig
    from pano360.training.trainer import TrainingNetwork, training_loss

    pipe, builder = setup
    adapter = _MultiViewLoRA.for_training(pipe.unet, {"rank": 2}, seed=0)
    network = TrainingNetwork(adapter.attach(pipe.unet), adapter)
    try:
        config = TrainingConfig(data="", output="", model="tiny")
        loss = training_loss(network, adapter, builder.build([0, 1]), DDPMScheduler.from_config(pipe.scheduler.config),
                             config, torch.float32)
        loss.backward()
        assert torch.isfinite(loss) and all(p.grad is not None for p in adapter.trainable_parameters())
    finally:
        adapter.detach(pipe.unet)
