"""Pipeline parameters as typed by a user, checked against their declared types."""

import pytest

from components.common.errors import ConfigError
from pipelines.config import parse_parameters


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
