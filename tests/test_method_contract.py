"""The method contract from outside the package: methods defined here register with
``pano360.register_method`` and run through the API and the CLI with their own options and latent shapes
(no file of pano360 knows them); a per-step roll inside the prediction commutes with a wrapped UNet."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pano360
from pano360.cli.main import main
from pano360.errors import InvalidInputError
from pano360.methods import Decoded, MethodRun, PanoramaMethod
from pano360.methods.circular import CircularMethod
from pano360.options import Option

pytestmark = pytest.mark.usefixtures("single_torch_thread")

H, W = 64, 128  # pixels: an 8 x 16 latent


class RenamedCircular(CircularMethod):
    """The walk-through's first example (docs/architecture.md): circular under another name."""

    name = "renamed-circular"
    summary = "circular under another name (test)"


class ToyViewsRun(MethodRun):
    """``views`` square latents per image, denoised independently with one prompt each; the panorama is
    the views side by side."""

    def __init__(self, method, ctx):
        super().__init__(method, ctx)
        side = ctx.latent_height
        self.latent_shape = (method.views, ctx.latent_channels, side, side)

    def predict(self, model, model_input, t, i):
        b, v = model_input.shape[:2]
        flat = model_input.flatten(0, 1)  # [B*V, C, h, w], image-major: unit b*V + v
        output = model(flat, t, units=torch.arange(b * v), size_px=(self.ctx.height, self.ctx.height))
        return output.view(model_input.shape)

    def decode(self, latents):
        from pano360.backbones.vae import decode_latents

        b, v = latents.shape[:2]
        views = decode_latents(self.ctx.vae, latents.flatten(0, 1)).unflatten(0, (b, v))  # [B, V, 3, H, H]
        return Decoded(images=torch.cat(list(views.unbind(1)), dim=-1), views=views)


class ToyViews(PanoramaMethod):
    name = "toy-views"
    summary = "square views side by side, one prompt each (test)"
    options = (Option("views", 2, "number of square views (test option)", kind="int", minimum=1),)
    run_class = ToyViewsRun

    def prompt_units(self, prompt):
        if isinstance(prompt, str):
            return [[prompt] * self.views]
        prompts = list(prompt)
        if len(prompts) == self.views and all(isinstance(p, str) for p in prompts):
            return [prompts]  # one prompt per view of one panorama
        return [list(p) for p in prompts]

    def default_size(self, info):
        return info.native_size, self.views * info.native_size

    def check(self, request):
        if request.width != self.views * request.height:
            raise InvalidInputError(f"toy-views needs width = {self.views} x height")


@pytest.fixture
def registered():
    from pano360 import methods

    for cls in (RenamedCircular, ToyViews):
        pano360.register_method(cls)
    yield
    for cls in (RenamedCircular, ToyViews):
        methods._REGISTERED.pop(cls.name, None)


def noise(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_a_renamed_method_runs_like_its_parent(registered, tiny_generators):
    gen = tiny_generators("tiny")
    latents = noise((1, 4, H // 8, W // 8))
    common = dict(height=H, width=W, num_inference_steps=2, latents=latents, output_type="np", progress=False)
    renamed = gen("a harbour", method="renamed-circular", wrap_vae=False, **common)
    plain = gen("a harbour", method="circular", wrap_vae=False, **common)
    assert np.array_equal(renamed.images, plain.images)
    assert renamed.parameters["method"] == "renamed-circular"
    assert renamed.parameters["method_options"]["wrap_vae"] is False


def test_a_multi_view_method_has_its_own_latent_shape_and_per_view_prompts(registered, tiny_generators):
    gen = tiny_generators("tiny")
    size = dict(height=H, width=2 * H, num_inference_steps=2, progress=False, output_type="np")
    same_noise = noise((1, 1, 4, 8, 8), seed=1).expand(1, 2, 4, 8, 8)
    out = gen("a forest", method="toy-views", latents=same_noise, **size)
    assert out.latents.shape == (1, 2, 4, 8, 8)
    assert out.views.shape == (1, 2, H, H, 3) and out.images.shape == (1, H, 2 * H, 3)
    assert np.allclose(out.views[0, 0], out.views[0, 1], atol=1e-5)  # same prompt, same noise: same view
    two = gen(["a forest", "a desert at noon"], method="toy-views", latents=same_noise, **size)
    assert np.abs(two.views[0, 0] - two.views[0, 1]).max() > 1e-3  # each view saw its own prompt
    assert np.allclose(two.views[0, 0], out.views[0, 0], atol=1e-5)
    with pytest.raises(InvalidInputError, match=r"expected \(1, 2, 4, 8, 8\)"):
        gen("a forest", method="toy-views", latents=noise((1, 4, 8, 16)), **size)
    with pytest.raises(InvalidInputError, match="toy-views needs width"):
        gen("a forest", method="toy-views", height=H, width=3 * H, num_inference_steps=1, progress=False)
    with pytest.raises(InvalidInputError, match=r"views \(--views\) must be a whole number >= 1"):
        gen("a forest", method="toy-views", views=0, **size)


def test_registered_methods_reach_the_cli_with_their_options(registered, tmp_path, capsys):
    from pano360.cli.main import build_parser

    help_text = build_parser()._subparsers._group_actions[0].choices["generate"].format_help()
    assert "toy-views" in help_text and "renamed-circular" in help_text
    assert "--views" in help_text and "number of square views (test option)" in help_text
    out = tmp_path / "toy.png"
    args = ["generate", "a lake", "--model", "tiny", "--method", "toy-views", "--views", "3", "--height", "64",
            "--width", "192", "--steps", "1", "--seed", "5", "-o", str(out), "--quiet"]
    assert main(args) == 0
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())  # pano360.io.sidecar_path
    assert sidecar["method"] == "toy-views" and sidecar["method_options"] == {"views": 3}
    assert main(["generate", "a lake", "--model", "tiny", "--method", "renamed-circular", "--views", "2"]) == 2
    assert "--views applies to --method toy-views only, not renamed-circular" in capsys.readouterr().err


def test_register_method_rejects_conflicting_flags(registered):
    class Clash(PanoramaMethod):
        name = "clash"
        options = (Option("views", "many", "a text where toy-views has a number", kind="str"),)

    with pytest.raises(ValueError, match="--views"):
        pano360.register_method(Clash)


@pytest.mark.parametrize("scheduler", ["ddim", "dpmpp_2m"])
def test_a_roll_inside_the_prediction_commutes_with_a_wrapped_unet(tiny_generators, scheduler):
    """90 degrees per step = 8 latent columns of 32, a multiple of the tiny UNet's downsampling (4)."""
    gen = tiny_generators("tiny")
    latents = noise((1, 4, 8, 32), seed=2)
    common = dict(height=64, width=256, num_inference_steps=3, latents=latents, scheduler=scheduler,
                  output_type="latent", progress=False)
    plain = gen("a canyon", method="circular", **common).latents
    rolled = gen("a canyon", method="circular", roll_per_step=90.0, **common).latents
    assert (rolled - plain).abs().max() <= 1e-4
    # without wraparound padding the roll does change the result: the test would see a missing roll
    unwrapped = gen("a canyon", method="circular", wrap=False, **common).latents
    unwrapped_rolled = gen("a canyon", method="circular", wrap=False, roll_per_step=90.0, **common).latents
    assert (unwrapped_rolled - unwrapped).abs().max() > 1e-2


def test_method_modules_and_options_import_without_torch():
    import subprocess
    import sys

    code = ("import sys; from pano360.methods import available_methods, method_class; "
            "[method_class(n).option_specs() for n in available_methods()]; import pano360.presets; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
