"""``circular``: one full-panorama UNet pass per step with wraparound padding everywhere.

Every convolution of the UNet, the ControlNet and the VAE (encoder and decoder) pads horizontally
with the opposite edge (:mod:`pano360.backbones.wrap`), so the left and right borders of the
panorama are computed as neighbours and meet without a seam. This is the recipe of
Coherent_Panorama_SD (SDXL + circular padding of every Conv2d in UNet and VAE, optionally a 360 LoRA
and a depth ControlNet; ``shared/reference/ecosystem.md`` §2.1 explains why the VAE must wrap too).

``roll_per_step`` turns the panorama by that many degrees more at every step, inside the prediction
(the latent is rolled, predicted and the prediction rolled back), as PanFusion/UniPano's ``rot_diff``
does. With exact wraparound padding and rolls that are multiples of the UNet's downsampling this
changes nothing (a test checks it); it matters for padding schemes that are not exactly periodic.

``padding="reference"`` swaps the exact wraparound for the PanFusion/UniPano code's own scheme, for
comparisons with those papers: circular pad/crop of the width around each UNet op, an unwrapped VAE
decoding the latent with 8 wrapped columns a side (:mod:`pano360.adapters.reference_padding`); with
``roll_per_step=90`` (preset ``unipano-paper``) it is the reference's sampling loop.

Cost: one UNet call per step on the whole ``h × w`` latent (no overlapping windows), plus padding
copies (measured in ``docs/benchmarks.md``).
"""

from __future__ import annotations

from .._lazy import lazy_module
from ..errors import InvalidInputError
from ..options import Option
from .base import MethodRun, PanoramaMethod

torch = lazy_module("torch")


class CircularRun(MethodRun):
    method: CircularMethod

    def __init__(self, method, ctx):
        super().__init__(method, ctx)
        self.roll_columns = int(method.roll_per_step / 360.0 * ctx.latent_width)  # latent columns per step

    def enter_patches(self, stack) -> None:
        super().enter_patches(stack)
        if self.method.padding == "reference":
            from ..adapters.reference_padding import reference_unet_padding

            stack.enter_context(reference_unet_padding(self.ctx.unet))
            return
        stack.enter_context(self.ctx.contract.seam(self.ctx.backbone, network=self.method.wrap,
                                                   vae=self.method.wrap_vae, scheme=self.method.seam,
                                                   rounding=self.method.rope_rounding))

    def predict(self, model, model_input, t, i: int):
        shift = (i + 1) * self.roll_columns % self.ctx.latent_width
        if not shift:
            return super().predict(model, model_input, t, i)
        control = self.ctx.control_image
        if control is not None:
            control = torch.roll(control, shift * self.ctx.info.vae_scale_factor, dims=-1)
        output = model(torch.roll(model_input, shift, dims=-1), t, control=control,
                       size_px=(self.ctx.height, self.ctx.width))
        return torch.roll(output, -shift, dims=-1)

    def decode(self, latents):
        if self.method.padding != "reference":
            return super().decode(latents)
        from ..adapters.reference_padding import REFERENCE_DECODE_PAD
        from ..backbones.vae import decode_latents
        from .base import Decoded

        return Decoded(decode_latents(self.ctx.vae, latents, wrap_padding=REFERENCE_DECODE_PAD))


class CircularMethod(PanoramaMethod):
    """Wraparound padding in every convolution; one UNet pass over the whole panorama per step."""

    name = "circular"
    summary = "one UNet pass over the whole panorama with wraparound padding in every convolution"
    options = (
        Option("wrap", True, "wraparound padding in the UNet and ControlNet (off: plain SD at the panorama size, "
               "whose left and right edges do not meet; for comparisons)", kind="bool"),
        Option("wrap_vae", True, "wraparound padding in the VAE too, so pixels meet at the seam as latents do",
               kind="bool"),
        Option("roll_per_step", 0.0, "degrees the panorama turns at every step inside the prediction "
               "(UniPano/PanFusion use 90); no effect with exact wraparound padding", kind="float", minimum=0.0),
        Option("padding", "exact", "exact: wraparound padding in every convolution (wrap, wrap_vae); reference: "
               "the PanFusion/UniPano code's pad/crop around each UNet op and 8-column padded VAE decode, for "
               "comparisons with those papers (replaces wrap and wrap_vae)", kind="choice",
               choices=("exact", "reference")),
        Option("seam", "exact", "transformers (FLUX, SD3, Qwen-Image): how the network closes the seam: exact "
               "(periodic positions; rolls are exact), periodic (frequency snapping only, as stable-diffusion.cpp), "
               "pad (DiT360's copied token column), blend (HunyuanWorld's extend-and-blend), none (as released); "
               "UNets: exact", kind="choice", choices=("exact", "periodic", "pad", "blend", "none")),
        Option("rope_rounding", "nearest", "transformers: how width frequencies snap to the panorama's harmonics: "
               "nearest (the lowest become 0) or ceil (at least one turn)", kind="choice",
               choices=("nearest", "ceil")),
    )
    run_class = CircularRun

    def check_for_family(self, request, family: str) -> None:
        from ..backbones.families import DIT_FAMILIES

        super().check_for_family(request, family)
        is_dit = family in DIT_FAMILIES
        if is_dit and self.padding == "reference":
            raise InvalidInputError("padding='reference' is the PanFusion/UniPano UNet scheme; transformers use "
                                    "--seam (exact, periodic, pad, blend, none)")
        if not is_dit and self.seam != "exact":
            raise InvalidInputError(f"--seam {self.seam} is for transformers (FLUX, SD3, Qwen-Image); a UNet wraps "
                                    "its convolutions (turn it off with --wrap off)")
        if family == "sd3" and self.seam == "periodic":
            raise InvalidInputError("SD3 has no rotary positions: use --seam exact (periodic sin-cos), pad, blend or "
                                    "none")

    def check_for_model(self, request, info, scheduler_name, adapters=()) -> None:
        super().check_for_model(request, info, scheduler_name, adapters)
        width = request.width
        multiple = info.unet_downsampling
        if (self.wrap or info.is_dit) and (width // info.vae_scale_factor) % multiple:
            step = multiple * info.vae_scale_factor
            lower = max(step, width - width % step)
            what = (f"its UNet downsamples latents by {multiple}" if not info.is_dit
                    else f"a token covers {multiple}x{multiple} latents")
            raise InvalidInputError(
                f"width {width} is not a multiple of {step} pixels, which this model needs to wrap seamlessly "
                f"({what}); use width {lower} or {lower + step}"
            )
