"""The exported model's contract: raw features in, `probability` out.

The serving signature takes one 1-D tensor per raw feature, named after the feature;
strings for string categoricals, int64 for integer categoricals, float32 for numeric
features (NaN for a missing value). Evaluation, infra validation and serving all turn
rows into tensors through this module, so none of them can disagree with training.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

SIGNATURE = "serving_default"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_MAX = float(np.finfo(np.float32).max)
OUTPUT = "probability"


@dataclasses.dataclass(frozen=True)
class Signature:
    """Input names and dtypes, and output names, of a serving signature."""

    inputs: Mapping[str, str]
    outputs: tuple[str, ...]

    def differences(self, other: "Signature") -> list[str]:
        """What a client of `other` would find changed in this signature; empty when compatible."""
        found = [
            f"input '{name}' missing (was {dtype})" for name, dtype in other.inputs.items() if name not in self.inputs
        ]
        found += [f"input '{name}' added ({dtype})" for name, dtype in self.inputs.items() if name not in other.inputs]
        found += [
            f"input '{name}' is {dtype}, was {other.inputs[name]}"
            for name, dtype in self.inputs.items()
            if name in other.inputs and other.inputs[name] != dtype
        ]
        if self.outputs != other.outputs:
            found.append(f"outputs {list(self.outputs)}, were {list(other.outputs)}")
        return found


class SavedModel:
    """A SavedModel's serving signature, run as TF Serving runs one: loaded into a session of
    its own graph (the SavedModel's MetaGraph and variables) and called through a callable
    prepared once, fed NumPy arrays in the order of `signature.inputs`.

    Serving, infra validation and evaluation all score through this class, so what infra
    validation loads is what serving runs. Calling the eager signature function spends about
    0.5 ms of Python per call binding its 20 arguments and converting them to tensors, and so
    does `Session.make_callable` with feeds, which hands them to `Session.run`'s generic feed
    handling (session.py: "Delegate any non-empty feed lists to the existing `run()` logic").
    The callable made from `CallableOptions` (the C API's `TF_SessionMakeCallable`, which TF's
    Keras 2 backend called the same way) checks the feeds once, here; a call costs the graph's
    own 0.08-0.2 ms (README, "The request path").
    """

    def __init__(self, model_dir: Path, in_caller_thread: bool = False):
        """`in_caller_thread`: run a call's ops in the thread that calls (TF's negative
        `inter_op_parallelism_threads`), for a server whose concurrency is its requests: a
        single-row call then costs about 0.08 ms instead of 0.2 ms, with no hand-off to a
        pool's threads. Otherwise TF's pools spread a large batch over the cores."""
        import tensorflow as tf
        from tensorflow.core.protobuf.config_pb2 import CallableOptions

        self.model_dir = model_dir
        config = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=-1) if in_caller_thread else None
        self._session = tf.compat.v1.Session(graph=tf.Graph(), config=config)
        loaded = tf.compat.v1.saved_model.load(self._session, [tf.saved_model.SERVING], str(model_dir))
        if SIGNATURE not in loaded.signature_def:
            named = sorted(name for name in loaded.signature_def if not name.startswith("__"))  # not TF's init op
            raise ValueError(f"{model_dir}: no '{SIGNATURE}' signature (has {named})")
        definition = loaded.signature_def[SIGNATURE]
        self.signature = Signature(
            inputs={name: tf.as_dtype(tensor.dtype).name for name, tensor in sorted(definition.inputs.items())},
            outputs=tuple(sorted(definition.outputs)),
        )
        self._run = None
        if OUTPUT in definition.outputs:
            feeds = [definition.inputs[name].name for name in self.signature.inputs]
            options = CallableOptions(feed=feeds, fetch=[definition.outputs[OUTPUT].name])
            self._run = self._session._make_callable_from_options(options)

    def close(self) -> None:
        """Frees the session's variables and graph; a call after it fails ("Session has been closed")."""
        self._session.close()

    def predict(self, columns: Mapping[str, np.ndarray], batch_size: int = 8192) -> np.ndarray:
        """Probabilities of the positive class, one per row, `batch_size` rows a call.

        `columns` are the signature's inputs as `instances_to_columns` or `frame_to_columns`
        make them: 1-D arrays of its dtypes, all of one length.
        """
        if self._run is None:
            raise ValueError(f"{self.model_dir}: the signature has no '{OUTPUT}' output")
        rows = len(next(iter(columns.values())))
        if rows <= batch_size:  # a request or a served batch: no slicing
            return self._run(*(columns[name] for name in self.signature.inputs))[0].reshape(-1)
        parts = [
            self._run(*(columns[name][start : start + batch_size] for name in self.signature.inputs))[0].reshape(-1)
            for start in range(0, rows, batch_size)
        ]
        return np.concatenate(parts)


