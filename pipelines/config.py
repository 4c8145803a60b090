"""Pipeline parameters as a user types them (`--param name=value`), checked against the
types the pipeline declares."""

from __future__ import annotations

import json
from typing import Any, Mapping

from components.common.errors import ConfigError

# The kfp versions whose internals the project reaches into were read in (the REST client's
# timeout in pipelines/submit.py, kfp.local's Docker task handler in pipelines/pods.py).
KFP_INTERNALS_CHECKED_ON = "2.13."


def check_kfp_internals(what: str) -> None:
    """Refuses to patch kfp.local's task handlers on another kfp than they were read in.

    Raises:
        ConfigError: naming `what` and both versions.
    """
    import kfp

    if not kfp.__version__.startswith(KFP_INTERNALS_CHECKED_ON):
        raise ConfigError(f"kfp {kfp.__version__}: {what} was written against kfp {KFP_INTERNALS_CHECKED_ON}x")


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
