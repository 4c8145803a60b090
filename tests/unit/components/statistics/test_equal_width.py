"""The equal-width histogram against TFDV's own (`equal_width.TFDV_OWN`, the function it replaces)."""

import numpy as np
import pandas as pd
import pytest
from tensorflow_data_validation.utils import quantiles_util

from components.common.tfdv_io import load_schema
from components.statistics import equal_width
from components.statistics.logic import statistics_of_dataframe


def _histogram(function, arguments):
    try:
        return function(*arguments)
    except Exception as error:  # noqa: BLE001 - the same refusal is part of being the same
        return type(error)


def _quantiles(random: np.random.Generator, kind: str) -> np.ndarray:
    size = int(random.integers(2, 1002))
    if kind == "spread":
        return random.normal(size=size)
    if kind == "few values":  # hourly weather, seats: long runs of equal boundaries
        return random.integers(0, 5, size=size).astype(float)
    if kind == "mostly zero":  # precipitation
        return np.concatenate([np.zeros(size // 2), random.exponential(size=size - size // 2)])
    if kind == "one value":
        return np.full(size, 3.0)
    values = random.normal(size=size)  # infinities at either end
    values[: random.integers(0, 3)] = -np.inf
    values[size - int(random.integers(0, 3)) :] = np.inf
    return values


@pytest.mark.parametrize("kind", ["spread", "few values", "mostly zero", "one value", "infinities"])
def test_histograms_equal_tfdvs_own_to_the_bit(kind):
    random = np.random.default_rng(list(kind.encode()))
    for trial in range(300):
        quantiles = np.sort(_quantiles(random, kind)).astype(np.float32 if trial % 3 == 2 else np.float64)
        weights = random.integers(1, 4, size=quantiles.size) if trial % 2 else np.ones(quantiles.size)
        finite = quantiles[np.isfinite(quantiles)]
        if not finite.size:
            continue
        arguments = (
            quantiles,
            np.cumsum(weights).astype(float),
            finite.min(),
            finite.max(),
            int(random.choice([1, 2, 10, 37])),
            float(np.sum(quantiles == np.inf)),
        )
        assert _histogram(equal_width.equal_width_histogram, arguments) == _histogram(
            equal_width.TFDV_OWN, arguments
        ), arguments


def test_no_finite_values_and_an_overflowing_range_are_tfdvs_own():
    for arguments in [
        (np.array([-np.inf, np.inf]), np.array([1.0, 2.0]), -np.inf, np.inf, 10, 1.0),
        (np.array([-1.7e308, 1.7e308]), np.array([1.0, 2.0]), -1.7e308, 1.7e308, 10, 0.0),
    ]:
        assert equal_width.equal_width_histogram(*arguments) == equal_width.TFDV_OWN(*arguments)


def test_statistics_are_computed_with_it_and_equal_tfdvs_own(monkeypatch, flights):
    assert quantiles_util.generate_equi_width_histogram is equal_width.equal_width_histogram
    random = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "temp": random.normal(50, 10, 2000),
            "precip": np.where(random.random(2000) < 0.8, 0.0, random.exponential(0.1, 2000)),
            "seats": random.choice([55.0, 140.0, 149.0, 200.0], 2000),
            "carrier": random.choice(["UA", "B6", "EV"], 2000),
        }
    )
    schema = load_schema(flights.schema_path)
    ours = statistics_of_dataframe(frame, schema)
    monkeypatch.setattr(quantiles_util, "generate_equi_width_histogram", equal_width.TFDV_OWN)
    assert ours == statistics_of_dataframe(frame, schema)


def test_another_tfdv_release_keeps_its_own(monkeypatch):
    monkeypatch.setattr(quantiles_util, "generate_equi_width_histogram", equal_width.TFDV_OWN)
    monkeypatch.setattr(equal_width.tfdv_version, "__version__", "1.17.0")
    assert not equal_width.install()
    assert quantiles_util.generate_equi_width_histogram is equal_width.TFDV_OWN