class RequestError(ValueError):
    """A prediction request that does not fit the signature; the message names the feature and value."""


def instances_to_columns(signature: Signature, instances: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Rows in the TF Serving `instances` form -> one NumPy array per signature input.

    A missing numeric value (absent key, null or NaN) becomes NaN; the model imputes it.

    Raises:
        RequestError: a missing categorical feature, an unknown feature, or a value of the wrong type.
    """
    if not instances:
        raise RequestError("no instances")
    columns: dict[str, np.ndarray] = {}
    for name, dtype in signature.inputs.items():
        values = [row.get(name) for row in instances]
        columns[name] = _column(name, dtype, values)
    for index, row in enumerate(instances):
        unknown = set(row) - set(signature.inputs)
        if unknown:
            raise RequestError(f"instance {index}: unknown feature(s) {sorted(unknown)}")
    return columns


def inputs_to_columns(signature: Signature, inputs: Mapping[str, Sequence[Any]]) -> dict[str, np.ndarray]:
    """Columns in the TF Serving `inputs` (or Open Inference Protocol) form -> one NumPy array per input.

    A numeric input that is absent is all missing (NaN).

    Raises:
        RequestError: an unknown or missing categorical input, columns of different lengths, a wrong type.
    """
    unknown = sorted(set(inputs) - set(signature.inputs))
    if unknown:
        raise RequestError(f"unknown input(s) {unknown}")
    lengths = {name: len(values) for name, values in inputs.items() if isinstance(values, (list, tuple))}
    if len(lengths) != len(inputs):
        bad = sorted(set(inputs) - set(lengths))[0]
        raise RequestError(f"feature '{bad}': expected a list of values, got {inputs[bad]!r}")
    if len(set(lengths.values())) > 1:
        raise RequestError(f"inputs of different lengths: {lengths}")
    rows = next(iter(lengths.values()), 0)
    if rows == 0:
        raise RequestError("no instances")
    return {
        name: _column(name, dtype, list(inputs.get(name, [None] * rows))) for name, dtype in signature.inputs.items()
    }


def frame_to_columns(signature: Signature, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Rows of a DataFrame -> one NumPy array per signature input (extra columns are ignored)."""
    missing = [name for name in signature.inputs if name not in frame.columns]
    if missing:
        raise RequestError(f"feature(s) {missing} missing from the data")
    return {name: _column(name, dtype, frame[name].tolist()) for name, dtype in signature.inputs.items()}


def frame_to_instances(frame: pd.DataFrame, features: Sequence[str]) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-ready prediction instances (NaN -> null)."""
    records = frame[list(features)].to_dict(orient="records")
    return [
        {
            k: (None if isinstance(v, float) and math.isnan(v) else v.item() if isinstance(v, np.generic) else v)
            for k, v in record.items()
        }
        for record in records
    ]


def _column(name: str, dtype: str, values: list[Any]) -> np.ndarray:
    if dtype != "float32" and any(value is None for value in values):
        raise RequestError(f"feature '{name}': missing (a {dtype} value is required)")
    if dtype == "string":
        for value in values:
            if not isinstance(value, str):
                raise RequestError(f"feature '{name}': expected a string, got {_shown(value)}")
        return np.array(values, dtype=object)
    if dtype == "int64":
        for value in values:
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                and not (isinstance(value, float) and value.is_integer())
            ):
                raise RequestError(f"feature '{name}': expected an integer, got {_shown(value)}")
            if not INT64_MIN <= value <= INT64_MAX:
                raise RequestError(f"feature '{name}': {_shown(value)} is outside the int64 range")
        return np.array(values, dtype=np.int64)
    for value in values:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
            raise RequestError(f"feature '{name}': expected a number, got {_shown(value)}")
        if value is not None and not (math.isnan(value) or -FLOAT32_MAX <= value <= FLOAT32_MAX):
            raise RequestError(f"feature '{name}': {_shown(value)} is outside the float32 range")
    return np.array([math.nan if v is None else v for v in values], dtype=np.float32)


def _shown(value: Any) -> str:
    """A value for an error message, cut short (a 5000-digit number is named, not echoed)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"
