"""The request and feedback logs on the home volume: bounded, and readable by judges outside the service."""

from __future__ import annotations

import numpy as np
import pandas as pd

from serving import request_log
from serving.request_log import ParquetLog, RequestLog, read_log
from tests.support.serving_helpers import FEEDBACK, MODEL, TOKEN, call


def test_request_log_stays_under_its_size_bound(tmp_path):
    log = RequestLog(tmp_path, sample=1.0, rotate_rows=10, max_bytes=20_000)
    for i in range(400):
        log.append({"x": [float(i)], "name": ["row" * 20]}, [0.5], 1, [f"id-{i}"])
    log.flush()
    files = log.files()
    assert sum(f.stat().st_size for f in files) <= 20_000 and len(files) < 40
    assert read_log(tmp_path).request_id.iloc[-1] == "id-399"


def test_feedback_is_logged_for_judges_outside_the_service(serve, rows, tmp_path):
    # On KServe the feedback may reach another revision's pod: the shared log keeps it anyway.
    server, service, _, _ = serve(feedback_log=ParquetLog(tmp_path / "feedback_log", 1000, 10**9))
    answer = call(server, f"/v1/models/{MODEL}:predict", {"instances": rows[:3]})[1]
    items = [{"request_id": rid, "label": 1} for rid in answer["request_ids"]] + [
        {"request_id": TOKEN.sign("elsewhere-0"), "label": 0}  # issued by another replica
    ]
    status, body = call(server, f"/v1/models/{MODEL}:feedback", {"feedback": items}, headers=FEEDBACK)
    assert status == 200 and body == {"accepted": 3, "unknown": [items[3]["request_id"]], "rejected": [], "logged": 4}
    service.stop()  # flushes
    logged = read_log(tmp_path / "feedback_log")
    assert logged.request_id.tolist() == [*answer["request_ids"], items[3]["request_id"]] and logged.label.tolist() == [
        1,
        1,
        1,
        0,
    ]


def test_a_full_buffer_is_written_by_the_logs_own_thread_in_order(tmp_path, monkeypatch):
    import threading
    import time

    from serving import request_log

    writers, table = [], request_log._table
    monkeypatch.setattr(
        request_log, "_table", lambda chunks: writers.append(threading.current_thread()) or table(chunks)
    )
    log = RequestLog(tmp_path, sample=1.0, rotate_rows=4, max_bytes=10**9)
    log.append({"x": np.array([1.0, 2.0], dtype=np.float32)}, [0.1, 0.2], 1, ["a", "b"])
    log.append({"x": np.array([3.0], dtype=np.float32), "y": ["new"]}, [0.3], 2, ["c"])  # another version's input
    log.append({"x": np.array([4.0], dtype=np.float32)}, [0.4], 1, ["d"])  # the fourth row: written in the background
    deadline = time.monotonic() + 30
    while not log.files() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(log.files()) == 1 and writers == [writers[0]] and writers[0] is not threading.current_thread()
    logged = read_log(tmp_path)
    assert logged.request_id.tolist() == ["a", "b", "c", "d"] and logged.model_version.tolist() == [1, 1, 2, 1]
    assert logged.x.tolist() == [1.0, 2.0, 3.0, 4.0] and logged.y.tolist() == [None, None, "new", None]
    assert logged.x.dtype == np.float64  # one schema in every file, whatever the request's arrays were
    assert logged.prediction.tolist() == [0.1, 0.2, 0.3, 0.4]


def test_sampling_keeps_whole_rows(tmp_path):
    log = RequestLog(tmp_path, sample=0.5, rotate_rows=10**6, max_bytes=10**9, seed=0)
    for i in range(200):
        log.append({"x": [float(i)]}, [i / 200], 1, [f"id-{i}"])
    log.flush()
    logged = read_log(tmp_path)
    assert 60 < len(logged) < 140
    assert all(row.request_id == f"id-{int(row.x)}" and row.prediction == row.x / 200 for row in logged.itertuples())


def test_files_hold_at_most_rotate_rows(tmp_path):
    log = RequestLog(tmp_path, sample=1.0, rotate_rows=10, max_bytes=10**9)
    for i in range(25):
        log.append({"x": [float(i)]}, [0.5], 1, [f"id-{i}"])
    log.flush()
    assert [len(pd.read_parquet(f)) for f in log.files()] == [10, 10, 5]
    assert read_log(tmp_path).request_id.tolist() == [f"id-{i}" for i in range(25)]


