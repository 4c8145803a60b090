"""Model validation: bless the candidate only if it is good enough and no worse than production.

Three gates, each recorded with its numbers: an absolute floor on AUC; a limit on how
much overall AUC may drop against the production model on the same rows; a limit on
how much AUC any slice with enough examples may drop. Before the first push there is no
production model and only the floor applies; the blessing says so.
"""

from __future__ import annotations

import dataclasses
import math

from components.common.errors import ConfigError
from components.common.reports import JsonRecord, markdown_table
from components.evaluate.logic import OVERALL, Evaluation

# The verdict, as TFX writes it (a run's decision is components/common/metadata.py's).
VERDICT_BLESSED = "BLESSED"
VERDICT_NOT_BLESSED = "NOT_BLESSED"


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """The model gate's settings, named as the pipeline's parameters; checked when made.

    Raises:
        ConfigError: a value out of range, named with its parameter.
    """

    min_auc: float = 0.65
    max_auc_drop: float = 0.01
    max_slice_auc_drop: float = 0.05
    min_slice_examples: int = 200

    def __post_init__(self):
        if not 0 <= self.min_auc <= 1:  # also refuses NaN
            raise ConfigError(f"min_auc={self.min_auc}: expected 0..1")
        for name in ("max_auc_drop", "max_slice_auc_drop"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}={getattr(self, name)}: expected 0..1")
        if self.min_slice_examples < 1:
            raise ConfigError(f"min_slice_examples={self.min_slice_examples}: must be at least 1")


@dataclasses.dataclass(frozen=True)
class Check:
    """One gate on one slice: `value` against `baseline` (production) and `threshold`."""

    check: str
    slice: str
    value: float
    baseline: float | None
    threshold: float
    passed: bool

    def reason(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        base = f", production {self.baseline:.4f}" if self.baseline is not None else ""
        return f"{self.check} on {self.slice}: {self.value:.4f}{base}, threshold {self.threshold:g}: {verdict}"


@dataclasses.dataclass(frozen=True)
class ModelBlessing(JsonRecord):
    blessed: bool
    checks: tuple[Check, ...]
    production_version: int | None
    note: str

    @property
    def verdict(self) -> str:
        return VERDICT_BLESSED if self.blessed else VERDICT_NOT_BLESSED

    @property
    def reasons(self) -> list[str]:
        """The failed checks, or a one-line summary when everything passed."""
        failed = [c.reason() for c in self.checks if not c.passed]
        if failed:
            return failed
        return [f"all {len(self.checks)} checks passed. {self.note}"]

    def markdown(self) -> str:
        rows = [
            (
                c.check,
                c.slice,
                f"{c.value:.4f}",
                "-" if c.baseline is None else f"{c.baseline:.4f}",
                f"{c.threshold:g}",
                "pass" if c.passed else "FAIL",
            )
            for c in self.checks
        ]
        return (
            f"## Model validation: {self.verdict}\n\n{self.note}\n\n"
            + markdown_table(("check", "slice", "value", "production", "threshold", "verdict"), rows)
            + "\n"
        )


def validate_model(evaluation: Evaluation, thresholds: Thresholds) -> ModelBlessing:
    """Decides whether the candidate may replace the production model."""
    candidate = evaluation.candidate.overall
    checks = [
        Check(
            "AUC at least",
            OVERALL,
            candidate.auc,
            None,
            thresholds.min_auc,
            _at_least(candidate.auc, thresholds.min_auc),
        )
    ]
    if evaluation.production is None:
        note = f"Absolute threshold only: {evaluation.production_note}."
        return ModelBlessing(all(c.passed for c in checks), tuple(checks), None, note)
    production = evaluation.production.by_name()
    change = candidate.auc - production[OVERALL].auc
    checks.append(
        Check(
            "AUC change vs production at least",
            OVERALL,
            change,
            production[OVERALL].auc,
            -thresholds.max_auc_drop,
            _at_least(change, -thresholds.max_auc_drop),
        )
    )
    for s in evaluation.candidate.slices[1:]:
        base = production.get(s.name)
        if base is None or min(s.metrics.examples, base.examples) < thresholds.min_slice_examples:
            continue
        if math.isnan(s.metrics.auc) or math.isnan(base.auc):
            continue
        change = s.metrics.auc - base.auc
        checks.append(
            Check(
                "slice AUC change vs production at least",
                s.name,
                change,
                base.auc,
                -thresholds.max_slice_auc_drop,
                _at_least(change, -thresholds.max_slice_auc_drop),
            )
        )
    note = f"Compared with production model version {evaluation.production_version} on the same eval rows."
    return ModelBlessing(all(c.passed for c in checks), tuple(checks), evaluation.production_version, note)


def _at_least(value: float, threshold: float) -> bool:
    return not math.isnan(value) and value >= threshold
