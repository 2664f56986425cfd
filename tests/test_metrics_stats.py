"""Fréchet distance, KID, Inception Score and KNN-GIQA against references and known cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from pano360.errors import InvalidInputError
from pano360.metrics.stats import (
    frechet_distance,
    frechet_distance_from_features,
    gaussian_stats,
    inception_score,
    kernel_inception_distance,
    knn_giqa,
)


def scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's computation: scipy sqrtm of S1·S2, an epsilon offset if it is not finite, real part."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("n, m, dim", [(400, 300, 16), (500, 500, 32)])
def test_frechet_matches_scipy_on_gaussian_samples(n, m, dim):
    rng = np.random.default_rng(dim)
    mix = rng.normal(size=(dim, dim))
    a = rng.normal(size=(n, dim)) @ mix
    b = rng.normal(size=(m, dim)) @ mix * 1.2 + 0.3
    expected = scipy_frechet(a, b)
    assert frechet_distance_from_features(a, b) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(*gaussian_stats(a), *gaussian_stats(b)) == pytest.approx(expected, rel=1e-7)


def test_frechet_matches_scipy_with_near_singular_covariances():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(4, 32))  # data in a 4-dimensional subspace of 32, plus tiny noise
    a = rng.normal(size=(300, 4)) @ basis + 1e-7 * rng.normal(size=(300, 32))
    b = rng.normal(size=(300, 4)) @ basis * 1.1 + 0.5 + 1e-7 * rng.normal(size=(300, 32))
    expected = scipy_frechet(a, b)
    value = frechet_distance_from_features(a, b)
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_low_rank_path_equals_covariance_path_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(20, 64))
    b = rng.normal(size=(30, 64)) * 0.8 + 0.2
    low_rank = frechet_distance_from_features(a, b)  # n < d: SVD of A Bᵀ
    full = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))  # D x D eigen-decompositions
    assert low_rank == pytest.approx(full, rel=1e-7)
    assert low_rank == pytest.approx(scipy_frechet(a, b), rel=1e-6)


def test_frechet_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(3)
    for shape in [(10, 64), (200, 16)]:
        a = rng.normal(size=shape) * 5 + 2
        assert frechet_distance_from_features(a, a) == pytest.approx(0.0, abs=1e-8)
        assert frechet_distance(*gaussian_stats(a), *gaussian_stats(a)) == pytest.approx(0.0, abs=1e-7)


def test_frechet_needs_two_samples():
    with pytest.raises(InvalidInputError, match="at least 2"):
        frechet_distance_from_features(np.zeros((1, 4)), np.zeros((5, 4)))


def test_kid_hand_computed_case():
    # k(x, y) = (x y / 1 + 1)^3; X = {1, 2}, Y = {0, 1}
    # within: (27 + 27 + 1 + 1) / (2 * 1) = 28; across: 2 * (1 + 8 + 1 + 27) / 4 = 18.5
    value, std = kernel_inception_distance([[1.0], [2.0]], [[0.0], [1.0]], subsets=3, subset_size=2)
    assert value == pytest.approx(9.5) and std == pytest.approx(0.0)


def test_kid_is_unbiased_on_a_known_case():
    """1-D Gaussians, cubic kernel: the population MMD² has a closed form; small subsets average to it."""
    mu_x, mu_y, sigma = 0.0, 0.5, 1.0

    def moments(mu):
        return mu, mu**2 + sigma**2, mu**3 + 3 * mu * sigma**2

    def expected_kernel(p, q):  # E[(X Y + 1)^3] for independent X, Y
        (m1p, m2p, m3p), (m1q, m2q, m3q) = moments(p), moments(q)
        return m3p * m3q + 3 * m2p * m2q + 3 * m1p * m1q + 1

    truth = expected_kernel(mu_x, mu_x) + expected_kernel(mu_y, mu_y) - 2 * expected_kernel(mu_x, mu_y)
    rng = np.random.default_rng(4)
    x = rng.normal(mu_x, sigma, size=(200_000, 1))
    y = rng.normal(mu_y, sigma, size=(200_000, 1))
    subsets, size = 4000, 8
    mean, std = kernel_inception_distance(x, y, subsets=subsets, subset_size=size, seed=5)
    standard_error = std / np.sqrt(subsets)
    assert abs(mean - truth) < 4 * standard_error
    # the biased (V-statistic) estimator's expectation is off by far more than that at m = 8
    kxx_diag = np.mean((x[:, 0] ** 2 + 1) ** 3)
    kyy_diag = np.mean((y[:, 0] ** 2 + 1) ** 3)
    biased = truth + (kxx_diag - expected_kernel(mu_x, mu_x) + kyy_diag - expected_kernel(mu_y, mu_y)) / size
    assert abs(biased - truth) > 10 * standard_error


def test_inception_score_of_uniform_predictions_is_one():
    mean, std = inception_score(np.zeros((50, 1008)))
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_confident_distinct_predictions_is_the_split_size():
    logits = np.full((20, 1008), -1e4)
    logits[np.arange(20), np.arange(20)] = 0.0  # each image certain of its own class
    assert inception_score(logits, splits=1)[0] == pytest.approx(20.0, rel=1e-9)
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(2.0, rel=1e-9) and std == pytest.approx(0.0, abs=1e-9)


def test_knn_giqa_sums_inverse_l1_distances_of_the_k_nearest():
    scores = knn_giqa([[0.0]], [[1.0], [3.0], [-2.0]], k=2)
    assert scores[0] == pytest.approx(1 / (1 - 1e-6) + 1 / (2 + 1e-6))
    with pytest.raises(InvalidInputError, match="K=8"):
        knn_giqa([[0.0]], [[1.0]] * 3, k=8)