def test_rows_parquet_refuses_are_kept_and_said(tmp_path, monkeypatch):
    from serving import request_log

    log = ParquetLog(tmp_path, rotate_rows=100, max_bytes=10**9)
    log.add([{"request_id": "a", "label": 1}])
    table = request_log._table

    def refuse(chunks):
        raise ValueError("mixed types")

    monkeypatch.setattr(request_log, "_table", refuse)
    assert log.flush() is None and "mixed types" in log.failing and log.failed_writes == 1
    monkeypatch.setattr(request_log, "_table", table)
    assert log.flush() is not None and log.failing == "" and read_log(tmp_path).request_id.tolist() == ["a"]


def test_a_write_ends_though_requests_keep_coming(tmp_path, monkeypatch):
    from serving import request_log

    log = RequestLog(tmp_path, sample=1.0, rotate_rows=100, max_bytes=10**9)
    table, arrivals = request_log._table, iter(range(5))

    def with_a_request_arriving(chunks):  # a request is answered while each file is written (5 at most)
        for n in arrivals:
            log.append({"x": [0.0]}, [0.5], 1, [f"late-{n}"])
            break
        return table(chunks)

    monkeypatch.setattr(request_log, "_table", with_a_request_arriving)
    for i in range(3):
        log.append({"x": [float(i)]}, [0.5], 1, [f"id-{i}"])
    log.flush()  # writes what was buffered when it began, and returns
    assert read_log(tmp_path).request_id.tolist() == ["id-0", "id-1", "id-2"]
    log.flush()
    assert read_log(tmp_path).request_id.tolist() == ["id-0", "id-1", "id-2", "late-0"]


def test_past_the_retry_bound_the_oldest_requests_are_dropped_whole_and_counted(tmp_path, monkeypatch):
    from serving import request_log

    log = RequestLog(tmp_path, sample=1.0, rotate_rows=4, max_bytes=10**9)  # keeps 5 files' worth: 20 rows
    table = request_log._table

    def refuse(chunks):
        raise ValueError("the volume refuses")

    monkeypatch.setattr(request_log, "_table", refuse)
    ids = [[f"r{n}-{i}" for i in range(3)] for n in range(8)]  # eight requests of three rows
    log.append({"x": [0.0] * 3}, [0.5] * 3, 1, ids[0])
    assert log.flush() is None  # the first failure: a retry is due later, no background write before it
    for request in ids[1:]:
        log.append({"x": [0.0] * 3}, [0.5] * 3, 1, request)
    assert log.flush() is None and log.failed_writes == 2
    assert log.dropped_rows == 6  # 24 rows kept over 20: the two oldest requests, whole
    monkeypatch.setattr(request_log, "_table", table)
    log.flush()
    assert read_log(tmp_path).request_id.tolist() == [i for request in ids[2:] for i in request]
    assert all(len(pd.read_parquet(f)) <= 4 for f in log.files())


def test_small_requests_copied_into_blocks_are_written_as_they_came(tmp_path):
    log = RequestLog(tmp_path, sample=1.0, rotate_rows=64, max_bytes=10**9)  # blocks of 4 rows: 64 // 16
    for i in range(10):
        extra = {"carrier": np.array([f"c{i}"], dtype=object)} if i in (3, 4) else {}  # a canary's other input
        log.append({"x": np.array([float(i)], dtype=np.float32), **extra}, [i / 10], 1 + (i in (3, 4)), [f"id-{i}"])
    log.flush()
    logged = read_log(tmp_path)
    assert logged.request_id.tolist() == [f"id-{i}" for i in range(10)]
    assert logged.x.tolist() == [float(i) for i in range(10)] and logged.x.dtype == np.float64
    assert logged.carrier.tolist() == [None, None, None, "c3", "c4", None, None, None, None, None]
    assert logged.model_version.tolist() == [1, 1, 1, 2, 2, 1, 1, 1, 1, 1]
    assert len(log.files()) == 1


def test_blocks_fill_whole_files_and_are_dropped_whole_past_the_retry_bound(tmp_path, monkeypatch):
    from serving import request_log

    log = RequestLog(tmp_path, sample=1.0, rotate_rows=64, max_bytes=10**9)  # blocks of 4 rows: 64 // 16
    table = request_log._table

    def refuse(chunks):
        raise ValueError("the volume refuses")

    monkeypatch.setattr(request_log, "_table", refuse)
    log.append({"x": np.array([0.0])}, [0.5], 1, ["id-0"])
    assert log.flush() is None  # a retry is due later: no background write meanwhile
    for i in range(1, 330):
        log.append({"x": np.array([float(i)])}, [0.5], 1, [f"id-{i}"])
    assert log.flush() is None
    assert log.dropped_rows == 13  # 330 over 320 kept: id-0 alone, then three blocks of four
    monkeypatch.setattr(request_log, "_table", table)
    log.flush()
    assert read_log(tmp_path).request_id.tolist() == [f"id-{i}" for i in range(13, 330)]
    assert [len(pd.read_parquet(f)) for f in log.files()] == [64, 64, 64, 64, 61]


