"""Training data: panoramas with captions from a folder, a Matterport3D skybox tree or a HF dataset.

Sources (:func:`open_dataset` picks by what it finds):

* **a folder of equirectangular images** (``.png .jpg .jpeg .webp``, searched recursively, any size
  with width = 2 × height). Captions: ``metadata.jsonl`` in any folder of the tree (one JSON object
  per line with ``file_name`` relative to that folder and a caption column, default ``text``: the
  Hugging Face ``imagefolder`` convention), else a ``.txt`` file beside the image with the same
  stem. Per-view captions for multi-view adapters: a ``view_texts`` list in the metadata line, or
  ``<stem>_<deg>.txt`` files for deg = 0, 45, …, 315 (MVDiffusion's naming);
* **a Matterport3D skybox tree**: ``<scene>/matterport_skybox_images/<view>_skybox{0..5}_sami.jpg``,
  six cube faces per panorama stitched to equirect with pano360's geometry (face orientations as in
  PanFusion's ``Cubemap.from_mp3d_skybox``); captions from ``<scene>/blip3_stitched/<view>.txt`` and
  per-view captions from ``<scene>/blip3/<view>_<deg>.txt`` where present;
* ``hf:NAME[:split]``: a Hugging Face ``datasets`` dataset with an image and a caption column.

Scanning reads only image headers, so every problem (no images, not 2:1, unreadable, missing
captions) is reported before any model loads, in one message.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InvalidInputError
from ..io.images import to_rgb

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
VIEW_DEGREES = tuple(range(0, 360, 45))
MATTERPORT_LICENSE = "Matterport3D academic EULA: non-commercial academic use only"
#: Matterport3D skybox face index -> (our face, fix applied to the file's pixels before stitching)
_MP3D_FACES = ((2, "F", None), (3, "R", "fliplr"), (4, "B", "fliplr"), (1, "L", None), (0, "U", "up"),
               (5, "D", "down"))


@dataclass(frozen=True)
class PanoramaRecord:
    """One training panorama. ``key`` is a stable id (path relative to the data root)."""

    key: str
    caption: str | None
    path: Path | None = None  # an equirect image file
    faces: tuple[Path, ...] | None = None  # Matterport3D: the six skybox files, index 0..5
    item: int | None = None  # a row of a HF dataset
    view_captions: tuple[str, ...] | None = None  # captions at yaw 0, 45, ..., 315


@dataclass
class PanoramaDataset:
    """Records plus how to load them. ``source`` says what kind of data it is (for the model card)."""

    root: str
    source: str  # "folder" | "matterport3d" | "hf"
    records: list[PanoramaRecord]
    skipped: list[str] = field(default_factory=list)  # "path (reason)" of images left out
    license: str | None = None
    hf_dataset: object | None = None
    image_column: str = "image"

    def __len__(self) -> int:
        return len(self.records)

    @property
    def captions(self) -> list[str]:
        return [r.caption or "" for r in self.records]

    def summary(self) -> dict:
        """What the model card and training_config.json record about the data."""
        return {"root": self.root, "source": self.source, "panoramas": len(self.records),
                "skipped": len(self.skipped), "unique_captions": len(set(self.captions)),
                "with_view_captions": sum(r.view_captions is not None for r in self.records),
                "license": self.license or "unknown"}

    # --- pixels ---------------------------------------------------------------------------------
    def load_rgb(self, index: int):
        """The panorama as a PIL RGB image at its stored size (Matterport: stitched at 2s × 4s)."""
        from PIL import Image

        record = self.records[index]
        if record.faces is not None:
            return stitch_matterport_faces(record.faces)
        if record.item is not None:
            image = self.hf_dataset[record.item][self.image_column]
            return to_rgb(image)
        with Image.open(record.path) as image:
            return to_rgb(image)

    def load(self, index: int, height: int) -> torch.Tensor:
        """[3, height, 2·height] float32 in [-1, 1]: the panorama resized (never cropped)."""
        from .augment import resize_panorama

        return resize_panorama(self.load_rgb(index), height)


# --- opening ---------------------------------------------------------------------------------------

def open_dataset(data: str | os.PathLike, *, caption_column: str = "text", image_column: str = "image",
                 skip_invalid: bool = False, default_caption: str | None = None,
                 license: str | None = None) -> PanoramaDataset:
    """Scan ``data`` and check it; raises :class:`InvalidInputError` with one line naming every problem.

    ``skip_invalid`` leaves non-2:1 / unreadable images out (counted in ``dataset.skipped``) instead of
    refusing the folder. ``default_caption`` is used for images without a caption (else: an error).
    """
    text = str(data)
    if text.startswith("hf:"):
        dataset = _open_hf(text[3:], caption_column, image_column)
    else:
        root = Path(os.path.expanduser(text))
        if not root.is_dir():
            raise InvalidInputError(f"training data {text!r} is not a folder; give a folder of 2:1 panoramas "
                                    "(or hf:NAME for a Hugging Face dataset)")
        if _is_matterport(root):
            dataset = _open_matterport(root, skip_invalid)
        else:
            dataset = _open_folder(root, caption_column, skip_invalid)
    if license:
        dataset.license = license
    _check_captions(dataset, default_caption)
    return dataset


def _problem_list(problems: list[str], limit: int = 5) -> str:
    shown = "; ".join(problems[:limit])
    return shown + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


def _check_captions(dataset: PanoramaDataset, default_caption: str | None) -> None:
    if not dataset.records:
        extra = f" ({len(dataset.skipped)} skipped)" if dataset.skipped else ""
        raise InvalidInputError(f"no panoramas found in {dataset.root}{extra}; it needs .png/.jpg/.webp images "
                                "with width = 2 x height")
    missing = [r.key for r in dataset.records if r.caption is None]
    if missing and default_caption is None:
        raise InvalidInputError(
            f"{len(missing)} of {len(dataset)} panoramas have no caption ({_problem_list(missing, 3)}): add a .txt "
            "beside each image or a metadata.jsonl (file_name, text), run 'pano360 caption FOLDER', or pass "
            "--default-caption TEXT")
    if missing:
        dataset.records = [r if r.caption is not None else PanoramaRecord(
            r.key, default_caption, r.path, r.faces, r.item, r.view_captions) for r in dataset.records]


def _image_size(path: Path) -> tuple[int, int] | str:
    """(width, height) from the header, or the reason it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, UnidentifiedImageError, ValueError) as error:
        return f"unreadable: {type(error).__name__}"


