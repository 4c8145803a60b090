"""Each trigger fires on its real condition and not otherwise."""

from __future__ import annotations

import datetime
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.common import metadata
from components.common.spans import data_location
from components.common.tfdv_io import load_schema, load_statistics
from components.statistics.logic import compute_statistics, statistics_of_dataframe
from components.validate_data.logic import measure_drift, measure_skew
from pipelines.triggers.config import PerformanceSettings, ShiftSettings
from pipelines.triggers.sources import (
    DISTRIBUTION_SHIFT,
    MANUAL,
    NEW_DATA,
    PERFORMANCE,
    DistributionShiftTrigger,
    LogTail,
    ManualTrigger,
    NewDataTrigger,
    PerformanceDropTrigger,
    ScheduleTrigger,
    request_manual_run,
)
from serving.request_log import RequestLog
from tests.support.object_storage import s3_on_loopback
from tests.support.serving_helpers import FEEDBACK, MODEL, call
from tests.support.spans import write_month


def test_manual_requests_are_picked_up_once(tmp_path):
    trigger = ManualTrigger(tmp_path / "triggers")
    assert trigger.check(time.time()) == []
    request_manual_run(tmp_path / "triggers", "new features reviewed", force=True)
    [firing] = trigger.check(time.time())
    assert (firing.trigger, firing.reason, firing.force) == (MANUAL, "new features reviewed", True)
    assert trigger.check(time.time()) == []


def test_schedule_fires_once_in_a_matching_minute():
    trigger = ScheduleTrigger("30 6 * * *")
    six_thirty = datetime.datetime(2013, 3, 4, 6, 30, 5).timestamp()
    [firing] = trigger.check(six_thirty)
    assert firing.reason == "cron '30 6 * * *' at 2013-03-04 06:30"
    assert trigger.check(six_thirty + 20) == []
    assert trigger.check(six_thirty + 60) == []
    assert len(trigger.check(six_thirty + 86400)) == 1


def test_new_data_fires_for_complete_spans_no_run_has_read(tmp_path, store, flight_months):
    root = tmp_path / "data"
    with store.step("run-1", "ingest", {}) as step:
        step.input(metadata.SPAN, str(root / "span=2013-01"), dataset="flights", span="2013-01")
    write_month(root, "2013-01", flight_months["2013-01"])
    trigger = NewDataTrigger(root, "flights", store, min_new_spans=1)
    assert trigger.check(time.time()) == []
    unfinished = write_month(root, "2013-02", flight_months["2013-02"])
    (unfinished / "_SUCCESS").unlink()
    assert trigger.check(time.time()) == []
    (unfinished / "_SUCCESS").touch()
    [firing] = trigger.check(time.time())
    assert (firing.trigger, firing.reason) == (NEW_DATA, "new complete span 2013-02")
    assert trigger.check(time.time()) == []


def test_new_data_can_wait_for_several_spans(tmp_path, store, flight_months):
    root = tmp_path / "data"
    trigger = NewDataTrigger(root, "flights", store, min_new_spans=2)
    write_month(root, "2013-01", flight_months["2013-01"])
    assert trigger.check(time.time()) == []
    write_month(root, "2013-02", flight_months["2013-02"])
    assert trigger.check(time.time())[0].reason == "new complete spans 2013-01, 2013-02"


def test_new_data_watches_spans_in_object_storage(tmp_path, store, flight_months):
    """A data root in a bucket (moto's S3 server on loopback): a span is new once its marker is
    there, whatever fsspec listed before; no bucket folder yet is no span yet."""
    from s3fs import S3FileSystem

    with s3_on_loopback(tmp_path / "aws", ("ct-data",)):
        bucket = S3FileSystem()
        trigger = NewDataTrigger(data_location("s3://ct-data/spans"), "flights", store, min_new_spans=1)
        assert trigger.check(time.time()) == []
        unfinished = write_month(tmp_path / "local", "2013-01", flight_months["2013-01"])
        (unfinished / "_SUCCESS").unlink()
        bucket.put(f"{tmp_path / 'local'}/", "ct-data/spans", recursive=True)
        assert trigger.check(time.time()) == []
        bucket.touch("ct-data/spans/span=2013-01/_SUCCESS")
        [firing] = trigger.check(time.time())
        assert firing.reason == "new complete span 2013-01"


