"""360° depth from a perspective monocular depth model: overlapping views, one global alignment, blend.

A monocular model sees perspective pictures, and a relative one (Depth Anything V2, DPT/MiDaS) predicts
each picture only up to an unknown scale and shift. :func:`estimate_depth` therefore

1. renders V overlapping perspective views of the panorama (default: the six cube faces widened to a
   120° FoV, so neighbouring faces overlap by 30°; the up and down views cover the poles whole, and the
   seam lies inside the back view, so neither needs special handling);
2. runs the model on the views in batches;
3. aligns the views in **one** weighted least-squares solve: per view a scale ``s_v`` and shift ``t_v``
   so that every pair of views agrees wherever both see the same direction. The model predicts each
   view's *planar* depth z (distance along the view's axis) or its inverse; the same point's radial
   distance r is z / cos θ_v, with θ_v the angle between the ray and view v's axis. In depth space the
   residual of views i, j at a direction is ``(s_i p_i + t_i)/cos θ_i − (s_j p_j + t_j)/cos θ_j``; in
   disparity space it is ``cos θ_i (s_i p_i + t_i) − cos θ_j (s_j p_j + t_j)``. Both are linear in
   (s, t). Only the global scale is a gauge (fixed by ``s_0 = 1``): because cos θ differs between two
   views across an overlap, the shifts, the first view's included, are determined by the data. The solve
   is iteratively reweighted (Huber, relative residuals) so depth edges, where a bilinear lookup mixes
   foreground and background, do not pull it;
4. blends the aligned radial depths onto the equirectangular grid with feathered weights (each view
   fades to 0 at its border), so there is no step at view borders; the seam and the poles are covered
   by single views and close by construction.

Conventions of the result (:class:`DepthResult`): ``depth`` is the **radial distance** from the camera
centre along each pixel's ray (not planar z), float32 [H, W], same size as the panorama. ``units`` is
``"metres"`` for a metric model (its own scale, kept by the view it was fixed on), else
``"relative"``: scaled so that the area-weighted median distance is 1.0. With ``camera_height`` the
result is rescaled so that the floor (the directions more than 60° below the horizon) lies that many
metres below the camera, and ``units`` becomes ``"metres"``.

Geometry comes from :mod:`pano360.geometry` (views, projections); nothing here re-implements sampling.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

import torch
from torch import Tensor

from ..errors import InvalidInputError, ModelLoadError
from ..geometry import (
    ViewRig,
    cube_faces,
    equirect_directions,
    equirect_to_perspective,
    perspective_to_equirect,
    rotation_matrix,
)

Prediction = Literal["depth", "disparity", "metric"]
PREDICTIONS = ("depth", "disparity", "metric")
DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
DEFAULT_FOV = 120.0
#: a depth callable: views [N, 3, h, w] float in [0, 1] (sRGB) → predictions [N, h, w]
DepthCallable = Callable[[Tensor], Tensor]
ModelLike = Union[str, os.PathLike, DepthCallable, None]  # noqa: UP007 (runtime alias for Python 3.10)


@dataclass
class DepthResult:
    """A 360° depth map and how it was made.

    ``depth``: [H, W] float32 radial distance (see the module doc for units); ``units``: ``"relative"``
    or ``"metres"``; ``prediction``: what the model predicted (``"depth"``, ``"disparity"``,
    ``"metric"``); ``view_scale``/``view_shift``: the solved per-view alignment [V] (in the model's
    output units); ``overlap_residual``: the median relative disagreement between overlapping views
    after alignment (0.01 = 1 %), a quality figure worth reporting.
    """

    depth: Tensor
    units: str
    prediction: str
    model: str
    rig: ViewRig
    view_size: int
    view_scale: Tensor
    view_shift: Tensor
    overlap_residual: float
    camera_height: float | None = None
    extra: dict = field(default_factory=dict)

    def record(self) -> dict:
        """JSON-ready description for sidecars."""
        return {
            "kind": "radial distance from the camera centre along each pixel's ray",
            "units": self.units,
            "model": self.model,
            "prediction": self.prediction,
            "views": {"count": len(self.rig), "size": self.view_size,
                      "yaw_deg": self.rig.yaw_deg.tolist(), "pitch_deg": self.rig.pitch_deg.tolist(),
                      "fov_deg": self.rig.fov_deg.tolist()},
            "alignment": {"scale": [round(float(v), 6) for v in self.view_scale],
                          "shift": [round(float(v), 6) for v in self.view_shift],
                          "median_overlap_residual": round(self.overlap_residual, 6)},
            "camera_height": self.camera_height,
            "min": float(self.depth.min()), "max": float(self.depth.max()),
            **self.extra,
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False, source: str | None = None) -> Path:
        """Write the depth map (.png 16-bit or .exr float32) with its sidecar; see :mod:`.files`."""
        from .files import write_depth

        return write_depth(self.depth, path, overwrite=overwrite, record=self.record() | {"source": source})


# --- the model -----------------------------------------------------------------------------------------

class TransformersDepthModel:
    """A transformers ``AutoModelForDepthEstimation`` as a depth callable.

    Views [N, 3, h, w] in [0, 1] are resized to the model's input size (its preprocessor's
    ``size``, rounded to a multiple of its patch size), normalised with its ``image_mean``/``image_std``
    and run in one batch; the prediction [N, h', w'] is resized back to [N, h, w]. ``prediction`` says
    how to read the output: ``"metric"`` for metric models (Depth Anything metric, ZoeDepth), else
    ``"disparity"`` (relative inverse depth, as Depth Anything V2 relative and DPT/MiDaS predict).
    """

    def __init__(self, model, *, name: str, size: int, mean, std, prediction: str, multiple: int = 14):
        self.model = model
        self.name = name
        self.size = int(size)
        self.multiple = int(multiple)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.prediction = prediction

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def __call__(self, views: Tensor) -> Tensor:
        import torch.nn.functional as F

        _n, _, height, width = views.shape
        side = max(self.multiple, round(self.size / self.multiple) * self.multiple)
        x = F.interpolate(views.float(), size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)
        x = ((x - self.mean) / self.std).to(self.device, next(self.model.parameters()).dtype)
        out = self.model(pixel_values=x).predicted_depth  # [N, h', w']
        out = F.interpolate(out.float()[:, None], size=(height, width), mode="bilinear", align_corners=False)
        return out[:, 0].to("cpu")


def _prediction_kind(config) -> str:
    kind = getattr(config, "depth_estimation_type", None)
    if kind == "metric" or getattr(config, "model_type", "") in ("zoedepth",):
        return "metric"
    return "disparity"


def load_depth_model(
    name: str | os.PathLike = DEFAULT_DEPTH_MODEL, *, device: str | torch.device | None = None,
    dtype: torch.dtype | None = None, local_files_only: bool | None = None,
) -> TransformersDepthModel:
    """Load a transformers depth-estimation model (hub id or local folder) as a depth callable.

    Raises :class:`ModelLoadError` with one line when the name cannot be found or is not a
    depth-estimation model (checked from its config before any weights are read).
    """
    from transformers import AutoConfig, AutoModelForDepthEstimation

    text = os.fspath(name)
    kwargs = {} if local_files_only is None else {"local_files_only": local_files_only}
    looks_local = text.startswith((".", "/", "~")) or text.count("/") > 1 or os.sep in text.replace("/", "")
    if looks_local and not Path(os.path.expanduser(text)).is_dir():
        raise ModelLoadError(f"depth model folder {text} does not exist; check the path or give a hub id such as "
                             f"{DEFAULT_DEPTH_MODEL}")
    text = os.path.expanduser(text)
    try:
        config = AutoConfig.from_pretrained(text, **kwargs)
    except (OSError, ValueError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise ModelLoadError(f"depth model {text!r} could not be found or read ({first[:160]}); give a hub id "
                             f"such as {DEFAULT_DEPTH_MODEL} or a local folder of one") from None
    supported = AutoModelForDepthEstimation._model_mapping
    if type(config) not in supported:
        raise ModelLoadError(f"{text!r} is a {config.model_type!r} model, not a depth-estimation model; give one "
                             f"that AutoModelForDepthEstimation loads, such as {DEFAULT_DEPTH_MODEL}")
    try:
        model = AutoModelForDepthEstimation.from_pretrained(text, **kwargs)
    except (OSError, ValueError) as error:
        first = (str(error).splitlines() or [type(error).__name__])[0]
        raise ModelLoadError(f"depth model {text!r} could not be loaded ({first[:160]})") from None
    model.eval().requires_grad_(False)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    size, mean, std = 518, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    try:
        from transformers.image_processing_base import ImageProcessingMixin

        processor, _ = ImageProcessingMixin.get_image_processor_dict(text, **kwargs)
        raw = processor.get("size") or {}
        size = int(raw.get("height") or raw.get("shortest_edge") or size) if isinstance(raw, dict) else int(raw)
        mean = tuple(processor.get("image_mean") or mean)
        std = tuple(processor.get("image_std") or std)
    except (OSError, ValueError, TypeError):
        pass  # no preprocessor file: Depth Anything's defaults
    patch = getattr(getattr(config, "backbone_config", None), "patch_size", None) or getattr(config, "patch_size", 14)
    multiple = int(patch) if isinstance(patch, int) else 14
    return TransformersDepthModel(model, name=text, size=size, mean=mean, std=std,
                                  prediction=_prediction_kind(config), multiple=multiple)


# --- inputs --------------------------------------------------------------------------------------------

def as_panorama_tensor(image) -> Tensor:
    """A path, PIL image, [3, H, W] or [1, 3, H, W] tensor → [1, 3, H, W] float32 in [0, 1], checked to be
    a full-sphere 2:1 panorama (one line naming the fix otherwise)."""
    from ..io.export import image_to_tensor, open_image

    if isinstance(image, (str, os.PathLike)):
        pil = open_image(image, "panorama")
        tensor = image_to_tensor(pil.convert("RGB"))
        name = os.fspath(image)
    elif isinstance(image, Tensor):
        tensor = image.float()[None] if image.ndim == 3 else image.float()
        name = "panorama"
        if tensor.ndim != 4 or tensor.shape[0] != 1 or tensor.shape[1] not in (3, 4):
            raise InvalidInputError(f"a panorama tensor must be [3, H, W] or [1, 3, H, W], got {tuple(image.shape)}")
        tensor = tensor[:, :3]
    else:  # PIL
        tensor = image_to_tensor(image.convert("RGB"))
        name = "panorama"
    check_full_sphere(tensor.shape[-2], tensor.shape[-1], name)
    return tensor


def check_full_sphere(height: int, width: int, what: str = "panorama") -> None:
    """Raise one line unless height×width is a full-sphere 2:1 equirect of at least 8x16."""
    if width != 2 * height:
        raise InvalidInputError(f"{what} is {height}x{width} (HxW); depth and 3D need a full-sphere 2:1 "
                                f"equirectangular panorama, e.g. {width // 2}x{width}")
    if height < 8:
        raise InvalidInputError(f"{what} is {height}x{width} (HxW), too small for depth; use at least 8x16")


def default_rig(fov_deg: float = DEFAULT_FOV) -> ViewRig:
    """The six cube-face directions with a wider FoV so that neighbours overlap (F R B L U D)."""
    if not 90.0 < fov_deg < 170.0:
        raise InvalidInputError(f"--fov must be between 90 and 170 degrees so that views overlap, got {fov_deg:g}")
    return cube_faces(fov_deg)


# --- alignment -----------------------------------------------------------------------------------------

def _view_forward(rig: ViewRig) -> Tensor:
    """Unit optical axes [V, 3] of the rig's cameras (world frame, x right, y up, z forward)."""
    return rotation_matrix(rig.yaw_deg, rig.pitch_deg, rig.roll_deg)[:, :, 2].float()