def _read_metadata(root: Path, caption_column: str) -> dict[Path, dict]:
    """{absolute image path: metadata line} from every metadata.jsonl below ``root``."""
    entries: dict[Path, dict] = {}
    for meta in sorted(root.rglob("metadata.jsonl")):
        for number, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as error:
                raise InvalidInputError(f"{meta}:{number} is not valid JSON ({error}); one object per line") from None
            if not isinstance(row, dict) or "file_name" not in row:
                raise InvalidInputError(f"{meta}:{number} has no 'file_name'; each line needs file_name and "
                                        f"{caption_column!r}")
            entries[(meta.parent / row["file_name"]).resolve()] = row
    return entries


def _view_captions_from_files(image: Path) -> tuple[str, ...] | None:
    files = [image.with_name(f"{image.stem}_{deg}.txt") for deg in VIEW_DEGREES]
    if not all(f.is_file() for f in files):
        return None
    return tuple(f.read_text(encoding="utf-8").strip().splitlines()[0] if f.read_text(encoding="utf-8").strip()
                 else "" for f in files)


def _open_folder(root: Path, caption_column: str, skip_invalid: bool) -> PanoramaDataset:
    metadata = _read_metadata(root, caption_column)
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                    and not any(part.startswith(".") for part in p.relative_to(root).parts))
    records, bad = [], []
    for path in images:
        key = path.relative_to(root).as_posix()
        size = _image_size(path)
        if isinstance(size, str):
            bad.append(f"{key} ({size})")
            continue
        width, height = size
        if width != 2 * height:
            bad.append(f"{key} ({height}x{width} HxW, not 2:1)")
            continue
        row = metadata.get(path.resolve())
        caption = None
        view_captions = None
        if row is not None:
            value = row.get(caption_column)
            caption = str(value).strip() if value is not None else None
            if isinstance(row.get("view_texts"), list) and len(row["view_texts"]) == len(VIEW_DEGREES):
                view_captions = tuple(str(v).strip() for v in row["view_texts"])
        if caption is None and path.with_suffix(".txt").is_file():
            caption = path.with_suffix(".txt").read_text(encoding="utf-8").strip()
        view_captions = view_captions or _view_captions_from_files(path)
        records.append(PanoramaRecord(key, caption, path=path, view_captions=view_captions))
    if bad and not skip_invalid:
        raise InvalidInputError(f"{len(bad)} image(s) in {root} cannot be used as 2:1 panoramas: {_problem_list(bad)}; "
                                "fix or remove them, or pass --skip-invalid to leave them out")
    license_file = next((root / name for name in ("LICENSE", "LICENSE.txt", "LICENSE.md") if (root / name).is_file()),
                        None)
    license = None
    if license_file is not None:
        lines = license_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        license = f"{lines[0].strip() if lines else ''} (see {license_file.name} in the data folder)"
    return PanoramaDataset(str(root), "folder", records, skipped=bad, license=license)


# --- Matterport3D -------------------------------------------------------------------------------------

def _is_matterport(root: Path) -> bool:
    return next(root.glob("*/matterport_skybox_images/*_skybox0_sami.jpg"), None) is not None or \
        next(root.glob("matterport_skybox_images/*_skybox0_sami.jpg"), None) is not None


def _first_line(path: Path) -> str | None:
    if not path.is_file():
        return None
    lines = path.read_text(encoding="utf-8").strip().splitlines()
    return lines[0].strip() if lines else ""