def feedback(server, rows, agree: bool, flipped: float = 0.0):
    """Real traffic, then labels that agree (or disagree) with the model's ranking, a share
    `flipped` of them (drawn with a fixed seed) turned over."""
    answers = [call(server, f"/v1/models/{MODEL}:predict", {"instances": [row]})[1] for row in rows]
    scores = [a["predictions"][0] for a in answers]
    median = float(np.median(scores))
    flips = np.random.default_rng(7).random(len(rows)) < flipped
    labels = [
        {"request_id": a["request_ids"][0], "label": int(((s > median) == agree) != flip)}
        for a, s, flip in zip(answers, scores, flips)
    ]
    assert call(server, f"/v1/models/{MODEL}:feedback", {"feedback": labels}, headers=FEEDBACK)[0] == 200


def test_performance_fires_when_online_auc_falls_below_the_floor(serve, rows):
    server, *_ = serve()
    trigger = PerformanceDropTrigger(PerformanceSettings(server.url, min_auc=0.6, window=500, min_samples=50), MODEL)
    feedback(server, rows[:40], agree=False)
    assert trigger.check(time.time()) == []  # 40 labels: not enough to judge
    feedback(server, rows[40:100], agree=False)
    [firing] = trigger.check(time.time())
    assert firing.trigger == PERFORMANCE
    assert "of version 1 below 0.6 with 95% confidence (upper bound 0." in firing.reason
    assert firing.reason.endswith("over its last 100 labelled predictions")
    assert trigger.check(time.time()) == []  # once per production version


def test_performance_does_not_fire_on_noise_below_the_floor(serve, rows):
    """An online AUC a little under the floor over 100 labels is within its sampling noise: the
    old rule (point estimate below the floor) fired on it; the upper bound is above the floor."""
    server, *_ = serve()
    feedback(server, rows[:100], agree=True, flipped=0.4)
    stable = call(server, f"/v1/models/{MODEL}/performance?last=500")[1]["stable"]
    assert 0.04 < stable["auc_standard_error"] < 0.08
    floor = round(stable["auc"] + 0.02, 4)  # the point estimate is under it, by less than its noise
    settings = PerformanceSettings(server.url, min_auc=floor, window=500, min_samples=50)
    assert PerformanceDropTrigger(settings, MODEL).check(time.time()) == []


def test_performance_does_not_fire_on_a_good_model_or_without_a_server(serve, rows):
    server, *_ = serve()
    feedback(server, rows[:100], agree=True)
    assert PerformanceDropTrigger(PerformanceSettings(server.url, 0.6, 500, 50), MODEL).check(time.time()) == []
    assert (
        PerformanceDropTrigger(PerformanceSettings("http://127.0.0.1:9", 0.6, 500, 50), MODEL).check(time.time()) == []
    )


def test_new_data_asks_ml_metadata_only_about_spans_not_known_to_be_read(tmp_path, store, flight_months):
    """The poll's cost does not grow with the history: a span a decided run read is never asked about again."""
    root = tmp_path / "data"
    for run_id, month in [("run-1", "2013-01"), ("run-2", "2013-02")]:
        write_month(root, month, flight_months[month])
        with store.step(run_id, "ingest", {}) as step:
            step.input(metadata.SPAN, str(root / f"span={month}"), dataset="flights", span=month)
    store.update_run("run-1", decision=metadata.PUSHED)  # run-2 is still going
    asked = []
    span_readers = store.span_readers
    store.span_readers = lambda dataset, spans: asked.append(list(spans)) or span_readers(dataset, spans)
    trigger = NewDataTrigger(root, "flights", store, min_new_spans=1)
    assert trigger.check(time.time()) == [] and trigger.check(time.time()) == []
    assert asked == [["2013-01", "2013-02"], ["2013-02"]]
    store.update_run("run-2", decision=metadata.FAILED)
    [firing] = trigger.check(time.time())
    assert firing.reason == "new complete span 2013-02" and asked[-1] == ["2013-02"]


@pytest.fixture
def production_trained_on_january(tmp_path, store, splits, flights):
    """A pushed model whose run computed training statistics of the January sample."""
    statistics = tmp_path / "train_statistics"
    compute_statistics(splits[0], statistics, load_schema(flights.schema_path))
    with store.step("run-1", "statistics", {}) as step:
        step.output(
            metadata.STATISTICS, str(statistics), dataset="flights", split="train", spans="2013-01", last_span="2013-01"
        )
    with store.step("run-1", "push", {}) as step:
        step.pushed_model(MODEL, 1, "/models/flight-delay/1", "digest")
    return store


