"""One place that finds, downloads and checks the weight files of the evaluation networks.

Every network in :mod:`pano360.nets` loads an *official* file by its original key names. This module
knows where each file lives (:data:`REGISTRY`: file name, official URL, SHA-256 or the SHA-256 prefix
the file name carries) and finds it in this order:

1. ``weights_dir`` (``--weights-dir`` on the command line), if given: an offline folder. Nothing is
   downloaded when it is given; a missing file is an error naming the file, its URL and the folder.
2. The cache folder: ``$PANO360_WEIGHTS_DIR`` if set, else ``~/.cache/pano360/weights``.
3. A download from the official URL into the cache (atomic: a ``.part`` file renamed when complete
   and checked), unless ``PANO360_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` is set.

Files read here are loaded with ``torch.load(weights_only=True)``: tensors and plain containers only,
never arbitrary pickled code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError

__all__ = [
    "REGISTRY",
    "WeightFile",
    "cache_dir",
    "fetch_weights",
    "load_checkpoint",
    "load_matching_state_dict",
]


@dataclass(frozen=True)
class WeightFile:
    """A weight file the project can use: where it comes from and how to recognise it."""

    name: str  # registry name, e.g. "vgg16"
    filename: str  # file name on disk, as published
    url: str  # official download URL ("" when the file has no direct link)
    description: str
    sha256: str | None = None  # full digest when known
    sha256_prefix: str | None = None  # the digest prefix published in the file name (torch.hub style)
    page: str | None = None  # where to get it by hand when there is no direct URL


REGISTRY: dict[str, WeightFile] = {
    entry.name: entry
    for entry in [
        WeightFile(
            "vgg16",
            "vgg16-397923af.pth",
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "torchvision VGG16 ImageNet weights (LPIPS-VGG trunk)",
            sha256_prefix="397923af",
        ),
        WeightFile(
            "alexnet",
            "alexnet-owt-7be5be79.pth",
            "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "torchvision AlexNet ImageNet weights (LPIPS-Alex trunk)",
            sha256_prefix="7be5be79",
        ),
        WeightFile(
            "vgg19",
            "vgg19-dcbb9e9d.pth",
            "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
            "torchvision VGG19 ImageNet weights (Intra-Style-L Gram matrices)",
            sha256_prefix="dcbb9e9d",
        ),
        WeightFile(
            "lpips_vgg",
            "vgg.pth",
            "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/vgg.pth",
            "LPIPS v0.1 linear heads for the VGG16 trunk",
        ),
        WeightFile(
            "lpips_alex",
            "alex.pth",
            "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/master/lpips/weights/v0.1/alex.pth",
            "LPIPS v0.1 linear heads for the AlexNet trunk",
        ),
        WeightFile(
            "inception_fid",
            "pt_inception-2015-12-05-6726825d.pth",
            "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
            "pt_inception-2015-12-05-6726825d.pth",
            "FID InceptionV3 (TensorFlow 2015-12-05 graph ported to PyTorch; pytorch-fid / torch-fidelity)",
            sha256_prefix="6726825d",
        ),
        WeightFile(
            "faed",
            "faed.ckpt",
            "",
            "PanFusion's panorama autoencoder for FAED (Lightning checkpoint)",
            page="https://github.com/chengzhag/PanFusion (README, 'faed.ckpt' download link)",
        ),
    ]
}

Downloader = Callable[[str, Path], None]


def cache_dir() -> Path:
    """The weight cache: ``$PANO360_WEIGHTS_DIR`` or ``~/.cache/pano360/weights``."""
    override = os.environ.get("PANO360_WEIGHTS_DIR")
    if override:
        return Path(override).expanduser()
    return Path("~/.cache/pano360/weights").expanduser()


def _offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes") for var in
               ("PANO360_OFFLINE", "HF_HUB_OFFLINE"))


def _source_hint(entry: WeightFile) -> str:
    return entry.url if entry.url else (entry.page or "its project page")


def _missing_message(entry: WeightFile, searched: list[Path], reason: str) -> str:
    places = ", ".join(str(p) for p in searched)
    return (
        f"weight file {entry.filename} ({entry.description}) not found in {places}; {reason} "
        f"Download it from {_source_hint(entry)} and put it in a folder passed as --weights-dir "
        f"(weights_dir=...), or into {cache_dir()}"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_file(entry: WeightFile, path: Path) -> None:
    """Raise :class:`ModelLoadError` if ``path``'s SHA-256 disagrees with the registry."""
    if not entry.sha256 and not entry.sha256_prefix:
        return
    digest = _sha256(path)
    expected = entry.sha256 or entry.sha256_prefix
    if not digest.startswith(expected):
        raise ModelLoadError(
            f"{path} has SHA-256 {digest[:16]}…, expected {expected}…; the file is damaged or not "
            f"{entry.filename}: delete it and download it again from {_source_hint(entry)}"
        )


