"""Pipeline parameters as typed by a user, checked against their declared types."""

import types

import kfp
import pytest
from kfp.local import status

from components.common.errors import ConfigError
from pipelines.config import check_parameter_values, each_step_run_by, parse_parameters
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


def test_each_step_is_run_by_the_given_function_while_open_and_kfp_locals_own_handler_after():
    class KfpLocalsHandler:
        def __init__(self, image, full_command):
            self.image, self.full_command = image, full_command

    handlers = types.SimpleNamespace(TaskHandler=KfpLocalsHandler)
    ran = []

    def run_step(image, command):
        ran.append((image, command))
        return 0 if command == ["ok"] else 3

    with each_step_run_by(handlers, "TaskHandler", run_step, "the test runner"):
        assert handlers.TaskHandler("image", ["ok"]).run() == status.Status.SUCCESS
        assert handlers.TaskHandler("image", ["fails"]).run() == status.Status.FAILURE
    assert handlers.TaskHandler is KfpLocalsHandler
    assert ran == [("image", ["ok"]), ("image", ["fails"])]


def test_kfp_locals_handlers_are_not_replaced_on_a_kfp_they_were_not_read_in(monkeypatch):
    monkeypatch.setattr(kfp, "__version__", "3.0.0")
    handlers = types.SimpleNamespace(TaskHandler=object)
    with pytest.raises(ConfigError, match=r"kfp 3\.0\.0: the test runner was written against kfp 2\.13\.x"):
        with each_step_run_by(handlers, "TaskHandler", lambda image, command: 0, "the test runner"):
            pass
    assert handlers.TaskHandler is object
