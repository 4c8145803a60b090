"""Pipeline parameters as a user types them (`--param name=value`), checked against the
types the pipeline declares; and what the project changes of kfp.local's runners."""

from __future__ import annotations

import contextlib
import json
from typing import Any, Callable, Iterator, Mapping

from components.common.errors import ConfigError

# The kfp versions whose internals the project reaches into were read in (the REST client's
# timeout in pipelines/submit.py, kfp.local's task handlers in `each_step_run_by`).
KFP_INTERNALS_CHECKED_ON = "2.13."


@contextlib.contextmanager
def each_step_run_by(handlers, class_name: str, run_step: Callable[[str, list[str]], int], what: str) -> Iterator[None]:
    """While open, kfp.local runs each step of its runner by `run_step(image, command)` (an exit
    code): the runner's task handler class in module `handlers` (kfp.local's
    `docker_task_handler` or `subprocess_task_handler`, which it looks up at each task) is
    replaced by one whose `run` calls it.

    Raises:
        ConfigError: another kfp than this was written against (`what` names who patches it).
    """
    import kfp
    from kfp.local import status

    if not kfp.__version__.startswith(KFP_INTERNALS_CHECKED_ON):
        raise ConfigError(f"kfp {kfp.__version__}: {what} was written against kfp {KFP_INTERNALS_CHECKED_ON}x")
    original = getattr(handlers, class_name)

    class StepRunBy(original):
        def run(self) -> status.Status:
            code = run_step(self.image, self.full_command)
            return status.Status.SUCCESS if code == 0 else status.Status.FAILURE

    setattr(handlers, class_name, StepRunBy)
    try:
        yield
    finally:
        setattr(handlers, class_name, original)


def parse_parameters(assignments: list[str], declared: Mapping[str, type]) -> dict[str, Any]:
    """Parses `name=value` pairs against the pipeline's declared parameter types.

    Args:
        assignments: The `--param` values as typed by the user.
        declared: Parameter name -> Python type (str, int, float, bool).

    Returns:
        Name -> value converted to the declared type.

    Raises:
        ConfigError: no `=`, an unknown name, or a value of the wrong type.
    """
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep:
            raise ConfigError(f"--param {assignment!r}: expected name=value")
        if name not in declared:
            raise ConfigError(f"--param {name}: unknown parameter; known: {', '.join(sorted(declared))}")
        values[name] = _convert(name, text, declared[name])
    return values


def _convert(name: str, text: str, kind: type) -> Any:
    try:
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            return text.lower() in ("true", "1")
        if kind in (int, float, str):
            return kind(text)
        return json.loads(text)
    except ValueError:
        raise ConfigError(f"--param {name}={text!r}: expected {kind.__name__}") from None


def check_parameter_values(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Checks the ranges of a run's parameters before it starts, by making each stage's own
    settings from them (the stages own the ranges; a bad value would otherwise fail only
    inside the run, at its stage).

    Args:
        values: Parameters given for the run (already converted to their declared types).
        defaults: Every parameter's default, as the pipeline declares it.

    Raises:
        ConfigError: a value out of its stage's range, named with its parameter.
    """
    from components.ingest.logic import check_window
    from components.train.logic import Hyperparameters, parse_hidden_units
    from components.validate_model.logic import Thresholds

    effective = {**defaults, **values}
    check_window(effective["window_spans"], effective["eval_percent"], effective["eval_split"])
    Hyperparameters(
        effective["epochs"],
        effective["batch_size"],
        effective["learning_rate"],
        parse_hidden_units(effective["hidden_units"]),
        effective["seed"],
    )
    Thresholds(
        effective["min_auc"],
        effective["max_auc_drop"],
        effective["max_slice_auc_drop"],
        effective["min_slice_examples"],
        effective["blessing_confidence"],
    )
