"""Arguments and steps shared by ``pano360 poles``, ``outpaint`` and ``upscale``: the model (a
text-to-image model for masked blending, or an inpainting checkpoint), sampling, output files.

Everything that can be checked without a model is checked by :func:`check_models` and the commands
before :func:`load_pipe` loads anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_model_arguments(parser: argparse.ArgumentParser, inpainting: bool = True) -> None:
    from ..defaults import DEFAULT_MODEL

    model = parser.add_argument_group("model")
    model.add_argument("--model", default=None,
                       help=f"the panorama's model family (Hub id, diffusers folder, .safetensors file, or tiny / "
                       f"tiny-sd2 / tiny-sdxl); default {DEFAULT_MODEL}")
    if inpainting:
        model.add_argument("--inpaint-model", default=None,
                           help="an SD 1/2/SDXL inpainting checkpoint (9-channel UNet, e.g. "
                           "stabilityai/stable-diffusion-2-inpainting; tiny-inpaint / tiny-sd2-inpaint / "
                           "tiny-sdxl-inpaint offline) used instead of masked blending with --model; it must be "
                           "of --model's family")
    model.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                       help="weights dtype (auto: fp16 on GPU, fp32 on CPU)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    model.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HOME)")
    model.add_argument("--offline", action="store_true", help="use only models already in the cache")


def add_sampling_arguments(parser: argparse.ArgumentParser, steps: int = 30, guidance: float = 7.5) -> None:
    from ..backbones.schedulers import DEFAULT_SCHEDULER, SCHEDULERS

    sampling = parser.add_argument_group("sampling")
    sampling.add_argument("--steps", type=int, default=steps, help="denoising steps")
    sampling.add_argument("--guidance", type=float, default=guidance, help="classifier-free guidance (1 = off)")
    sampling.add_argument("--negative-prompt", default=None, help="what to avoid")
    sampling.add_argument("--seed", type=int, default=0, help="random seed")
    sampling.add_argument("--scheduler", default=None, help=f"sampler (default: {DEFAULT_SCHEDULER} for SD models, "
                          "flow_euler for FLUX/SD3/Qwen-Image): " + ", ".join(SCHEDULERS))


def add_pole_arguments(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    poles = parser.add_argument_group("pole refinement (degrees)")
    poles.add_argument(f"--{prefix}cap", dest="pole_cap", type=float, default=35.0,
                       help="angular radius of the regenerated cap around each pole (widened for strips so that "
                       "everything outside the strip is regenerated)")
    poles.add_argument(f"--{prefix}context", dest="pole_context", type=float, default=15.0,
                       help="ring of the panorama around the cap that the pole views show and keep")
    poles.add_argument(f"--{prefix}feather", dest="pole_feather", type=float, default=10.0,
                       help="blend zone inside the cap; the panorama is unchanged outside the cap")
    poles.add_argument(f"--{prefix}view-size", dest="pole_view_size", type=int, default=None,
                       help="pixels per side of each pole view (default: the model's native size)")
    poles.add_argument("--pole", dest="poles", choices=["up", "down", "both"], default="both",
                       help="which poles to refine")


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    output = parser.add_argument_group("output")
    output.add_argument("-o", "--output", required=True, help="image path (.png or .jpg); a JSON sidecar goes beside it")
    output.add_argument("--overwrite", action="store_true", help="replace existing files")
    output.add_argument("--quiet", action="store_true", help="no progress bar")


def pole_settings(args: argparse.Namespace):
    from ..sphere.poles import PoleSettings

    poles = ("up", "down") if args.poles == "both" else (args.poles,)
    return PoleSettings(args.pole_cap, args.pole_context, args.pole_feather, args.pole_view_size, poles).check()


def sampling_settings(args: argparse.Namespace):
    from ..backbones.schedulers import check_scheduler_name
    from ..sphere.pipeline import Sampling
    from ..validation import check_guidance, check_steps

    check_steps(args.steps)
    check_guidance(args.guidance)
    scheduler = check_scheduler_name(args.scheduler) if args.scheduler else None
    return Sampling(args.steps, args.guidance, scheduler, args.seed, args.negative_prompt)


def check_output(path: str, overwrite: bool) -> Path:
    from ..io.atomic import ensure_writable
    from ..io.images import image_format_for
    from ..io.sidecar import sidecar_path

    target = Path(path)
    image_format_for(target)
    ensure_writable([target, sidecar_path(target)], overwrite)
    return target


def check_models(args: argparse.Namespace) -> str | None:
    """Model-free model checks: the arguments name loadable things and an inpainting checkpoint has the
    panorama model's family (read from config files or key names, no weights). Returns the family of
    the model that will run, when known."""
    from ..backbones.loading import (
        DEFAULT_MODEL,
        check_inpainting_checkpoint,
        classify_model_argument,
        peek_checkpoint,
    )
    from ..errors import InvalidInputError

    hub = {"cache_dir": args.cache_dir, "local_files_only": args.offline}
    inpaint_model = getattr(args, "inpaint_model", None)
    if inpaint_model is None:
        model = args.model or DEFAULT_MODEL
        classify_model_argument(model)
        facts = peek_checkpoint(model, **hub) if args.model else None
        if facts is not None and facts.in_channels not in (None, 4):
            raise InvalidInputError(
                f"--model {model!r} is not a text-to-image model (UNet input channels {facts.in_channels}); pass an "
                "inpainting checkpoint with --inpaint-model instead"
            )
        return facts.family if facts else None
    if args.model:
        family = peek_checkpoint(args.model, **hub).family
        if family is not None:
            return check_inpainting_checkpoint(inpaint_model, family, **hub).family
    facts = peek_checkpoint(inpaint_model, **hub)
    if facts.in_channels not in (None, 9):
        return check_inpainting_checkpoint(inpaint_model, facts.family or "sd2", **hub).family
    return facts.family


def load_pipe(args: argparse.Namespace):
    """Load the pipeline that will run: the inpainting checkpoint when given, else the model."""
    from ..backbones.device import resolve_device, resolve_dtype
    from ..backbones.loading import DEFAULT_MODEL, load_backbone, load_inpainting_backbone

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    hub = {"cache_dir": args.cache_dir, "local_files_only": args.offline}
    inpaint_model = getattr(args, "inpaint_model", None)
    if inpaint_model:
        return load_inpainting_backbone(inpaint_model, torch_dtype=dtype, device=device, **hub)
    return load_backbone(args.model or DEFAULT_MODEL, torch_dtype=dtype, device=device, **hub)


def progress_bar(total: int, description: str, quiet: bool):
    from tqdm.auto import tqdm

    # shown unless --quiet, also when stderr is not a terminal (tqdm's disable=None hid it there: a 4K
    # upscale ran 13 minutes without a line); kept on screen when done
    return tqdm(total=total, desc=description, unit="step", disable=bool(quiet), leave=True, mininterval=1.0)


def read_rgb(path: str, what: str):
    """An image file as (PIL image, [1, 3, H, W] float32 in [-1, 1]); one clear line if unreadable."""
    from ..io.export import image_to_tensor, open_image

    image = open_image(path)
    tensor = image_to_tensor(image.convert("RGB"))
    return image, tensor * 2 - 1


def save_result(tensor, path: Path, record: dict, overwrite: bool) -> None:
    """[1, 3, H, W] in [-1, 1] → PNG/JPEG with GPano XMP for its size, and the sidecar."""
    from .. import __version__
    from ..io.export import tensor_to_image
    from ..io.images import save_panorama_image
    from ..io.sidecar import library_versions, write_sidecar

    image = tensor_to_image((tensor[0].float() + 1) / 2)
    record = record | {"versions": library_versions() | {"pano360": __version__}, "image_file": path.name}
    save_panorama_image(image, path, overwrite=overwrite, software=f"pano360 {__version__}")
    write_sidecar(path, record, overwrite=overwrite)


def backbone_record(backbone) -> dict:
    return {"model": backbone.source.as_dict(), "family": backbone.info.family,
            "inpainting_unet": int(backbone.pipe.unet.config.in_channels) == 9}
