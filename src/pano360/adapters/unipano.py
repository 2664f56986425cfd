"""UniPano's adapter: LoRA on W_v and a mixture of LoRA experts on W_o, q and k untouched.

UniPano (Ni et al., ICCV 2025; ``reference/unipano_panfusion.md`` §1) finds that the value and output
projections of the SD UNet's attention carry the panorama (equirectangular) adaptation while the
query/key projections carry what perspective and panoramic images share. Its single-branch model
therefore adapts, in *both* attention layers (``attn1`` self, ``attn2`` cross) of every transformer
block:

* ``to_v``: a LoRA of rank r (:class:`~pano360.adapters.moe.LowRankUpdate`, no α/r scaling);
* ``to_out.0``: a mixture of N LoRA experts, top-2 routed, plus one shared expert
  (:class:`~pano360.adapters.moe.MixtureOfLoRAExperts`), whose balance and z-losses training adds to
  the ε-MSE (:meth:`UniPanoAdapter.auxiliary_loss`).

Installation is by forward hooks on the existing ``to_v`` / ``to_out[0]`` linear layers (output +=
update(input)): the UNet's module tree, state-dict keys and attention processor (SDPA) stay as they
are, a peft LoRA loaded before or after still works, and :meth:`~UniPanoAdapter.detach` removes the
hooks, restoring the UNet exactly. Attention is global and the updates act per token, so the adapted
UNet keeps wraparound roll equivariance.

**Transformers** (FLUX.1, SD3/SD3.5): the layers are the backbone contract's attention sites
(:meth:`~pano360.backbones.family.BackboneFamily.attention_sites`), not UNet names. In a joint
(MMDiT) attention the value LoRA goes on both streams' values, ``to_v`` (image) and ``add_v_proj``
(text, key ``text_v``): SD's ``attn1`` values come from image tokens and ``attn2`` values from text
tokens, and UniPano adapts both. The mixture of experts goes on the image stream's W_o, ``to_out.0``;
the text stream's ``to_add_out`` (which SD has no counterpart of: its text tokens have no output) stays
frozen. In FLUX's single-stream blocks the attention (``attn.to_v`` over text and image tokens) has no
``to_out``: W_o is fused with the MLP's output projection in ``proj_out`` (input ``[attention output,
MLP hidden]``), so the mixture reads the first ``dim`` input features only and adds to ``proj_out``'s
output, which is exactly a low-rank update of W_o's columns of that matrix. SD3.5's image-only
``attn2`` gets ``to_v`` + ``to_out.0``. q and k (``to_q``, ``to_k``, ``add_q_proj``, ``add_k_proj``)
get nothing. A transformer adapter records its family in the config (``backbone``) and refuses
another backbone with one line. UniPano's SD3 code (its ``UniPano_SD3`` folder) is not public in a form
that could be read here and no SD3 checkpoint is released, so no SD3 reference layout is recognised.

Saved form: a pano360 adapter folder (``adapter_config.json`` with the layer list and sizes, weights
in ``adapter_model.safetensors``), or a checkpoint of the UniPano code (Lightning ``.ckpt``, keys
``mv_base_model.unet.<attention path>.to_v.lora_layer.{down,up}.weight`` and
``mv_base_model.unet.<attention path>.to_out.0.lora_layer.{experts.<i>.{down,up}, gate,
shared_experts.{down,up}}.weight``), read by :meth:`UniPanoAdapter.from_reference_checkpoint`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import ClassVar

import torch
from torch import nn

from ..errors import ModelLoadError
from .base import PanoramaAdapter
from .flags import UniPanoFlags
from .moe import BALANCE_WEIGHT, Z_LOSS_WEIGHT, LowRankUpdate, MixtureOfLoRAExperts

_ATTENTION_NAMES = ("attn1", "attn2")
# The UNet's attribute inside the reference LightningModule; the layout says ``unet``, the
# single-branch MultiViewBaseModel of the UniPano code keeps it as ``pano_unet``: both are read.
REFERENCE_PREFIXES = ("mv_base_model.unet.", "mv_base_model.pano_unet.")
_REFERENCE_KEY = re.compile(
    r"^mv_base_model\.(?:pano_)?unet\.(?P<path>.+?)\.(?P<projection>to_v|to_out\.0)\.lora_layer\.(?P<param>.+)$")


def _module_key(path: str) -> str:
    """ModuleDict key for a UNet attention path (module names cannot contain dots)."""
    return path.replace(".", "__")


def _linear_sizes(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a linear layer (plain, or wrapped by peft)."""
    if hasattr(layer, "in_features") and hasattr(layer, "out_features"):
        return int(layer.in_features), int(layer.out_features)
    out_features, in_features = layer.weight.shape
    return int(in_features), int(out_features)