def _project_views(values: Tensor, rig: ViewRig, out_hw: tuple[int, int], blend: str) -> tuple[Tensor, Tensor]:
    """Per-view values [V, h, w] → per-view equirect samples [V, H, W] and weights [V, H, W] (0 = unseen)."""
    samples, weights = [], []
    for v in range(len(rig)):
        one = rig[v]
        value, weight = perspective_to_equirect(values[v][None, None, None], **one.angles(), out_hw=out_hw,
                                                blend=blend)
        samples.append(value[0, 0])
        weights.append(weight[0, 0])
    return torch.stack(samples), torch.stack(weights)


def _factors(rig: ViewRig, out_hw: tuple[int, int], prediction: str) -> Tensor:
    """a_v(p) [V, H, W]: radial value = a_v(p)·(view's planar value): 1/cosθ for depth, cosθ for disparity."""
    directions = equirect_directions(*out_hw)  # [H, W, 3]
    cos = torch.einsum("hwc,vc->vhw", directions, _view_forward(rig)).clamp_min(1e-3)
    return cos if prediction == "disparity" else 1.0 / cos


def solve_alignment(
    predictions: Tensor, rig: ViewRig, prediction: str, align_hw: tuple[int, int] = (96, 192),
    iterations: int = 4, huber: float = 0.02,
) -> tuple[Tensor, Tensor, float]:
    """Per-view scale and shift [V] each that make the views agree on their overlaps (one solve).

    ``predictions``: [V, h, w] model outputs. Unknowns x = (s_1..s_{V-1}, t_0..t_{V-1}) with s_0 = 1
    fixed (the one gauge). Every direction p of an ``align_hw`` equirect grid seen by views i < j gives
    the residual a_i(p)(s_i P_i(p) + t_i) − a_j(p)(s_j P_j(p) + t_j), weighted by the pixel's solid
    angle and, after the first pass, divided by the current estimate there (relative error) and
    Huber-weighted (threshold ``huber``, relative). Returns (scale [V], shift [V], median relative
    residual of the last pass).
    """
    n_views = predictions.shape[0]
    samples, covered = _project_views(predictions.double(), rig, align_hw, "average")
    factor = _factors(rig, align_hw, prediction).double()
    covered = covered > 0.5
    height = align_hw[0]
    lat = (0.5 - (torch.arange(height, dtype=torch.float64) + 0.5) / height) * math.pi
    area = torch.cos(lat)[:, None].expand(align_hw)
    rows_i, rows_j, masks = [], [], []
    for i in range(n_views):
        for j in range(i + 1, n_views):
            both = covered[i] & covered[j]
            if int(both.sum()) >= 8:
                rows_i.append(i)
                rows_j.append(j)
                masks.append(both)
    if not rows_i:
        raise InvalidInputError("the depth views do not overlap; use a wider --fov")
    # Design rows: coefficients of (s_v, t_v) for each pair sample; columns 0..V-1 scale, V..2V-1 shift.
    blocks, weights_area, pairs = [], [], []
    for i, j, mask in zip(rows_i, rows_j, masks):
        k = int(mask.sum())
        row = torch.zeros(k, 2 * n_views, dtype=torch.float64)
        row[:, i] = factor[i][mask] * samples[i][mask]
        row[:, n_views + i] = factor[i][mask]
        row[:, j] = -factor[j][mask] * samples[j][mask]
        row[:, n_views + j] = -factor[j][mask]
        blocks.append(row)
        weights_area.append(area[mask])
        pairs.append((i, j, mask))
    design = torch.cat(blocks)
    base_weight = torch.cat(weights_area)
    # The first view's scale is the gauge: s_0 = 1 moves its column to the right-hand side.
    rhs = -design[:, 0]
    design = design[:, 1:]
    weight = base_weight.clone()
    residual_median = float("nan")
    solution = None
    for _ in range(max(1, iterations)):
        w = weight.sqrt()[:, None]
        solution = torch.linalg.lstsq(design * w, rhs * w[:, 0], driver="gelsd").solution
        scale = torch.cat([torch.ones(1, dtype=torch.float64), solution[: n_views - 1]])
        shift = solution[n_views - 1:]
        # value of the pair samples in radial units (the mean of the two views) for relative errors
        value = []
        for i, j, mask in pairs:
            vi = factor[i][mask] * (scale[i] * samples[i][mask] + shift[i])
            vj = factor[j][mask] * (scale[j] * samples[j][mask] + shift[j])
            value.append((vi.abs() + vj.abs()) / 2)
        value = torch.cat(value).clamp_min(1e-12)
        relative = ((design @ solution) - rhs).abs() / value
        residual_median = float(relative.median())
        huber_weight = torch.where(relative <= huber, torch.ones_like(relative), huber / relative)
        weight = base_weight * huber_weight / value.square()
    return scale.float(), shift.float(), residual_median


