"""Distribution statistics on feature vectors: Fréchet distance, KID, Inception Score, KNN-GIQA.

Everything here works on plain arrays of features (numpy or torch, converted to float64), so it can be
checked against textbook formulas without any network.
"""

from __future__ import annotations

import math

import numpy as np

from .._lazy import lazy_module
from ..errors import InvalidInputError

torch = lazy_module("torch")

__all__ = [
    "frechet_distance",
    "frechet_distance_from_features",
    "gaussian_stats",
    "inception_score",
    "kernel_inception_distance",
    "knn_giqa",
]


def _as_float64(features) -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {array.shape}")
    return array


def gaussian_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (divided by N-1) of features [N, D], in float64."""
    array = _as_float64(features)
    if array.shape[0] < 2:
        raise InvalidInputError(
            f"a Fréchet distance needs at least 2 images (feature vectors) per set, got {array.shape[0]}; add images"
        )
    return array.mean(axis=0), np.cov(array, rowvar=False).reshape(array.shape[1], array.shape[1])


def _sym_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues → 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``, with the trace term computed as the sum of
    square roots of the eigenvalues of the symmetric PSD matrix ``S1^(1/2) S2 S1^(1/2)`` (the same
    eigenvalues as ``S1 S2``). This is the quantity pytorch-fid gets from ``scipy.linalg.sqrtm(S1 @ S2)``
    and torchmetrics from the eigenvalues of ``S1 @ S2``, but stays real and finite for singular or
    near-singular covariances (fewer images than feature dimensions), where sqrtm needs an epsilon.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _sym_sqrt(sigma1)
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return max(value, 0.0)


def frechet_distance_from_features(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D].

    With fewer vectors than dimensions (the usual case for a few hundred panoramas and 2048 Inception
    features) it uses the exact low-rank form: with centred features A [N, D], B [M, D],
    ``S1 = AᵀA/(N-1)``, ``S2 = BᵀB/(M-1)``, the non-zero eigenvalues of ``S1 S2`` are the squared
    singular values of ``A Bᵀ`` divided by (N-1)(M-1), so ``tr((S1 S2)^(1/2)) = sum(svd(A Bᵀ)) /
    sqrt((N-1)(M-1))``: no D x D eigen-decomposition, and no epsilon for the singular covariances.
    Otherwise it calls :func:`frechet_distance` on the fitted means and covariances.
    """
    a, b = _as_float64(features_a), _as_float64(features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    n, m = a.shape[0], b.shape[0]
    if n < 2 or m < 2:
        gaussian_stats(a if n < 2 else b)  # raises the user-facing error
    if max(n, m) > a.shape[1]:
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    centred_a, centred_b = a - mu_a, b - mu_b
    trace_a = float((centred_a * centred_a).sum()) / (n - 1)
    trace_b = float((centred_b * centred_b).sum()) / (m - 1)
    singular = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False)
    trace_sqrt = float(singular.sum()) / math.sqrt((n - 1) * (m - 1))
    diff = mu_a - mu_b
    return max(float(diff @ diff) + trace_a + trace_b - 2 * trace_sqrt, 0.0)


def kernel_inception_distance(
    features_a, features_b, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)^3``.

    As torch-fidelity and clean-fid compute it: ``subsets`` random subsets of
    ``m = min(subset_size, N, M)`` vectors drawn without replacement from each set, the unbiased
    estimator ``(sum_{i != j} k(x_i, x_j) + sum_{i != j} k(y_i, y_j)) / (m (m - 1)) - 2 mean k(x_i, y_j)``
    per subset; returns the mean and the (population) standard deviation over subsets.
    """
    a, b = _as_float64(features_a), _as_float64(features_b)
    m = min(subset_size, a.shape[0], b.shape[0])
    if m < 2:
        raise InvalidInputError("KID needs at least 2 images in each set; add images")
    rng = np.random.default_rng(seed)
    dim = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        k_xx = (x @ x.T / dim + 1) ** 3
        k_yy = (y @ y.T / dim + 1) ** 3
        k_xy = (x @ y.T / dim + 1) ** 3
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values.append(within - 2 * k_xy.mean())
    return float(np.mean(values)), float(np.std(values))


def inception_score(logits, splits: int = 10, seed: int = 2020, shuffle: bool = True) -> tuple[float, float]:
    """Inception Score of class logits [N, C]: ``exp(E_x KL(p(y|x) || p(y)))`` per split; mean and std.

    torch-fidelity's procedure: softmax (float64), an optional seeded shuffle, ``splits`` contiguous
    splits (fewer if there are fewer images), the marginal p(y) per split, the population std.
    """
    array = _as_float64(logits)
    if array.shape[0] < 1:
        raise InvalidInputError("the Inception Score needs at least one image")
    if shuffle:
        array = array[np.random.RandomState(seed).permutation(array.shape[0])]
    array = array - array.max(axis=1, keepdims=True)
    probs = np.exp(array)
    probs /= probs.sum(axis=1, keepdims=True)
    n = probs.shape[0]
    splits = max(1, min(splits, n))
    scores = []
    for k in range(splits):
        part = probs[k * n // splits: (k + 1) * n // splits]
        marginal = part.mean(axis=0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0).sum(axis=1)
        scores.append(math.exp(float(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))


def knn_giqa(features, reference_features, k: int = 8, chunk: int = 256) -> np.ndarray:
    """KNN-GIQA per image (Gu et al. 2020): ``sum_{j<k} 1 / d_j`` over the k nearest reference features.

    Distances are L1, computed as the official code does with ``F.pairwise_distance(p=1)``, i.e.
    ``sum |x - y + 1e-6|``. Higher is better. Returns [N] float64.
    """
    x = torch.as_tensor(_as_float64(features))
    ref = torch.as_tensor(_as_float64(reference_features))
    if ref.shape[0] < k:
        raise InvalidInputError(f"KNN-GIQA with K={k} needs at least {k} reference images, got {ref.shape[0]}")
    scores = []
    for start in range(0, x.shape[0], chunk):
        block = x[start:start + chunk]
        distances = torch.stack([(row - ref + 1e-6).abs().sum(dim=1) for row in block])
        nearest = torch.topk(distances, k, dim=1, largest=False).values
        scores.append((1.0 / nearest).sum(dim=1))
    return torch.cat(scores).numpy()
