"""Panorama metrics: the PanFusion/UniPano and SyncDiffusion protocols plus geometry-aware scores.

Quick use::

    from pano360.metrics import EvalConfig, evaluate
    result = evaluate("out/", reference="gt/", prompts="prompts.txt", config=EvalConfig(metrics=["panfusion"]))
    result.metrics["faed"]["value"]

Building blocks (usable on their own): :mod:`.stats` (Fréchet distance, KID, IS, KNN-GIQA),
:mod:`.views` (rolled / random / seam / horizon views, cube faces, square crops), :mod:`.seam`
(Discontinuity Score), :mod:`.perceptual` (Intra-LPIPS, Intra-Style-L), :mod:`.clipscore`,
:mod:`.report` (HTML). The user guide is ``docs/metrics.md``.
"""

from .stats import (
    frechet_distance,
    frechet_distance_from_features,
    gaussian_stats,
    inception_score,
    kernel_inception_distance,
    knn_giqa,
)
from .suite import GROUPS, METRICS, EvalConfig, EvalResult, MetricInfo, evaluate, select_metrics

__all__ = [
    "GROUPS",
    "METRICS",
    "EvalConfig",
    "EvalResult",
    "MetricInfo",
    "evaluate",
    "frechet_distance",
    "frechet_distance_from_features",
    "gaussian_stats",
    "inception_score",
    "kernel_inception_distance",
    "knn_giqa",
    "select_metrics",
]
