"""``syncdiffusion``: MultiDiffusion whose windows are pulled towards an anchor window's look.

SyncDiffusion (Lee et al., NeurIPS 2023) adds one gradient step per window before the MultiDiffusion
update, at steps ``i`` with ``(i + 1) % sync_freq == 0 and i < sync_threshold``:

1. the anchor window ``a`` (the middle one by default) is predicted without gradient; its predicted
   clean latent x̂0 is decoded and clamped to [-1, 1]: the target image;
2. for every other window ``v``: ``x̂0(x_v)`` from the guided prediction (ε or v), decoded, clamped,
   and ``L_v = LPIPS(decode(x̂0(x_v)), target)``; the gradient ``∂L_v/∂x_v`` flows through the UNet
   (with guidance), the x̂0 formula, the VAE decoder, the clamp and LPIPS;
3. ``x_v ← x_v − sync_weight · sync_decay_rate**i · ∂L_v/∂x_v`` (raw gradient, not normalised);
4. every window (updated or not) is predicted again without gradient and the scheduler steps on the
   average of the updated windows and of their predictions, which for DDIM equals the reference's
   step-each-window-then-average.

Unlike the reference, which differentiates one window at a time, the gradients of many windows are
computed in one batched pass (``sync_batch_size`` windows per pass; the losses are independent per
window, so the gradient of their sum is each window's own gradient). Work the reference repeats is
done once: the anchor goes through the no-gradient path only (the reference also differentiates it
and discards the result), its prediction is reused for the denoising step (it is not moved), and the
anchor image's LPIPS features are computed once per step, not once per window.

The sync step and the prediction happen in one hook, :meth:`SyncDiffusionRun.denoise`: it returns the
averaged updated windows (what the scheduler steps from) with the averaged predictions for them.

Fast mode: ``sync_decoder="taesd"`` (``"taesdxl"`` for SDXL, or any diffusers ``AutoencoderTiny``
id/folder/module) computes the loss through a tiny decoder. This is an approximation: the tiny decoder's
images and their gradients differ from the real VAE's, so results differ from the paper's algorithm.

Cost of a sync step with N windows: N window predictions without gradient, N − 1 with gradient
(forward + backward through UNet, VAE decoder and LPIPS on the window's image), 1 + (N − 1) decodes and
one LPIPS trunk pass for the anchor. The reference: 2N + 1 predictions (N with gradient), N + 1 decodes,
and LPIPS on both images for every window.
"""

from __future__ import annotations

import os
from typing import ClassVar

from .._lazy import lazy_module
from ..errors import InvalidInputError, ModelLoadError
from ..options import Option
from .multidiffusion import STRIDE_OPTION, MultiDiffusionMethod, MultiDiffusionRun, make_grid
from .windows import in_batches

torch = lazy_module("torch")

TINY_DECODERS = {"taesd": "madebyollin/taesd", "taesdxl": "madebyollin/taesdxl"}
LPIPS_WEIGHT_FILES = ("vgg16", "lpips_vgg")  # torchvision's VGG16 trunk and lpips' v0.1 heads
PERCEPTUAL_WEIGHT_FILES = {"lpips-vgg": LPIPS_WEIGHT_FILES, "lpips-alex": ("alexnet", "lpips_alex"), "tiny-random": ()}
_LPIPS_CACHE: dict = {}
_DECODER_CACHE: dict = {}


def default_perceptual_loss(device, dtype, weights_dir=None):
    """LPIPS VGG (as in SyncDiffusion), loaded once per device, dtype and weights folder."""
    key = (str(device), dtype, None if weights_dir is None else str(weights_dir))
    if key not in _LPIPS_CACHE:
        from ..nets.lpips import LPIPS

        _LPIPS_CACHE[key] = LPIPS(net="vgg", weights_dir=weights_dir).to(device=device, dtype=dtype)
    return _LPIPS_CACHE[key]


def named_perceptual_loss(name: str, device, dtype, weights_dir=None):
    """A perceptual net of :data:`pano360.nets.lpips.PERCEPTUAL_NETS` by name, loaded once per device/dtype."""
    key = (name, str(device), dtype, None if weights_dir is None else str(weights_dir))
    if key not in _LPIPS_CACHE:
        from ..nets.lpips import build_perceptual_net

        _LPIPS_CACHE[key] = build_perceptual_net(name, weights_dir).to(device=device, dtype=dtype)
    return _LPIPS_CACHE[key]


