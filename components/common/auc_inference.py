"""Uncertainty of AUC estimates (NumPy and the standard library only).

DeLong's method: E. R. DeLong, D. M. DeLong, D. L. Clarke-Pearson, "Comparing the areas
under two or more correlated receiver operating characteristic curves: a nonparametric
approach", Biometrics 44(3), 1988. An AUC is the mean of its structural components (each
positive's share of negatives scored below it, each negative's share of positives scored
above it, ties counting half); its variance, and the covariance of AUCs of several models
on the same rows, follow from the components' sample covariances. The components are
computed from midranks in O(n log n) as in X. Sun and W. Xu, "Fast implementation of
DeLong's algorithm for comparing the areas under correlated receiver operating
characteristic curves", IEEE Signal Processing Letters 21(11), 2014.

Intervals and tests use the normal approximation DeLong's estimator is built for; callers
test only with MIN_PER_CLASS rows of each class.
"""

from __future__ import annotations

import dataclasses
import math
from statistics import NormalDist
from typing import Sequence

import numpy as np

from components.common.classification_metrics import midranks

STANDARD_NORMAL = NormalDist()
# Rows of each class below which a test on DeLong's variance is not made: with a handful of
# positives the variance estimate itself is unreliable (one positive ranked first has none).
MIN_PER_CLASS = 20


@dataclasses.dataclass(frozen=True)
class AucEstimate:
    """One model's AUC on one set of rows, with its DeLong standard error (NaN with one class)."""

    auc: float
    standard_error: float
    positives: int
    negatives: int


@dataclasses.dataclass(frozen=True)
class AucDifference:
    """An estimated AUC difference (first minus second) and its standard error, normal approximately."""

    difference: float
    standard_error: float

    def interval(self, confidence: float) -> tuple[float, float]:
        return normal_interval(self.difference, self.standard_error, confidence)

    def p_not_above(self, bound: float) -> float:
        """One-sided p-value of "the difference is at most `bound`" (small: evidence it is above)."""
        return _upper_tail(self.difference - bound, self.standard_error)

    def p_not_below(self, bound: float) -> float:
        """One-sided p-value of "the difference is at least `bound`" (small: evidence it is below)."""
        return _upper_tail(bound - self.difference, self.standard_error)


def normal_interval(estimate: float, standard_error: float, confidence: float) -> tuple[float, float]:
    """The two-sided normal interval at `confidence`; its ends are the one-sided bounds at (1 + confidence) / 2."""
    half = STANDARD_NORMAL.inv_cdf((1 + confidence) / 2) * standard_error
    return estimate - half, estimate + half


def delong(labels: np.ndarray, *scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs of one or more models scored on the same rows, and their covariance matrix.

    Args:
        labels: 1 (or True) for positives.
        scores: One array of scores per model, aligned with `labels`.

    Returns:
        (aucs of shape [k], covariance of shape [k, k]); NaN when a class has no rows, and a
        zero variance part for a class with a single row.
    """
    labels = np.asarray(labels).astype(bool)
    matrix = np.vstack([np.asarray(s, dtype=np.float64) for s in scores])
    positives, negatives = matrix[:, labels], matrix[:, ~labels]
    m, n = positives.shape[1], negatives.shape[1]
    k = matrix.shape[0]
    if m == 0 or n == 0:
        return np.full(k, math.nan), np.full((k, k), math.nan)
    within_positives = np.apply_along_axis(midranks, 1, positives)
    within_negatives = np.apply_along_axis(midranks, 1, negatives)
    combined = np.apply_along_axis(midranks, 1, np.hstack([positives, negatives]))
    # Each positive's share of negatives below it; each negative's share of positives above it.
    positive_components = (combined[:, :m] - within_positives) / n
    negative_components = 1.0 - (combined[:, m:] - within_negatives) / m
    aucs = positive_components.mean(axis=1)
    covariance = _covariance(positive_components) / m + _covariance(negative_components) / n
    return aucs, covariance


def auc_estimate(labels: np.ndarray, scores: np.ndarray) -> AucEstimate:
    """One model's AUC and its DeLong standard error."""
    labels = np.asarray(labels).astype(bool)
    aucs, covariance = delong(labels, scores)
    return AucEstimate(
        float(aucs[0]), math.sqrt(max(float(covariance[0, 0]), 0.0)), int(labels.sum()), int((~labels).sum())
    )


def paired_difference(labels: np.ndarray, first: np.ndarray, second: np.ndarray) -> AucDifference:
    """AUC of `first` minus AUC of `second`, both scored on the same rows: DeLong's paired test,
    whose variance subtracts the two AUCs' covariance (correlated models on the same rows
    differ far less than their separate intervals suggest)."""
    aucs, covariance = delong(labels, first, second)
    variance = covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1]
    return AucDifference(float(aucs[0] - aucs[1]), math.sqrt(max(float(variance), 0.0)))


def independent_difference(first: AucEstimate, second: AucEstimate) -> AucDifference:
    """AUC of `first` minus AUC of `second`, measured on independent rows (two versions serving
    different requests): the variances add."""
    return AucDifference(first.auc - second.auc, math.hypot(first.standard_error, second.standard_error))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (S. Holm, "A simple sequentially rejective multiple test
    procedure", Scandinavian Journal of Statistics 6(2), 1979): rejecting where the adjusted
    p-value is below alpha keeps the chance of any false rejection among them at most alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def _covariance(components: np.ndarray) -> np.ndarray:
    """Sample covariance (denominator count - 1, as DeLong) of each model's components; zero for one row."""
    if components.shape[1] < 2:
        return np.zeros((components.shape[0], components.shape[0]))
    return np.atleast_2d(np.cov(components))


def _upper_tail(distance: float, standard_error: float) -> float:
    """P(Z > distance / standard_error); with no sampling noise, 0 or 1 by the sign of the distance."""
    if math.isnan(distance) or math.isnan(standard_error):
        return math.nan
    if standard_error == 0:
        return 0.0 if distance > 0 else 1.0
    return 1.0 - STANDARD_NORMAL.cdf(distance / standard_error)