def _open_matterport(root: Path, skip_invalid: bool) -> PanoramaDataset:
    records, bad = [], []
    first_faces = sorted(root.glob("*/matterport_skybox_images/*_skybox0_sami.jpg")) + \
        sorted(root.glob("matterport_skybox_images/*_skybox0_sami.jpg"))
    for face0 in first_faces:
        scene_dir = face0.parent.parent
        view = face0.name[: -len("_skybox0_sami.jpg")]
        faces = tuple(face0.with_name(f"{view}_skybox{i}_sami.jpg") for i in range(6))
        key = f"{scene_dir.relative_to(root).as_posix()}/{view}".lstrip("./")
        problem = None
        sizes = []
        for face in faces:
            size = face.is_file() and _image_size(face)
            if not size:
                problem = f"missing {face.name}"
                break
            if isinstance(size, str):
                problem = f"{face.name} {size}"
                break
            sizes.append(size)
        if problem is None and (len(set(sizes)) != 1 or sizes[0][0] != sizes[0][1]):
            problem = "faces are not equal squares"
        if problem:
            bad.append(f"{key} ({problem})")
            continue
        caption = _first_line(scene_dir / "blip3_stitched" / f"{view}.txt")
        views = [_first_line(scene_dir / "blip3" / f"{view}_{deg}.txt") for deg in VIEW_DEGREES]
        view_captions = tuple(views) if all(v is not None for v in views) else None
        records.append(PanoramaRecord(key, caption, faces=faces, view_captions=view_captions))
    if bad and not skip_invalid:
        raise InvalidInputError(f"{len(bad)} Matterport3D panorama(s) in {root} are incomplete: {_problem_list(bad)}; "
                                "fix them or pass --skip-invalid")
    return PanoramaDataset(str(root), "matterport3d", records, skipped=bad, license=MATTERPORT_LICENSE)


def matterport_faces_to_cubemap(faces: list[torch.Tensor]) -> torch.Tensor:
    """Six skybox faces [C, s, s] in file order 0..5 (up, left, front, right, back, down) → pano360's
    cube [6, C, s, s] in F R B L U D order, oriented as :func:`pano360.geometry.equirect_to_cubemap`
    makes them: R and B mirrored, U flipped upside down and turned 90° counter-clockwise, D turned
    90° counter-clockwise (PanFusion's fixes, net of py360convert's own flips)."""
    out = []
    for index, _name, fix in _MP3D_FACES:
        face = faces[index]
        if fix == "fliplr":
            face = face.flip(-1)
        elif fix == "up":
            face = torch.rot90(face.flip(-2), 1, dims=(-2, -1))
        elif fix == "down":
            face = torch.rot90(face, 1, dims=(-2, -1))
        out.append(face)
    return torch.stack(out)


def cubemap_to_matterport_faces(cube: torch.Tensor) -> list[torch.Tensor]:
    """Inverse of :func:`matterport_faces_to_cubemap` (writes test data in the skybox layout)."""
    files: list[torch.Tensor | None] = [None] * 6
    for position, (index, _name, fix) in enumerate(_MP3D_FACES):
        face = cube[position]
        if fix == "fliplr":
            face = face.flip(-1)
        elif fix == "up":
            face = torch.rot90(face, -1, dims=(-2, -1)).flip(-2)
        elif fix == "down":
            face = torch.rot90(face, -1, dims=(-2, -1))
        files[index] = face
    return files


def stitch_matterport_faces(paths: tuple[Path, ...]):
    """The six skybox files → an equirect PIL image of size 4s × 2s (s = face size)."""
    import numpy as np
    from PIL import Image

    from ..geometry import cubemap_to_equirect

    faces = []
    for path in paths:
        with Image.open(path) as image:
            array = np.asarray(to_rgb(image), dtype=np.float32) / 255.0
        faces.append(torch.from_numpy(array).permute(2, 0, 1))
    cube = matterport_faces_to_cubemap(faces)[None]  # [1, 6, 3, s, s]
    size = cube.shape[-1]
    equirect = cubemap_to_equirect(cube, out_hw=(2 * size, 4 * size), layout="stack")[0]
    array = (equirect.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    return Image.fromarray(array)


# --- Hugging Face datasets -----------------------------------------------------------------------------

def _open_hf(spec: str, caption_column: str, image_column: str) -> PanoramaDataset:
    name, _, split = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise InvalidInputError("hf:NAME data needs the 'datasets' package: pip install datasets") from None
    try:
        table = datasets.load_dataset(name, split=split or "train")
    except Exception as error:  # hub, offline, missing split
        raise InvalidInputError(f"could not open dataset {name!r}: {error}".replace("\n", " ")) from error
    for column in (image_column, caption_column):
        if column not in table.column_names:
            raise InvalidInputError(f"dataset {name!r} has no column {column!r} (columns: "
                                    f"{', '.join(table.column_names)}); pass --image-column/--caption-column")
    captions = table[caption_column]
    records = [PanoramaRecord(f"{name}[{i}]", None if c is None else str(c).strip(), item=i)
               for i, c in enumerate(captions)]
    return PanoramaDataset(f"hf:{spec}", "hf", records, hf_dataset=table, image_column=image_column,
                           license=(getattr(table.info, "license", None) or None))
