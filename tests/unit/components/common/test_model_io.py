import math

import numpy as np
import pytest

from components.common.model_io import RequestError, Signature, instances_to_columns

SIGNATURE = Signature({"carrier": "string", "hour": "int64", "temp": "float32"}, ("probability",))


def test_instances_become_typed_columns_with_missing_numbers_as_nan():
    columns = instances_to_columns(
        SIGNATURE, [{"carrier": "UA", "hour": 5, "temp": 40.5}, {"carrier": "AA", "hour": 6.0}]
    )
    assert columns["carrier"].tolist() == ["UA", "AA"]
    assert columns["hour"].dtype == np.int64 and columns["hour"].tolist() == [5, 6]
    assert columns["temp"][0] == pytest.approx(40.5) and math.isnan(columns["temp"][1])


@pytest.mark.parametrize(
    "instance, message",
    [
        ({"carrier": 7, "hour": 5, "temp": 1.0}, "feature 'carrier': expected a string, got 7"),
        ({"hour": 5, "temp": 1.0}, r"feature 'carrier': missing \(a string value is required\)"),
        ({"carrier": "UA", "hour": "5", "temp": 1.0}, "feature 'hour': expected an integer, got '5'"),
        ({"carrier": "UA", "hour": 5.5, "temp": 1.0}, "feature 'hour': expected an integer, got 5.5"),
        ({"carrier": "UA", "hour": 5, "temp": "warm"}, "feature 'temp': expected a number, got 'warm'"),
        ({"carrier": "UA", "hour": 5, "temp": 1.0, "tail": "N1"}, r"instance 0: unknown feature\(s\) \['tail'\]"),
    ],
)
def test_bad_instances_name_the_feature_and_value(instance, message):
    with pytest.raises(RequestError, match=message):
        instances_to_columns(SIGNATURE, [instance])


def test_no_instances_is_an_error():
    with pytest.raises(RequestError, match="no instances"):
        instances_to_columns(SIGNATURE, [])


def test_signature_differences_are_spelled_out():
    changed = Signature({"carrier": "string", "hour": "float32", "wind": "float32"}, ("score",))
    assert changed.differences(SIGNATURE) == [
        "input 'temp' missing (was float32)",
        "input 'wind' added (float32)",
        "input 'hour' is float32, was int64",
        "outputs ['score'], were ['probability']",
    ]
    assert SIGNATURE.differences(SIGNATURE) == []


def test_columnar_inputs_become_typed_columns():
    from components.common.model_io import inputs_to_columns

    columns = inputs_to_columns(SIGNATURE, {"carrier": ["UA", "AA"], "hour": [5, 6]})
    assert columns["carrier"].tolist() == ["UA", "AA"] and columns["hour"].tolist() == [5, 6]
    assert all(math.isnan(v) for v in columns["temp"])


@pytest.mark.parametrize(
    "inputs, message",
    [
        ({"carrier": ["UA"], "hour": [5], "wind": [1.0]}, r"unknown input\(s\) \['wind'\]"),
        ({"carrier": ["UA", "AA"], "hour": [5]}, "inputs of different lengths"),
        ({"carrier": "UA", "hour": [5]}, "feature 'carrier': expected a list of values, got 'UA'"),
        ({"hour": [5]}, "feature 'carrier': missing"),
        ({}, "no instances"),
    ],
)
def test_bad_columnar_inputs_are_named(inputs, message):
    from components.common.model_io import inputs_to_columns

    with pytest.raises(RequestError, match=message):
        inputs_to_columns(SIGNATURE, inputs)