# --- the whole estimate ----------------------------------------------------------------------------------

def _resolve_model(model: ModelLike, prediction: str | None, device, dtype):
    if model is None or isinstance(model, (str, os.PathLike)):
        loaded = load_depth_model(model or DEFAULT_DEPTH_MODEL, device=device, dtype=dtype)
        return loaded, loaded.name, prediction or loaded.prediction, loaded.size
    if not callable(model):
        raise InvalidInputError(f"model must be a depth model name, a folder or a callable, got {type(model).__name__}")
    name = getattr(model, "name", None) or getattr(model, "__name__", None) or type(model).__name__
    kind = prediction or getattr(model, "prediction", None)
    if kind is None:
        raise InvalidInputError("say what the depth callable predicts: prediction='depth', 'disparity' or 'metric'")
    return model, str(name), kind, getattr(model, "size", None)


def estimate_depth(
    image, model: ModelLike = None, *, prediction: Prediction | None = None, rig: ViewRig | None = None,
    fov_deg: float = DEFAULT_FOV, view_size: int | None = None, batch_size: int = 6,
    camera_height: float | None = None, align_hw: tuple[int, int] | None = None, max_depth_ratio: float = 100.0,
    device: str | torch.device | None = None, dtype: torch.dtype | None = None, progress: bool = True,
) -> DepthResult:
    """Estimate a seamless 360° depth map of an equirectangular panorama.

    Args:
        image: a 2:1 panorama: file path, PIL image, or [3, H, W] / [1, 3, H, W] float tensor in [0, 1].
        model: a transformers depth model id or folder (default :data:`DEFAULT_DEPTH_MODEL`, loaded
            once per call; pass a loaded :class:`TransformersDepthModel` to reuse it), or any callable
            views [N, 3, h, w] in [0, 1] → [N, h, w].
        prediction: what the model outputs: ``"disparity"`` (relative inverse depth), ``"depth"``
            (relative depth, affine-invariant), ``"metric"`` (metres). Default: read from the model.
        rig: the perspective views (default: cube faces at ``fov_deg``, 120°).
        view_size: side of each square view in pixels (default: the model's input size, else the
            panorama's cube-face size widened to the FoV).
        camera_height: metres from the camera to the floor; rescales the result to metres.
        align_hw: grid of the alignment solve (default: the panorama downsampled to at most 96x192).
        max_depth_ratio: distances are clamped to [median / ratio, median · ratio] (sky, zero disparity).
        progress: a tqdm bar over the view batches.

    Returns:
        :class:`DepthResult` with ``depth`` [H, W] float32 (radial distance, see the module doc).
    """
    pano = as_panorama_tensor(image)
    height, width = pano.shape[-2:]
    if prediction is not None and prediction not in PREDICTIONS:
        raise InvalidInputError(f"unknown prediction {prediction!r}; use one of {', '.join(PREDICTIONS)}")
    if camera_height is not None and not (math.isfinite(camera_height) and camera_height > 0):
        raise InvalidInputError(f"--camera-height must be a positive number of metres, got {camera_height}")
    if batch_size < 1:
        raise InvalidInputError(f"--batch-size must be at least 1, got {batch_size}")
    rig = rig if rig is not None else default_rig(fov_deg)
    predictor, name, kind, native = _resolve_model(model, prediction, device, dtype)
    if kind not in PREDICTIONS:
        raise InvalidInputError(f"unknown prediction {kind!r}; use one of {', '.join(PREDICTIONS)}")
    if view_size is None:
        fov = float(rig.fov_deg.max())
        view_size = native or max(16, round(width / 4 * math.tan(math.radians(fov) / 2)))
    view_size = int(view_size)
    views = equirect_to_perspective(pano, **rig.angles(), out_hw=(view_size, view_size))[0]  # [V, 3, s, s]

    from tqdm.auto import tqdm

    outputs = []
    with tqdm(total=len(rig), unit="view", desc="pano360 depth", disable=True if not progress else None,
              leave=False) as bar:
        for start in range(0, len(rig), batch_size):
            chunk = views[start:start + batch_size]
            out = predictor(chunk)
            if not isinstance(out, Tensor) or tuple(out.shape) != (chunk.shape[0], view_size, view_size):
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise InvalidInputError(f"the depth model returned {shape} for {chunk.shape[0]} views of "
                                        f"{view_size}x{view_size}; it must return [N, h, w] depth per view")
            outputs.append(out.detach().float().cpu())
            bar.update(chunk.shape[0])
    predictions = torch.cat(outputs)
    if not torch.isfinite(predictions).all():
        raise InvalidInputError(f"the depth model {name} returned NaN or infinite values; check the model")
    if float(predictions.std()) == 0.0:
        raise InvalidInputError(f"the depth model {name} returned a constant map; it is not a depth model")

    space = "disparity" if kind == "disparity" else "depth"
    if align_hw is None:
        align_h = min(96, height)
        align_hw = (align_h, 2 * align_h)
    scale, shift, residual = solve_alignment(predictions, rig, space, align_hw)

    # Blend: aligned planar values → radial values in equirect space, feathered per view.
    aligned = scale[:, None, None] * predictions + shift[:, None, None]
    samples, weights = _project_views(aligned, rig, (height, width), "feather")
    radial = samples * _factors(rig, (height, width), space)
    total = weights.sum(0)
    merged = (radial * weights).sum(0) / total.clamp_min(1e-12)
    lat = (0.5 - (torch.arange(height, dtype=torch.float32) + 0.5) / height) * math.pi
    area = torch.cos(lat)[:, None].expand(height, width)
    if space == "disparity":
        positive = merged[merged > 0]
        if positive.numel() == 0:
            raise InvalidInputError(f"the depth model {name} gave no positive disparity; is it a disparity model? "
                                    "pass prediction='depth' if it predicts depth")
        floor = _weighted_median(positive, area[merged > 0]) / max_depth_ratio
        depth = 1.0 / merged.clamp_min(float(floor))
    else:
        good = merged > 0
        if not bool(good.any()):
            raise InvalidInputError(f"the depth model {name} gave no positive depth; is it a depth model?")
        floor = _weighted_median(merged[good], area[good]) / max_depth_ratio
        depth = merged.clamp_min(float(floor))
    median = _weighted_median(depth, area)
    depth = depth.clamp(float(median) / max_depth_ratio, float(median) * max_depth_ratio)
    units = "metres" if kind == "metric" else "relative"
    if camera_height is not None:
        depth = depth * (camera_height / estimate_camera_height(depth))
        units = "metres"
    elif units == "relative":
        depth = depth / median
    return DepthResult(depth=depth.float().contiguous(), units=units, prediction=kind, model=name, rig=rig,
                       view_size=view_size, view_scale=scale, view_shift=shift, overlap_residual=residual,
                       camera_height=camera_height)


