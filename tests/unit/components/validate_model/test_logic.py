import dataclasses
import math

import numpy as np
import pytest

from components.common.auc_inference import paired_difference
from components.common.classification_metrics import Metrics
from components.common.errors import ConfigError
from components.evaluate.logic import Comparison, Evaluation, ModelEvaluation, SliceMetrics
from components.validate_model.logic import ModelBlessing, Thresholds, validate_model

STANDARD_ERROR = 0.01


def model(overall_auc, slice_aucs, examples=1000):
    def metrics(auc):
        return Metrics(examples, auc, 0.5, 0.8, 0.5, 0.5)

    return ModelEvaluation(
        (SliceMetrics("", "", metrics(overall_auc), STANDARD_ERROR),)
        + tuple(SliceMetrics("origin", v, metrics(a), STANDARD_ERROR) for v, a in slice_aucs.items())
    )


def evaluation(candidate, production=None, standard_errors=None):
    """Candidate against production, each slice's paired difference with the given standard
    error (default 0.01)."""
    comparisons = ()
    if production is not None:
        errors = standard_errors or {}
        base = production.by_name()
        comparisons = tuple(
            Comparison(
                s.name,
                s.metrics.examples,
                s.metrics.examples // 5,
                s.metrics.auc - base[s.name].auc,
                errors.get(s.name, STANDARD_ERROR),
            )
            for s in candidate.slices
        )
    return Evaluation(
        candidate,
        production,
        3 if production else None,
        "" if production else "first model: nothing in production",
        ([0.0], [0.0], [1.0]),
        [[1, 0], [0, 1]],
        comparisons,
    )


def test_first_model_is_judged_on_the_floor_only_and_says_so():
    blessing = validate_model(evaluation(model(0.70, {"JFK": 0.5})), Thresholds(min_auc=0.65))
    assert blessing.blessed and len(blessing.checks) == 1
    assert "Absolute threshold only: first model" in blessing.note
    assert blessing.checks[0].interval == (pytest.approx(0.70 - 0.016449, abs=1e-6), pytest.approx(0.70 + 0.016449))
    assert not validate_model(evaluation(model(0.60, {})), Thresholds(min_auc=0.65)).blessed


def test_a_candidate_shown_non_inferior_is_blessed():
    blessing = validate_model(
        evaluation(model(0.75, {"JFK": 0.74, "EWR": 0.76}), model(0.74, {"JFK": 0.74, "EWR": 0.75})), Thresholds()
    )
    assert blessing.blessed and blessing.production_version == 3
    assert [c.slice for c in blessing.checks] == ["overall", "overall", "origin=JFK", "origin=EWR"]
    overall = blessing.overall_comparison
    # +0.01 with standard error 0.01: p of "worse by 0.01 or more" = 1 - Phi(2) = 0.0228.
    assert overall.p_value == pytest.approx(0.02275, abs=1e-5)
    assert overall.interval == (pytest.approx(0.01 - 0.016449, abs=1e-6), pytest.approx(0.01 + 0.016449, abs=1e-6))


def test_an_equal_point_estimate_is_not_enough_when_the_evidence_is_weak():
    """The old rule passed any change above -0.01; non-inferiority needs the lower bound above it."""
    noisy = evaluation(model(0.74, {}), model(0.74, {}), {"overall": 0.02})
    blessing = validate_model(noisy, Thresholds(max_auc_drop=0.01))
    assert not blessing.blessed
    [reason] = blessing.reasons
    assert reason == (
        "AUC change vs production, non-inferior on overall: 0.0000 (interval -0.0329 to +0.0329), "
        "production 0.7400, threshold -0.01, p 0.309: FAILED"
    )
    precise = evaluation(model(0.74, {}), model(0.74, {}), {"overall": 0.005})
    assert validate_model(precise, Thresholds(max_auc_drop=0.01)).blessed


def test_a_slice_regressing_beyond_its_margin_with_evidence_is_refused_even_when_overall_improves():
    blessing = validate_model(
        evaluation(
            model(0.76, {"JFK": 0.60, "EWR": 0.80}),
            model(0.75, {"JFK": 0.70, "EWR": 0.75}),
            {"overall": 0.002},
        ),
        Thresholds(max_slice_auc_drop=0.05),
    )
    assert not blessing.blessed
    [failed] = [c for c in blessing.checks if not c.passed]
    assert failed.slice == "origin=JFK"
    # One-sided p of "no worse than -0.05" at -0.10 with SE 0.01: 1 - Phi(5), times 2 slices (Holm).
    assert failed.p_value == pytest.approx(2 * 2.8665e-7, rel=1e-3)
    view = blessing.markdown()
    assert "| slice AUC change vs production, no regression | origin=JFK | -0.1000 | 0.7000 |" in view
    assert "| -0.1164 to -0.0836 | 5.73e-07 | -0.05 | FAIL |" in view
    assert "Holm-adjusted over 2 slices" in view and "90% interval" in view