def log_traffic(folder, frame, features):
    log = RequestLog(folder, 1.0, 10_000, 10**9)
    ids = [f"id-{i}" for i in range(len(frame))]
    log.append({f: frame[f].to_numpy() for f in features}, [0.5] * len(frame), 1, ids)
    log.flush()


def test_distribution_shift_fires_on_skew_from_training_data(
    tmp_path, production_trained_on_january, flights, flight_examples
):
    trigger = DistributionShiftTrigger(
        ShiftSettings(window_rows=1000, check_seconds=0), tmp_path / "log", flights, production_trained_on_january
    )
    log_traffic(tmp_path / "log", flight_examples["2013-01"].head(1500), flights.features)
    assert trigger.check(time.time()) == []  # January traffic, January training data
    log_traffic(tmp_path / "log", flight_examples["2013-07"].head(1500), flights.features)
    [firing] = trigger.check(time.time())
    assert firing.trigger == DISTRIBUTION_SHIFT
    assert "skewed from version 1's training data" in firing.reason and "temp Jensen-Shannon" in firing.reason
    assert "recent traffic drifted" in firing.reason  # July against the January window before it


def test_distribution_shift_needs_a_full_window(tmp_path, production_trained_on_january, flights, flight_examples):
    trigger = DistributionShiftTrigger(
        ShiftSettings(window_rows=1000, check_seconds=0), tmp_path / "log", flights, production_trained_on_january
    )
    log_traffic(tmp_path / "log", flight_examples["2013-07"].head(999), flights.features)
    assert trigger.check(time.time()) == []


def test_distribution_shift_can_ignore_calendar_features(
    tmp_path, production_trained_on_january, flights, flight_examples
):
    config = ShiftSettings(window_rows=1000, check_seconds=0, numeric_threshold=0.5, ignore_features=("month",))
    trigger = DistributionShiftTrigger(config, tmp_path / "log", flights, production_trained_on_january)
    february = flight_examples["2013-02"].head(1500)
    log_traffic(tmp_path / "log", february, flights.features)
    assert trigger.check(time.time()) == []  # only month moves that much from January to February
    noisy = DistributionShiftTrigger(
        ShiftSettings(window_rows=1000, check_seconds=0, numeric_threshold=0.5),
        tmp_path / "log",
        flights,
        production_trained_on_january,
    )
    [firing] = noisy.check(time.time())
    assert "month Jensen-Shannon" in firing.reason


# Windows of 200 requests, thresholds 0.1: TFDV's distances pass them on sampling noise alone.
# Each such check calibrates its noise by resampling; comparing a few features keeps the tests quick.
COMPARED = ("carrier", "origin", "dest", "sched_dep_hour", "temp", "precip")


def small_window_settings(flights) -> ShiftSettings:
    ignored = tuple(f for f in flights.features if f not in COMPARED)
    return ShiftSettings(
        categorical_threshold=0.1, numeric_threshold=0.1, window_rows=200, check_seconds=0, ignore_features=ignored
    )


def test_distribution_shift_does_not_fire_on_a_steady_stream_of_small_windows(
    tmp_path, production_trained_on_january, flights, splits
):
    """20 successive windows drawn from the training data itself: the old rule (a distance above its
    threshold) fires on nearly every one, the size-aware rule in at most false_alarm_rate of the checks."""
    store = production_trained_on_january
    config = small_window_settings(flights)
    trigger = DistributionShiftTrigger(config, tmp_path / "log", flights, store)
    schema = load_schema(flights.schema_path)
    training = load_statistics(Path(store.training_statistics(store.production_model(MODEL)).uri))
    training_rows = pd.read_parquet(splits[0])
    thresholds = (flights.categorical_features, config.categorical_threshold, config.numeric_threshold)
    random = np.random.default_rng(0)
    fired, old_rule_fired, previous = [], 0, None
    for _ in range(20):
        window = training_rows.sample(config.window_rows, replace=True, random_state=random)
        log_traffic(tmp_path / "log", window, COMPARED)
        fired += trigger.check(time.time())
        current = statistics_of_dataframe(window[list(COMPARED)], schema)
        distances = measure_skew(training, current, schema, *thresholds)
        if previous is not None:
            distances += measure_drift(current, previous, schema, *thresholds)
        old_rule_fired += any(d.drifted for d in distances)
        previous = current
    assert old_rule_fired >= 18
    assert len(fired) <= config.false_alarm_rate * 20, [f.reason for f in fired]