def _weighted_median(values: Tensor, weights: Tensor) -> float:
    order = torch.argsort(values.reshape(-1))
    v = values.reshape(-1)[order]
    c = torch.cumsum(weights.reshape(-1)[order].double(), 0)
    index = int(torch.searchsorted(c, c[-1] / 2))
    return float(v[min(index, v.numel() - 1)])


def estimate_camera_height(depth: Tensor, below_deg: float = 60.0) -> float:
    """Height of the camera above the floor in the depth map's units: the area-weighted median of
    r·sin(−lat) over the directions more than ``below_deg`` below the horizon. ``depth``: [H, W]."""
    height, _width = depth.shape
    lat = (0.5 - (torch.arange(height, dtype=torch.float32) + 0.5) / height) * math.pi
    rows = lat < -math.radians(below_deg)
    if not bool(rows.any()):
        raise InvalidInputError("the depth map is too small to find the floor; use a larger panorama")
    vertical = depth[rows] * torch.sin(-lat[rows])[:, None]
    area = torch.cos(lat[rows])[:, None].expand_as(vertical)
    return _weighted_median(vertical, area)


def depth_to_points(depth: Tensor) -> Tensor:
    """[H, W] radial depth → [H, W, 3] points (x right, y up, z forward; pano360's sphere frame)."""
    height, width = depth.shape
    return equirect_directions(height, width) * depth[..., None]


__all__ = ["DEFAULT_DEPTH_MODEL", "DepthResult", "TransformersDepthModel", "as_panorama_tensor", "check_full_sphere",
           "default_rig", "depth_to_points", "estimate_camera_height", "estimate_depth", "load_depth_model",
           "solve_alignment"]

