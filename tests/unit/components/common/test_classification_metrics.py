import math

import numpy as np
import pytest

from components.common.classification_metrics import auc, compute, confusion_matrix, roc_curve


def test_auc_known_values():
    labels = np.array([0, 0, 1, 1])
    assert auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert auc(labels, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert auc(labels, np.array([0.1, 0.6, 0.4, 0.9])) == 0.75
    assert math.isnan(auc(np.array([1, 1]), np.array([0.2, 0.3])))


def test_auc_matches_pairwise_definition_on_random_data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400), 2)  # rounding makes ties
    positives, negatives = scores[labels == 1], scores[labels == 0]
    pairs = (positives[:, None] > negatives[None, :]).mean() + 0.5 * (positives[:, None] == negatives[None, :]).mean()
    assert auc(labels, scores) == pytest.approx(pairs)


def test_threshold_metrics_and_confusion_matrix():
    labels = np.array([1, 1, 0, 0, 1])
    scores = np.array([0.9, 0.4, 0.6, 0.1, 0.7])
    metrics = compute(labels, scores)
    assert (metrics.accuracy, metrics.precision, metrics.recall) == (0.6, pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert metrics.log_loss == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.4, 0.9, 0.7])))
    assert confusion_matrix(labels, scores) == [[1, 1], [1, 2]]


def test_roc_curve_runs_from_origin_to_corner():
    fpr, tpr, thresholds = roc_curve(np.array([0, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.9]), points=11)
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert thresholds[0] == 1.0 and thresholds[-1] == 0.0
