"""Pipeline parameters as a user types them (`--param name=value`), checked against the
types the pipeline declares."""

from __future__ import annotations

import json
from typing import Any, Mapping

from components.common.errors import ConfigError

# The kfp versions whose internals the project reaches into were read in (the REST client's
# timeout in pipelines/submit.py, kfp.local's Docker task handler in pipelines/pods.py).
KFP_INTERNALS_CHECKED_ON = "2.13."


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
