"""The calibration's statistics on several processes: real TFDV in spawned workers."""

from __future__ import annotations

import functools

import numpy as np

from components.common.tfdv_io import load_schema
from components.statistics.logic import statistics_of_dataframe
from components.validate_data.logic import measure_drift
from pipelines.triggers.calibration import drift_noise
from pipelines.triggers.sources import RESAMPLING_SEED
from pipelines.triggers.statistics_workers import StatisticsWorkers

FEATURES = ["carrier", "origin", "sched_dep_hour", "temp", "precip"]


def test_statistics_on_three_processes_are_each_windows_in_order_drawn_as_processes_free(flights, flight_examples):
    schema = load_schema(flights.schema_path)
    windows = [flight_examples[month].head(300)[FEATURES].reset_index(drop=True) for month in ("2013-01", "2013-07")]
    windows += [w.sample(frac=1, random_state=n).reset_index(drop=True) for n, w in enumerate(windows * 2)]
    drawn = []

    def drawing():
        for window in windows:
            drawn.append(window)
            yield window

    workers = StatisticsWorkers(3)
    try:
        results = []
        for statistics in workers.statistics(drawing(), schema):
            assert len(drawn) <= len(results) + 3  # no more windows in memory than processes
            results.append(statistics)
    finally:
        workers.close()
    assert results == [statistics_of_dataframe(w, schema) for w in windows]


def test_drift_noise_is_the_same_on_one_process_or_two(flights, flight_examples):
    """The seeded permutations are drawn in the same order however many processes compute them."""
    schema = load_schema(flights.schema_path)
    previous, current = (flight_examples[m].head(300)[FEATURES].reset_index(drop=True) for m in ("2013-01", "2013-02"))

    def drift(first, second):
        return measure_drift(first, second, schema, flights.categorical_features, 0.1, 0.1)

    thresholds = []
    for processes in (1, 2):
        workers = StatisticsWorkers(processes)
        try:
            random = np.random.default_rng(RESAMPLING_SEED)
            statistics = functools.partial(workers.statistics, schema=schema)
            thresholds.append(drift_noise(previous, current, 19, 0.1, random, statistics, drift))
        finally:
            workers.close()
    assert thresholds[0] == thresholds[1]
    assert set(thresholds[0].by_feature) == set(FEATURES) and thresholds[0].rows == 300


def test_closed_workers_start_again_when_needed(flights, flight_examples):
    schema = load_schema(flights.schema_path)
    window = flight_examples["2013-01"].head(100)[FEATURES]
    workers = StatisticsWorkers(2)
    try:
        assert len(list(workers.statistics([window, window], schema))) == 2
        workers.close()
        workers.close()  # closing twice is harmless
        [_, again] = workers.statistics([window, window], schema)
        assert again == statistics_of_dataframe(window, schema)
    finally:
        workers.close()
