"""The metric suite: which metrics exist, what each needs, and :func:`evaluate` that computes them.

``evaluate(generated, reference=None, config=EvalConfig())`` loads only the networks the chosen metrics
need, computes every feature set once (e.g. Inception features of the 20 random views serve both
crop-FID and crop-IS) and returns an :class:`EvalResult` (metrics, per-image values, skipped metrics
with the reason). Metric names, protocols and sources are listed in ``docs/metrics.md``.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from .._lazy import lazy_module
from ..errors import InvalidInputError
from .inputs import ImageSet, load_image_folder, load_prompts
from .stats import (
    frechet_distance_from_features,
    inception_score,
    kernel_inception_distance,
    knn_giqa,
)

torch = lazy_module("torch")

__all__ = ["GROUPS", "METRICS", "EvalConfig", "EvalResult", "MetricInfo", "evaluate", "select_metrics"]


@dataclass(frozen=True)
class MetricInfo:
    """One metric: how it is shown, what it needs, and the function that computes it.

    ``compute(runner) -> (entry, per-image values or None)``. Needs: a reference set, a prompt per image,
    full 2:1 panoramas (in both sets), two side-by-side square crops, ``min_images`` in each set (2 for
    Fréchet/kernel statistics), a height that is a multiple of ``height_multiple``, both sets of one
    height (``same_height``), and ``min_reference`` reference images (a number, or the name of an
    :class:`EvalConfig` field such as ``"giqa_k"``).
    """

    key: str
    label: str
    protocol: str  # "PanFusion", "SyncDiffusion" or "geometry"
    description: str
    lower_is_better: bool
    compute: Callable = field(default=None, repr=False, compare=False)
    needs_reference: bool = False
    needs_prompts: bool = False
    needs_sphere: bool = False
    needs_two_crops: bool = False
    min_images: int = 1
    height_multiple: int = 1
    same_height: bool = False
    min_reference: int | str = 0

    def unmet_need(self, generated: ImageSet, reference: ImageSet | None, crop: int, config: EvalConfig) -> str | None:
        """Why this metric cannot be computed from these inputs, or None."""
        height, width = generated.size
        has_prompts = bool(generated.prompts) and all(p is not None for p in generated.prompts)
        if self.needs_reference and reference is None:
            return "needs a reference set (--reference FOLDER)"
        if self.needs_prompts and not has_prompts:
            return "needs a prompt for every image (--prompts FILE, or pano360 sidecar JSON files)"
        if self.needs_sphere and not generated.is_full_sphere:
            return f"needs full 2:1 equirectangular panoramas; the images are {height}x{width}"
        if self.needs_sphere and reference is not None and not reference.is_full_sphere:
            h, w = reference.size
            return f"needs full 2:1 equirectangular reference panoramas; they are {h}x{w}"
        if self.needs_two_crops and width < 2 * crop:
            return f"needs at least two {crop}-px square crops side by side; the images are {height}x{width}"
        if self.same_height and reference is not None and reference.size[0] != height:
            rh, rw = reference.size
            return (f"needs generated and reference panoramas of one height ({height}x{width} vs {rh}x{rw}); "
                    f"pass --size {height}x{width}")
        if height % self.height_multiple:
            return (f"needs a panorama height divisible by {self.height_multiple}, got {height}; pass --size, "
                    "e.g. 512x1024")
        least = getattr(config, self.min_reference) if isinstance(self.min_reference, str) else self.min_reference
        if reference is not None and self.needs_reference and len(reference) < least:
            return f"needs at least {least} reference images ({self.min_reference}={least}), got {len(reference)}"
        if len(generated) < self.min_images or (self.needs_reference and len(reference) < self.min_images):
            return f"needs at least {self.min_images} images in each set"
        return None


@dataclass
class EvalConfig:
    """Settings of an evaluation run (defaults are the published protocols)."""

    metrics: list[str] | None = None  # names or groups; None = every metric the inputs allow
    seed: int = 0
    num_random_views: int = 20
    num_seam_views: int = 20
    view_size: int = 299
    fid_resize: str = "tf1"  # Inception pre-processing of the PanFusion metrics (torchmetrics/torch-fidelity)
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    is_splits: int = 10
    giqa_k: int = 8
    crop_size: int | None = None  # SyncDiffusion crops; None = min(512, H)
    batch_size: int = 16
    device: str = "auto"
    weights_dir: str | None = None
    random_weights: bool = False  # random networks: for smoke tests, the numbers mean nothing
    inception_size: int | None = None  # None: 299 (75 with random weights, to keep smoke tests fast)
    progress: bool = True


@dataclass
class EvalResult:
    metrics: dict[str, dict]
    per_image: dict[str, list[float | None]]
    names: list[str]
    skipped: dict[str, str]
    info: dict = field(default_factory=dict)
    images: torch.Tensor | None = field(default=None, repr=False)  # the generated uint8 panoramas (report)

    def to_dict(self) -> dict:
        return {
            "info": self.info,
            "metrics": self.metrics,
            "skipped": self.skipped,
            "per_image": {"names": self.names, **self.per_image},
        }


def _expand(requested: Iterable[str]) -> list[str]:
    names: list[str] = []
    for item in requested:
        if str(item).strip().lower() == "auto":
            return list(METRICS)
        for part in str(item).split(","):
            part = part.strip().lower().replace("-", "_")
            if not part:
                continue
            if part in GROUPS:
                names += GROUPS[part]
            elif part in METRICS:
                names.append(part)
            else:
                raise InvalidInputError(
                    f"unknown metric {part!r}; use names from: {', '.join(METRICS)} or groups: {', '.join(GROUPS)}"
                )
    return list(dict.fromkeys(names))


def select_metrics(
    requested: list[str] | None, generated: ImageSet, reference: ImageSet | None, crop: int,
    config: EvalConfig | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The metrics to compute and, for those left out, why. Explicit requests that cannot be met raise."""
    config = config or EvalConfig()
    explicit = requested is not None and not (len(requested) == 1 and requested[0] in ("auto", ""))
    candidates = _expand(requested) if explicit else list(METRICS)
    chosen, skipped = [], {}
    for name in candidates:
        reason = METRICS[name].unmet_need(generated, reference, crop, config)
        if reason is None:
            chosen.append(name)
        elif explicit:
            raise InvalidInputError(f"metric {name}: {reason}")
        else:
            skipped[name] = reason
    if not chosen:
        raise InvalidInputError("no metric can be computed from these inputs: " + "; ".join(
            f"{k}: {v}" for k, v in list(skipped.items())[:3]))
    return chosen, skipped


