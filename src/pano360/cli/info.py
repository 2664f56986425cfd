"""``pano360 info``: versions, the device a run would use, cached models; or an image's 360 metadata."""

from __future__ import annotations

import argparse
import json

HELP = "show versions, device and cached models, or an image's 360 metadata"
"""The one line ``pano360 --help`` shows for this command."""


def register(subparsers) -> argparse.ArgumentParser:
    from .main import HelpFormatter

    parser = subparsers.add_parser(
        "info",
        help=HELP,
        description="Without IMAGE: library versions, the device and dtype a run would use, and the "
        "Stable Diffusion models in the Hugging Face cache.\nWith IMAGE: its size, projection and GPano "
        "360 metadata.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("image", nargs="?", default=None, metavar="IMAGE",
                        help="a PNG or JPEG panorama (sizes are printed HEIGHTxWIDTH, as everywhere in pano360)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    report = image_report(args.image) if args.image else system_report()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            if isinstance(value, dict):
                print(f"{key}:")
                for sub_key, sub_value in value.items():
                    print(f"  {sub_key}: {sub_value}")
            elif isinstance(value, list):
                print(f"{key}:" + ("" if value else " (none)"))
                for item in value:
                    print(f"  {item}")
            else:
                print(f"{key}: {value}")
    return 0


def image_report(path: str) -> dict:
    from ..io.images import read_image, read_panorama_metadata

    image = read_image(path, "IMAGE")  # decodes every pixel: truncated or corrupt files are refused
    width, height, image_format = image.width, image.height, image.format
    del image
    from ..errors import InvalidInputError

    try:
        metadata = read_panorama_metadata(path)
    except InvalidInputError as error:  # broken XMP: still report the pixels
        metadata = {"error": str(error)}
    if metadata.get("ProjectionType"):
        projection = metadata["ProjectionType"]
    elif width == 2 * height:
        projection = "equirectangular (by 2:1 aspect; no GPano metadata)"
    else:
        projection = "unknown (no GPano metadata)"
    return {"image": path, "format": image_format, "size": f"{height}x{width} (HxW)", "height": height,
            "width": width, "projection": projection, "coverage": coverage_text(width, height, metadata),
            "gpano": metadata}


def coverage_text(width: int, height: int, metadata: dict) -> str:
    """What part of the sphere an image covers, from its GPano cropped area (or its size)."""
    from ..errors import InvalidInputError
    from ..viewer import panorama_extent

    try:
        extent = panorama_extent(width, height, metadata)
    except InvalidInputError:
        return "not a 360° panorama (taller than 2:1)"
    text = f"{extent.haov:g}° x {extent.vaov:g}°"
    if extent.is_full_sphere:
        return text + " (full sphere)"
    low, high = extent.v_offset - extent.vaov / 2, extent.v_offset + extent.vaov / 2
    return text + f" (cylindrical band, vertical FoV {extent.vaov:g}°, pitch {low:g}° to {high:g}°)"


def system_report() -> dict:
    from ..backbones.device import resolve_device, resolve_dtype
    from ..io.sidecar import library_versions

    device = resolve_device("auto")
    report = {
        "versions": library_versions(),
        "device": str(device),
        "dtype": str(resolve_dtype("auto", device)).replace("torch.", ""),
    }
    if device.type == "cuda":
        import torch

        properties = torch.cuda.get_device_properties(device)
        report["gpu"] = f"{properties.name}, {properties.total_memory / 2**30:.1f} GiB"
    report["cached_models"] = cached_models()
    return report


def cached_models() -> list[str]:
    """Model repositories in the Hugging Face cache that look like diffusion pipelines or ControlNets."""
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # no cache folder yet, or an unreadable one
        return []
    names = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type == "model":
            names.append(f"{repo.repo_id} ({repo.size_on_disk / 2**30:.2f} GiB)")
    return names