class SyncDiffusionRun(MultiDiffusionRun):
    """One SyncDiffusion generation: MultiDiffusion's state plus the gradient-pass batch size that fits."""

    method: SyncDiffusionMethod

    def __init__(self, method, ctx):
        super().__init__(method, ctx)
        self.anchor = method.anchor if method.anchor is not None else len(self.grid) // 2
        self.sync_batch_size = None  # decided at the first sync step (device-dependent), then kept

    # --- components ------------------------------------------------------------------------------
    def perceptual(self):
        if self.method.perceptual_loss is not None:
            return self.method.perceptual_loss
        from ..backbones.device import apply_memory_format

        vae = self.ctx.vae
        if self.method.perceptual_net not in (None, "lpips-vgg"):
            lpips = named_perceptual_loss(self.method.perceptual_net, vae.device, vae.dtype, self.method.weights_dir)
        else:
            lpips = default_perceptual_loss(vae.device, vae.dtype, self.method.weights_dir)
        apply_memory_format(self.ctx.channels_last, lpips)  # follow the generator's layout (faster on CPUs)
        return lpips

    def decoder(self):
        choice = self.method.sync_decoder
        vae = self.ctx.vae
        if choice is None or choice == "vae":
            return vae
        if isinstance(choice, str):
            source = TINY_DECODERS.get(choice, choice)
            key = (source, str(vae.device), vae.dtype)
            if key not in _DECODER_CACHE:
                from diffusers import AutoencoderTiny

                try:
                    _DECODER_CACHE[key] = AutoencoderTiny.from_pretrained(source, torch_dtype=vae.dtype).to(vae.device)
                except Exception as error:
                    raise ModelLoadError(f"could not load the tiny sync decoder {source!r} ({error}); "
                                         "download it once with network access, or use sync_decoder=None") from error
                _DECODER_CACHE[key].requires_grad_(False).eval()
            return _DECODER_CACHE[key]
        return choice

    # --- pieces of a sync step -----------------------------------------------------------------------
    def predict_clean(self, model, windows, t, pairs, batch_size: int):
        """Window latents [M, C, wh, ww] → (guided model outputs, predicted clean latents x̂0), both [M, C, wh, ww]."""
        from ..backbones.parameterization import model_input as scaled_input
        from ..backbones.parameterization import predicted_original

        model_input = scaled_input(self.ctx.scheduler, windows, t)
        output = self.predict_windows(model, model_input, t, pairs=pairs, batch_size=batch_size)
        return output, predicted_original(self.ctx.scheduler, model_input, output, t)

    def decode_clean(self, clean):
        """x̂0 latents [M, C, wh, ww] → images [M, 3, 8wh, 8ww] clamped to [-1, 1] (through the sync decoder)."""
        decoder = self.decoder()
        scale = decoder.config.get("scaling_factor", 1.0)
        shift = decoder.config.get("shift_factor", None) or 0.0
        images = decoder.decode((clean / scale + shift).to(decoder.dtype), return_dict=False)[0]
        return images.clamp(-1, 1)

    def decode_prediction(self, model, windows, t, pairs, batch_size: int):
        """Window latents [M, C, wh, ww] → decoded x̂0 images [M, 3, 8wh, 8ww] clamped to [-1, 1]."""
        return self.decode_clean(self.predict_clean(model, windows, t, pairs, batch_size)[1])

    def initial_sync_batch_size(self, device, count: int) -> int:
        """Windows per gradient pass: the option, or for ``"auto"`` 1 on a CPU (fastest measured there on
        SD-proportioned windows: batched autograd decodes fall out of the cache, docs/benchmarks.md) and
        8 on an accelerator (halved on out-of-memory until it fits)."""
        if self.method.sync_batch_size != "auto":
            return int(self.method.sync_batch_size)
        return max(1, min(count, 1 if device.type == "cpu" else 8))

    def distance_to(self, target):
        """``distance(images [M, 3, H, W], index [M]) -> [M]``: the perceptual distance of each image
        to ``target[index]``. Modules with ``features``/``distance`` (as LPIPS) get the targets'
        features computed once here instead of once per window."""
        perceptual = self.perceptual()
        features, distance = getattr(perceptual, "features", None), getattr(perceptual, "distance", None)
        if callable(features) and callable(distance):
            with torch.no_grad():
                target_features = features(target)

            def by_features(images, index):
                chosen = target_features if target.shape[0] == 1 else [f[index] for f in target_features]
                return distance(features(images), chosen)

            return by_features
        return lambda images, index: perceptual(images, target[index].to(images.dtype))

    def window_gradients(self, model, leaf, t, chunk, distance):
        """∂ distance(decode(x̂0(leaf)), anchor) / ∂ leaf for one batch of windows [M, C, wh, ww]."""
        index = torch.tensor([k for k, _ in chunk], device=leaf.device)
        with torch.enable_grad():
            leaf = leaf.detach().requires_grad_(True)
            decoded = self.decode_prediction(model, leaf, t, chunk, len(chunk))
            (gradient,) = torch.autograd.grad(distance(decoded, index).sum(), leaf)
        return gradient

    def sync_gradients(self, model, windows, t):
        """∂LPIPS(window, anchor)/∂window for every window, and the anchors' guided predictions.

        ``windows`` [B, N, C, wh, ww] → (gradients of the same shape, 0 at the anchor; anchor outputs
        [B, C, wh, ww]). The anchor is not moved, so its prediction serves the denoising step too.
        """
        b, n = windows.shape[:2]
        anchor = self.anchor
        with torch.no_grad():
            anchor_output, clean = self.predict_clean(model, windows[:, anchor], t, [(k, anchor) for k in range(b)], b)
            target = self.decode_clean(clean)
        distance = self.distance_to(target)
        pairs = [(k, v) for k in range(b) for v in range(n) if v != anchor]
        gradients = torch.zeros_like(windows)
        modules = [self.ctx.unet, self.decoder(), self.ctx.controlnet]
        checkpointing = [m for m in modules if m is not None and self.method.gradient_checkpointing and
                         getattr(m, "_supports_gradient_checkpointing", False) and not m.is_gradient_checkpointing]
        for module in checkpointing:
            module.enable_gradient_checkpointing()
        size = self.sync_batch_size or self.initial_sync_batch_size(windows.device, len(pairs))

        def run(start: int, stop: int) -> None:
            chunk = pairs[start:stop]
            gradient = self.window_gradients(model, torch.stack([windows[k, v] for k, v in chunk]), t, chunk, distance)
            for m, (k, v) in enumerate(chunk):
                gradients[k, v] = gradient[m]

        try:
            _, self.sync_batch_size = in_batches(len(pairs), size, run)
        finally:
            for module in checkpointing:
                module.disable_gradient_checkpointing()
        return gradients, anchor_output

    # --- the loop hook ---------------------------------------------------------------------------------
    def denoise(self, model, latents, t, i: int):
        weight = self.method.sync_step_weight(i, len(self.ctx.scheduler.timesteps))
        if weight == 0.0:
            return super().denoise(model, latents, t, i)
        grid = self.grid
        windows = grid.crop(latents.detach())  # [B, N, C, wh, ww]
        gradients, anchor_output = self.sync_gradients(model, windows, t)
        updated = windows - weight * gradients.to(windows.dtype)
        b, n = updated.shape[:2]
        pairs = [(k, v) for k in range(b) for v in range(n) if v != self.anchor]
        outputs = torch.empty_like(updated)
        outputs[:, self.anchor] = anchor_output.to(outputs.dtype)  # the anchor did not move: same prediction
        if pairs:
            from ..backbones.parameterization import model_input as scaled_input

            model_input = scaled_input(self.ctx.scheduler, torch.stack([updated[k, v] for k, v in pairs]), t)
            predicted = self.predict_windows(model, model_input, t, pairs=pairs)
            for m, (k, v) in enumerate(pairs):
                outputs[k, v] = predicted[m]
        # The scheduler steps on the mean of the updated windows with the mean of their predictions.
        return grid.average(updated), grid.average(outputs)