def _urllib_download(url: str, destination: Path) -> None:
    """Stream ``url`` to ``destination`` with a progress bar."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "pano360"})
    with urllib.request.urlopen(request, timeout=60) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=destination.name.split(".part")[0]) as bar:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                bar.update(len(block))


def fetch_weights(
    name: str,
    weights_dir: str | os.PathLike | None = None,
    *,
    downloader: Downloader | None = None,
) -> Path:
    """Path of the weight file registered as ``name``, downloading it into the cache if needed.

    ``downloader(url, destination)`` replaces the HTTP download (tests inject a fake one). A file
    found in ``weights_dir`` or the cache is used as is; a downloaded one is checked against its
    SHA-256 (or the prefix in its name) before it is moved into the cache.
    """
    if name not in REGISTRY:
        raise ModelLoadError(f"unknown weight file {name!r}; known: {', '.join(sorted(REGISTRY))}")
    entry = REGISTRY[name]
    searched: list[Path] = []
    if weights_dir is not None:
        folder = Path(weights_dir).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"--weights-dir {folder} is not a folder; create it and put {entry.filename} in it")
        candidate = folder / entry.filename
        if candidate.is_file():
            return candidate
        searched.append(folder)
    cache = cache_dir()
    cached = cache / entry.filename
    if cached.is_file():
        return cached
    searched.append(cache)
    if weights_dir is not None:
        raise ModelLoadError(_missing_message(entry, searched, "--weights-dir means offline, so nothing was downloaded."))
    if not entry.url:
        raise ModelLoadError(_missing_message(entry, searched, "it has no direct download link."))
    if _offline():
        raise ModelLoadError(_missing_message(entry, searched, "downloads are off (PANO360_OFFLINE/HF_HUB_OFFLINE)."))
    cache.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=f".{entry.filename}.", suffix=".part", dir=cache)
    os.close(fd)
    part = Path(part_name)
    try:
        try:
            (downloader or _urllib_download)(entry.url, part)
        except (OSError, ValueError) as error:  # URLError is an OSError
            raise ModelLoadError(
                f"could not download {entry.filename} from {entry.url} ({error}); download it by hand and "
                f"pass its folder as --weights-dir (weights_dir=...)"
            ) from error
        verify_file(entry, part)
        os.replace(part, cached)
    finally:
        if part.exists():
            part.unlink()
    return cached


def load_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` a weight file safely (tensors and plain containers only) onto the CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError(f"{path} does not exist") from None
    except Exception as error:  # pickle errors of all kinds: the message must say what to do
        raise ModelLoadError(
            f"cannot read {path} as a PyTorch weight file with weights_only=True ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); if you trust the file, convert it once with "
            f"python -c \"import torch; c = torch.load('{path}', weights_only=False); "
            f"torch.save(c.get('state_dict', c), 'converted.pth')\" and pass the converted file"
        ) from error


def load_matching_state_dict(
    module: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    prefix: str = "",
    ignore: Callable[[str], bool] | None = None,
) -> None:
    """Copy ``state_dict`` (keys under ``prefix``) into ``module``, requiring every key and shape to match.

    Keys for which ``ignore(key)`` is true (after removing ``prefix``) are skipped on both sides; a
    ``num_batches_tracked`` counter may be absent from the file (old files do not store it).
    """
    ignore = ignore or (lambda key: False)
    own = module.state_dict()
    loaded = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    loaded = {k: v for k, v in loaded.items() if not ignore(k)}
    expected = {k: v for k, v in own.items() if not ignore(k)}
    missing = [k for k in expected if k not in loaded and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in loaded if k not in expected]
    wrong = [
        f"{k} {tuple(loaded[k].shape)} != {tuple(expected[k].shape)}"
        for k in expected
        if k in loaded and tuple(loaded[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}" if missing else "",
                f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}" if unexpected else "",
                f"shape {wrong[:3]}" if wrong else "",
            )
            if part
        )
        raise ModelLoadError(f"{source} does not match the expected network ({details}); is it the right file?")
    with torch.no_grad():
        for key, value in loaded.items():
            own[key].copy_(value.to(own[key].dtype))