def _sites(denoiser: nn.Module) -> dict:
    """The denoiser's attention sites (:meth:`~pano360.backbones.family.BackboneFamily.attention_sites`)
    by path; an unknown transformer class has none."""
    from ..backbones.family import family_of_denoiser

    try:
        family = family_of_denoiser(denoiser)
    except ValueError:
        return {}
    return {site.path: site for site in family.attention_sites(denoiser)}


def backbone_name(denoiser: nn.Module) -> str:
    """``"unet"`` for a UNet, else the transformer's family (``flux``, ``sd3``, ...)."""
    from ..backbones.families import TRANSFORMER_CLASSES

    return TRANSFORMER_CLASSES.get(type(denoiser).__name__, "unet" if hasattr(denoiser, "down_blocks") else
                                   type(denoiser).__name__)


def attention_layers(unet: nn.Module) -> dict[str, list[int]]:
    """The denoiser's attention layers: path → [v_in, v_out, o_in, o_out] (+ [tv_in, tv_out] for a joint
    attention's text-stream value projection), feature sizes, in module order.

    Found through the backbone contract's attention sites: the UNets' ``attn1`` / ``attn2``, FLUX's
    double- and single-stream attention, SD3's joint attention. ``o_in`` is the attention's share of the
    output Linear's input (FLUX single-stream ``proj_out``: its first ``dim`` columns).
    """
    layers = {}
    for path, site in _sites(unet).items():
        v_in, v_out = _linear_sizes(unet.get_submodule(site.projections["v"]))
        o_in, o_out = _linear_sizes(unet.get_submodule(site.projections["o"]))
        sizes = [v_in, v_out, site.output_inputs or o_in, o_out]
        if "v" in site.text_projections:
            sizes += list(_linear_sizes(unet.get_submodule(site.text_projections["v"])))
        layers[path] = sizes
    return layers


class UniPanoAttention(nn.Module):
    """The two updates of one attention layer: ``to_v`` (LoRA) and ``to_out`` (mixture of experts)."""

    def __init__(self, sizes: Iterable[int], rank: int, num_experts: int, top_k: int,
                 balance_weight: float, z_loss_weight: float):
        super().__init__()
        sizes = [int(s) for s in sizes]
        v_in, v_out, o_in, o_out = sizes[:4]
        self.to_v = LowRankUpdate(v_in, v_out, rank)
        self.to_out = MixtureOfLoRAExperts(o_in, o_out, rank, num_experts, top_k, balance_weight, z_loss_weight)
        if len(sizes) == 6:  # a joint attention's text-stream values (MMDiT add_v_proj)
            self.text_v = LowRankUpdate(sizes[4], sizes[5], rank)


def _add_update(update: nn.Module, inputs: int | None = None):
    """Forward hook: output += update(input), or update(input[..., :inputs]) when only the first
    ``inputs`` features of the layer's input are the attention's (FLUX single-stream ``proj_out``)."""
    if inputs is None:
        def hook(module, args, output):
            return output + update(args[0])
    else:
        def hook(module, args, output):
            return output + update(args[0][..., :inputs])
    return hook