# --------------------------------------------------------------------------------------------- runner


class _Runner:
    """Holds the loaded networks and the feature sets computed so far."""

    def __init__(self, config: EvalConfig, generated: ImageSet, reference: ImageSet | None):
        from ..backbones.device import resolve_device

        self.config = config
        self.generated = generated
        self.reference = reference
        self.device = resolve_device(config.device)
        self._nets: dict[str, object] = {}
        self._features: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._crops: dict[str, torch.Tensor] = {}
        self.weights_used: dict[str, str] = {}

    # ------------------------------------------------------------------ networks (loaded on demand)
    def _net(self, name: str, build: Callable[[], object]) -> object:
        if name not in self._nets:
            self._nets[name] = build()
        return self._nets[name]

    def inception(self, resize: str):
        from ..nets.inception import FIDInceptionV3
        from ..nets.weights import REGISTRY

        def build():
            self.weights_used["inception"] = "random" if self.config.random_weights else REGISTRY["inception_fid"].filename
            size = self.config.inception_size or (75 if self.config.random_weights else 299)
            return FIDInceptionV3(weights_dir=self.config.weights_dir, pretrained=not self.config.random_weights,
                                  input_size=size).to(self.device)

        net = self._net("inception", build)
        net.resize = resize
        return net

    def lpips(self):
        from ..nets.lpips import LPIPS

        def build():
            self.weights_used["lpips"] = "random" if self.config.random_weights else "vgg16-397923af.pth + lpips v0.1 vgg.pth"
            return LPIPS("vgg", weights_dir=self.config.weights_dir, pretrained=not self.config.random_weights).to(self.device)

        return self._net("lpips", build)

    def vgg19(self):
        from ..nets.vgg import build_trunk

        def build():
            self.weights_used["vgg19"] = "random" if self.config.random_weights else "vgg19-dcbb9e9d.pth"
            return build_trunk("vgg19", pretrained=not self.config.random_weights,
                               weights_dir=self.config.weights_dir).to(self.device)

        return self._net("vgg19", build)

    def faed(self):
        from ..nets.faed import PanoAutoEncoder

        def build():
            self.weights_used["faed"] = "random" if self.config.random_weights else "faed.ckpt"
            model = PanoAutoEncoder.random() if self.config.random_weights else PanoAutoEncoder.from_checkpoint(
                self.config.weights_dir)
            return model.encoder.to(self.device)

        return self._net("faed", build)

    def clip(self):
        from ..nets.clip import load_clip, tiny_random_clip

        def build():
            if self.config.random_weights:
                self.weights_used["clip"] = "random (tiny)"
                bundle = tiny_random_clip()
                bundle.model.to(self.device)
                return bundle
            self.weights_used["clip"] = "openai/clip-vit-base-patch16"
            return load_clip(self.config.weights_dir, device=self.device)

        return self._net("clip", build)

    # ------------------------------------------------------------------ helpers
    def _bar(self, total: int, desc: str):
        from tqdm.auto import tqdm

        # disable=None: bars only on a terminal, never in logs
        return tqdm(total=total, desc=desc, unit="img", disable=None if self.config.progress else True, leave=False)

    def _batches(self, count: int):
        size = max(1, self.config.batch_size)
        for start in range(0, count, size):
            yield start, min(count, start + size)

    def _inception_on(self, images: torch.Tensor, resize: str) -> tuple[np.ndarray, np.ndarray]:
        net = self.inception(resize)
        size = max(1, self.config.batch_size)
        pools, logits = [], []
        with torch.no_grad():
            for start in range(0, images.shape[0], size):
                batch = images[start:start + size]
                count = batch.shape[0]
                if self.device.type == "cpu" and count < size:
                    # one batch shape on the CPU: oneDNN sets up every conv again for each new shape, which
                    # costs more than the padded images (outputs are per image, so padding changes nothing)
                    batch = torch.cat([batch, batch[-1:].expand(size - count, *batch.shape[1:])])
                pool, logit = net(batch.to(self.device))
                pools.append(pool[:count].cpu().numpy())
                logits.append(logit[:count].cpu().numpy())
        return np.concatenate(pools), np.concatenate(logits)

    def views(self, kind: str, images: torch.Tensor, offset: int) -> torch.Tensor:
        """uint8 images of one view protocol for panoramas ``images`` whose first index is ``offset``."""
        from . import views as V

        cfg = self.config
        if kind == "pano":
            return images
        if kind == "rot":
            return V.roll_half(images)
        if kind == "crop":
            rigs = [V.random_rig(offset + i, cfg.num_random_views, cfg.seed) for i in range(images.shape[0])]
            return V.render_views(images, rigs, cfg.view_size)
        if kind == "seam":
            rigs = [V.seam_rig(offset + i, cfg.num_seam_views, cfg.seed) for i in range(images.shape[0])]
            return V.render_views(images, rigs, cfg.view_size)
        if kind == "mv":
            return V.render_shared_views(images, V.horizon_rig(), cfg.view_size)
        if kind == "omni":
            return V.cube_faces(images, max(1, images.shape[-2] // 2)).flatten(0, 1)
        raise ValueError(kind)

    def inception_features(self, which: str, kind: str, resize: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(pool3, logits) of the ``kind`` views of the ``which`` set ("generated"/"reference")."""
        resize = resize or self.config.fid_resize
        key = (which, kind, resize)
        if key not in self._features:
            dataset = self.generated if which == "generated" else self.reference
            if kind == "sync":
                crops = self.sync_crops(which)
                self._features[key] = self._inception_on(crops, resize)
            else:
                pools, logits = [], []
                with self._bar(len(dataset), f"Inception {kind} views, {which}") as bar:
                    for start, stop in self._batches(len(dataset)):
                        images = self.views(kind, dataset.images[start:stop], start)
                        pool, logit = self._inception_on(images, resize)
                        pools.append(pool)
                        logits.append(logit)
                        bar.update(stop - start)
                self._features[key] = (np.concatenate(pools), np.concatenate(logits))
        return self._features[key]

    def sync_crops(self, which: str) -> torch.Tensor:
        """One seeded random square crop per image (SyncDiffusion's crop_panorama.py); square images as is."""
        from .views import random_square_crop

        if which not in self._crops:
            dataset = self.generated if which == "generated" else self.reference
            height, width = dataset.size
            crop = self.crop_size(dataset)
            if width > height or height > crop:
                self._crops[which] = random_square_crop(dataset.images, crop, seed=2023)
            else:
                self._crops[which] = dataset.images
        return self._crops[which]

    def crop_size(self, dataset: ImageSet) -> int:
        from .views import sync_crop_size

        return self.config.crop_size or sync_crop_size(dataset.size[0])


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _entry(value, std=None, count=None, **extra) -> dict:
    entry = {"value": _finite(value)}
    if std is not None:
        entry["std"] = _finite(std)
    if count is not None:
        entry["n"] = int(count)
    entry.update(extra)
    return entry


def evaluate(
    generated: ImageSet | str | os.PathLike,
    reference: ImageSet | str | os.PathLike | None = None,
    prompts: str | os.PathLike | None = None,
    config: EvalConfig | None = None,
    size: tuple[int, int] | None = None,
) -> EvalResult:
    """Compute the selected metrics for a folder (or :class:`ImageSet`) of panoramas."""
    config = config or EvalConfig()
    if config.metrics is not None:
        _expand(config.metrics)  # unknown names fail before any image is read
    if not isinstance(generated, ImageSet):
        generated = load_image_folder(generated, "generated", size=size, progress=config.progress)
    if reference is not None and not isinstance(reference, ImageSet):
        reference = load_image_folder(reference, "reference", size=size, progress=config.progress)
    prompt_source = load_prompts(generated, prompts) if not generated.prompts else "given"
    from .views import sync_crop_size

    crop = config.crop_size or sync_crop_size(generated.size[0])
    chosen, skipped = select_metrics(config.metrics, generated, reference, crop, config)
    runner = _Runner(config, generated, reference)
    results: dict[str, dict] = {}
    per_image: dict[str, list[float | None]] = {}
    count = len(generated)
    for name in chosen:
        info = METRICS[name]
        results[name], values = info.compute(runner)
        if values is not None:
            per_image[name] = values
        results[name].update(label=info.label, protocol=info.protocol, lower_is_better=info.lower_is_better,
                             description=info.description)

    from .. import __version__

    gen_h, gen_w = generated.size
    info = {
        "pano360_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "generated": {"folder": str(generated.folder), "count": count, "size": f"{gen_w}x{gen_h}",
                      "original_size": f"{generated.original_size[1]}x{generated.original_size[0]}"},
        "reference": None if reference is None else {
            "folder": str(reference.folder), "count": len(reference),
            "size": f"{reference.size[1]}x{reference.size[0]}",
            "original_size": f"{reference.original_size[1]}x{reference.original_size[0]}"},
        "prompts": prompt_source,
        "config": {k: v for k, v in asdict(config).items() if k not in ("progress",)},
        "crop_size": crop,
        "device": str(runner.device),
        "weights": runner.weights_used,
        "random_weights": config.random_weights,
    }
    return EvalResult(results, per_image, list(generated.names), skipped, info, generated.images)


# --------------------------------------------------------------------------------------------- metrics


def _clip_metric(runner: _Runner, name: str) -> tuple[dict, list[float | None]]:
    from .clipscore import clip_scores
    from .views import horizon_rig, render_shared_views, roll_half

    generated = runner.generated
    bundle = runner.clip()
    prompts = [str(p) for p in generated.prompts]
    per_image: list[float] = []
    used_view_prompts = False
    with runner._bar(len(generated), f"CLIP {name}") as bar:
        for start, stop in runner._batches(len(generated)):
            images = generated.images[start:stop]
            texts = prompts[start:stop]
            if name == "clip":
                per_image += list(clip_scores(bundle, images, texts, runner.device))
            elif name == "rot_clip":
                per_image += list(clip_scores(bundle, roll_half(images), texts, runner.device))
            elif name == "sync_clip":
                crops = runner.sync_crops("generated")[start:stop]
                per_image += list(clip_scores(bundle, crops, texts, runner.device))
            else:  # mv_clip: 8 horizon views, per-view prompts when given
                views = render_shared_views(images, horizon_rig(), runner.config.view_size)
                view_texts = []
                for i, text in zip(range(start, stop), texts):
                    per_view = generated.view_prompts[i] if generated.view_prompts else None
                    used_view_prompts |= per_view is not None
                    view_texts += list(per_view) if per_view is not None else [text] * 8
                scores = clip_scores(bundle, views, view_texts, runner.device)
                per_image += list(scores.reshape(-1, 8).mean(axis=1))
            bar.update(stop - start)
    values = np.asarray(per_image, dtype=np.float64)
    extra = {"view_prompts": used_view_prompts} if name == "mv_clip" else {}
    return _entry(values.mean(), values.std(), count=len(values), **extra), [_finite(v) for v in values]


def _faed(runner: _Runner) -> float:
    from ..nets.faed import faed_features

    encoder = runner.faed()
    features = {}
    for which, dataset in (("generated", runner.generated), ("reference", runner.reference)):
        chunks = []
        with runner._bar(len(dataset), f"FAED, {which}") as bar, torch.no_grad():
            for start, stop in runner._batches(len(dataset)):
                chunks.append(faed_features(encoder, dataset.images[start:stop].to(runner.device)).cpu().numpy())
                bar.update(stop - start)
        features[which] = np.concatenate(chunks)
    return frechet_distance_from_features(features["generated"], features["reference"])


def _omnifid(runner: _Runner) -> tuple[float, dict]:
    gen_pool, _ = runner.inception_features("generated", "omni")
    ref_pool, _ = runner.inception_features("reference", "omni")
    gen_faces, ref_faces = gen_pool.reshape(-1, 6, gen_pool.shape[-1]), ref_pool.reshape(-1, 6, ref_pool.shape[-1])
    per_face = {
        face: frechet_distance_from_features(gen_faces[:, i], ref_faces[:, i])
        for i, face in enumerate(("F", "R", "B", "L", "U", "D"))
    }
    sides = float(np.mean([per_face[f] for f in ("F", "R", "B", "L")]))
    groups = {"sides": sides, "up": per_face["U"], "down": per_face["D"], "faces": per_face}
    return (sides + per_face["U"] + per_face["D"]) / 3.0, groups


def _intra(runner: _Runner, name: str) -> np.ndarray:
    from .perceptual import intra_lpips, intra_style_loss

    generated = runner.generated
    crop = runner.crop_size(generated)
    network = runner.lpips() if name == "intra_lpips" else runner.vgg19()
    function = intra_lpips if name == "intra_lpips" else intra_style_loss
    values = []
    with runner._bar(len(generated), name.replace("_", "-")) as bar:
        for image in generated.images:
            values.append(function(image, network, crop, runner.device))
            bar.update(1)
    return np.asarray(values, dtype=np.float64)


# --------------------------------------------------------------------------------------------- computations
# Each returns (entry, per-image values or None) for one metric.


def _fid(kind: str, resize: str | None = None):
    def compute(runner: _Runner):
        gen_pool, _ = runner.inception_features("generated", kind, resize)
        ref_pool, _ = runner.inception_features("reference", kind, resize)
        return _entry(frechet_distance_from_features(gen_pool, ref_pool), count=gen_pool.shape[0]), None
    return compute


def _is(kind: str):
    def compute(runner: _Runner):
        _, logits = runner.inception_features("generated", kind)
        mean, std = inception_score(logits, splits=runner.config.is_splits)
        return _entry(mean, std, count=logits.shape[0]), None
    return compute


def _kid(kind: str, resize: str | None = None):
    def compute(runner: _Runner):
        gen_pool, _ = runner.inception_features("generated", kind, resize)
        ref_pool, _ = runner.inception_features("reference", kind, resize)
        config = runner.config
        mean, std = kernel_inception_distance(gen_pool, ref_pool, config.kid_subsets, config.kid_subset_size,
                                              config.seed)
        return _entry(mean, std, count=len(runner.generated)), None
    return compute


def _clip(name: str):
    return lambda runner: _clip_metric(runner, name)


def _per_image(function):
    """A metric given as per-image values: their mean ± std, and the values."""
    def compute(runner: _Runner):
        values = function(runner)
        return _entry(values.mean(), values.std(), count=len(values)), [_finite(v) for v in values]
    return compute


def _discontinuity(runner: _Runner) -> np.ndarray:
    from .seam import discontinuity_score

    return discontinuity_score(runner.generated.images).numpy().astype(np.float64)


def _giqa(runner: _Runner) -> np.ndarray:
    gen_pool, _ = runner.inception_features("generated", "sync", "pytorch-fid")
    ref_pool, _ = runner.inception_features("reference", "sync", "pytorch-fid")
    return knn_giqa(gen_pool, ref_pool, k=runner.config.giqa_k)


def _faed_metric(runner: _Runner):
    return _entry(_faed(runner), count=len(runner.generated)), None


def _omnifid_metric(runner: _Runner):
    value, groups = _omnifid(runner)
    return _entry(value, count=len(runner.generated), groups=groups), None


def _m(key, label, protocol, description, lower_is_better, compute, **needs) -> MetricInfo:
    return MetricInfo(key, label, protocol, description, lower_is_better, compute, **needs)


_FID = dict(needs_reference=True, min_images=2)
_SPHERE_FID = dict(_FID, needs_sphere=True)
METRICS: dict[str, MetricInfo] = {
    m.key: m
    for m in [
        _m("fid", "FID", "PanFusion", "FID of the whole panoramas (squeezed to 299x299)", True, _fid("pano"), **_FID),
        _m("kid", "KID", "PanFusion", "Kernel Inception Distance of the whole panoramas", True, _kid("pano"), **_FID),
        _m("is", "IS", "PanFusion", "Inception Score of the whole panoramas", False, _is("pano")),
        _m("clip", "CS", "PanFusion", "CLIP score (ViT-B/16) of the panorama vs its prompt", False, _clip("clip"),
           needs_prompts=True),
        _m("rot_fid", "rot-FID", "PanFusion", "FID with both sets rolled by W/2 (seam in the middle)", True,
           _fid("rot"), **_FID),
        _m("rot_is", "rot-IS", "PanFusion", "IS of the panoramas rolled by W/2", False, _is("rot")),
        _m("rot_clip", "rot-CS", "PanFusion", "CLIP score of the panoramas rolled by W/2", False, _clip("rot_clip"),
           needs_prompts=True),
        _m("crop_fid", "crop-FID", "PanFusion", "FID of 20 random 90° views per panorama (299x299)", True,
           _fid("crop"), **_SPHERE_FID),
        _m("crop_is", "crop-IS", "PanFusion", "IS of 20 random 90° views per panorama", False, _is("crop"),
           needs_sphere=True),
        _m("seam_fid", "seam-FID", "PanFusion", "FID of 20 views per panorama centred on the seam (yaw 180°)", True,
           _fid("seam"), **_SPHERE_FID),
        _m("seam_is", "seam-IS", "PanFusion", "IS of 20 views per panorama centred on the seam", False, _is("seam"),
           needs_sphere=True),
        _m("mv_fid", "mv-FID", "PanFusion", "FID of the 8 horizon views (MVDiffusion protocol)", True, _fid("mv"),
           **_SPHERE_FID),
        _m("mv_is", "mv-IS", "PanFusion", "IS of the 8 horizon views", False, _is("mv"), needs_sphere=True),
        _m("mv_clip", "mv-CS", "PanFusion", "CLIP score of the 8 horizon views vs per-view (or panorama) prompts",
           False, _clip("mv_clip"), needs_prompts=True, needs_sphere=True),
        _m("faed", "FAED", "PanFusion", "Fréchet AutoEncoder Distance (PanFusion's panorama autoencoder)", True,
           _faed_metric, **_SPHERE_FID, same_height=True, height_multiple=32),
        _m("intra_lpips", "Intra-LPIPS", "SyncDiffusion", "mean LPIPS-VGG between non-overlapping square crops", True,
           _per_image(lambda runner: _intra(runner, "intra_lpips")), needs_two_crops=True),
        _m("intra_style", "Intra-Style-L", "SyncDiffusion", "sum of VGG19 Gram losses between square crops", True,
           _per_image(lambda runner: _intra(runner, "intra_style")), needs_two_crops=True),
        _m("sync_clip", "Mean-CLIP-S", "SyncDiffusion", "CLIP score of one random square crop per panorama", False,
           _clip("sync_clip"), needs_prompts=True),
        _m("sync_fid", "crop-FID (clean)", "SyncDiffusion", "clean-fid-style FID of one random square crop per panorama",
           True, _fid("sync", "clean"), **_FID),
        _m("sync_kid", "crop-KID (clean)", "SyncDiffusion", "clean-fid-style KID of one random square crop per panorama",
           True, _kid("sync", "clean"), **_FID),
        _m("giqa", "Mean-GIQA", "SyncDiffusion",
           "KNN-GIQA (K nearest reference crops, 8 by default) of one random square crop per panorama", False,
           _per_image(_giqa), needs_reference=True, min_reference="giqa_k"),
        _m("ds", "DS", "geometry", "Discontinuity Score at the wrap seam", True, _per_image(_discontinuity)),
        _m("omnifid", "OmniFID", "geometry", "mean FID over cubemap view groups {sides, up, down}", True,
           _omnifid_metric, **_SPHERE_FID),
    ]
}

GROUPS: dict[str, list[str]] = {
    "panfusion": ["fid", "is", "clip", "rot_fid", "rot_is", "rot_clip", "crop_fid", "crop_is", "seam_fid",
                  "seam_is", "mv_fid", "mv_is", "mv_clip", "faed"],
    "syncdiffusion": ["intra_lpips", "intra_style", "sync_clip", "sync_fid", "sync_kid", "giqa"],
    "geometry": ["ds", "omnifid"],
    "all": [],  # filled below
}
GROUPS["all"] = list(METRICS)
