"""Dynamic batching: concurrent requests for one model answered by one call of it.

As TF Serving's and Triton's batchers do, requests that arrive together are scored as one
batch (up to `max_rows` rows) and each caller gets its own rows back. There is no thread of
its own: the first caller waiting becomes the batch's leader, takes what is queued, runs the
model once and hands the answers out; a caller that arrives meanwhile waits for the next
batch, whose leader it may become. While a batch runs, the next one fills by itself. The
leader also waits up to `max_wait_seconds` for companions, but only when the previous batch
had some (requests are arriving together): at low load no request is held.

If the model fails on a batch, or answers it with another number of scores than rows, each
caller's rows are scored again alone, so only a request the model cannot answer fails.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Mapping

import numpy as np

Columns = Mapping[str, np.ndarray]

MAX_ROWS = 1024  # defaults of ServingConfig's max_batch_rows and batch_wait_seconds
MAX_WAIT_SECONDS = 0.001


class _Call:
    def __init__(self, columns: Columns):
        self.columns = columns
        self.rows = len(next(iter(columns.values())))
        self.scores: np.ndarray | None = None
        self.error: BaseException | None = None
        self.leads = False  # handed the next batch
        self.done = threading.Event()


class DynamicBatcher:
    """`batcher(columns)` scores one request's rows, batched with concurrent requests."""

    def __init__(self, score: Callable[[Columns], np.ndarray], max_rows: int, max_wait_seconds: float):
        self._score = score
        self.max_rows = max_rows
        self.max_wait_seconds = max_wait_seconds
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._queue: list[_Call] = []
        self._leading = False
        self._previous_batch_size = 1

    def __call__(self, columns: Columns) -> np.ndarray:
        call = _Call(columns)
        with self._lock:
            self._queue.append(call)
            self._arrived.notify()
            lead = not self._leading
            self._leading = True
        if not lead:
            call.done.wait()
            if call.leads:
                call.done.clear()
                lead = True
        if lead:
            self._lead()  # a leader's own call is always in its batch
        if call.error is not None:
            raise call.error
        return call.scores

    def _lead(self) -> None:
        with self._lock:
            if self._previous_batch_size > 1:
                deadline = time.monotonic() + self.max_wait_seconds
                while self._queued_rows() < self.max_rows and (remaining := deadline - time.monotonic()) > 0:
                    self._arrived.wait(remaining)
            batch, rows = [], 0
            while self._queue and (not batch or rows + self._queue[0].rows <= self.max_rows):
                batch.append(self._queue.pop(0))
                rows += batch[-1].rows
            self._previous_batch_size = len(batch)
        try:
            self._run(batch)
        finally:  # whatever happened, the next batch gets a leader and every caller an answer
            with self._lock:
                if self._queue:
                    self._queue[0].leads = True
                    self._queue[0].done.set()
                else:
                    self._leading = False
            for call in batch:
                if call.scores is None and call.error is None:
                    call.error = RuntimeError("the batch this request was in was interrupted")
                call.done.set()

    def _queued_rows(self) -> int:
        return sum(call.rows for call in self._queue)

    def _run(self, batch: list[_Call]) -> None:
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        names = list(batch[0].columns)
        try:
            scores = self._score({name: np.concatenate([call.columns[name] for call in batch]) for name in names})
        except Exception:  # one request the model cannot answer must not fail the others
            scores = None
        if scores is None or len(scores) != sum(call.rows for call in batch):
            for call in batch:
                self._run_alone(call)
            return
        start = 0
        for call in batch:
            call.scores = scores[start : start + call.rows]
            start += call.rows

    def _run_alone(self, call: _Call) -> None:
        try:
            call.scores = self._score(call.columns)
        except Exception as error:
            call.error = error
