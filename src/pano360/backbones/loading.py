"""Loading backbones (SD 1.x / 2.x / SDXL UNets; FLUX.1, SD3.x, Qwen-Image transformers) and ControlNets
from the Hub, a folder or a single file.

Sources, tried in this order:

* ``tiny``, ``tiny-sd2``, ``tiny-sdxl``, ``tiny-flux``, ``tiny-flux-schnell``, ``tiny-flux-fill``,
  ``tiny-sd3``, ``tiny-qwen``, ``tiny-flux2``: built-in random models (offline; see :mod:`.tiny`, :mod:`.tiny_dit`);
* an existing file (``.safetensors``, ``.ckpt``, ``.pt``, ``.bin``, ``.gguf``): an original-layout
  single-file checkpoint (A1111/ComfyUI style), or a transformer-only file of a DiT (BFL/SAI/GGUF
  layouts), combined with its family's base repository (``config``, default
  :data:`pano360.defaults.DIT_BASE_MODELS`). Pickles are only ever read with ``weights_only=True``;
* an existing folder in diffusers layout (``model_index.json``);
* otherwise a Hugging Face Hub repo id (``owner/name``), downloaded into the HF cache on first use.

The family is read from the files (``model_index.json``'s pipeline class, the transformer's config
class, a single file's key names), never guessed from the name. ``transformer=`` replaces a DiT's
transformer (a fine-tune repo, folder or file, e.g. a 360 fine-tune) like ``--unet`` does for UNets;
``quantize=`` stores it in fewer bits (:mod:`.quantize`: ``fp8`` layerwise casting, ``nf4`` bitsandbytes
4-bit with double quantization, on CPU or CUDA; ``.gguf`` files load through diffusers' GGUF support).

Remote code is never enabled. Failures raise :class:`~pano360.errors.ModelLoadError` with a message
that names the model and says how to provide it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..defaults import (
    DEFAULT_MODEL,  # defined torch-free for the CLI
    DIT_BASE_MODELS,
)
from ..errors import InvalidInputError, ModelLoadError
from .families import (
    DIT_FAMILIES,
    PIPELINE_CLASSES,
    TRANSFORMER_CLASSES,
    FamilyInfo,
    family_of_checkpoint_keys,
    family_of_model_index,
    family_of_transformer_keys,
    family_of_unet_config,
)
from .quantize import QUANTIZATIONS, check_quantize, materialise, quantize_module, unet_model_error  # noqa: F401  (QUANTIZATIONS: re-exported)
from .tiny import TINY_MODEL_NAMES

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# Depth ControlNets used when a depth image is given without --controlnet.
DEFAULT_DEPTH_CONTROLNETS = {
    "sd1": "lllyasviel/control_v11f1p_sd15_depth",
    "sd2": "thibaud/controlnet-sd21-depth-diffusers",
    "sdxl": "diffusers/controlnet-depth-sdxl-1.0-mid",
}


@dataclass
class ModelSource:
    """Where a model came from, recorded in every sidecar so that a run can be reproduced."""

    name: str  # what the user passed
    kind: str  # "tiny" | "single_file" | "folder" | "hub"
    path: str | None = None  # resolved local path
    revision: str | None = None  # Hub commit hash when known
    sha256: str | None = None  # single files: the file's SHA-256; folders: io.sidecar.directory_fingerprint

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Backbone:
    """A loaded pipeline's components plus what the loop needs to know about them.

    ``contract`` is the family's :class:`~pano360.backbones.family.BackboneFamily`; ``denoiser`` the UNet
    or transformer; ``vae`` the image VAE (Qwen-Image's video VAE behind :class:`FrameVAE`).
    """

    pipe: object  # a diffusers SD / SDXL / FLUX / SD3 / Qwen-Image pipeline
    info: FamilyInfo
    source: ModelSource
    controlnet: object | None = None
    controlnet_source: ModelSource | None = None
    loras: list[dict] = field(default_factory=list)
    embeddings: list[dict] = field(default_factory=list)
    denoiser_source: ModelSource | None = None
    _image_vae: object | None = field(default=None, repr=False)

    @property
    def contract(self):
        from .family import get_family

        return get_family(self.info.family)

    @property
    def denoiser(self):
        return self.contract.denoiser(self.pipe)

    @property
    def vae(self):
        vae, cached = self.pipe.vae, self._image_vae
        if cached is None or (cached is not vae and getattr(cached, "inner", None) is not vae):
            self._image_vae = self.contract.image_vae(self.pipe)
        return self._image_vae


def classify_model_argument(model: str) -> str:
    """``"tiny"``, ``"single_file"``, ``"folder"`` or ``"hub"``; raises if a path does not exist.

    Cheap (no model is read), so the CLI can check its arguments before loading anything.
    """
    if model in TINY_MODEL_NAMES:
        return "tiny"
    path = Path(os.path.expanduser(model))
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise InvalidInputError(
                f"model file {model!r} is not a checkpoint; give a .safetensors or .ckpt file, "
                "a diffusers folder or a Hub id"
            )
        return "single_file"
    if path.is_dir():
        if not (path / "model_index.json").is_file() and not (path / "config.json").is_file():
            raise InvalidInputError(
                f"folder {model!r} is not a diffusers model (no model_index.json); "
                "give a diffusers folder, a .safetensors/.ckpt file or a Hub id"
            )
        return "folder"
    looks_like_path = (
        model.startswith((".", "/", "~")) or path.suffix.lower() in SINGLE_FILE_SUFFIXES or model.count("/") > 1
        or "\\" in model
    )
    if looks_like_path or not HUB_ID.match(model):
        raise InvalidInputError(
            f"model {model!r} not found: no such file or folder, and it is not a Hub id like "
            f"'{DEFAULT_MODEL}'; check the path (or use --model tiny for the built-in test model)"
        )
    return "hub"


def _hub_error(model: str, error: Exception, what: str = "model") -> ModelLoadError:
    """Turn a huggingface_hub / OS error into a message that says what to do."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    if isinstance(error, GatedRepoError):
        text = (
            f"{what} {model!r} is gated: accept its licence on https://huggingface.co/{model} and log in "
            "with 'hf auth login' (or set HF_TOKEN)"
        )
    elif isinstance(error, RepositoryNotFoundError):
        text = (
            f"{what} {model!r} was not found on the Hugging Face Hub (or is private): check the id, log in "
            "with 'hf auth login' for private repos, or give a local folder or .safetensors file"
        )
    elif isinstance(error, LocalEntryNotFoundError) or "offline" in str(error).lower():
        text = (
            f"{what} {model!r} is not in the local cache ({constants.HF_HUB_CACHE}) and the Hub cannot be "
            "reached: download it once with internet access, point HF_HOME/--cache-dir at a cache that "
            "has it, or give a local folder or .safetensors file"
        )
    else:
        text = f"could not load {what} {model!r}: {error}"
    return ModelLoadError(text.replace("\n", " "))


def _hub_commit(repo_id: str, cache_dir: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "model_index.json", cache_dir=cache_dir)
    if isinstance(cached, str) and "/snapshots/" in cached:
        return cached.split("/snapshots/")[1].split("/")[0]
    return None


def _pipeline_class(family_or_class_name: str):
    """The diffusers pipeline class for a model_index class name or an SD family name."""
    import diffusers
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if family_or_class_name in PIPELINE_CLASSES:
        return getattr(diffusers, family_or_class_name)
    return StableDiffusionXLPipeline if family_or_class_name in ("sdxl", "StableDiffusionXLPipeline") \
        or "XL" in family_or_class_name else StableDiffusionPipeline


def _no_safety_checker(pipeline_class) -> dict:
    """Loading kwargs that skip the SD 1.x/2.x safety checker (SDXL and DiT pipelines have none)."""
    if "XL" in pipeline_class.__name__ or pipeline_class.__name__ in PIPELINE_CLASSES:
        return {}
    return {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}


def _check_supported_class(class_name: str, model: str) -> None:
    if class_name in PIPELINE_CLASSES:
        return
    unsupported = ("StableDiffusion3", "Upscale", "Cascade", "Inpaint", "Refiner")
    if not class_name.startswith("StableDiffusion") or any(tag in class_name for tag in unsupported):
        raise ModelLoadError(
            f"model {model!r} is a {class_name}; pano360 runs SD 1.x, SD 2.x, SDXL, FLUX.1, SD3.x and "
            "Qwen-Image text-to-image checkpoints: choose one of those"
        )


def read_checkpoint_keys(path: str | os.PathLike) -> list[str]:
    """Key names of a single-file checkpoint without loading its tensors (pickles: weights_only)."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            return list(handle.keys())
    state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return list(state.keys())


def load_backbone(
    model: str,
    *,
    torch_dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    config: str | None = None,
    variant: str | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    prediction_type: str | None = None,
    hash_single_files: bool = True,
    transformer: str | None = None,
    quantize: str = "none",
    unet: str | None = None,
) -> Backbone:
    """Load a pipeline of any supported family; see the module docstring for the accepted forms.

    ``config`` (single files only): a diffusers folder or Hub id whose component configs to use,
    needed offline because a single file carries no configs (for a DiT transformer-only file: the base
    repository to take the text encoders and VAE from). ``prediction_type`` overrides the scheduler's
    (e.g. ``"v_prediction"`` for SD 2.x 768-v single files). ``transformer`` and ``quantize``: see the
    module docstring.
    """
    kind = classify_model_argument(model)
    check_quantize(quantize)
    source = ModelSource(name=model, kind=kind)
    dit_family = None
    if kind == "tiny":
        if TINY_MODEL_NAMES[model] in DIT_FAMILIES:
            from .tiny_dit import tiny_dit_pipeline

            pipe = tiny_dit_pipeline(model)
        else:
            from .tiny import tiny_pipeline

            pipe = tiny_pipeline(TINY_MODEL_NAMES[model])
        if torch_dtype != torch.float32:
            pipe.to(dtype=torch_dtype)
    elif kind == "single_file" and (dit_family := _single_file_dit_family(model)) is not None:
        base = config or DIT_BASE_MODELS[dit_family]
        module = load_transformer(model, dit_family, torch_dtype, cache_dir, local_files_only, token, quantize)
        pipe = _load_pretrained(base, torch_dtype, variant, cache_dir, local_files_only or Path(base).is_dir(), token,
                                transformer=module)
        source.path = str(Path(model).expanduser().resolve())
        if hash_single_files:
            from ..io.sidecar import file_sha256

            source.sha256 = file_sha256(source.path)
    elif kind == "single_file":
        pipe = _load_single_file(model, torch_dtype, config, cache_dir, local_files_only, token)
        source.path = str(Path(model).expanduser().resolve())
        if hash_single_files:
            from ..io.sidecar import file_sha256

            source.sha256 = file_sha256(source.path)
    elif kind == "folder":
        pipe = _load_pretrained(model, torch_dtype, variant, cache_dir, local_files_only=True, token=token)
        source.path = str(Path(model).expanduser().resolve())
        if hash_single_files:  # same switch: hashing reads every byte once
            from ..io.sidecar import directory_fingerprint

            source.sha256 = directory_fingerprint(source.path)["sha256"]
    else:
        pipe = _load_pretrained(model, torch_dtype, variant, cache_dir, local_files_only, token)
        source.revision = _hub_commit(model, cache_dir)

    denoiser_source = None
    if getattr(pipe, "transformer", None) is not None:
        if transformer is not None:
            family = family_of_model_index({"_class_name": type(pipe).__name__})
            pipe.transformer = load_transformer(transformer, family, torch_dtype, cache_dir, local_files_only, token,
                                                quantize)
            denoiser_source = ModelSource(name=transformer, kind=classify_model_argument(transformer))
        elif quantize != "none" and dit_family is None:
            pipe.transformer = quantize_module(pipe.transformer, quantize, torch_dtype)
        pipe.default_sample_size = _dit_sample_size(pipe, kind)
    elif transformer is not None:
        raise InvalidInputError(f"--transformer replaces a FLUX/SD3/Qwen-Image transformer; {model!r} is a UNet model "
                                "(use --unet for UNet fine-tunes)")
    elif quantize != "none":
        raise unet_model_error(model)
    if unet is not None:
        if getattr(pipe, "unet", None) is None:
            raise InvalidInputError(f"--unet replaces an SD/SDXL UNet; {model!r} is a transformer model (use "
                                    "--transformer)")
        pipe.unet = load_unet(unet, torch_dtype, cache_dir, local_files_only, token)
        denoiser_source = ModelSource(name=unet, kind=classify_model_argument(unet))
    if getattr(pipe, "unet", None) is not None and (
            pipe.unet.config.in_channels != 4 or getattr(pipe, "text_encoder", None) is None):
        raise ModelLoadError(
            f"model {model!r} is not a text-to-image SD model (an inpainting, depth-to-image or refiner "
            "checkpoint?); use a base SD 1.x/2.x/SDXL checkpoint"
        )
    if prediction_type is not None:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=prediction_type)
    pipe.to(device=device)
    if getattr(pipe, "transformer", None) is not None:
        materialise(pipe.transformer, device)  # NF4 codes are computed here, on the target device
    pipe.set_progress_bar_config(disable=True)
    return Backbone(pipe=pipe, info=family_info(pipe), source=source, denoiser_source=denoiser_source)


def _dit_sample_size(pipe, kind: str) -> int:
    """Latent size of a DiT's native square: FLUX/Qwen pipelines fix it at 128 (1024 px); the tiny
    models and SD3 say it in their transformer's config (``sample_size``)."""
    from ..defaults import TINY_NATIVE_SIZE

    if kind == "tiny":
        return TINY_NATIVE_SIZE // int(getattr(pipe, "vae_scale_factor", 8))
    return int(pipe.transformer.config.get("sample_size", None) or getattr(pipe, "default_sample_size", 128))


def _single_file_dit_family(model: str) -> str | None:
    """The DiT family of a single file (None for SD/SDXL files); GGUF files are read by their tensor names."""
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf":
        try:
            import gguf
        except ImportError as error:
            raise ModelLoadError("reading a .gguf checkpoint needs the gguf package: pip install gguf") from error
        keys = [tensor.name for tensor in gguf.GGUFReader(str(path)).tensors]
    else:
        try:
            keys = read_checkpoint_keys(path)
        except Exception:  # noqa: BLE001 (unreadable: the SD single-file path says why)
            return None
    if family_of_checkpoint_keys(keys) in ("sd1", "sd2", "sdxl") and not any(
            k.split("model.diffusion_model.", 1)[-1].startswith(("double_blocks.", "joint_blocks.", "transformer_blocks."))
            for k in keys):
        return None
    family = family_of_transformer_keys(keys)
    if family is None and path.suffix.lower() == ".gguf":
        raise ModelLoadError(f"{model!r} is a GGUF file but not a FLUX/SD3/Qwen-Image transformer")
    return family


TRANSFORMER_CLASS_OF = {family: name for name, family in TRANSFORMER_CLASSES.items()}


def load_transformer(source: str, family: str, torch_dtype, cache_dir=None, local_files_only=False, token=None,
                     quantize: str = "none"):
    """A DiT transformer from a Hub repo (its ``transformer`` subfolder, or a transformer-only repo), a
    folder, a ``.safetensors`` file (BFL/SAI/diffusers layout) or a ``.gguf`` file."""
    import diffusers

    model_class = getattr(diffusers, TRANSFORMER_CLASS_OF[family])
    kind = classify_model_argument(source)
    path = os.path.expanduser(source)
    extra = {}
    try:
        if kind == "single_file":
            if path.lower().endswith(".gguf"):
                from diffusers import GGUFQuantizationConfig

                extra["quantization_config"] = GGUFQuantizationConfig(compute_dtype=torch_dtype)
            module = model_class.from_single_file(path, torch_dtype=torch_dtype, cache_dir=cache_dir,
                                                  local_files_only=local_files_only, token=token, **extra)
        else:
            has_subfolder = (Path(path) / "transformer" / "config.json").is_file() if kind == "folder" else None
            if kind == "hub":
                from huggingface_hub import file_exists

                has_subfolder = not local_files_only and file_exists(source, "transformer/config.json", token=token)
            module = model_class.from_pretrained(path, subfolder="transformer" if has_subfolder else None,
                                                 torch_dtype=torch_dtype, cache_dir=cache_dir, token=token,
                                                 local_files_only=local_files_only or kind == "folder", **extra)
    except ImportError as error:
        raise ModelLoadError(f"loading transformer {source!r} needs a package: {error}".replace("\n", " ")) from error
    except OSError as error:
        raise _hub_error(source, error, what="transformer") from error
    except (ValueError, KeyError, RuntimeError) as error:
        raise ModelLoadError(f"could not load transformer {source!r} as a {family} transformer: {error}"
                             .replace("\n", " ")) from error
    if path.lower().endswith(".gguf"):
        return module  # quantized already
    return quantize_module(module, quantize, torch_dtype)


def load_unet(source: str, torch_dtype, cache_dir=None, local_files_only=False, token=None):
    """A fine-tuned UNet (e.g. ProGamerGov/sdxl-360-diffusion) from a Hub repo or folder with a ``unet``
    folder, a UNet folder (``config.json``) or a UNet single file, to put into a base SD/SDXL pipeline."""
    from diffusers import UNet2DConditionModel

    kind = classify_model_argument(source)
    path = os.path.expanduser(source)
    try:
        if kind == "single_file":
            return UNet2DConditionModel.from_single_file(path, torch_dtype=torch_dtype, cache_dir=cache_dir,
                                                         local_files_only=local_files_only, token=token)
        if kind == "folder":
            subfolder = "unet" if (Path(path) / "unet" / "config.json").is_file() else None
        else:
            from huggingface_hub import file_exists

            subfolder = "unet" if local_files_only or file_exists(source, "unet/config.json", token=token) else None
        return UNet2DConditionModel.from_pretrained(path, subfolder=subfolder, torch_dtype=torch_dtype,
                                                    cache_dir=cache_dir, token=token,
                                                    local_files_only=local_files_only or kind == "folder")
    except OSError as error:
        raise _hub_error(source, error, what="UNet") from error
    except (ValueError, KeyError, RuntimeError) as error:
        raise ModelLoadError(f"could not load UNet {source!r}: {error}".replace("\n", " ")) from error


def family_info(pipe) -> FamilyInfo:
    """The facts of a loaded pipeline, from its family's contract."""
    from .family import family_of

    return family_of(pipe).facts(pipe)


def _load_pretrained(model, torch_dtype, variant, cache_dir, local_files_only, token, **components):
    from huggingface_hub import hf_hub_download

    if Path(model).expanduser().is_dir():
        index_path = Path(model).expanduser() / "model_index.json"
    else:
        try:
            index_path = hf_hub_download(
                model, "model_index.json", cache_dir=cache_dir, local_files_only=local_files_only, token=token
            )
        except Exception as error:  # hub errors, offline, network
            raise _hub_error(model, error) from error
    class_name = json.loads(Path(index_path).read_text()).get("_class_name", "StableDiffusionPipeline")
    _check_supported_class(class_name, model)
    pipeline_class = _pipeline_class(class_name)
    extra = _no_safety_checker(pipeline_class)
    try:
        return pipeline_class.from_pretrained(
            os.path.expanduser(model),
            torch_dtype=torch_dtype,
            variant=variant,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            use_safetensors=None,
            **extra,
            **components,
        )
    except ValueError as error:
        if variant and "variant" in str(error):
            raise ModelLoadError(
                f"model {model!r} has no {variant!r} variant of its weights; drop --variant"
            ) from error
        raise ModelLoadError(f"could not load model {model!r}: {error}") from error
    except OSError as error:
        raise _hub_error(model, error) from error


def _load_single_file(model, torch_dtype, config, cache_dir, local_files_only, token):
    path = Path(model).expanduser()
    try:
        keys = read_checkpoint_keys(path)
    except Exception as error:
        raise ModelLoadError(
            f"could not read checkpoint {model!r} ({error.__class__.__name__}): it is not a valid "
            ".safetensors file or a weights-only torch checkpoint; pickles with code are refused"
        ) from error
    family = family_of_checkpoint_keys(keys)
    if family is None:
        raise ModelLoadError(
            f"{model!r} is not a Stable Diffusion checkpoint (no UNet keys in the original layout); "
            "give an SD 1.x/2.x/SDXL .safetensors/.ckpt, or a diffusers folder"
        )
    pipeline_class = _pipeline_class(family)
    extra = _no_safety_checker(pipeline_class)
    try:
        return pipeline_class.from_single_file(
            str(path),
            torch_dtype=torch_dtype,
            config=config,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            **extra,
        )
    except Exception as error:
        hint = (
            "; offline, pass --config with a diffusers folder (or cached Hub id) of the same family "
            "to take the component configs from"
            if config is None
            else ""
        )
        raise ModelLoadError(f"could not load single-file checkpoint {model!r}: {error}{hint}".replace("\n", " ")) from error


# --- ControlNet -------------------------------------------------------------------------------

def classify_controlnet_argument(controlnet: str) -> str:
    """Like :func:`classify_model_argument` for ControlNets (``tiny`` builds one for the backbone)."""
    if controlnet == "tiny":
        return "tiny"
    path = Path(os.path.expanduser(controlnet))
    if path.is_file():
        return "single_file"
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidInputError(f"ControlNet folder {controlnet!r} has no config.json; give a diffusers ControlNet")
        return "folder"
    if controlnet.startswith((".", "/", "~")) or path.suffix or not HUB_ID.match(controlnet):
        raise InvalidInputError(
            f"ControlNet {controlnet!r} not found: no such file or folder and not a Hub id like "
            "'diffusers/controlnet-depth-sdxl-1.0-mid'; check the path"
        )
    return "hub"


def load_controlnet(backbone: Backbone, controlnet: str, *, cache_dir=None, local_files_only=False, token=None):
    """Load a ControlNet onto ``backbone`` (same dtype and device) and check that it fits the family."""
    from diffusers import ControlNetModel

    kind = classify_controlnet_argument(controlnet)
    if backbone.info.is_dit:
        raise InvalidInputError(f"ControlNets load onto SD/SDXL models here; this is a {backbone.info.family} model")
    unet = backbone.pipe.unet
    source = ModelSource(name=controlnet, kind=kind)
    try:
        if kind == "tiny":
            from .tiny import tiny_controlnet

            model = tiny_controlnet(unet)
        elif kind == "single_file":
            model = ControlNetModel.from_single_file(os.path.expanduser(controlnet), torch_dtype=unet.dtype)
            source.path = str(Path(controlnet).expanduser().resolve())
        else:
            model = ControlNetModel.from_pretrained(
                os.path.expanduser(controlnet), torch_dtype=unet.dtype, cache_dir=cache_dir,
                local_files_only=local_files_only or kind == "folder", token=token,
            )
    except OSError as error:
        raise _hub_error(controlnet, error, what="ControlNet") from error
    expected = unet.config.cross_attention_dim
    if model.config.cross_attention_dim != expected or (
        (model.config.get("addition_embed_type") == "text_time") != backbone.info.is_sdxl
    ):
        raise ModelLoadError(
            f"ControlNet {controlnet!r} (cross-attention width {model.config.cross_attention_dim}) does not fit "
            f"the {backbone.info.family} model (width {expected}); use a ControlNet trained for "
            f"{backbone.info.family}, e.g. diffusers/controlnet-depth-sdxl-1.0-mid for SDXL"
        )
    if model.dtype != unet.dtype:
        model = model.to(dtype=unet.dtype)
    backbone.controlnet = model.to(device=unet.device).eval()
    backbone.controlnet_source = source
    return backbone.controlnet


# --- inpainting checkpoints (9-channel UNets) -----------------------------------------------------

@dataclass(frozen=True)
class CheckpointFacts:
    """What a model's configs or key names say, read without loading any weights."""

    family: str | None  # "sd1" | "sd2" | "sdxl", None when the files do not say
    in_channels: int | None  # 4 text-to-image, 9 inpainting, None unknown


def peek_checkpoint(model: str, *, cache_dir: str | None = None, local_files_only: bool = False,
                    token: str | bool | None = None) -> CheckpointFacts:
    """Family and UNet input channels of ``model`` (any form :func:`load_backbone` takes) from its small
    config files (Hub: ``model_index.json`` and ``unet/config.json`` only) or a single file's key names
    and input-convolution shape, so that mismatches are caught before any weights are loaded."""
    from .tiny import TINY_INPAINTING_NAMES

    if model in TINY_INPAINTING_NAMES:
        return CheckpointFacts(TINY_INPAINTING_NAMES[model], 9)
    kind = classify_model_argument(model)
    if kind == "tiny":
        return CheckpointFacts(TINY_MODEL_NAMES[model], 4)
    path = Path(os.path.expanduser(model))
    if kind == "single_file":
        try:
            keys = read_checkpoint_keys(path)
        except Exception as error:
            raise ModelLoadError(f"could not read checkpoint {model!r} ({error.__class__.__name__}); give a "
                                 ".safetensors file or a weights-only torch checkpoint") from error
        return CheckpointFacts(family_of_checkpoint_keys(keys), _single_file_in_channels(path))
    if kind == "folder":
        index_path, unet_path = path / "model_index.json", path / "unet" / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            index_path = hf_hub_download(model, "model_index.json", cache_dir=cache_dir,
                                         local_files_only=local_files_only, token=token)
            unet_path = hf_hub_download(model, "unet/config.json", cache_dir=cache_dir,
                                        local_files_only=local_files_only, token=token)
        except Exception as error:
            raise _hub_error(model, error) from error
    class_name = json.loads(Path(index_path).read_text()).get("_class_name", "") if Path(index_path).is_file() else ""
    if not Path(unet_path).is_file():
        return CheckpointFacts(None, None)
    unet_config = json.loads(Path(unet_path).read_text())
    return CheckpointFacts(family_of_unet_config(unet_config, class_name), unet_config.get("in_channels"))


def _single_file_in_channels(path: Path) -> int | None:
    key = "model.diffusion_model.input_blocks.0.0.weight"
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as handle:
                return int(handle.get_slice(key).get_shape()[1]) if key in handle.keys() else None  # noqa: SIM118 (safe_open has no __contains__)
        state = torch.load(path, map_location="meta", weights_only=True, mmap=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        return int(state[key].shape[1]) if key in state else None
    except (OSError, RuntimeError, ValueError, KeyError, IndexError):  # unreadable: the loader will say why
        return None


def check_inpainting_checkpoint(inpaint_model: str, family: str, **hub) -> CheckpointFacts:
    """Raise a one-line :class:`InvalidInputError` unless ``inpaint_model`` is a 9-channel inpainting
    checkpoint of ``family`` (the panorama model's); reads configs only."""
    facts = peek_checkpoint(inpaint_model, **hub)
    if facts.in_channels is not None and facts.in_channels != 9:
        raise InvalidInputError(
            f"{inpaint_model!r} is not an inpainting checkpoint (its UNet takes {facts.in_channels} input channels, "
            "inpainting UNets take 9); give an inpainting model such as "
            f"{DEFAULT_INPAINTING_MODELS.get(family, DEFAULT_INPAINTING_MODELS['sd2'])}, or leave it out to use "
            "masked blending with the panorama model"
        )
    if facts.family is not None and facts.family != family:
        raise InvalidInputError(
            f"inpainting checkpoint {inpaint_model!r} is {facts.family}, but the panorama model is {family}; use a "
            f"{family} inpainting checkpoint (e.g. {DEFAULT_INPAINTING_MODELS[family]}) or leave it out"
        )
    return facts


DEFAULT_INPAINTING_MODELS = {
    "sd1": "runwayml/stable-diffusion-inpainting",
    "sd2": "stabilityai/stable-diffusion-2-inpainting",
    "sdxl": "diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
}


def load_inpainting_backbone(
    model: str,
    *,
    torch_dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    config: str | None = None,
    cache_dir: str | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Backbone:
    """Load a 9-channel SD 1.x/2.x/SDXL inpainting pipeline (``tiny-inpaint``, ``tiny-sd2-inpaint``,
    ``tiny-sdxl-inpaint``, a diffusers folder, a Hub id or a single file). Text-to-image loading
    (:func:`load_backbone`) keeps refusing these checkpoints; this is the explicit door for them."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    from .tiny import TINY_INPAINTING_NAMES

    facts = peek_checkpoint(model, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    source = ModelSource(name=model, kind="tiny" if model in TINY_INPAINTING_NAMES else classify_model_argument(model))
    pipeline_class = StableDiffusionXLInpaintPipeline if facts.family == "sdxl" else StableDiffusionInpaintPipeline
    extra = _no_safety_checker(pipeline_class)
    try:
        if source.kind == "tiny":
            from .tiny import tiny_inpainting_pipeline

            pipe = tiny_inpainting_pipeline(TINY_INPAINTING_NAMES[model])
            if torch_dtype != torch.float32:
                pipe.to(dtype=torch_dtype)
        elif source.kind == "single_file":
            pipe = pipeline_class.from_single_file(str(Path(model).expanduser()), torch_dtype=torch_dtype, config=config,
                                                   cache_dir=cache_dir, local_files_only=local_files_only, token=token,
                                                   **extra)
            source.path = str(Path(model).expanduser().resolve())
        else:
            pipe = pipeline_class.from_pretrained(os.path.expanduser(model), torch_dtype=torch_dtype,
                                                  cache_dir=cache_dir, token=token,
                                                  local_files_only=local_files_only or source.kind == "folder", **extra)
            if source.kind == "folder":
                source.path = str(Path(model).expanduser().resolve())
    except OSError as error:
        raise _hub_error(model, error, what="inpainting model") from error
    except ValueError as error:
        raise ModelLoadError(f"could not load inpainting model {model!r}: {error}".replace("\n", " ")) from error
    if pipe.unet.config.in_channels != 9:
        raise ModelLoadError(f"{model!r} is not an inpainting checkpoint (UNet input channels "
                             f"{pipe.unet.config.in_channels}, expected 9)")
    pipe.to(device=device)
    if getattr(pipe, "transformer", None) is not None:
        materialise(pipe.transformer, device)  # NF4 codes are computed here, on the target device
    pipe.set_progress_bar_config(disable=True)
    return Backbone(pipe=pipe, info=family_info(pipe), source=source)