class SyncDiffusionMethod(MultiDiffusionMethod):
    """MultiDiffusion plus an LPIPS gradient step pulling every window towards an anchor window."""

    name = "syncdiffusion"
    summary = "multidiffusion + an LPIPS gradient step that pulls every window towards an anchor window"
    options = (
        STRIDE_OPTION.with_default((16, 16)),
        Option("sync_weight", 20.0, "gradient step weight w", kind="float", minimum=0.0),
        Option("sync_decay_rate", 0.95, "step i uses w * decay^i (1 = no decay)", kind="float", minimum=0.0),
        Option("sync_freq", 1, "synchronise every n-th step (at i = n-1, 2n-1, ...)", kind="int", minimum=1),
        Option("sync_threshold", None, "synchronise only at steps i < threshold (default: every step; the "
               "reference script uses 10)", kind="int", minimum=0, none_ok=True),
        Option("anchor", None, "anchor window index, row-major (default: the middle window)", kind="int",
               minimum=0, none_ok=True),
        Option("sync_batch_size", "auto", "windows per gradient pass (memory vs speed, same result; auto: 1 on a "
               "CPU, 8 on a GPU, halved on out-of-memory)", kind="int_or_auto", minimum=1, metavar="N|auto"),
        Option("gradient_checkpointing", False, "recompute activations in the backward pass (less memory, slower)",
               kind="bool", switch=True),
        Option("sync_decoder", None, "fast approximate mode: taesd, taesdxl or an AutoencoderTiny id/folder to "
               "compute the sync loss through instead of the VAE (API: also a decoder module)", kind="str",
               none_ok=True, objects_ok=True),
        Option("perceptual_loss", None, "any module f(x, y) -> [B] on images in [-1, 1] (default: LPIPS VGG)",
               kind="any", none_ok=True),
        Option("perceptual_net", None, "perceptual net of the sync loss: lpips-vgg (SyncDiffusion's), lpips-alex "
               "(smaller), tiny-random (built in, no files; the default for the tiny test models, which then run "
               "offline; its values mean nothing perceptually); default: lpips-vgg", kind="choice",
               choices=("lpips-vgg", "lpips-alex", "tiny-random"), none_ok=True),
        Option("weights_dir", None, "offline folder with the LPIPS files vgg16-397923af.pth and vgg.pth (default: "
               "~/.cache/pano360/weights, downloaded once)", kind="path", none_ok=True, metavar="DIR"),
    )
    run_class = SyncDiffusionRun
    tiny_defaults: ClassVar[dict] = {"perceptual_net": "tiny-random"}  # tiny models: no download, offline

    # --- checks ------------------------------------------------------------------------------
    def check_options(self) -> None:
        super().check_options()
        if self.sync_decay_rate == 0:
            raise InvalidInputError("sync_decay_rate must be > 0 (1 = no decay; SyncDiffusion uses 0.95)")

    def check(self, request) -> None:
        super().check(request)
        steps = request.num_inference_steps
        if self.sync_threshold is not None and self.sync_threshold > steps:
            raise InvalidInputError(
                f"--sync-threshold {self.sync_threshold} (sync_threshold) is beyond the number of steps ({steps}); "
                f"use --sync-threshold <= {steps} (or leave it unset to synchronise every step)")

    def check_for_model(self, request, info, scheduler_name, adapters=()) -> None:
        super().check_for_model(request, info, scheduler_name, adapters)
        if self.anchor is not None:
            factor = info.vae_scale_factor
            count = len(make_grid(self, request.height // factor, request.width // factor,
                                  info.native_size // factor, factor))
            if self.anchor >= count:
                raise InvalidInputError(f"anchor {self.anchor} is not a window index: this grid has {count} "
                                        f"windows (0..{count - 1})")

    def fetch_resources(self, request) -> None:
        """If a step will synchronise: the default LPIPS VGG weights and a named tiny sync decoder,
        fetched (downloaded once) before any model call."""
        steps = request.num_inference_steps
        if not any(self.sync_step_weight(i, steps) for i in range(steps)):
            return
        if self.perceptual_loss is None:
            from ..nets.weights import fetch_weights

            for name in PERCEPTUAL_WEIGHT_FILES[self.perceptual_net or "lpips-vgg"]:
                fetch_weights(name, self.weights_dir)
        if isinstance(self.sync_decoder, str) and self.sync_decoder != "vae":
            source = TINY_DECODERS.get(self.sync_decoder, self.sync_decoder)
            if not os.path.isdir(source):
                from huggingface_hub import snapshot_download

                try:
                    snapshot_download(source, allow_patterns=["*.json", "*.safetensors"])
                except Exception as error:
                    raise ModelLoadError(f"could not get the tiny sync decoder {source!r} ({type(error).__name__}: "
                                         f"{error}); download it once with network access, give a local "
                                         "AutoencoderTiny folder, or leave sync_decoder unset") from error

    # --- schedule ------------------------------------------------------------------------------
    def sync_step_weight(self, i: int, num_inference_steps: int | None = None) -> float:
        """The gradient step size at step ``i`` (0 where no synchronisation happens)."""
        threshold = self.sync_threshold if self.sync_threshold is not None else num_inference_steps
        if (i + 1) % self.sync_freq or (threshold is not None and i >= threshold):
            return 0.0
        return float(self.sync_weight) * float(self.sync_decay_rate) ** i
