"""TFDV statistics of many windows on several processes, for the noise calibration.

A calibration computes the statistics of dozens of resampled windows (calibration.py), each
about 90 ms of TFDV's Python at 2,000 rows, one after the other on one core: most of a
distribution-shift check. Here they are shared between this process and `processes - 1`
workers, each a fresh interpreter (spawned: the controller has threads, and TensorFlow may
be loaded, neither of which survives a fork) that imports TFDV once, on first use, and dies
with the process that started it. Windows go out `processes` at a time, in order, so memory
holds that many windows at most and the results come back in the order the windows were
drawn: the same seeded resamples give the same thresholds on any number of processes.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import multiprocessing
from typing import Iterable, Iterator

import pandas as pd
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from components.common.process_lifetime import die_with_parent


class StatisticsWorkers:
    def __init__(self, processes: int):
        self.processes = processes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def statistics(
        self, windows: Iterable[pd.DataFrame], schema: schema_pb2.Schema
    ) -> Iterator[statistics_pb2.DatasetFeatureStatisticsList]:
        """The statistics of each window, in order; a window is drawn only when a process is free for it."""
        from components.statistics.logic import statistics_of_dataframe

        of_window = functools.partial(statistics_of_dataframe, schema=schema)
        windows = iter(windows)
        while batch := list(itertools.islice(windows, self.processes)):
            sent = [self._workers().submit(of_window, window) for window in batch[1:]]
            yield of_window(batch[0])
            for future in sent:
                yield future.result()

    def close(self) -> None:
        """Stops the workers (started again when needed)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _workers(self) -> concurrent.futures.ProcessPoolExecutor:
        # The pool starts its workers from the thread that submits; `die_with_parent` watches
        # that thread, the controller's.
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                self.processes - 1, multiprocessing.get_context("spawn"), initializer=die_with_parent
            )
        return self._pool
