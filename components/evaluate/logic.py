"""Evaluate: the candidate and the production model on the same eval rows, overall and per slice,
with DeLong's paired comparison of their AUCs (components/common/auc_inference.py)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from components.common import classification_metrics, model_io
from components.common.auc_inference import auc_estimate, paired_difference
from components.common.classification_metrics import Metrics
from components.common.datasets import DatasetConfig
from components.common.reports import JsonRecord, markdown_table
from components.common.spans import read_parquet_batches
from components.train.logic import binary_labels

OVERALL = "overall"
EVAL_BATCH_ROWS = 65_536  # rows read and scored at a time: the step's memory holds one batch's features
FIRST_MODEL = "first model: nothing in production"


@dataclasses.dataclass(frozen=True)
class SliceMetrics:
    """One model's metrics on one slice, and the DeLong standard error of its AUC."""

    feature: str
    value: str
    metrics: Metrics
    auc_standard_error: float

    @property
    def name(self) -> str:
        return slice_name(self.feature, self.value)


def slice_name(feature: str, value: str) -> str:
    """`feature=value`, or OVERALL for all rows (no feature)."""
    return OVERALL if not feature else f"{feature}={value}"


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
class Comparison:
    """Candidate AUC minus production AUC on one slice's rows, with the standard error of DeLong's
    paired test (both models scored the same rows, so their errors are correlated)."""

    slice: str
    examples: int
    positives: int
    difference: float
    standard_error: float


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
        comparisons: Candidate against production per slice, overall first; empty without production.
    """

    candidate: ModelEvaluation
    production: ModelEvaluation | None
    production_version: int | None
    production_note: str
    roc: tuple[list[float], list[float], list[float]]
    confusion: list[list[int]]
    comparisons: tuple[Comparison, ...] = ()

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
            "AUC change ± standard error",
        )
        compared = {c.slice: c for c in self.comparisons}
        rows = []
        for s in self.candidate.slices:
            m, base, comparison = s.metrics, production.get(s.name), compared.get(s.name)
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
                    f"{_fmt(comparison.difference, signed=True)} ± {_fmt(comparison.standard_error)}"
                    if comparison
                    else "-",
                )
            )
        against = (
            f"production model version {self.production_version}"
            if self.production
            else f"no production model ({self.production_note})"
        )
        return (
            f"## Evaluation\n\nCandidate against {against}, on the same eval rows; standard errors by "
            f"DeLong's paired method.\n\n{markdown_table(header, rows)}\n"
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
        eval_path: Parquet eval split, read and scored a batch at a time (its labels, slice
            values and scores are kept: a few numbers a row).
        dataset: Label and slice features.
        production_dir: The production SavedModel, or None before the first push.
        production_version: Its version, for the report.
        min_slice_examples: Slices with fewer rows are left out.
    """
    candidate = model_io.SavedModel(candidate_dir)
    production, note = None, FIRST_MODEL
    if production_dir is not None:
        try:
            production = model_io.SavedModel(production_dir)
        except (OSError, ValueError) as error:
            note = f"production model version {production_version} cannot score these rows: {error}"
    needed = {*_inputs(candidate), *(_inputs(production) if production else ()), dataset.label, *dataset.slice_features}
    labels, slice_rows, candidate_scores, production_scores = [], [], [], []
    for batch in read_parquet_batches(eval_path, EVAL_BATCH_ROWS, needed):
        labels.append(binary_labels(batch, dataset, eval_path))
        slice_rows.append(batch[list(dataset.slice_features)])
        candidate_scores.append(_scores(candidate, batch))
        if production is not None:
            try:
                production_scores.append(_scores(production, batch))
            except (model_io.RequestError, ValueError) as error:
                production, production_scores = None, []
                note = f"production model version {production_version} cannot score these rows: {error}"
    return evaluation_of_scores(
        np.concatenate(labels),
        pd.concat(slice_rows, ignore_index=True),
        dataset,
        np.concatenate(candidate_scores),
        np.concatenate(production_scores) if production is not None else None,
        production_version,
        note,
        min_slice_examples,
    )


def evaluation_of_scores(
    labels: np.ndarray,
    frame,
    dataset: DatasetConfig,
    candidate_scores: np.ndarray,
    production_scores: np.ndarray | None = None,
    production_version: int | None = None,
    production_note: str = FIRST_MODEL,
    min_slice_examples: int = 1,
) -> Evaluation:
    """The evaluation of scores already made on the rows of `frame` (whose slice features it reads).

    Args:
        labels: The rows' labels as booleans.
        production_scores: None when there is no production model to compare with; then
            `production_note` says why.
    """
    slices = _slices(frame, dataset, min_slice_examples)
    compared = production_scores is not None
    return Evaluation(
        candidate=_evaluate_scores(labels, candidate_scores, slices),
        production=_evaluate_scores(labels, production_scores, slices) if compared else None,
        production_version=production_version if compared else None,
        production_note="" if compared else production_note,
        roc=classification_metrics.roc_curve(labels, candidate_scores),
        confusion=classification_metrics.confusion_matrix(labels, candidate_scores),
        comparisons=_compare(labels, candidate_scores, production_scores, slices) if compared else (),
    )


def _inputs(model: model_io.SavedModel) -> list[str]:
    return list(model.signature.inputs)


def _scores(model: model_io.SavedModel, frame) -> np.ndarray:
    return model.predict(model_io.frame_to_columns(model.signature, frame))


def _slices(frame, dataset: DatasetConfig, min_slice_examples: int) -> list[tuple[str, str, np.ndarray]]:
    """(feature, value, row indices) of every slice with at least `min_slice_examples` rows, overall first."""
    slices = [("", "", np.arange(len(frame)))]
    for feature in dataset.slice_features:
        for value, index in sorted(frame.groupby(feature).indices.items(), key=lambda item: str(item[0])):
            if len(index) >= min_slice_examples:
                slices.append((feature, str(value), index))
    return slices


def _evaluate_scores(
    labels: np.ndarray, scores: np.ndarray, slices: list[tuple[str, str, np.ndarray]]
) -> ModelEvaluation:
    return ModelEvaluation(
        tuple(
            SliceMetrics(
                feature,
                value,
                classification_metrics.compute(labels[index], scores[index]),
                auc_estimate(labels[index], scores[index]).standard_error,
            )
            for feature, value, index in slices
        )
    )


def _compare(
    labels: np.ndarray,
    candidate: np.ndarray,
    production: np.ndarray,
    slices: list[tuple[str, str, np.ndarray]],
) -> tuple[Comparison, ...]:
    comparisons = []
    for feature, value, index in slices:
        difference = paired_difference(labels[index], candidate[index], production[index])
        comparisons.append(
            Comparison(
                slice_name(feature, value),
                len(index),
                int(labels[index].sum()),
                difference.difference,
                difference.standard_error,
            )
        )
    return tuple(comparisons)
