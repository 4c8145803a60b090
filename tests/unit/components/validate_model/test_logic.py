import dataclasses
import math

import pytest

from components.common.classification_metrics import Metrics
from components.common.errors import ConfigError
from components.evaluate.logic import Evaluation, ModelEvaluation, SliceMetrics
from components.validate_model.logic import ModelBlessing, Thresholds, validate_model


def model(overall_auc, slice_aucs, examples=1000):
    def metrics(auc):
        return Metrics(examples, auc, 0.5, 0.8, 0.5, 0.5)

    return ModelEvaluation(
        (SliceMetrics("", "", metrics(overall_auc)),)
        + tuple(SliceMetrics("origin", v, metrics(a)) for v, a in slice_aucs.items())
    )


def evaluation(candidate, production=None):
    return Evaluation(
        candidate,
        production,
        3 if production else None,
        "" if production else "first model: nothing in production",
        ([0.0], [0.0], [1.0]),
        [[1, 0], [0, 1]],
    )


def test_first_model_is_judged_on_the_floor_only_and_says_so():
    blessing = validate_model(evaluation(model(0.70, {"JFK": 0.5})), Thresholds(min_auc=0.65))
    assert blessing.blessed and len(blessing.checks) == 1
    assert "Absolute threshold only: first model" in blessing.note
    assert not validate_model(evaluation(model(0.60, {})), Thresholds(min_auc=0.65)).blessed


def test_better_than_production_is_blessed():
    blessing = validate_model(
        evaluation(model(0.75, {"JFK": 0.74, "EWR": 0.76}), model(0.74, {"JFK": 0.74, "EWR": 0.75})), Thresholds()
    )
    assert blessing.blessed and blessing.production_version == 3
    assert [c.slice for c in blessing.checks] == ["overall", "overall", "origin=JFK", "origin=EWR"]


def test_overall_regression_against_production_is_refused_with_numbers():
    blessing = validate_model(evaluation(model(0.72, {}), model(0.75, {})), Thresholds(max_auc_drop=0.01))
    assert not blessing.blessed
    [reason] = blessing.reasons
    assert reason == "AUC change vs production at least on overall: -0.0300, production 0.7500, threshold -0.01: FAILED"


def test_one_slice_regressing_is_refused_even_when_overall_improves():
    blessing = validate_model(
        evaluation(model(0.76, {"JFK": 0.60, "EWR": 0.80}), model(0.75, {"JFK": 0.70, "EWR": 0.75})),
        Thresholds(max_slice_auc_drop=0.05),
    )
    assert not blessing.blessed
    assert [c.slice for c in blessing.checks if not c.passed] == ["origin=JFK"]
    assert (
        "| slice AUC change vs production at least | origin=JFK | -0.1000 | 0.7000 | -0.05 | FAIL |"
        in blessing.markdown()
    )


def test_small_slices_and_undefined_auc_are_skipped():
    candidate = model(0.76, {"JFK": 0.10, "EWR": math.nan}, examples=100)
    blessing = validate_model(
        evaluation(candidate, model(0.75, {"JFK": 0.9, "EWR": 0.8})), Thresholds(min_slice_examples=200)
    )
    assert blessing.blessed and len(blessing.checks) == 2


def test_nan_auc_never_passes_the_floor():
    assert not validate_model(evaluation(model(math.nan, {})), Thresholds()).blessed


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
    ],
)
def test_thresholds_out_of_range_are_named(thresholds, message):
    with pytest.raises(ConfigError, match=message):
        Thresholds(**thresholds)