def test_a_file_another_replica_deleted_after_it_was_listed_is_left_out(tmp_path, monkeypatch):
    log = ParquetLog(tmp_path, 10, 10**9)
    log.add([{"a": 1}])
    log.flush()
    log.add([{"a": 2}])
    deleted = log.flush()
    listed = request_log._written(tmp_path, 0.0)
    deleted.unlink()  # as another replica's bound on the log's bytes does
    monkeypatch.setattr(request_log, "_written", lambda folder, since: listed)
    assert read_log(tmp_path).a.tolist() == [1]


def test_rows_are_copied_into_a_block_and_a_request_larger_than_a_block_keeps_its_place(tmp_path):
    log = RequestLog(tmp_path, sample=1.0, rotate_rows=64, max_bytes=10**9)  # blocks of 4 rows
    first = np.array([1.0, 2.0])
    log.append({"x": first}, [0.1, 0.2], 1, ["a", "b"])
    first[:] = -1.0  # copied into the block: the caller's array is its own again
    log.append({"x": np.arange(3.0, 9.0)}, [0.5] * 6, 1, [f"big-{i}" for i in range(6)])  # more than a block
    log.append({"x": np.array([9.0])}, [0.9], 1, ["c"])
    log.flush()
    logged = read_log(tmp_path)
    assert logged.x.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    assert logged.request_id.tolist() == ["a", "b", *[f"big-{i}" for i in range(6)], "c"]


def test_one_writer_thread_writes_every_full_buffer(tmp_path, monkeypatch):
    import threading
    import time

    writers, table = [], request_log._table
    monkeypatch.setattr(
        request_log, "_table", lambda chunks: writers.append(threading.current_thread()) or table(chunks)
    )
    log = RequestLog(tmp_path, sample=1.0, rotate_rows=4, max_bytes=10**9)
    for round_ in range(2):
        for i in range(4):
            log.append({"x": np.array([float(i)])}, [0.5], 1, [f"r{round_}-{i}"])
        deadline = time.monotonic() + 30
        while len(log.files()) < round_ + 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert len(log.files()) == 2 and writers == [writers[0]] * 2 and writers[0] is not threading.current_thread()
    assert read_log(tmp_path).request_id.tolist() == [f"r{r}-{i}" for r in range(2) for i in range(4)]


def test_the_writer_thread_outlives_an_unexpected_error(tmp_path, monkeypatch):
    import time

    log = RequestLog(tmp_path, sample=1.0, rotate_rows=4, max_bytes=10**9)
    log.RETRY_SECONDS = 0.05
    bound, calls = ParquetLog._enforce_bound, []

    def fails_once(self):
        calls.append(self)
        if len(calls) == 1:
            raise PermissionError("the volume turned read-only")
        bound(self)

    monkeypatch.setattr(ParquetLog, "_enforce_bound", fails_once)

    def files_written(count: int) -> bool:
        deadline = time.monotonic() + 30
        while len(log.files()) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(log.files()) == count

    for i in range(4):
        log.append({"x": np.array([float(i)])}, [0.5], 1, [f"first-{i}"])
    assert files_written(1)
    time.sleep(0.1)  # past the retry time the error set
    for i in range(4):
        log.append({"x": np.array([float(i)])}, [0.5], 1, [f"second-{i}"])
    assert files_written(2) and len(calls) == 2


def test_a_canary_alternating_with_stable_keeps_only_its_rows_in_memory(tmp_path):
    log = RequestLog(tmp_path, sample=1.0, rotate_rows=20_000, max_bytes=10**9)  # blocks of 1,250 rows
    for i in range(200):
        canary = {"carrier": np.array(["AA"], dtype=object)} if i % 2 else {}  # each request opens a block
        log.append({"x": np.array([float(i)]), **canary}, [0.5], 1 + i % 2, [f"id-{i}"])
    held = [array if array.base is None else array.base for chunk in log._chunks for array in chunk.values()]
    assert sum(array.nbytes for array in held) < 200 * 6 * 8  # each row's six columns, not a block's room
    log.flush()
    assert read_log(tmp_path).request_id.tolist() == [f"id-{i}" for i in range(200)]


def test_the_size_bound_skips_a_file_another_replica_deleted_meanwhile(tmp_path, monkeypatch):
    from pathlib import Path

    log = ParquetLog(tmp_path, 1, max_bytes=1)  # every write leaves only the newest file
    log.add([{"a": 1}])
    log.flush()
    gone = tmp_path / "part-00000000T000000-elsewhere-000001.parquet"  # listed, then deleted by its replica
    glob = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: [gone, *glob(self, pattern)])
    log.add([{"a": 2}])
    assert log.flush() is not None
    monkeypatch.undo()
    assert len(log.files()) == 1 and read_log(tmp_path).a.tolist() == [2]