@pytest.mark.parametrize("feature", ["carrier", "temp"])
def test_distribution_shift_fires_on_a_true_shift_naming_the_feature(
    tmp_path, production_trained_on_january, flights, splits, feature
):
    """After a steady window, one where UA's share of the carriers is 0.2 higher (or the temperature
    one standard deviation higher) fires on that feature alone, as skew and as drift."""
    trigger = DistributionShiftTrigger(
        small_window_settings(flights), tmp_path / "log", flights, production_trained_on_january
    )
    training_rows = pd.read_parquet(splits[0])
    random = np.random.default_rng(0)
    log_traffic(tmp_path / "log", training_rows.sample(200, replace=True, random_state=random), COMPARED)
    assert trigger.check(time.time()) == []
    shifted = training_rows.sample(200, replace=True, random_state=random).reset_index(drop=True)
    if feature == "carrier":
        shifted.loc[random.choice(shifted.index[shifted.carrier != "UA"], 40, replace=False), "carrier"] = "UA"
    else:
        shifted["temp"] += training_rows["temp"].std()
    log_traffic(tmp_path / "log", shifted, COMPARED)
    [firing] = trigger.check(time.time())
    skew, drift = firing.reason.split("; ")
    assert skew.startswith("serving traffic skewed from version 1's training data: ")
    assert drift.startswith("recent traffic drifted from the 200 requests before: ")
    for reason in (skew, drift):
        [(named, value, noise)] = re.findall(r"(\w+) [\w-]+ ([\d.]+) > 0\.1 \(noise at 200 rows: ([\d.]+)\)", reason)
        assert named == feature and float(value) > max(float(noise), 0.1)


def write_log_files(folder, files: int, rows: int) -> list:
    """`files` request-log files of `rows` rows each, oldest first; row values count up across files."""
    log = RequestLog(folder, 1.0, rows, 10**9)
    for n in range(files):
        columns = {"distance": [float(n * rows + i) for i in range(rows)], "carrier": ["UA"] * rows}
        log.append(columns, [0.5] * rows, 1, [f"{n}-{i}" for i in range(rows)])
        log.flush()
    return log.files()


def test_log_tail_reads_each_file_once_and_only_the_columns_asked(tmp_path):
    tail = LogTail(tmp_path / "log", ["distance", "temp"], max_rows=1000)
    assert tail.read_new().empty  # no log yet
    write_log_files(tmp_path / "log", files=3, rows=10)
    first = tail.read_new()
    assert list(first.columns) == ["distance"]  # a column not logged is left out
    assert first.distance.tolist() == [float(i) for i in range(30)]
    assert tail.read_new().empty  # nothing new: nothing read
    log = RequestLog(tmp_path / "log", 1.0, 5, 10**9)
    log.append({"distance": [-1.0] * 5}, [0.5] * 5, 1, ["a"] * 5)
    log.flush()
    assert tail.read_new().distance.tolist() == [-1.0] * 5


def test_log_tail_reads_only_the_newest_files_that_hold_its_rows(tmp_path, caplog):
    files = write_log_files(tmp_path / "log", files=6, rows=100)
    files[0].write_bytes(b"not parquet: reading it would be logged")
    tail = LogTail(tmp_path / "log", ["distance"], max_rows=150)
    frame = tail.read_new()
    assert frame.distance.tolist() == [float(i) for i in range(400, 600)]  # the two newest files, oldest first
    assert "unreadable" not in caplog.text
    files[-1].unlink()  # the log's size bound deletes files: the cursor forgets them
    assert tail.read_new().empty


def test_distribution_shift_reads_only_the_newest_window_of_a_large_log(
    tmp_path, production_trained_on_january, flights, flight_examples
):
    log_traffic(tmp_path / "log", flight_examples["2013-01"].head(1500), flights.features)
    # Older than the window: a check that read the whole log would fail on it.
    (tmp_path / "log" / "part-00000000T000000-old.parquet").write_bytes(b"not parquet")
    trigger = DistributionShiftTrigger(
        ShiftSettings(window_rows=1000, check_seconds=0), tmp_path / "log", flights, production_trained_on_january
    )
    assert trigger.check(time.time()) == []  # January traffic, January training data; the old file unread
