"""pano360 train --adapter mvdiffusion: only the CAA blocks train, on 8 views per panorama, batch > 1."""

import pytest
import torch
from support.panoramas import write_panoramas

from pano360.cli.main import main
from pano360.training import TrainingConfig, train

pytestmark = pytest.mark.usefixtures("single_torch_thread")


def test_training_the_blocks_only_and_loading_the_folder(tmp_path):
    from pano360 import PanoramaGenerator
    from pano360.adapters import load_adapter
    from pano360.adapters.mvdiffusion import MVDiffusionAdapter

    write_panoramas(tmp_path / "panos", 2, height=32)
    config = TrainingConfig(data=str(tmp_path / "panos"), output=str(tmp_path / "out"), model="tiny-sd2",
                            adapter="mvdiffusion", adapter_options={"mvdiffusion_view_size": 64}, resolution=32,
                            steps=3, batch_size=2, learning_rate=1e-3, progress=False, checkpoint_every=0)
    result = train(config)
    assert len(result.losses) == 3 and all(torch.isfinite(torch.tensor(result.losses)))
    adapter = load_adapter(result.output)
    assert isinstance(adapter, MVDiffusionAdapter)
    assert adapter.cp_blocks_mid.transformer.attn1.to_out.weight.abs().sum() > 0  # moved off the zero init
    gen = PanoramaGenerator.from_pretrained("tiny-sd2", device="cpu", torch_dtype="fp32", adapter=str(result.output))
    out = gen("a room", method="mvdiffusion", num_inference_steps=1, height=256, width=512, view_size=64,
              progress=False, output_type="np")
    assert out.latents.shape == (1, 8, 4, 8, 8)


def test_bad_view_size_fails_before_any_model(tmp_path, capsys):
    write_panoramas(tmp_path / "panos", 1, height=32)
    code = main(["train", str(tmp_path / "panos"), "--model", "tiny-sd2", "--adapter", "mvdiffusion",
                 "--mvdiffusion-view-size", "100", "-o", str(tmp_path / "out"), "--quiet"])
    assert code == 2 and "--mvdiffusion-view-size must be a multiple of 64" in capsys.readouterr().err


def test_views_of_a_panorama_share_its_timestep():
    """The trainer's loss on the adapter's training example: one timestep per panorama for all 8 views,
    the ring's cameras, gradients for the blocks only."""
    from types import SimpleNamespace

    from pano360.adapters.mvdiffusion import MVDiffusionAdapter, ring_cameras
    from pano360.backbones.tiny import tiny_scheduler, tiny_unet
    from pano360.training.cache import TrainingBatch
    from pano360.training.trainer import TrainingNetwork, training_loss

    unet = tiny_unet("sd2").requires_grad_(False)
    adapter = MVDiffusionAdapter.for_training(unet, {"mvdiffusion_view_size": 64}, seed=0)
    assert adapter.training_views.size_px == 64 and adapter.training_views.yaw_deg == tuple(45.0 * i for i in range(8))
    yaws = torch.arange(0, 360, 45).float().expand(3, 8)
    batch = TrainingBatch(torch.zeros(3, 4, 4, 8), torch.zeros(3, 77, 32), None, (32, 64), [0, 1, 2], ["a"] * 3,
                          view_latents=torch.randn(3, 8, 4, 8, 8), view_embeds=torch.randn(3, 8, 77, 32),
                          view_yaw_deg=yaws)
    example = adapter.training_example(batch)
    assert torch.equal(example.inputs["cameras"].R, ring_cameras(8, 90.0, 64).R)
    seen = []
    hook = unet.time_proj.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    model = TrainingNetwork(adapter.attach(unet), adapter)
    config = SimpleNamespace(seed=0, noise_offset=0.0, snr_gamma=None)
    loss = training_loss(model, adapter, batch, tiny_scheduler("sd2"), config, torch.float32)
    hook.remove()
    loss.backward()
    t = seen[0].view(3, 8)
    assert (t == t[:, :1]).all() and len(set(t[:, 0].tolist())) > 1
    assert all(p.grad is not None for p in adapter.parameters())
    assert all(p.grad is None for p in unet.parameters())
