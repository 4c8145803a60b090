"""Model validation: bless the candidate only if it is good enough and no worse than production,
with the uncertainty of the eval rows taken into account.

Three gates, each recorded with its numbers, interval, p-value and rule:
- Floor: the candidate's AUC (point estimate) at least `min_auc`.
- Overall non-inferiority: the candidate must show that its AUC is not lower than
  production's by `max_auc_drop` or more. DeLong's paired test on the same rows
  (components/common/auc_inference.py): blessed when the one-sided lower confidence bound of
  the AUC change at `blessing_confidence` is above -max_auc_drop, i.e. the p-value of "worse by the
  margin or more" is below 1 - blessing_confidence. The burden of proof is on the candidate.
- Slices: a slice blocks the candidate when there is evidence that it regressed by more
  than `max_slice_auc_drop`: its one-sided p-value of "no worse than the margin", adjusted
  over all compared slices by Holm's step-down procedure, is below 1 - blessing_confidence. The
  chance that any slice blocks a candidate that regressed on none is at most 1 - blessing_confidence
  (family-wise). Slices with fewer than `min_slice_examples` rows, or fewer than
  MIN_PER_CLASS (20) of either class, are left out; a small slice cannot prove anything, so
  requiring proof of non-inferiority on each would block every candidate.

Intervals shown are two-sided at 2 * blessing_confidence - 1, so their ends are the one-sided bounds.
Before the first push there is no production model and only the floor applies; the blessing
says so.
"""

from __future__ import annotations

import dataclasses
import math

from components.common.auc_inference import MIN_PER_CLASS, AucDifference, holm, normal_interval
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

    min_auc: float = 0.6
    max_auc_drop: float = 0.01
    max_slice_auc_drop: float = 0.05
    min_slice_examples: int = 200
    blessing_confidence: float = 0.95

    def __post_init__(self):
        if not 0 <= self.min_auc <= 1:  # also refuses NaN
            raise ConfigError(f"min_auc={self.min_auc}: expected 0..1")
        for name in ("max_auc_drop", "max_slice_auc_drop"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name}={getattr(self, name)}: expected 0..1")
        if self.min_slice_examples < 1:
            raise ConfigError(f"min_slice_examples={self.min_slice_examples}: must be at least 1")
        if not 0.5 <= self.blessing_confidence < 1:  # also refuses NaN
            raise ConfigError(f"blessing_confidence={self.blessing_confidence}: expected 0.5 up to (not including) 1")

    @property
    def interval_confidence(self) -> float:
        """The two-sided level whose interval ends are the one-sided bounds at `blessing_confidence`."""
        return 2 * self.blessing_confidence - 1


