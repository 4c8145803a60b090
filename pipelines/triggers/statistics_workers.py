"""TFDV statistics of many windows on several processes, for the noise calibration.

A calibration computes the statistics of dozens of resampled windows (calibration.py), each
about 90 ms of TFDV's Python at 2,000 rows, one after the other on one core: most of a
distribution-shift check. Here they are shared between this process and `processes - 1`
workers, each a fresh interpreter (spawned: the controller has threads, and TensorFlow may
be loaded, neither of which survives a fork) that imports TFDV once, on first use, and dies
with the process that started it. A window goes to a free worker, or is computed here when
every worker is busy; the next window is drawn only then, so memory holds about `processes`
windows, and the results come back in the order the windows were drawn, so the same seeded
resamples give the same thresholds on any number of processes. A worker that dies (killed,
out of memory) costs its windows' time here, not the check: they are computed again in this
process, and workers are started anew when next needed.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import signal
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterable, Iterator

import pandas as pd
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from components.common.process_lifetime import die_with_parent

log = logging.getLogger(__name__)

Statistics = statistics_pb2.DatasetFeatureStatisticsList
OfWindow = Callable[[pd.DataFrame], Statistics]
WorkerPool = concurrent.futures.ProcessPoolExecutor


class StatisticsWorkers:
    def __init__(self, processes: int):
        self.processes = processes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def statistics(self, windows: Iterable[pd.DataFrame], schema: schema_pb2.Schema) -> Iterator[Statistics]:
        """The statistics of each window, in the windows' order."""
        from components.statistics.logic import statistics_of_dataframe

        of_window = functools.partial(statistics_of_dataframe, schema=schema)
        # Each window's statistics to come, in order; while a worker has the window, the window
        # and the pool (to compute it here if that pool breaks).
        pending: collections.deque[tuple[Future, pd.DataFrame | None, WorkerPool | None]] = collections.deque()
        for window in windows:
            while pending and pending[0][0].done():
                yield self._result(*pending.popleft(), of_window)
            if sum(not future.done() for future, *_ in pending) < self.processes - 1:
                pool = self._workers()
                try:
                    pending.append((pool.submit(of_window, window), window, pool))
                    continue
                except BrokenProcessPool:
                    self._broken(pool)
            pending.append((_completed(of_window(window)), None, None))
        while pending:
            yield self._result(*pending.popleft(), of_window)

    def close(self) -> None:
        """Stops the workers (started again when needed)."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _workers(self) -> WorkerPool:
        if self._pool is None:
            # The pool starts its workers from the thread that submits (the controller's), the
            # thread `die_with_parent` watches.
            self._pool = WorkerPool(
                self.processes - 1,
                multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(),),
            )
        return self._pool

    def _result(
        self, future: Future, window: pd.DataFrame | None, pool: WorkerPool | None, of_window: OfWindow
    ) -> Statistics:
        try:
            return future.result()
        except BrokenProcessPool:
            self._broken(pool)
            return of_window(window)

    def _broken(self, pool: WorkerPool | None) -> None:
        if pool is self._pool:  # not one broken before, already replaced
            log.warning("a statistics worker died: its windows are computed here; workers start anew when needed")
            self.close()


def _completed(statistics: Statistics) -> Future:
    future: Future = Future()
    future.set_result(statistics)
    return future


def _start_worker(parent: int) -> None:
    """In a worker: die with the controller (also if it died while this one was starting), and
    leave Ctrl-C to it (the pool is shut down by the process it belongs to)."""
    die_with_parent()
    if os.getppid() != parent:
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
