"""Binary classification metrics from labels and predicted probabilities (NumPy only)."""

from __future__ import annotations

import dataclasses

import numpy as np

THRESHOLD = 0.5
EPSILON = 1e-7


@dataclasses.dataclass(frozen=True)
class Metrics:
    """Metrics of one model on one set of rows; AUC is NaN when only one class is present."""

    examples: int
    auc: float
    log_loss: float
    accuracy: float
    precision: float
    recall: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum (Mann-Whitney) formula, ties averaged."""
    labels = labels.astype(bool)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = midranks(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values`, ties sharing their average rank (so equal scores count half)."""
    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return ranks


def compute(labels: np.ndarray, scores: np.ndarray, threshold: float = THRESHOLD) -> Metrics:
    labels = labels.astype(bool)
    predicted = scores >= threshold
    clipped = np.clip(scores.astype(np.float64), EPSILON, 1 - EPSILON)
    true_positives = int((predicted & labels).sum())
    return Metrics(
        examples=len(labels),
        auc=auc(labels, scores),
        log_loss=float(-np.mean(np.where(labels, np.log(clipped), np.log(1 - clipped))))
        if len(labels)
        else float("nan"),
        accuracy=float((predicted == labels).mean()) if len(labels) else float("nan"),
        precision=true_positives / int(predicted.sum()) if predicted.any() else 0.0,
        recall=true_positives / int(labels.sum()) if labels.any() else 0.0,
    )


def roc_curve(labels: np.ndarray, scores: np.ndarray, points: int = 50) -> tuple[list[float], list[float], list[float]]:
    """(false positive rates, true positive rates, thresholds) at evenly spaced thresholds."""
    labels = labels.astype(bool)
    thresholds = np.linspace(1.0, 0.0, points)
    positives, negatives = max(int(labels.sum()), 1), max(int((~labels).sum()), 1)
    fpr = [float(((scores >= t) & ~labels).sum() / negatives) for t in thresholds]
    tpr = [float(((scores >= t) & labels).sum() / positives) for t in thresholds]
    return fpr, tpr, [float(t) for t in thresholds]


def confusion_matrix(labels: np.ndarray, scores: np.ndarray, threshold: float = THRESHOLD) -> list[list[int]]:
    """[[true negatives, false positives], [false negatives, true positives]]."""
    labels = labels.astype(bool)
    predicted = scores >= threshold
    return [
        [int((~predicted & ~labels).sum()), int((predicted & ~labels).sum())],
        [int((~predicted & labels).sum()), int((predicted & labels).sum())],
    ]