@dataclasses.dataclass(frozen=True)
class Check:
    """One gate on one slice: `value` against `baseline` (production) and `threshold`.

    Attributes:
        interval: The value's two-sided interval (at the blessing's interval confidence).
        p_value: The test's p-value (Holm-adjusted for slices); None for the floor.
        rule: The rule applied, in words.
    """

    check: str
    slice: str
    value: float
    baseline: float | None
    threshold: float
    passed: bool
    interval: tuple[float, float] | None
    p_value: float | None
    rule: str

    def interval_text(self) -> str:
        """The interval, signed for a change against production."""
        if self.interval is None:
            return "-"
        sign = "+" if self.baseline is not None else ""
        return f"{self.interval[0]:{sign}.4f} to {self.interval[1]:{sign}.4f}"

    def reason(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        base = f", production {self.baseline:.4f}" if self.baseline is not None else ""
        spread = f" (interval {self.interval_text()})" if self.interval else ""
        p_value = f", p {self.p_value:.3g}" if self.p_value is not None else ""
        return (
            f"{self.check} on {self.slice}: {self.value:.4f}{spread}{base}, threshold {self.threshold:g}"
            f"{p_value}: {verdict}"
        )


@dataclasses.dataclass(frozen=True)
class ModelBlessing(JsonRecord):
    blessed: bool
    checks: tuple[Check, ...]
    production_version: int | None
    note: str
    interval_confidence: float

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

    @property
    def overall_comparison(self) -> Check | None:
        """The overall check against production, None before the first push."""
        return next((c for c in self.checks if c.check == NON_INFERIORITY), None)

    def markdown(self) -> str:
        rows = [
            (
                c.check,
                c.slice,
                f"{c.value:.4f}",
                "-" if c.baseline is None else f"{c.baseline:.4f}",
                c.interval_text(),
                "-" if c.p_value is None else f"{c.p_value:.3g}",
                f"{c.threshold:g}",
                "pass" if c.passed else "FAIL",
            )
            for c in self.checks
        ]
        level = f"{self.interval_confidence:.0%} interval"
        rules = "\n".join(f"- {rule}" for rule in dict.fromkeys(c.rule for c in self.checks))
        return (
            f"## Model validation: {self.verdict}\n\n{self.note}\n\n"
            + markdown_table(("check", "slice", "value", "production", level, "p-value", "threshold", "verdict"), rows)
            + f"\n\nRules applied:\n{rules}\n"
        )


NON_INFERIORITY = "AUC change vs production, non-inferior"
SLICE_REGRESSION = "slice AUC change vs production, no regression"


def validate_model(evaluation: Evaluation, thresholds: Thresholds) -> ModelBlessing:
    """Decides whether the candidate may replace the production model."""
    candidate = evaluation.candidate
    level = thresholds.interval_confidence
    checks = [
        Check(
            "AUC at least",
            OVERALL,
            candidate.overall.auc,
            None,
            thresholds.min_auc,
            _at_least(candidate.overall.auc, thresholds.min_auc),
            normal_interval(candidate.overall.auc, candidate.slices[0].auc_standard_error, level),
            None,
            f"floor: the candidate's AUC (point estimate) at least {thresholds.min_auc:g}",
        )
    ]
    if evaluation.production is None:
        note = f"Absolute threshold only: {evaluation.production_note}."
        return ModelBlessing(all(c.passed for c in checks), tuple(checks), None, note, level)
    production = evaluation.production.by_name()
    alpha = 1 - thresholds.blessing_confidence
    overall, *slices = evaluation.comparisons
    change = AucDifference(overall.difference, overall.standard_error)
    p_value = change.p_not_above(-thresholds.max_auc_drop)
    checks.append(
        Check(
            NON_INFERIORITY,
            OVERALL,
            change.difference,
            production[OVERALL].auc,
            -thresholds.max_auc_drop,
            p_value < alpha,
            change.interval(level),
            p_value,
            f"non-inferiority: the AUC change's lower {thresholds.blessing_confidence:.0%} confidence bound above "
            f"-{thresholds.max_auc_drop:g} (DeLong's paired test, one-sided p below {alpha:.3g})",
        )
    )
    compared = [
        c
        for c in slices
        if min(c.examples, production[c.slice].examples) >= thresholds.min_slice_examples
        and min(c.positives, c.examples - c.positives) >= MIN_PER_CLASS
    ]
    changes = [AucDifference(c.difference, c.standard_error) for c in compared]
    adjusted = holm([d.p_not_below(-thresholds.max_slice_auc_drop) for d in changes])
    for comparison, slice_change, slice_p in zip(compared, changes, adjusted):
        checks.append(
            Check(
                SLICE_REGRESSION,
                comparison.slice,
                slice_change.difference,
                production[comparison.slice].auc,
                -thresholds.max_slice_auc_drop,
                slice_p >= alpha,
                slice_change.interval(level),
                slice_p,
                f"slice regression: fails when the AUC change is below -{thresholds.max_slice_auc_drop:g} at "
                f"{thresholds.blessing_confidence:.0%} confidence, Holm-adjusted over {len(compared)} slices "
                f"(DeLong's paired test)",
            )
        )
    note = f"Compared with production model version {evaluation.production_version} on the same eval rows."
    return ModelBlessing(all(c.passed for c in checks), tuple(checks), evaluation.production_version, note, level)


def _at_least(value: float, threshold: float) -> bool:
    return not math.isnan(value) and value >= threshold
