"""Evaluate: the candidate and the production model on the same eval rows, overall and per slice."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from components.common import classification_metrics, model_io
from components.common.classification_metrics import Metrics
from components.common.datasets import DatasetConfig
from components.common.reports import JsonRecord, markdown_table
from components.common.spans import read_file
from components.train.logic import binary_labels

OVERALL = "overall"


@dataclasses.dataclass(frozen=True)
class SliceMetrics:
    feature: str
    value: str
    metrics: Metrics

    @property
    def name(self) -> str:
        return OVERALL if not self.feature else f"{self.feature}={self.value}"


@dataclasses.dataclass(frozen=True)
class ModelEvaluation:
    """One model's metrics: the first slice is the overall one."""

    slices: tuple[SliceMetrics, ...]

    @property
    def overall(self) -> Metrics:
        return self.slices[0].metrics

    def by_name(self) -> dict[str, Metrics]:
        return {s.name: s.metrics for s in self.slices}


@dataclasses.dataclass(frozen=True)
class Evaluation(JsonRecord):
    """Candidate and production metrics on the same rows.

    Attributes:
        candidate: The new model.
        production: The model in production, None before the first push or when it
            cannot score these rows (then `production_note` says why).
        production_version: Its version in the model repository.
        production_note: Why there is no production evaluation, if there is none.
        roc: Candidate ROC curve (false positive rates, true positive rates, thresholds).
        confusion: Candidate confusion matrix at threshold 0.5.
    """

    candidate: ModelEvaluation
    production: ModelEvaluation | None
    production_version: int | None
    production_note: str
    roc: tuple[list[float], list[float], list[float]]
    confusion: list[list[int]]

    def markdown(self) -> str:
        production = self.production.by_name() if self.production else {}
        header = (
            "slice",
            "examples",
            "AUC",
            "log loss",
            "accuracy",
            "precision",
            "recall",
            "production AUC",
            "AUC change",
        )
        rows = []
        for s in self.candidate.slices:
            m, base = s.metrics, production.get(s.name)
            rows.append(
                (
                    s.name,
                    m.examples,
                    _fmt(m.auc),
                    _fmt(m.log_loss),
                    _fmt(m.accuracy),
                    _fmt(m.precision),
                    _fmt(m.recall),
                    _fmt(base.auc) if base else "-",
                    _fmt(m.auc - base.auc, signed=True) if base else "-",
                )
            )
        against = (
            f"production model version {self.production_version}"
            if self.production
            else f"no production model ({self.production_note})"
        )
        return (
            f"## Evaluation\n\nCandidate against {against}, on the same eval rows.\n\n{markdown_table(header, rows)}\n"
        )


def _fmt(value: float, signed: bool = False) -> str:
    if math.isnan(value):
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def evaluate(
    candidate_dir: Path,
    eval_path: Path,
    dataset: DatasetConfig,
    production_dir: Path | None = None,
    production_version: int | None = None,
    min_slice_examples: int = 1,
) -> Evaluation:
    """Scores the eval split with the candidate and, if given, the production model.

    Args:
        candidate_dir: The candidate SavedModel.
        eval_path: Parquet eval split.
        dataset: Label and slice features.
        production_dir: The production SavedModel, or None before the first push.
        production_version: Its version, for the report.
        min_slice_examples: Slices with fewer rows are left out.
    """
    frame = read_file(eval_path, "parquet")
    labels = binary_labels(frame, dataset, eval_path)
    candidate_scores = _scores(candidate_dir, frame)
    production, note = None, "first model: nothing in production"
    if production_dir is not None:
        try:
            production = _evaluate_scores(labels, _scores(production_dir, frame), frame, dataset, min_slice_examples)
        except (model_io.RequestError, OSError, ValueError) as error:
            note = f"production model version {production_version} cannot score these rows: {error}"
    return Evaluation(
        candidate=_evaluate_scores(labels, candidate_scores, frame, dataset, min_slice_examples),
        production=production,
        production_version=production_version if production else None,
        production_note="" if production else note,
        roc=classification_metrics.roc_curve(labels, candidate_scores),
        confusion=classification_metrics.confusion_matrix(labels, candidate_scores),
    )


def _scores(model_dir: Path, frame) -> np.ndarray:
    serving_fn = model_io.load(model_dir)
    return model_io.predict(serving_fn, model_io.frame_to_columns(model_io.signature_of(serving_fn), frame))


def _evaluate_scores(
    labels: np.ndarray, scores: np.ndarray, frame, dataset: DatasetConfig, min_slice_examples: int
) -> ModelEvaluation:
    slices = [SliceMetrics("", "", classification_metrics.compute(labels, scores))]
    for feature in dataset.slice_features:
        for value, index in sorted(frame.groupby(feature).indices.items(), key=lambda item: str(item[0])):
            if len(index) >= min_slice_examples:
                slices.append(
                    SliceMetrics(feature, str(value), classification_metrics.compute(labels[index], scores[index]))
                )
    return ModelEvaluation(tuple(slices))
