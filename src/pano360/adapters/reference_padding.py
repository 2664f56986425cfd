"""The panorama padding of the PanFusion/UniPano code, for comparisons with the papers' results.

pano360's default, exact wraparound (:mod:`pano360.backbones.wrap`) makes every convolution read
the opposite edge, so the UNet is exactly roll-equivariant. The reference code
(``reference/unipano_panfusion.md`` §1.5: PanFusion ``MVGenModel.forward_pano`` / ``utils/pano.py``,
reused unchanged by UniPano) does three other things instead:

1. **pad / crop around each UNet op** (width only, circular; heights keep the convolutions' zero
   padding). With (pad, crop) in feature columns:

   =====================================  ==========
   ``conv_in``, ``conv_out``              (1, 1)
   every ResNet block (down, mid, up)     (2, 2)
   ``Downsample2D`` (3×3, stride 2)       (2, 1)
   ``Upsample2D`` (nearest ×2, then 3×3)  (1, 2)
   =====================================  ==========

   The convolutions then see the same neighbours as with exact wrap, but each ResNet block's
   GroupNorm also counts the 2 + 2 duplicated columns, so the result differs slightly from exact
   wrap and is only approximately roll-equivariant. Attention is not padded (it is global).
2. **a latent roll before every denoising step** by ``int(90/360 · w)`` columns (``rot_diff``), so
   the seam sits at a different longitude each step; after the loop the latent is rolled back by
   ``int(−steps · 90/360 · w)`` columns (exact when ``steps · w / 4`` is an integer: w = 128, 256).
3. **a padded decode**: 8 latent columns wrapped in on each side, decoded by the *unwrapped* VAE and
   cropped by 64 pixels a side (``decode_latents(vae, latents, wrap_padding=REFERENCE_DECODE_PAD)``).

:func:`reference_unet_padding` installs (1) as a reversible context (forward hooks, no module or
parameter changes); :func:`reference_roll_columns` and :data:`REFERENCE_DECODE_PAD` give (2) and (3).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

REFERENCE_DECODE_PAD = 8  # latent columns wrapped in on each side before decoding (PanFusion latent_pad)
REFERENCE_ROLL_DEGREES = 90.0  # rot_diff: longitude the latent turns before every step

CONV_PAD = (1, 1)
RESNET_PAD = (2, 2)
DOWNSAMPLE_PAD = (2, 1)
UPSAMPLE_PAD = (1, 2)


def pad_columns(x: torch.Tensor, pad: int) -> torch.Tensor:
    """[..., W] → [..., W + 2·pad], circular along the width only (the reference ``pad_pano``)."""
    if pad <= 0:
        return x
    return F.pad(x.reshape(-1, *x.shape[-2:]), (pad, pad), mode="circular").reshape(*x.shape[:-1], -1)


def crop_columns(x: torch.Tensor, crop: int) -> torch.Tensor:
    """[..., W] → [..., W − 2·crop] (the reference ``unpad_pano``)."""
    return x[..., crop:x.shape[-1] - crop] if crop > 0 else x


def reference_roll_columns(latent_width: int, degrees: float = REFERENCE_ROLL_DEGREES) -> int:
    """Columns the reference rolls a latent of ``latent_width`` columns by for ``degrees`` of longitude
    (``int(degrees / 360 · w)``, truncated towards zero as in ``rotate_latent``; positive = towards +x)."""
    if degrees % 360 == 0:
        return 0
    return int(degrees / 360 * latent_width)


def padded_ops(unet: nn.Module) -> Iterator[tuple[nn.Module, tuple[int, int]]]:
    """(module, (pad, crop)) for every op the reference pads in a diffusers ``UNet2DConditionModel``."""
    yield unet.conv_in, CONV_PAD
    for block in unet.down_blocks:
        for resnet in block.resnets:
            yield resnet, RESNET_PAD
        for downsampler in block.downsamplers or ():
            yield downsampler, DOWNSAMPLE_PAD
    if unet.mid_block is not None:
        for resnet in unet.mid_block.resnets:
            yield resnet, RESNET_PAD
    for block in unet.up_blocks:
        for resnet in block.resnets:
            yield resnet, RESNET_PAD
        for upsampler in block.upsamplers or ():
            yield upsampler, UPSAMPLE_PAD
    yield unet.conv_out, CONV_PAD


def _pre_hook(pad: int, upsampler: bool):
    def hook(module, args, kwargs):
        hidden, *rest = args
        if upsampler:  # an explicit output size (odd latent sizes) grows with the padding
            size = rest[0] if rest else kwargs.get("output_size")
            if size is not None:
                size = (size[0], size[1] + 2 * pad * 2)
                if rest:
                    rest[0] = size
                else:
                    kwargs = {**kwargs, "output_size": size}
        return (pad_columns(hidden, pad), *rest), kwargs
    return hook


def _post_hook(crop: int):
    def hook(module, args, output):
        return crop_columns(output, crop)
    return hook


@contextlib.contextmanager
def reference_unet_padding(unet: nn.Module):
    """``with reference_unet_padding(unet):`` runs the UNet with the reference's pad/crop around each op.

    Use it *instead of* exact wraparound on the UNet (combined, the result is the same as this alone:
    every padded column the convolutions' own padding touches is cropped). Restores the UNet on exit.
    """
    handles = []
    try:
        for module, (pad, crop) in padded_ops(unet):
            upsampler = type(module).__name__ == "Upsample2D"
            handles.append(module.register_forward_pre_hook(_pre_hook(pad, upsampler), with_kwargs=True))
            handles.append(module.register_forward_hook(_post_hook(crop)))
        yield unet
    finally:
        for handle in handles:
            handle.remove()
