"""The backbone contract: what differs between SD 1/2/SDXL, FLUX.1, SD3.x and Qwen-Image, behind one API.

Everything above this layer (the loop in :mod:`pano360.generator`, every method, the adapters, the
trainer) sees spatial latents ``[B, C, h, w]`` in latent units and calls the model through its
family's contract::

    family = backbone.contract                             # a BackboneFamily, one per family
    text = family.encode(pipe, prompts, negatives, guidance, device)     # TextConditioning
    out = family.call(network, latents[N, C, h, w], t, embeds, pooled, mask, ...)  # [N, C, h, w]
    out = family.combine_guidance(unconditional, conditional, scale)
    with family.seam(backbone, network=True, vae=True):   # wraparound convs / periodic positions
        ...

The noise schedule (model input, x̂0, training target, noising, initial noise scale) is decided by the
scheduler (:mod:`pano360.backbones.parameterization`, ᾱ-based and flow-matching alike), and
:func:`pano360.backbones.schedulers.set_timesteps` sets timesteps the way each family's pipeline does
(with the resolution-dependent shift for FLUX and Qwen-Image).

**Adding a family** is one file: subclass :class:`BackboneFamily` (facts from the loaded pipeline,
prompt encoding, the model call with its packing and ids, guidance, seam), and register it with
:func:`register_family`; :mod:`pano360.backbones.families` maps its diffusers pipeline and
transformer classes to its name for detection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .conditioning import TextConditioning
from .families import FamilyInfo


@dataclass(frozen=True)
class AttentionSite:
    """One attention of a denoiser and where its projections are (paths relative to the denoiser).

    ``projections`` maps ``q``/``k``/``v``/``o`` to the ``nn.Linear`` computing them for the image
    stream; ``text_projections`` the same for a joint attention's text stream (MMDiT ``add_q_proj``,
    ``add_k_proj``, ``add_v_proj``, ``to_add_out``; absent where there is none). ``output_inputs``: the
    number of leading input features of the ``o`` Linear that are the attention's output, or None when
    all are (FLUX's single-stream blocks fuse W_o with the MLP's output projection in ``proj_out``,
    whose input is ``[attention output, MLP hidden]``; there W_o is its first ``dim`` columns).
    ``kind``: ``self``/``cross`` (UNet attn1/attn2), ``joint`` (MMDiT double-stream), ``single``
    (FLUX single-stream: one attention over the concatenated text and image tokens).
    """

    path: str
    kind: str
    projections: dict = field(default_factory=dict)
    text_projections: dict = field(default_factory=dict)
    output_inputs: int | None = None


def _unet_attention_sites(denoiser) -> list[AttentionSite]:
    sites = []
    for name, module in denoiser.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in ("attn1", "attn2") and hasattr(module, "to_v") and hasattr(module, "to_out"):
            sites.append(AttentionSite(name, "self" if last == "attn1" else "cross",
                                       {c: f"{name}.{p}" for c, p in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"))}))
    return sites


def joint_attention_sites(denoiser, blocks: str = "transformer_blocks", attention_names=("attn", "attn2"),
                          ) -> list[AttentionSite]:
    """The attentions of an MMDiT's ``blocks`` (FLUX double-stream, SD3/SD3.5 joint blocks): image stream
    ``to_q/to_k/to_v/to_out.0``, text stream ``add_q_proj/add_k_proj/add_v_proj/to_add_out`` where the
    module has them (SD3's last block has no ``to_add_out``; SD3.5's ``attn2`` is image-only)."""
    sites = []
    container = getattr(denoiser, blocks, None) or []
    for index, block in enumerate(container):
        for attention_name in attention_names:
            attention = getattr(block, attention_name, None)
            if attention is None or not hasattr(attention, "to_v"):
                continue
            path = f"{blocks}.{index}.{attention_name}"
            image = {c: f"{path}.{p}" for c, p in zip("qkvo", ("to_q", "to_k", "to_v", "to_out.0"))}
            text = {c: f"{path}.{p}" for c, p in zip("qkvo", ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"))
                    if getattr(attention, p, None) is not None}
            sites.append(AttentionSite(path, "joint" if text else "self", image, text))
    return sites


class BackboneFamily:
    """Base of the family contracts. Subclasses set the class attributes and override the methods."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "unet"  # "unet" | "dit"
    schedule: ClassVar[str] = "alpha"  # scheduler kind: "alpha" (ε/v) | "flow" (flow matching)
    default_steps: ClassVar[int] = 50
    default_guidance: ClassVar[float] = 7.5
    cfg_needs_negative: ClassVar[bool] = False
    """True where classifier-free guidance runs only when a negative prompt is given (FLUX's true CFG,
    Qwen-Image), as in the family's diffusers pipeline; False where the empty prompt is the default
    negative (SD, SDXL, SD3)."""
    linear_sigmas: ClassVar[bool] = True
    """Flow schedules: the pipeline passes σ = linspace(1, 1/N, N) (FLUX, Qwen-Image) rather than letting
    the scheduler space them (SD3)."""
    attention_projections: ClassVar[tuple[str, ...]] = ("to_q", "to_k", "to_v", "to_out.0")
    """Module-name suffixes of the attention projections (where LoRA and q/k/v/o adapters attach)."""

    def attention_sites(self, denoiser) -> list[AttentionSite]:
        """Every attention of ``denoiser`` with the paths of its q/k/v/o projections, in module order
        (what UniPano's adapter and ``pano360 qkvo`` attach to). UNets: each ``attn1`` (self) and
        ``attn2`` (cross) of the transformer blocks."""
        return _unet_attention_sites(denoiser)

    # --- facts ----------------------------------------------------------------------------------
    def facts(self, pipe) -> FamilyInfo:
        raise NotImplementedError

    def denoiser(self, pipe):
        """The network the loop calls: ``pipe.unet`` or ``pipe.transformer``."""
        return pipe.unet

    def image_seq_len(self, latent_height: int, latent_width: int, info: FamilyInfo) -> int:
        """Tokens of an image of that latent size (what the flow shift μ is computed from)."""
        return (latent_height // info.patch_size) * (latent_width // info.patch_size)

    def shift_mu(self, image_seq_len: int, num_steps: int, config) -> float:
        """μ of the resolution-dependent flow shift, as the family's pipeline computes it (FLUX.1 and
        Qwen-Image: linear in the image tokens, :func:`pano360.backbones.schedulers.dynamic_shift`)."""
        from .schedulers import dynamic_shift

        return dynamic_shift(image_seq_len, config)

    # --- prompts --------------------------------------------------------------------------------
    def encode(self, pipe, prompts: list[str], negative_prompts: list[str] | None, guidance: bool,
               device) -> TextConditioning:
        """Encode ``N`` prompts (and negatives when ``guidance``; None = the empty prompt)."""
        raise NotImplementedError

    def truncation_limit(self, pipe) -> tuple[object, int]:
        """(tokenizer, tokens kept) of the text encoder whose context cuts long prompts."""
        return pipe.tokenizer, pipe.tokenizer.model_max_length

    # --- guidance -------------------------------------------------------------------------------
    def guidance_plan(self, pipe, guidance_scale: float, true_cfg_scale: float | None,
                      has_negative: bool) -> tuple[float, float | None]:
        """(classifier-free guidance weight, embedded guidance value or None) for a request.

        A weight of 1 means one pass without negative conditioning.
        """
        cfg = float(guidance_scale)
        if self.cfg_needs_negative and not has_negative:
            cfg = 1.0
        return cfg, None

    def combine_guidance(self, unconditional: torch.Tensor, conditional: torch.Tensor, scale: float) -> torch.Tensor:
        """u + w·(c − u)."""
        return unconditional + scale * (conditional - unconditional)

    # --- the model call -------------------------------------------------------------------------
    def call(self, network, latents: torch.Tensor, t, embeds: torch.Tensor, pooled: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, *, size_px: tuple[int, int] | None = None,
             control: torch.Tensor | None = None, controlnet=None, controlnet_scale: float = 1.0,
             embedded_guidance: float | None = None, **inputs) -> torch.Tensor:
        """The network's output [N, C, h, w] for ``latents`` [N, C, h, w] (latent units) at ``t``."""
        raise NotImplementedError

    # --- the seam -------------------------------------------------------------------------------
    def seam(self, backbone, network: bool = True, vae: bool = True, scheme: str = "exact",
             rounding: str = "nearest", offset: int = 0):
        """Context in which the denoiser (``network``) and the VAE (``vae``) treat the panorama's left and
        right edges as neighbours; ``scheme``, ``rounding`` and ``offset`` choose among a transformer's
        seam schemes (:mod:`pano360.backbones.token_seam`); UNets have one (wraparound convolutions)."""
        from .wrap import wraparound

        modules = []
        if network:
            modules += [self.denoiser(backbone.pipe), backbone.controlnet]
        if vae:
            modules.append(backbone.vae)
        return wraparound(*modules)

    seam_schemes: ClassVar[tuple[str, ...]] = ("exact",)

    def image_vae(self, pipe):
        """The VAE with the [B, 3, H, W] ↔ [B, C, h, w] interface of :mod:`pano360.backbones.vae`."""
        return pipe.vae

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class TransformerFamily(BackboneFamily):
    """Base of the DiT families: the denoiser is ``pipe.transformer``, the seam is in token space
    (:mod:`pano360.backbones.token_seam`) plus the wrapped VAE, the schedule is flow matching."""

    kind = "dit"
    schedule = "flow"
    seam_schemes = ("exact", "periodic", "pad", "blend", "none")

    def denoiser(self, pipe):
        return pipe.transformer

    def facts(self, pipe) -> FamilyInfo:
        """A DiT on 2 × 2 tokens of an image VAE's latents, native size = the pipeline's default sample size
        (FLUX.1, FLUX.2; SD3 and Qwen-Image override it)."""
        vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        return FamilyInfo(family=self.name, prediction_type="flow_prediction",
                          native_size=int(getattr(pipe, "default_sample_size", 128)) * vae_scale,
                          vae_scale_factor=vae_scale, unet_downsampling=2,
                          latent_channels=int(pipe.vae.config.latent_channels), patch_size=2)

    def attention_sites(self, denoiser) -> list[AttentionSite]:
        """None by default: each DiT family lists its own (FLUX.1, SD3 do; Qwen-Image and FLUX.2 not yet)."""
        return []

    def call(self, network, latents, t, embeds, pooled=None, mask=None, **kwargs):
        """The transformer's output for spatial latents, with the seam set on ``network`` (if any);
        HunyuanWorld's extend-and-blend wraps the plain call, the other schemes live in ``_call``."""
        from .token_seam import active_seam, extend_and_blend

        seam = active_seam(network)
        if seam is None or seam.scheme != "blend":
            return self._call(network, latents, t, embeds, pooled, mask, seam=seam, **kwargs)
        fill = kwargs.pop("fill", None)

        def plain(extended):
            if fill is not None:  # FLUX Fill's condition is extended like the latents
                kwargs["fill"] = torch.cat([fill, fill[..., :extended.shape[-1] - fill.shape[-1]]], dim=-1)
            return self._call(network, extended, t, embeds, pooled, mask, seam=None, **kwargs)

        return extend_and_blend(plain, latents)

    def _call(self, network, latents, t, embeds, pooled=None, mask=None, *, seam=None, **kwargs):
        """The family's call on [N, C, h, w] latents with ``seam`` (a TokenSeam or None)."""
        raise NotImplementedError

    def seam(self, backbone, network=True, vae=True, scheme="exact", rounding="nearest", offset=0):
        import contextlib

        from .token_seam import TokenSeam, token_seam
        from .wrap import wraparound

        stack = contextlib.ExitStack()
        if network:
            stack.enter_context(token_seam(self.denoiser(backbone.pipe), TokenSeam(scheme, rounding, offset)))
        if vae:
            stack.enter_context(wraparound(backbone.vae))
        return stack


_FAMILIES: dict[str, BackboneFamily] = {}


def register_family(family: BackboneFamily, *names: str) -> BackboneFamily:
    """Make ``family`` the contract of ``names`` (default: its own name)."""
    for name in names or (family.name,):
        _FAMILIES[name] = family
    return family


def get_family(name: str) -> BackboneFamily:
    """The contract of family ``name`` (``sd1``, ``sd2``, ``sdxl``, ``flux``, ``sd3``, ``qwen-image``)."""
    _load_builtin()
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(_FAMILIES))}") from None


def family_of_denoiser(denoiser) -> BackboneFamily:
    """The contract of a loaded denoiser: its transformer class, else a UNet's (all UNet families share
    the attention layout)."""
    from .families import TRANSFORMER_CLASSES

    name = TRANSFORMER_CLASSES.get(type(denoiser).__name__)
    if name is None and hasattr(denoiser, "transformer_blocks") and not hasattr(denoiser, "down_blocks"):
        raise ValueError(f"unsupported transformer {type(denoiser).__name__}")
    return get_family(name or "sd1")


def family_of(pipe) -> BackboneFamily:
    """The contract of a loaded diffusers pipeline."""
    from .families import family_of_pipeline

    return get_family(family_of_pipeline(pipe))


_BUILTIN = []


def _load_builtin() -> None:
    if _BUILTIN:
        return
    _BUILTIN.append(True)
    from . import family_flux, family_flux2, family_qwen, family_sd3, family_unet  # noqa: F401  (each registers itself)
