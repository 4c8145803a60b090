import threading
import time

import numpy as np
import pytest

from serving.batching import DynamicBatcher


class SlowModel:
    """Scores a row as its `x` times 10, taking `seconds` per call; records each call's rows."""

    def __init__(self, seconds: float = 0.01):
        self.seconds = seconds
        self.calls: list[int] = []

    def __call__(self, columns):
        self.calls.append(len(columns["x"]))
        time.sleep(self.seconds)
        if np.isnan(columns["x"]).any():
            raise ValueError("the model cannot score NaN")
        return columns["x"] * 10


def concurrently(batcher, requests):
    """Calls the batcher from one thread per request, all at once; each request's result or error."""
    results = [None] * len(requests)
    start = threading.Barrier(len(requests))

    def call(i):
        start.wait()
        try:
            results[i] = batcher({"x": np.asarray(requests[i], dtype=float)})
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_rows():
    model = SlowModel()
    requests = [[i, i + 0.5] for i in range(16)]
    results = concurrently(DynamicBatcher(model, max_rows=1024, max_wait_seconds=0.001), requests)
    for request, scores in zip(requests, results):
        assert scores.tolist() == [10 * x for x in request]
    assert sum(model.calls) == 32 and len(model.calls) < 16  # batched: fewer calls than requests


def test_a_batch_holds_at_most_max_rows():
    model = SlowModel()
    results = concurrently(DynamicBatcher(model, max_rows=5, max_wait_seconds=0.001), [[1, 2]] * 12)
    assert all(r.tolist() == [10, 20] for r in results)
    assert max(model.calls) <= 5


def test_a_request_larger_than_a_batch_is_scored_alone():
    model = SlowModel(0)
    assert DynamicBatcher(model, max_rows=4, max_wait_seconds=0.001)({"x": np.arange(10.0)}).tolist() == list(
        range(0, 100, 10)
    )
    assert model.calls == [10]


def test_a_lone_request_is_not_held_for_companions():
    batcher = DynamicBatcher(SlowModel(0), max_rows=1024, max_wait_seconds=0.5)
    started = time.perf_counter()
    for _ in range(5):
        batcher({"x": np.ones(1)})
    assert time.perf_counter() - started < 0.5  # never waited the half second


def test_only_the_request_the_model_cannot_score_fails():
    model = SlowModel()
    requests = [[1.0], [float("nan")], [3.0], [4.0]]
    results = concurrently(DynamicBatcher(model, max_rows=1024, max_wait_seconds=0.001), requests)
    assert isinstance(results[1], ValueError)
    assert [r.tolist() for i, r in enumerate(results) if i != 1] == [[10.0], [30.0], [40.0]]
    with pytest.raises(ValueError, match="cannot score NaN"):
        DynamicBatcher(model, max_rows=1024, max_wait_seconds=0.001)({"x": np.array([np.nan])})


def test_a_model_answering_a_batch_with_too_few_scores_is_asked_request_by_request():
    def drops_a_row(columns):
        scores = columns["x"] * 10
        return scores[:-1] if len(scores) > 2 else scores

    results = concurrently(DynamicBatcher(drops_a_row, max_rows=1024, max_wait_seconds=0.01), [[1, 2]] * 4)
    assert all(r.tolist() == [10, 20] for r in results)


def test_an_interrupted_batch_answers_its_callers_and_the_next_batch_has_a_leader():
    def interrupted(columns):
        if len(columns["x"]) == 3:
            raise KeyboardInterrupt
        return columns["x"] * 10

    batcher = DynamicBatcher(interrupted, max_rows=1024, max_wait_seconds=0.001)
    with pytest.raises(KeyboardInterrupt):
        batcher({"x": np.ones(3)})
    assert batcher({"x": np.ones(2)}).tolist() == [10, 10]  # not stuck behind the interrupted one
