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
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..errors import InvalidInputError, ModelLoadError
from ..backbones.parameterization import predicted_original
from .base import GenerationContext
from .multidiffusion import MultiDiffusionMethod
from .windows import in_batches

TINY_DECODERS = {"taesd": "madebyollin/taesd", "taesdxl": "madebyollin/taesdxl"}
_LPIPS_CACHE: dict = {}
_DECODER_CACHE: dict = {}


LPIPS_WEIGHT_FILES = ("vgg16", "lpips_vgg")  # torchvision's VGG16 trunk and lpips' v0.1 heads


def default_perceptual_loss(device, dtype, weights_dir=None):
    """LPIPS VGG (as in SyncDiffusion), loaded once per device, dtype and weights folder."""
    key = (str(device), dtype, None if weights_dir is None else str(weights_dir))
    if key not in _LPIPS_CACHE:
        from ..nets.lpips import LPIPS

        _LPIPS_CACHE[key] = LPIPS(net="vgg", weights_dir=weights_dir).to(device=device, dtype=dtype)
    return _LPIPS_CACHE[key]


def _is_whole(value, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass
class SyncDiffusionMethod(MultiDiffusionMethod):
    """Options (besides MultiDiffusion's ``window``, ``loop_closure``, ``decode_wrap``, ``view_batch_size``):

    * ``stride`` (default 16, SyncDiffusion's): window stride in latent units.
    * ``sync_weight`` (default 20) and ``sync_decay_rate`` (default 0.95): step size ``w · decay**i``.
    * ``sync_freq`` (default 1): synchronise every ``sync_freq``-th step (at i = freq−1, 2·freq−1, …).
    * ``sync_threshold`` (default None = every step): synchronise only while ``i < sync_threshold``;
      the SyncDiffusion script uses 10 (most of the effect, a fraction of the cost).
    * ``anchor`` (default None = the middle window, ``len(windows) // 2``): index into the row-major
      window grid.
    * ``sync_batch_size`` (default ``"auto"``: 4 on a CPU, 8 on a GPU): windows per gradient pass
      (memory vs. speed; results do not change). A pass that runs out of GPU memory is retried with
      half as many windows, and that size is kept for the rest of the panorama.
    * ``gradient_checkpointing`` (default False): recompute UNet/VAE activations in the backward pass
      (less memory, about one more forward pass of time).
    * ``sync_decoder`` (default None = the pipeline's VAE): ``"taesd"``/``"taesdxl"``, an
      ``AutoencoderTiny`` id/folder, or a decoder module: the fast, approximate mode.
    * ``perceptual_loss`` (default None = LPIPS VGG): any module ``f(x, y) -> [B]`` on images in [-1, 1].
    * ``weights_dir`` (default None = the cache, downloading once): an offline folder holding the LPIPS
      files ``vgg16-397923af.pth`` (torchvision) and ``vgg.pth`` (lpips v0.1 heads).
    """

    name: ClassVar[str] = "syncdiffusion"
    stride: Any = 16
    sync_weight: float = 20.0
    sync_decay_rate: float = 0.95
    sync_freq: int = 1
    sync_threshold: int | None = None
    anchor: int | None = None
    sync_batch_size: Any = "auto"
    gradient_checkpointing: bool = False
    sync_decoder: Any = None
    perceptual_loss: Any = None
    weights_dir: Any = None

    # --- checks ------------------------------------------------------------------------------
    def check_options(self, num_inference_steps: int | None = None) -> None:
        super().check_options(num_inference_steps)
        for name in ("sync_weight", "sync_decay_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise InvalidInputError(f"{name} must be a number >= 0, got {value!r}")
        if self.sync_decay_rate == 0:
            raise InvalidInputError("sync_decay_rate must be > 0 (1 = no decay; SyncDiffusion uses 0.95)")
        if not _is_whole(self.sync_freq, 1):
            raise InvalidInputError(f"sync_freq must be a whole number >= 1, got {self.sync_freq!r}")
        if self.sync_batch_size != "auto" and not _is_whole(self.sync_batch_size, 1):
            raise InvalidInputError(f"sync_batch_size must be 'auto' or a whole number >= 1, got {self.sync_batch_size!r}")
        if self.anchor is not None and not _is_whole(self.anchor, 0):
            raise InvalidInputError(f"anchor must be a window index >= 0 (or None for the middle), got {self.anchor!r}")
        if self.sync_threshold is not None:
            if not _is_whole(self.sync_threshold, 0):
                raise InvalidInputError(f"sync_threshold must be a whole number >= 0, got {self.sync_threshold!r}")
            if num_inference_steps is not None and self.sync_threshold > num_inference_steps:
                raise InvalidInputError(
                    f"sync_threshold ({self.sync_threshold}) is beyond the number of steps ({num_inference_steps}); "
                    f"use a sync_threshold <= {num_inference_steps} (or leave it unset to synchronise every step)"
                )
        if isinstance(self.sync_decoder, str) and not self.sync_decoder.strip():
            raise InvalidInputError("sync_decoder must be None, 'vae', 'taesd', 'taesdxl', a model id or a module")

    def check_for_model(self, height: int, width: int, info, num_inference_steps: int) -> None:
        super().check_for_model(height, width, info, num_inference_steps)
        if self.anchor is not None:
            factor = info.vae_scale_factor
            count = len(self.make_grid(height // factor, width // factor, info.native_size // factor, factor))
            if self.anchor >= count:
                raise InvalidInputError(f"anchor {self.anchor} is not a window index: this grid has {count} "
                                        f"windows (0..{count - 1})")

    def fetch_resources(self, num_inference_steps: int) -> None:
        """If a step will synchronise: the default LPIPS VGG weights and a named tiny sync decoder,
        fetched (downloaded once) before any model call."""
        if not any(self.sync_step_weight(i, num_inference_steps) for i in range(num_inference_steps)):
            return
        if self.perceptual_loss is None:
            from ..nets.weights import fetch_weights

            for name in LPIPS_WEIGHT_FILES:
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

    def anchor_index(self, ctx: GenerationContext) -> int:
        return self.anchor if self.anchor is not None else len(self.grid(ctx)) // 2

    # --- components ------------------------------------------------------------------------------
    def perceptual(self, ctx: GenerationContext):
        if self.perceptual_loss is not None:
            return self.perceptual_loss
        vae = ctx.pipe.vae
        lpips = default_perceptual_loss(vae.device, vae.dtype, self.weights_dir)
        from ..backbones.device import apply_memory_format

        apply_memory_format(ctx.channels_last, lpips)  # follow the generator's layout (faster on CPUs)
        return lpips

    def decoder(self, ctx: GenerationContext):
        choice = self.sync_decoder
        if choice is None or choice == "vae":
            return ctx.pipe.vae
        if isinstance(choice, str):
            source = TINY_DECODERS.get(choice, choice)
            vae = ctx.pipe.vae
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

    def predict_clean(self, ctx: GenerationContext, windows: torch.Tensor, t, pairs,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window latents [M, C, wh, ww] → (guided model outputs, predicted clean latents x̂0), both [M, C, wh, ww]."""
        model_input = ctx.scheduler.scale_model_input(windows, t)
        output = self.predict_windows(ctx, model_input, t, pairs=pairs, batch_size=batch_size)
        return output, predicted_original(ctx.scheduler, model_input, output, t)

    def decode_clean(self, ctx: GenerationContext, clean: torch.Tensor) -> torch.Tensor:
        """x̂0 latents [M, C, wh, ww] → images [M, 3, 8wh, 8ww] clamped to [-1, 1] (through the sync decoder)."""
        decoder = self.decoder(ctx)
        scale = decoder.config.get("scaling_factor", 1.0)
        shift = decoder.config.get("shift_factor", None) or 0.0
        images = decoder.decode((clean / scale + shift).to(decoder.dtype), return_dict=False)[0]
        return images.clamp(-1, 1)

    def decode_prediction(self, ctx: GenerationContext, windows: torch.Tensor, t, pairs,
                          batch_size: int) -> torch.Tensor:
        """Window latents [M, C, wh, ww] → decoded x̂0 images [M, 3, 8wh, 8ww] clamped to [-1, 1]."""
        return self.decode_clean(ctx, self.predict_clean(ctx, windows, t, pairs, batch_size)[1])

    def initial_sync_batch_size(self, device: torch.device, count: int) -> int:
        """Windows per gradient pass: the option, or for ``"auto"`` 4 on a CPU (fastest measured there,
        docs/benchmarks.md) and 8 on an accelerator (halved on out-of-memory until it fits)."""
        if self.sync_batch_size != "auto":
            return int(self.sync_batch_size)
        return max(1, min(count, 4 if device.type == "cpu" else 8))

    # --- the loop hooks ----------------------------------------------------------------------------
    def distance_to(self, ctx: GenerationContext, target: torch.Tensor):
        """``distance(images [M, 3, H, W], index [M]) -> [M]``: the perceptual distance of each image
        to ``target[index]``. Modules with ``features``/``distance`` (as LPIPS) get the targets'
        features computed once here instead of once per window."""
        perceptual = self.perceptual(ctx)
        features, distance = getattr(perceptual, "features", None), getattr(perceptual, "distance", None)
        if callable(features) and callable(distance):
            with torch.no_grad():
                target_features = features(target)

            def by_features(images, index):
                chosen = target_features if target.shape[0] == 1 else [f[index] for f in target_features]
                return distance(features(images), chosen)

            return by_features
        return lambda images, index: perceptual(images, target[index].to(images.dtype))

    def window_gradients(self, ctx: GenerationContext, leaf: torch.Tensor, t, chunk, distance) -> torch.Tensor:
        """∂ distance(decode(x̂0(leaf)), anchor) / ∂ leaf for one batch of windows [M, C, wh, ww]."""
        index = torch.tensor([k for k, _ in chunk], device=leaf.device)
        with torch.enable_grad():
            leaf = leaf.detach().requires_grad_(True)
            decoded = self.decode_prediction(ctx, leaf, t, chunk, len(chunk))
            (gradient,) = torch.autograd.grad(distance(decoded, index).sum(), leaf)
        return gradient

    def sync_gradients(self, ctx: GenerationContext, windows: torch.Tensor, t) -> torch.Tensor:
        """∂LPIPS(window, anchor)/∂window for every window: [B, N, C, wh, ww] → same shape (0 at the anchor).

        Also keeps the anchors' guided predictions in ``ctx.extras["sync_anchor_output"]`` ([B, C, wh, ww]):
        the anchor is not moved, so :meth:`predict` reuses them instead of predicting it again.
        """
        b, n = windows.shape[:2]
        anchor = self.anchor_index(ctx)
        with torch.no_grad():
            anchor_output, clean = self.predict_clean(ctx, windows[:, anchor], t, [(k, anchor) for k in range(b)], b)
            target = self.decode_clean(ctx, clean)
        ctx.extras["sync_anchor_output"] = anchor_output
        distance = self.distance_to(ctx, target)
        pairs = [(k, v) for k in range(b) for v in range(n) if v != anchor]
        gradients = torch.zeros_like(windows)
        modules = [ctx.pipe.unet, self.decoder(ctx)]
        if ctx.denoiser.controlnet is not None:
            modules.append(ctx.denoiser.controlnet)
        checkpointing = [m for m in modules if self.gradient_checkpointing and
                         getattr(m, "_supports_gradient_checkpointing", False) and not m.is_gradient_checkpointing]
        for module in checkpointing:
            module.enable_gradient_checkpointing()
        size = ctx.extras.get("sync_batch_size") or self.initial_sync_batch_size(windows.device, len(pairs))
        def run(start: int, stop: int) -> None:
            chunk = pairs[start:stop]
            gradient = self.window_gradients(ctx, torch.stack([windows[k, v] for k, v in chunk]), t, chunk, distance)
            for m, (k, v) in enumerate(chunk):
                gradients[k, v] = gradient[m]

        try:
            _, size = in_batches(len(pairs), size, run)
        finally:
            for module in checkpointing:
                module.disable_gradient_checkpointing()
        ctx.extras["sync_batch_size"] = size
        return gradients

    def before_step(self, ctx: GenerationContext, latents: torch.Tensor, t, i: int) -> torch.Tensor:
        ctx.extras.pop("sync_windows", None)
        ctx.extras.pop("sync_anchor_output", None)
        weight = self.sync_step_weight(i, len(ctx.scheduler.timesteps))
        if weight == 0.0:
            return latents
        grid = self.grid(ctx)
        windows = grid.crop(latents.detach())
        updated = windows - weight * self.sync_gradients(ctx, windows, t).to(windows.dtype)
        ctx.extras["sync_windows"] = updated
        # The scheduler steps on the mean of the updated windows and (in predict) of their predictions.
        return grid.average(updated)

    def predict(self, ctx: GenerationContext, latents: torch.Tensor, t, i: int) -> torch.Tensor:
        updated = ctx.extras.pop("sync_windows", None)
        anchor_output = ctx.extras.pop("sync_anchor_output", None)
        if updated is None:
            return super().predict(ctx, latents, t, i)
        grid = self.grid(ctx)
        b, n = updated.shape[:2]
        anchor = self.anchor_index(ctx)
        pairs = [(k, v) for k in range(b) for v in range(n) if v != anchor]
        outputs = torch.empty_like(updated)
        outputs[:, anchor] = anchor_output.to(outputs.dtype)  # the anchor did not move: same prediction
        if pairs:
            model_input = ctx.scheduler.scale_model_input(torch.stack([updated[k, v] for k, v in pairs]), t)
            predicted = self.predict_windows(ctx, model_input, t, pairs=pairs)
            for m, (k, v) in enumerate(pairs):
                outputs[k, v] = predicted[m]
        return grid.average(outputs)


# Settings of the reference code, by entry point (shared/reference digest §2.4, MultiDiffusion §1.1).
# "generation" keys go to the generator, the rest are method options. The references have no loop
# closure in these runs; pass loop_closure=True (CLI: --loop-closure on) for a 360° seam.
PRESETS = {
    "syncdiffusion-paper": {  # sample_syncdiffusion() defaults: sync at every one of the 50 steps
        "method": "syncdiffusion", "height": 512, "width": 2048, "num_inference_steps": 50, "guidance_scale": 7.5,
        "options": {"stride": 16, "sync_weight": 20.0, "sync_decay_rate": 0.95, "sync_freq": 1,
                    "sync_threshold": 50, "loop_closure": False},
    },
    "syncdiffusion-script": {  # sample_syncdiffusion.sh: 512x3072, sync only in the first 10 steps
        "method": "syncdiffusion", "height": 512, "width": 3072, "num_inference_steps": 50, "guidance_scale": 7.5,
        "options": {"stride": 16, "sync_weight": 20.0, "sync_decay_rate": 0.95, "sync_freq": 1,
                    "sync_threshold": 10, "loop_closure": False},
    },
    "multidiffusion-paper": {  # MultiDiffusion panorama.py: 512x4096, stride 8
        "method": "multidiffusion", "height": 512, "width": 4096, "num_inference_steps": 50, "guidance_scale": 7.5,
        "options": {"stride": 8, "loop_closure": False},
    },
}