class UniPanoAdapter(UniPanoFlags, PanoramaAdapter):
    """LoRA on W_v plus a mixture of LoRA experts on W_o in every attention layer (``--adapter unipano``).

    Args:
        layers: attention path → [v_in, v_out, o_in, o_out]; :meth:`for_unet` reads it from a UNet.
        rank: r of the value LoRA and of every expert (reference default 4).
        num_experts: N routed experts per W_o (4); top_k: experts per token (2).
        balance_weight, z_loss_weight: auxiliary loss weights (0.01, 0.001).

    State-dict keys: ``layers.<path with '.'→'__'>.to_v.{down,up}.weight`` and
    ``layers.<...>.to_out.{experts.<i>.{down,up}, gate, shared_experts.{down,up}}.weight``.
    """

    kind: ClassVar[str] = "unipano"
    method: ClassVar[str | None] = None
    def __init__(self, layers: Mapping[str, Iterable[int]], rank: int = 4, num_experts: int = 4, top_k: int = 2,
                 balance_weight: float = BALANCE_WEIGHT, z_loss_weight: float = Z_LOSS_WEIGHT,
                 backbone: str | None = None):
        layers = {str(path): [int(s) for s in sizes] for path, sizes in layers.items()}
        config = {"layers": layers, "rank": int(rank), "num_experts": int(num_experts), "top_k": int(top_k),
                  "balance_weight": float(balance_weight), "z_loss_weight": float(z_loss_weight)}
        if backbone not in (None, "unet"):  # UNet adapters keep the original config (and files)
            config["backbone"] = str(backbone)
        super().__init__(**config)
        if not layers:
            raise ModelLoadError("a UniPano adapter needs at least one attention layer")
        if any(len(sizes) not in (4, 6) for sizes in layers.values()):
            raise ModelLoadError("a UniPano adapter layer has 4 sizes (v_in, v_out, o_in, o_out) or 6 (+ text values)")
        self.layers = nn.ModuleDict({
            _module_key(path): UniPanoAttention(sizes, rank, num_experts, top_k, balance_weight, z_loss_weight)
            for path, sizes in layers.items()
        })
        self._attached: dict[int, list] = {}  # id(unet) -> hook handles

    @classmethod
    def for_unet(cls, unet: nn.Module, rank: int = 4, num_experts: int = 4, top_k: int = 2,
                 balance_weight: float = BALANCE_WEIGHT, z_loss_weight: float = Z_LOSS_WEIGHT) -> UniPanoAdapter:
        """A freshly initialised adapter for every attention layer of ``unet`` (on the UNet's device)."""
        layers = attention_layers(unet)
        if not layers:
            raise ModelLoadError(f"{type(unet).__name__} has no attention layers pano360 knows how to adapt "
                                 "(UNet attn1/attn2, FLUX.1 and SD3 attention)")
        adapter = cls(layers, rank=rank, num_experts=num_experts, top_k=top_k,
                      balance_weight=balance_weight, z_loss_weight=z_loss_weight, backbone=backbone_name(unet))
        device = next(unet.parameters()).device
        return adapter.to(device)

    @classmethod
    def fresh(cls, denoiser: nn.Module, **options) -> UniPanoAdapter:
        """:meth:`for_unet` under a name that fits transformers too (a UNet, FLUX.1 or SD3 denoiser)."""
        return cls.for_unet(denoiser, **options)

    # --- training (pano360 train --adapter unipano) ------------------------------------------------
    @classmethod
    def check_training_options(cls, options: dict) -> None:
        from ..errors import InvalidInputError

        rank, experts = int(options.get("rank", 4)), int(options.get("unipano_experts", 4))
        top_k = int(options.get("unipano_top_k", 2))
        if rank < 1:
            raise InvalidInputError(f"--rank must be at least 1, got {rank}")
        if experts < 1:
            raise InvalidInputError(f"--unipano-experts must be at least 1, got {experts}")
        if not 1 <= top_k <= experts:
            raise InvalidInputError(f"--unipano-top-k must be between 1 and --unipano-experts ({experts}), got {top_k}")

    @classmethod
    def for_training(cls, unet: nn.Module, options: dict, seed: int) -> UniPanoAdapter:
        """The trainer's door: ``--rank``, ``--unipano-experts``, ``--unipano-top-k``; ``seed`` fixes the
        random initialisation (down projections and gates)."""
        cls.check_training_options(options)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls.for_unet(unet, rank=int(options.get("rank", 4)),
                                num_experts=int(options.get("unipano_experts", 4)),
                                top_k=int(options.get("unipano_top_k", 2)))

    # --- wiring -------------------------------------------------------------------------------
    @property
    def paths(self) -> list[str]:
        return list(self.config["layers"])

    @property
    def backbone(self) -> str:
        """What the adapter was made for: ``unet`` or a transformer family (``flux``, ``sd3``)."""
        return self.config.get("backbone", "unet")

    def check_backbone(self, unet: nn.Module) -> None:
        model = backbone_name(unet)
        if model != self.backbone:
            def describe(name):
                return "a UNet (SD 1/2/SDXL)" if name == "unet" else f"a {name} transformer"
            raise ModelLoadError(f"this UniPano adapter was made for {describe(self.backbone)}, but the model is "
                                 f"{describe(model)}; load it with the base model it was trained on")
        have = attention_layers(unet)
        want = self.config["layers"]
        missing = [p for p in want if p not in have]
        uncovered = [p for p in have if p not in want]
        wrong = [p for p in want if p in have and list(have[p]) != list(want[p])]
        if missing or uncovered or wrong:
            what = "UNet" if self.backbone == "unet" else f"{self.backbone} transformer"
            parts = []
            for label, paths in ((f"not in this {what}", missing), (f"of the {what} not covered", uncovered),
                                 ("with other sizes", wrong)):
                if paths:
                    parts.append(f"{len(paths)} attention layer(s) {label}, such as {', '.join(paths[:2])}")
            raise ModelLoadError(f"this UniPano adapter was made for another {what} (" + "; ".join(parts)
                                 + "); load it with the base model it was trained on")

    def attach(self, unet: nn.Module) -> nn.Module:
        if id(unet) in self._attached:
            return unet
        self.check_backbone(unet)
        device = next(unet.parameters()).device
        if next(self.parameters()).device != device:
            self.to(device)
        handles = []
        sites = _sites(unet)
        for path in self.paths:
            site = sites[path]
            block = self.layers[_module_key(path)]
            value, output = unet.get_submodule(site.projections["v"]), unet.get_submodule(site.projections["o"])
            handles.append(value.register_forward_hook(_add_update(block.to_v)))
            inputs = site.output_inputs if site.output_inputs != _linear_sizes(output)[0] else None
            handles.append(output.register_forward_hook(_add_update(block.to_out, inputs)))
            if hasattr(block, "text_v"):
                text_value = unet.get_submodule(site.text_projections["v"])
                handles.append(text_value.register_forward_hook(_add_update(block.text_v)))
        self._attached[id(unet)] = handles
        return unet

    def detach(self, unet: nn.Module) -> None:
        for handle in self._attached.pop(id(unet), []):
            handle.remove()
        self.auxiliary_loss()  # drop what a last forward pass left

    def is_attached(self, unet: nn.Module) -> bool:
        return id(unet) in self._attached

    # --- training -------------------------------------------------------------------------------
    def mixtures(self) -> list[MixtureOfLoRAExperts]:
        return [block.to_out for block in self.layers.values()]

    def auxiliary_loss(self) -> torch.Tensor | None:
        """Σ over layers of the balance + z-losses of the forward passes since the last call."""
        terms = [t for t in (m.pop_auxiliary_loss() for m in self.mixtures()) if t is not None]
        if not terms:
            return None
        return torch.stack([t.float() for t in terms]).sum()

    # --- reference checkpoints -------------------------------------------------------------------
    @classmethod
    def matches_reference_keys(cls, keys: Iterable[str]) -> bool:
        """True for a UniPano-code checkpoint: some ``...to_out.0.lora_layer.gate.weight`` under the UNet."""
        return any(k.startswith(REFERENCE_PREFIXES) and k.endswith(".to_out.0.lora_layer.gate.weight") for k in keys)

    @staticmethod
    def reference_name(key: str, prefix: str = REFERENCE_PREFIXES[0]) -> str:
        """This adapter's state-dict key → the UniPano code's key (``layers.a__b.to_out.gate.weight`` →
        ``mv_base_model.unet.a.b.to_out.0.lora_layer.gate.weight``)."""
        _, module_key, projection, param = key.split(".", 3)
        projection = {"to_v": "to_v", "to_out": "to_out.0"}[projection]
        return f"{prefix}{module_key.replace('__', '.')}.{projection}.lora_layer.{param}"

    @classmethod
    def from_reference_checkpoint(cls, path_or_state: str | os.PathLike | Mapping[str, torch.Tensor]) -> UniPanoAdapter:
        """Build the adapter from a UniPano-code checkpoint (a Lightning ``.ckpt`` path, read with
        ``weights_only=True``, or its ``state_dict`` mapping).

        Keys outside the adapter (the frozen UNet, VAE and text encoder the Lightning module also
        saves) are ignored; any other ``lora_layer`` key, or an incomplete layer, fails with a one-line
        error naming the missing/unexpected keys.
        """
        source = "reference state dict"
        if isinstance(path_or_state, (str, os.PathLike)):
            source = str(path_or_state)
            try:  # memory-mapped: the frozen UNet/VAE/text encoder saved beside the adapter are never read
                state = torch.load(path_or_state, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # a legacy (non-zip) file cannot be memory-mapped
                try:
                    state = torch.load(path_or_state, map_location="cpu", weights_only=True)
                except Exception as error:
                    raise ModelLoadError(f"could not read {source} ({type(error).__name__}: {error})") from error
            except Exception as error:
                raise ModelLoadError(f"could not read {source} ({type(error).__name__}: {error})") from error
        else:
            state = path_or_state
        if isinstance(state, Mapping) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ModelLoadError(f"{source} holds no state dict")

        groups: dict[str, dict[str, torch.Tensor]] = {}  # path -> {"to_v.down.weight": ...}
        unexpected, prefixes = [], set()
        for key, value in state.items():
            if ".lora_layer." not in key:
                continue  # base UNet / VAE / text encoder weights saved beside the adapter
            match = _REFERENCE_KEY.match(key)
            if match is None:
                unexpected.append(key)
                continue
            prefixes.add(key[:key.index(match["path"])])
            projection = "to_v" if match["projection"] == "to_v" else "to_out"
            groups.setdefault(match["path"], {})[f"{projection}.{match['param']}"] = value
        if not groups:
            raise ModelLoadError(f"{source} has no UniPano adapter keys (…to_v.lora_layer…, …to_out.0.lora_layer…)"
                                 + (f"; unexpected key(s) such as {', '.join(unexpected[:3])}" if unexpected else ""))
        if len(prefixes) > 1:
            raise ModelLoadError(f"{source} holds adapters for more than one UNet ({', '.join(sorted(prefixes))})")
        prefix = prefixes.pop()

        def size(path, name, axis):
            tensor = groups[path].get(name)
            return None if tensor is None else int(tensor.shape[axis])

        layers, ranks, experts = {}, set(), set()
        for path, params in groups.items():
            sizes = [size(path, "to_v.down.weight", 1), size(path, "to_v.up.weight", 0),
                     size(path, "to_out.experts.0.down.weight", 1), size(path, "to_out.experts.0.up.weight", 0)]
            if None in sizes:  # leave the exact names to the key comparison below
                sizes = [s or 1 for s in sizes]
            layers[path] = sizes
            ranks.add(size(path, "to_v.down.weight", 0))
            experts.add(1 + max((int(m[1]) for k in params if (m := re.match(r"to_out\.experts\.(\d+)\.", k))),
                                default=-1))
        ranks.discard(None)
        experts.discard(0)  # a layer without experts is reported as missing keys below
        if len(ranks) != 1 or len(experts) != 1:
            raise ModelLoadError(f"{source}: layers disagree on the rank ({sorted(ranks)}) or the number of experts "
                                 f"({sorted(experts)}); expected one UniPano adapter")
        adapter = cls(layers, rank=ranks.pop(), num_experts=experts.pop())

        expected = {cls.reference_name(k, prefix): k for k in adapter.state_dict()}
        given = {k for k in state if ".lora_layer." in k and _REFERENCE_KEY.match(k)}
        missing = sorted(set(expected) - given)
        unexpected = sorted(unexpected + sorted(given - set(expected)))
        wrong = sorted(k for k in set(expected) & given
                       if tuple(state[k].shape) != tuple(adapter.state_dict()[expected[k]].shape))
        if missing or unexpected or wrong:
            parts = [f"{len(keys)} {label} key(s) such as {', '.join(keys[:3])}"
                     for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                     if keys]
            raise ModelLoadError(f"{source} is not a complete UniPano adapter: {'; '.join(parts)}")
        own = adapter.state_dict()
        adapter.load_state_dict({ours: state[ref].to(own[ours].dtype).clone() for ref, ours in expected.items()},
                                strict=True)
        return adapter
