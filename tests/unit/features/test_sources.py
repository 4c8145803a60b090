"""The feature tables: missing, corrupt or incomplete files named, on disk and in a bucket."""

from __future__ import annotations

import pandas as pd
import pytest

from components.common.errors import DataError
from features.joins import training_features
from features.sources import (
    WEATHER_FILE,
)
from tests.support.feature_tables import crafted_sources, flights


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing", "weather.parquet: feature source file is missing"),
        ("corrupt", "weather.parquet: feature source file is unreadable"),
        ("column", "weather.parquet: feature 'temp': feature source file lacks a column"),
    ],
)
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


def test_a_missing_object_names_its_uri(object_storage, flight_months):
    with pytest.raises(DataError, match="s3://ct-features/nothing/weather.parquet: feature source file is missing"):
        training_features(flight_months["2013-01"].head(5), "s3://ct-features/nothing")


def test_ct_data_writes_the_feature_tables_to_a_bucket(object_storage, tmp_path, capsys):
    import fsspec

    from pipelines.cli import main

    assert (
        main(
            [
                "data",
                "flights",
                "--dest",
                str(tmp_path),
                "--months",
                "2013-02",
                "--feature-tables",
                "s3://ct-features/from-cli",
            ]
        )
        == 0
    )
    assert "s3://ct-features/from-cli/weather.parquet: 26190 rows" in capsys.readouterr().out
    filesystem, _ = fsspec.core.url_to_fs("s3://ct-features")
    assert sorted(filesystem.ls("ct-features/from-cli")) == [
        "ct-features/from-cli/planes.parquet",
        "ct-features/from-cli/weather.parquet",
    ]
    assert not (tmp_path / "features").exists()  # the spans stay local, the tables went to the bucket
