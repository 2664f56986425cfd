"""MultiViewUNet: a diffusers UNet whose views talk through correspondence-aware attention blocks.

The wrapped ``UNet2DConditionModel`` runs its own ``forward`` (so SD 1/2, SDXL's added conditions,
ControlNet residuals and any scheduler input work unchanged); hooks insert the CAA blocks exactly
where the reference's hand-unrolled UNet applies them (digest §3):

* down block i: after its (resnet, attention) pairs, *before* its downsampler (the skip tensors of
  the level are taken before the CAA; only the downsampled skip carries it); a block without a
  downsampler (the last) applies it to what it hands on (the mid block's input);
* mid block: between ``resnets[0]`` and ``attentions[0]``;
* up block i: before its upsampler, or on its output if it has none (the last, before
  ``conv_norm_out``).

Batches are N = G·V latents: G groups (images, CFG halves) of the V ring views, each group's views
contiguous and in ring order (view i's neighbours are i − 1 and i + 1 mod V). ``GuidedModel``'s
[uncond; cond] doubling keeps that layout. Correspondences are computed once per rig and feature
size and cached.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .cameras import Cameras, cameras_from_rig, ring_cameras
from .correspondence import CorrespondenceCache

VAE_FACTOR = 8  # pixels per latent pixel for every SD-family VAE


def _hidden_states_of(args, kwargs):
    return args[0] if args else kwargs["hidden_states"]


def _with_hidden_states(args, kwargs, value):
    if args:
        return (value, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": value}


def caa_sites(unet) -> list[tuple[str, nn.Module, str]]:
    """Where each of the 9 (generally 2·levels + 1) CAA blocks acts, in the reference's block order
    (encoder 0…L−1, mid, decoder 0…L−1): (block name, module, "pre" = on its input | "post" = on its output)."""
    if getattr(unet, "mid_block", None) is None or not hasattr(unet.mid_block, "resnets"):
        raise ValueError("MVDiffusion needs a UNet with a mid block (resnets[0] then attentions[0])")
    sites = []
    downs, ups = list(unet.down_blocks), list(unet.up_blocks)
    for i, block in enumerate(downs):
        if block.downsamplers is not None:
            sites.append((f"cp_blocks_encoder.{i}", block.downsamplers[0], "pre"))
        else:
            sites.append((f"cp_blocks_encoder.{i}", downs[i + 1] if i + 1 < len(downs) else unet.mid_block, "pre"))
    sites.append(("cp_blocks_mid", unet.mid_block.resnets[0], "post"))
    for i, block in enumerate(ups):
        if block.upsamplers is not None:
            sites.append((f"cp_blocks_decoder.{i}", block.upsamplers[0], "pre"))
        elif i + 1 < len(ups):
            sites.append((f"cp_blocks_decoder.{i}", ups[i + 1], "pre"))
        else:
            after = unet.conv_norm_out if unet.conv_norm_out is not None else unet.conv_act
            sites.append((f"cp_blocks_decoder.{i}", after, "pre"))
    return sites


class MultiViewUNet(nn.Module):
    """The UNet with MVDiffusion's CAA blocks between its blocks; the UNet's call signature plus ``cameras``.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (left unchanged apart from removable hooks).
        blocks: the :class:`~pano360.adapters.mvdiffusion.MVDiffusionAdapter` holding the CAA blocks.
        cameras: default rig: :class:`Cameras`, a ``ViewRig`` or None (8 views, yaw 45·i, FoV 90°,
            view size = latent size × 8).
    """

    def __init__(self, unet: nn.Module, blocks: nn.Module, cameras=None):
        super().__init__()
        self.unet = unet
        self.blocks = blocks
        self.cameras = cameras
        self.cache = CorrespondenceCache()
        self._active: Cameras | None = None
        self._handles = []
        for name, module, kind in caa_sites(unet):
            block = blocks.get_submodule(name)
            if kind == "pre":
                self._handles.append(module.register_forward_pre_hook(self._pre_hook(block), with_kwargs=True))
            else:
                self._handles.append(module.register_forward_hook(self._post_hook(block)))

    # UNet-like attributes the shared code reads (config, dtype, device)
    @property
    def config(self):
        return self.unet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    # --- the CAA hooks ---------------------------------------------------------------------------
    def _run_block(self, block, hidden: Tensor) -> Tensor:
        geometry = self.cache.get(self._active, hidden.shape[-2], hidden.shape[-1], hidden.device)
        return block(hidden, geometry)

    def _pre_hook(self, block):
        def hook(module, args, kwargs):
            if self._active is None:
                return None
            return _with_hidden_states(args, kwargs, self._run_block(block, _hidden_states_of(args, kwargs)))
        return hook

    def _post_hook(self, block):
        def hook(module, args, output):
            if self._active is None:
                return None
            return self._run_block(block, output)
        return hook

    # --- calling -----------------------------------------------------------------------------------
    def resolve_cameras(self, cameras, latent_hw: tuple[int, int]) -> Cameras:
        """:class:`Cameras` for ``cameras`` (Cameras, ViewRig or None) at latents of ``latent_hw``."""
        cameras = self.cameras if cameras is None else cameras
        height, width = latent_hw[0] * VAE_FACTOR, latent_hw[1] * VAE_FACTOR
        if cameras is None:
            return ring_cameras(8, 90.0, height, width)
        if isinstance(cameras, Cameras):
            if (cameras.height, cameras.width) != (height, width):
                raise ValueError(f"cameras describe {cameras.height}×{cameras.width}-pixel views but the latents "
                                 f"are {latent_hw[0]}×{latent_hw[1]} ({height}×{width} pixels)")
            return cameras
        if hasattr(cameras, "yaw_deg"):
            return cameras_from_rig(cameras, height, width)
        raise TypeError(f"cameras must be Cameras, a ViewRig or None, got {type(cameras).__name__}")

    @contextmanager
    def views(self, cameras: Cameras):
        """Within this context, plain calls of the wrapped UNet run multi-view (used by :meth:`forward`)."""
        previous = self._active
        self._active = cameras
        try:
            yield
        finally:
            self._active = previous

    def forward(self, sample: Tensor, timestep, encoder_hidden_states: Tensor, *args, cameras=None,
                return_dict: bool = False, **kwargs):
        """The UNet's output for ``sample`` [G·V, C, h, w] (latent units), each group's V views contiguous.

        ``cameras``: the rig (see class doc). Every other argument goes to the UNet unchanged.
        """
        rig = self.resolve_cameras(cameras, tuple(sample.shape[-2:]))
        if sample.shape[0] % len(rig):
            raise ValueError(f"a batch of {sample.shape[0]} latents is not a whole number of {len(rig)}-view groups")
        with self.views(rig):
            return self.unet(sample, timestep, encoder_hidden_states, *args, return_dict=return_dict, **kwargs)
