"""MVDiffusionAdapter: the CAA blocks as a pano360 panorama adapter (kind and method "mvdiffusion")."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ...errors import InvalidInputError, ModelLoadError
from ..base import PanoramaAdapter, TrainingExample, load_strict
from ..flags import MVDiffusionFlags
from . import checkpoint as ckpt
from .caa import CAABlock
from .training import TrainingViews


def unet_widths(unet) -> tuple[list[int], int, list[int]]:
    """The CAA widths a UNet needs: each down/up block's last resnet output width, and the mid block's."""
    encoder = [int(block.resnets[-1].out_channels) for block in unet.down_blocks]
    decoder = [int(block.resnets[-1].out_channels) for block in unet.up_blocks]
    return encoder, int(unet.mid_block.resnets[-1].out_channels), decoder


class MVDiffusionAdapter(MVDiffusionFlags, PanoramaAdapter):
    """MVDiffusion's correspondence-aware attention blocks for one UNet architecture.

    Module names are the reference's (``cp_blocks_encoder.<i>``, ``cp_blocks_mid``,
    ``cp_blocks_decoder.<i>``), so ``state_dict()`` is the released checkpoints' ``mv_base_model.cp_blocks_*``
    without the prefix. ``attach(unet)`` returns the :class:`MultiViewUNet`; the UNet stays frozen.

    Args:
        encoder_dims, mid_dim, decoder_dims: block widths (SD 2: 320/640/1280/1280 | 1280 | 1280/1280/640/320).
        in_channels: the UNet input channels the blocks were trained with (4; 9 for the outpainting model).
        base: the base model they were trained on (named in fit errors).
    """

    kind: ClassVar[str] = "mvdiffusion"
    method: ClassVar[str | None] = "mvdiffusion"
    training_views: ClassVar[TrainingViews] = TrainingViews()  # for_training sets the model's view size

    def __init__(self, encoder_dims, mid_dim: int, decoder_dims, in_channels: int = 4, base: str | None = None):
        super().__init__(encoder_dims=[int(d) for d in encoder_dims], mid_dim=int(mid_dim),
                         decoder_dims=[int(d) for d in decoder_dims], in_channels=int(in_channels), base=base)
        self.cp_blocks_encoder = nn.ModuleList(CAABlock(d) for d in self.config["encoder_dims"])
        self.cp_blocks_mid = CAABlock(self.config["mid_dim"])
        self.cp_blocks_decoder = nn.ModuleList(CAABlock(d) for d in self.config["decoder_dims"])
        self.components: dict[str, dict[str, torch.Tensor]] = {}  # reference checkpoints' UNet/VAE/text weights
        self._networks: dict[int, nn.Module] = {}

    @classmethod
    def for_unet(cls, unet, base: str | None = None) -> MVDiffusionAdapter:
        """Fresh (identity) blocks sized for ``unet``."""
        encoder, mid, decoder = unet_widths(unet)
        return cls(encoder, mid, decoder, in_channels=int(unet.config.in_channels), base=base)

    @property
    def base(self) -> str:
        return self.config.get("base") or ckpt.base_for_in_channels(self.config["in_channels"])

    # --- wiring ---------------------------------------------------------------------------------
    def check_backbone(self, unet) -> None:
        in_channels = int(unet.config.in_channels)
        if in_channels != self.config["in_channels"]:
            kind = "a 9-channel inpainting UNet" if self.config["in_channels"] == 9 else \
                f"a {self.config['in_channels']}-channel UNet"
            raise ModelLoadError(f"these MVDiffusion weights need {kind} but this model's UNet takes {in_channels} "
                                 f"channels; load base model {self.base}")
        widths = unet_widths(unet)
        mine = (self.config["encoder_dims"], self.config["mid_dim"], self.config["decoder_dims"])
        if tuple(widths) != mine:
            raise ModelLoadError(f"these MVDiffusion blocks (widths {mine}) do not fit this UNet (widths "
                                 f"{tuple(widths)}); load base model {self.base}")

    def attach(self, unet, cameras=None) -> nn.Module:
        from .network import MultiViewUNet

        if id(unet) not in self._networks:
            self.check_backbone(unet)
            self.to(device=unet.device)
            self._networks[id(unet)] = MultiViewUNet(unet, self, cameras)
        return self._networks[id(unet)]

    def detach(self, unet) -> None:
        network = self._networks.pop(id(unet), None)
        if network is not None:
            network.remove_hooks()

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each CAA transformer in the backward pass (the reference always does)."""
        for module in self.modules():
            if isinstance(module, CAABlock):
                module.gradient_checkpointing = bool(enabled)

    # --- pano360 train --adapter mvdiffusion ------------------------------------------------------------
    @classmethod
    def check_training_options(cls, options: dict) -> None:
        size = options.get("mvdiffusion_view_size")
        if size is not None and (int(size) < 64 or int(size) % 64):
            raise InvalidInputError(f"--mvdiffusion-view-size must be a multiple of 64 pixels, got {size}")

    @classmethod
    def for_training(cls, unet, options: dict, seed: int) -> MVDiffusionAdapter:
        """Fresh blocks (an exact identity) for the frozen ``unet``; 8 views of 90° at the native size
        (or ``--mvdiffusion-view-size``), each panorama's views sharing one timestep."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            adapter = cls.for_unet(unet)
        size = options.get("mvdiffusion_view_size") or int(unet.config.sample_size) * 8
        adapter.training_views = TrainingViews(size_px=int(size))
        adapter.set_gradient_checkpointing(options.get("mvdiffusion_checkpointing", "on") == "on")
        return adapter

    def training_example(self, batch) -> TrainingExample:
        """The views of each panorama: latents [B, 8, 4, s/8, s/8], per-view caption embeddings
        [B, 8, L, D] and the ring's cameras (the same for every sample)."""
        if batch.view_latents is None:
            raise InvalidInputError("MVDiffusion trains on perspective views; the training batch has none")
        yaws = batch.view_yaw_deg
        if yaws is not None and not bool((yaws == yaws[:1]).all()):
            raise InvalidInputError("MVDiffusion training needs the same view yaws for every sample of a batch")
        views = self.training_views
        if yaws is not None:
            views = TrainingViews(tuple(float(y) for y in yaws[0].tolist()), views.pitch_deg, views.fov_deg,
                                  int(batch.view_latents.shape[-1]) * 8)
        size = views.size_px
        return TrainingExample(batch.view_latents, batch.view_embeds, batch.view_pooled, (size, size),
                               {"cameras": views.cameras()})

    # --- reference checkpoints -----------------------------------------------------------------------
    @classmethod
    def matches_reference_keys(cls, keys) -> bool:
        return ckpt.matches_reference_keys(keys)

    @classmethod
    def from_reference_checkpoint(cls, source, components: bool = True) -> MVDiffusionAdapter:
        """The blocks of a released checkpoint (path or state dict); with ``components`` the checkpoint's
        UNet, VAE and text encoder weights are kept for :meth:`load_components`."""
        parts = ckpt.split_state(ckpt.read_state(source))
        if not parts["caa"]:
            raise ModelLoadError(f"{source if not isinstance(source, dict) else 'the state dict'} has no "
                                 f"{ckpt.CAA_PREFIX}* tensors; it is not an MVDiffusion checkpoint")
        encoder, mid, decoder = ckpt.block_widths(parts["caa"])
        conv_in = parts["unet"].get("conv_in.weight")
        in_channels = int(conv_in.shape[1]) if conv_in is not None else 4
        adapter = cls(encoder, mid, decoder, in_channels=in_channels, base=ckpt.base_for_in_channels(in_channels))
        label = "the state dict" if isinstance(source, dict) else str(source)
        for name, buffer in adapter.state_dict().items():
            if name.endswith("pe.freq_bands") and name in parts["caa"] and \
                    not torch.equal(parts["caa"][name].float(), buffer):
                raise ModelLoadError(f"{label}: {ckpt.PREFIX}{name} differs from MVDiffusion's frequency bands")
        load_strict(adapter, {k: v.float() for k, v in parts["caa"].items()}, label)
        if components:
            adapter.components = {k: v for k, v in parts.items() if k != "caa" and v}
        return adapter

    def load_components(self, components: dict[str, nn.Module]) -> list[str]:
        """Load the checkpoint's own weights into matching models (``{"unet": …, "vae": …,
        "text_encoder": …}``; strict key check, cast to each model's dtype), then drop them. Returns the
        names loaded."""
        loaded = []
        for name, state in list(self.components.items()):
            module = components.get(name)
            if module is None:
                continue
            own = module.state_dict()
            state = ckpt.fit_prefix(state, own)
            cast = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
            load_strict(module, cast, f"the checkpoint's {name}")
            loaded.append(name)
            del self.components[name]
        return loaded

    def reference_state_dict(self, **models) -> dict[str, torch.Tensor]:
        """This adapter (and optionally ``unet``/``vae``/``text_encoder``) in the released checkpoints' layout."""
        return ckpt.reference_state_dict(self, **models)
