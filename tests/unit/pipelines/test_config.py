"""Pipeline parameters as typed by a user, checked against their declared types."""

import pytest

from components.common.errors import ConfigError
from pipelines.config import check_parameter_values, parse_parameters
from pipelines.local_run import pipeline_parameters


def test_parameters_are_converted_to_their_declared_types():
    declared = {"epochs": int, "learning_rate": float, "dataset": str, "fast": bool}
    values = parse_parameters(["epochs=3", "learning_rate=0.1", "dataset=penguins", "fast=true"], declared)
    assert values == {"epochs": 3, "learning_rate": 0.1, "dataset": "penguins", "fast": True}


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("epochs", "expected name=value"),
        ("epoch=3", "epoch: unknown parameter; known: epochs"),
        ("epochs=three", "epochs='three': expected int"),
        ("epochs=2.5", "expected int"),
    ],
)
def test_bad_parameter_is_named(assignment, message):
    with pytest.raises(ConfigError, match=message):
        parse_parameters([assignment], {"epochs": int})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"epochs": -1}, "^epochs=-1: must be at least 1"),
        ({"batch_size": 0}, "^batch_size=0: must be at least 1"),
        ({"hidden_units": "64,-2"}, "^hidden_units='64,-2': must be positive integers"),
        ({"window_spans": 0}, "^window_spans=0: must be at least 1"),
        ({"eval_percent": 0}, "^eval_percent=0: must be between 1 and 99"),
        ({"eval_split": "random"}, "^eval_split='random': must be time or hash"),
        ({"max_auc_drop": 2.0}, "^max_auc_drop=2.0: expected 0..1"),
    ],
)
def test_parameter_out_of_its_stages_range_is_named(values, message):
    defaults = {name: default for name, (_, default) in pipeline_parameters().items()}
    check_parameter_values({}, defaults)  # the pipeline's own defaults are in range
    with pytest.raises(ConfigError, match=message):
        check_parameter_values(values, defaults)