def test_slices_are_adjusted_for_multiplicity():
    """Each of 10 slices dropped 0.07 with standard error 0.01 (p 0.023 each against the 0.05
    margin): alone each would fail at 95%, but with Holm over ten none is evidence enough."""
    slices = {f"A{i}": 0.68 for i in range(10)}
    production = model(0.75, {f"A{i}": 0.75 for i in range(10)})
    blessing = validate_model(evaluation(model(0.76, slices), production, {"overall": 0.002}), Thresholds())
    assert blessing.blessed
    assert all(c.p_value == pytest.approx(0.2275, abs=1e-3) for c in blessing.checks[2:])


def test_slices_with_few_of_a_class_are_skipped():
    """A slice of 1,000 rows with 10 positives: DeLong's variance is not trusted there."""
    candidate, production = model(0.76, {"JFK": 0.50}), model(0.75, {"JFK": 0.80})
    few = evaluation(candidate, production, {"overall": 0.002})
    overall, jfk = few.comparisons
    few = dataclasses.replace(few, comparisons=(overall, dataclasses.replace(jfk, positives=10)))
    blessing = validate_model(few, Thresholds())
    assert blessing.blessed and [c.slice for c in blessing.checks] == ["overall", "overall"]
    assert not validate_model(evaluation(candidate, production, {"overall": 0.002}), Thresholds()).blessed


def test_small_slices_and_undefined_auc_are_skipped():
    candidate = model(0.76, {"JFK": 0.10, "EWR": math.nan}, examples=100)
    blessing = validate_model(
        evaluation(candidate, model(0.75, {"JFK": 0.9, "EWR": 0.8})), Thresholds(min_slice_examples=200)
    )
    assert blessing.blessed and len(blessing.checks) == 2


def test_nan_auc_never_passes_the_floor():
    assert not validate_model(evaluation(model(math.nan, {})), Thresholds()).blessed


def test_the_gate_on_real_scores_uses_delongs_paired_error():
    """End to end from scores: a candidate that is the production model plus a little noise is
    shown non-inferior on 4,000 rows; one whose scores are mostly noise is not."""
    rng = np.random.default_rng(5)
    labels = rng.random(4000) < 0.2
    production_scores = labels * 0.8 + rng.normal(0, 1, 4000)
    thresholds = Thresholds(max_auc_drop=0.01)
    for candidate_scores, expected in (
        (production_scores + rng.normal(0, 0.1, 4000), True),
        (production_scores + rng.normal(0, 2.0, 4000), False),
    ):
        difference = paired_difference(labels, candidate_scores, production_scores)
        comparison = Comparison("overall", 4000, int(labels.sum()), difference.difference, difference.standard_error)
        result = validate_model(
            dataclasses.replace(evaluation(model(0.7, {}), model(0.7, {})), comparisons=(comparison,)), thresholds
        )
        assert result.blessed is expected


def test_blessing_round_trips_through_json():
    blessing = validate_model(evaluation(model(0.72, {}), model(0.75, {})), Thresholds())
    assert ModelBlessing.from_json(blessing.to_json()) == blessing
    assert dataclasses.replace(blessing, blessed=True).verdict == "BLESSED"


@pytest.mark.parametrize(
    "thresholds, message",
    [
        ({"min_auc": 1.2}, "^min_auc=1.2: expected 0..1"),
        ({"max_auc_drop": -0.1}, "^max_auc_drop=-0.1: expected 0..1"),
        ({"max_slice_auc_drop": float("nan")}, "^max_slice_auc_drop=nan: expected 0..1"),
        ({"min_slice_examples": 0}, "^min_slice_examples=0: must be at least 1"),
        ({"blessing_confidence": 1.0}, r"^blessing_confidence=1.0: expected 0.5 up to \(not including\) 1"),
        ({"blessing_confidence": float("nan")}, "^blessing_confidence=nan"),
    ],
)
def test_thresholds_out_of_range_are_named(thresholds, message):
    with pytest.raises(ConfigError, match=message):
        Thresholds(**thresholds)
