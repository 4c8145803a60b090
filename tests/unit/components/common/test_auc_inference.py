import math

import numpy as np
import pytest

from components.common.auc_inference import (
    AucDifference,
    auc_estimate,
    delong,
    holm,
    independent_difference,
    paired_difference,
)
from components.common.classification_metrics import auc


def brute_force_delong(labels: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """DeLong et al. (1988) from the definition: the kernel over every (positive, negative) pair,
    structural components as row and column means, covariances with denominator count - 1."""
    labels = labels.astype(bool)
    v10, v01 = [], []
    for s in scores:
        positives, negatives = s[labels], s[~labels]
        kernel = (positives[:, None] > negatives[None, :]) + 0.5 * (positives[:, None] == negatives[None, :])
        v10.append(kernel.mean(axis=1))
        v01.append(kernel.mean(axis=0))
    v10, v01 = np.array(v10), np.array(v01)
    m, n = v10.shape[1], v01.shape[1]
    s10 = (v10 - v10.mean(axis=1, keepdims=True)) @ (v10 - v10.mean(axis=1, keepdims=True)).T / (m - 1)
    s01 = (v01 - v01.mean(axis=1, keepdims=True)) @ (v01 - v01.mean(axis=1, keepdims=True)).T / (n - 1)
    return v10.mean(axis=1), s10 / m + s01 / n


def test_delong_matches_the_brute_force_computation_with_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    first = np.round(labels * 0.3 + rng.random(60), 1)  # rounding makes ties
    second = np.round(first + rng.normal(0, 0.3, 60), 1)
    third = np.round(rng.random(60), 1)
    aucs, covariance = delong(labels, first, second, third)
    expected_aucs, expected_covariance = brute_force_delong(labels, [first, second, third])
    np.testing.assert_allclose(aucs, expected_aucs, rtol=1e-12)
    np.testing.assert_allclose(covariance, expected_covariance, rtol=1e-10, atol=1e-15)
    assert aucs[0] == pytest.approx(auc(labels, first))


def test_delong_known_small_example():
    # Positives 0.8, 0.6; negatives 0.7, 0.2: kernel [[1, 1], [0, 1]], AUC 0.75;
    # positive components (1, 0.5), negative components (0.5, 1): variances 0.125 each,
    # so var(AUC) = 0.125 / 2 + 0.125 / 2.
    estimate = auc_estimate(np.array([1, 1, 0, 0]), np.array([0.8, 0.6, 0.7, 0.2]))
    assert estimate.auc == 0.75
    assert estimate.standard_error == pytest.approx(math.sqrt(0.125))
    assert (estimate.positives, estimate.negatives) == (2, 2)


def test_one_class_gives_nan():
    aucs, covariance = delong(np.array([1, 1, 1]), np.array([0.1, 0.2, 0.3]))
    assert math.isnan(aucs[0]) and math.isnan(covariance[0, 0])


def test_paired_difference_of_identical_models_is_exactly_zero():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 300)
    scores = rng.random(300)
    difference = paired_difference(labels, scores, scores)
    assert (difference.difference, difference.standard_error) == (0.0, 0.0)
    assert difference.p_not_above(-0.01) == 0.0  # no noise: surely above -0.01


def test_pairing_narrows_the_interval_of_correlated_models():
    rng = np.random.default_rng(3)
    labels = rng.random(2000) < 0.2
    signal = labels * 0.8 + rng.normal(0, 1, 2000)
    first, second = signal + rng.normal(0, 0.2, 2000), signal + rng.normal(0, 0.2, 2000)
    paired = paired_difference(labels, first, second)
    unpaired = independent_difference(auc_estimate(labels, first), auc_estimate(labels, second))
    assert paired.standard_error < unpaired.standard_error / 3


def draw(rng: np.random.Generator, rows: int, separation: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a binormal model: 20% positives, scores N(separation, 1) against N(0, 1)."""
    labels = rng.random(rows) < 0.2
    return labels, labels * separation + rng.normal(0, 1, rows)


def test_interval_coverage_by_simulation():
    """The 90% interval of a single AUC, and of a paired difference, cover the true value about
    90% of the time (fixed seed, 1,000 samples of 400 rows each)."""
    rng = np.random.default_rng(4)
    separation = 0.74  # binormal AUC = Phi(separation / sqrt(2)) = 0.70
    true_auc = 0.5 * (1 + math.erf(separation / 2))
    single, paired = 0, 0
    for _ in range(1000):
        labels, signal = draw(rng, 400, separation)
        estimate = auc_estimate(labels, signal)
        half = 1.6449 * estimate.standard_error
        single += abs(estimate.auc - true_auc) <= half
        # Two noisy copies of the same signal: equally good, so the true difference is 0.
        low, high = paired_difference(
            labels, signal + rng.normal(0, 0.5, 400), signal + rng.normal(0, 0.5, 400)
        ).interval(0.9)
        paired += low <= 0 <= high
    assert 0.87 <= single / 1000 <= 0.93
    assert 0.87 <= paired / 1000 <= 0.93


def test_one_sided_p_values():
    difference = AucDifference(0.01, 0.01)
    assert difference.p_not_above(0.0) == pytest.approx(0.158655, abs=1e-6)  # 1 - Phi(1)
    assert difference.p_not_below(0.0) == pytest.approx(0.841345, abs=1e-6)
    low, high = difference.interval(0.9)
    assert (low, high) == (pytest.approx(0.01 - 0.016449, abs=1e-6), pytest.approx(0.01 + 0.016449, abs=1e-6))


def test_holm_known_values():
    # Sorted 0.01, 0.02, 0.04, 0.30 times 4, 3, 2, 1 -> 0.04, 0.06, 0.08, 0.30 (kept monotone).
    assert holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []
