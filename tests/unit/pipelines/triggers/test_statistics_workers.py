"""The calibration's statistics on several processes: real TFDV in spawned workers."""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal

import numpy as np
import pytest

from components.common.tfdv_io import load_schema
from components.statistics.logic import statistics_of_dataframe
from components.validate_data.logic import measure_drift, measure_skew
from pipelines.triggers.calibration import ParametricReference, drift_noise, skew_noise
from pipelines.triggers.sources import RESAMPLING_SEED
from pipelines.triggers.statistics_workers import StatisticsWorkers

FEATURES = ["carrier", "origin", "sched_dep_hour", "temp", "precip"]


@pytest.fixture
def windows(flight_examples):
    """Eight windows of 300 flights, January's and July's, each a different sample."""
    months = [flight_examples[month][FEATURES].reset_index(drop=True) for month in ("2013-01", "2013-07")]
    return [months[n % 2].sample(300, random_state=n).reset_index(drop=True) for n in range(8)]


def test_statistics_on_three_processes_are_each_windows_in_order(flights, windows):
    schema = load_schema(flights.schema_path)
    workers = StatisticsWorkers(3)
    try:
        assert list(workers.statistics(iter(windows), schema)) == [statistics_of_dataframe(w, schema) for w in windows]
    finally:
        workers.close()


def test_noise_thresholds_are_the_same_on_one_process_or_three(flights, flight_examples):
    """The seeded resamples are drawn in the same order however many processes compute their
    statistics, and three processes' batches straddle drift's pairs of windows."""
    schema = load_schema(flights.schema_path)
    previous, current = (flight_examples[m].head(300)[FEATURES].reset_index(drop=True) for m in ("2013-01", "2013-02"))
    training = statistics_of_dataframe(flight_examples["2013-01"][FEATURES], schema)
    thresholds = (flights.categorical_features, 0.1, 0.1)

    def drift(first, second):
        return measure_drift(first, second, schema, *thresholds)

    def skew(window):
        return measure_skew(training, window, schema, *thresholds)

    results = []
    for processes in (1, 3):
        workers = StatisticsWorkers(processes)
        random = np.random.default_rng(RESAMPLING_SEED)
        statistics = functools.partial(workers.statistics, schema=schema)
        try:
            reference = ParametricReference(training, schema, FEATURES)
            results.append(
                (
                    drift_noise(previous, current, 19, 0.1, random, statistics, drift),
                    skew_noise(reference, 300, 19, 0.1, random, statistics, skew),
                    random.bit_generator.state,
                )
            )
        finally:
            workers.close()
    assert results[0] == results[1]
    assert set(results[0][0].by_feature) == set(FEATURES) and results[0][0].rows == 300


def test_a_killed_worker_costs_its_windows_time_here_not_the_check(flights, windows):
    schema = load_schema(flights.schema_path)
    expected = [statistics_of_dataframe(w, schema) for w in windows]
    workers = StatisticsWorkers(2)
    try:
        assert list(workers.statistics(windows[:2], schema)) == expected[:2]  # the worker is up
        [worker] = spawned()
        os.kill(worker.pid, signal.SIGKILL)
        assert list(workers.statistics(windows, schema)) == expected  # computed here instead
        assert list(workers.statistics(windows, schema)) == expected  # and by a new worker
        workers.close()
        workers.close()  # closing twice is harmless
        assert not spawned()
    finally:
        workers.close()


def spawned() -> list[multiprocessing.Process]:
    return [child for child in multiprocessing.active_children() if child.name.startswith("SpawnProcess")]
