"""Point-in-time joins for training: no feature value from after the departure, bad entities named,
the same rows from a folder or a bucket."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from components.common.errors import DataError
from features.joins import MISSING_CATEGORY, training_features
from tests.support.feature_tables import crafted_sources, flights


def test_no_feature_value_comes_from_after_the_scheduled_departure(tmp_path):
    sources = crafted_sources(
        tmp_path,
        [
            ("EWR", "2013-01-01T13:00:00Z", 10.0),
            ("EWR", "2013-01-01T14:30:00Z", 99.0),
            ("EWR", "2013-01-01T20:00:00Z", 50.0),
        ],
    )
    joined, counts = training_features(
        flights(
            ("EWR", "2013-01-01T14:10:00Z", "N1"),  # before the 14:30 observation: the 13:00 one
            ("EWR", "2013-01-01T14:45:00Z", "N1"),  # after it, but in hour 14: still 13:00 (conservative, never later)
            ("EWR", "2013-01-01T15:05:00Z", "N1"),  # hour 15: the 14:30 observation
            ("EWR", "2013-01-01T18:05:00Z", "N1"),  # 14:30 is more than 3 hours old at 18:00: missing
            ("EWR", "2013-01-01T12:59:00Z", "N1"),  # before any observation: missing
        ),
        sources,
    )
    assert joined.temp.tolist()[:3] == [10.0, 10.0, 99.0]
    assert math.isnan(joined.temp[3]) and math.isnan(joined.temp[4])
    assert counts.weather_missing == 2 and counts.planes_missing == 0


def test_a_plane_row_from_after_the_flight_is_not_used(tmp_path):
    sources = crafted_sources(tmp_path, [("EWR", "2013-01-01T13:00:00Z", 10.0)], plane_timestamp="2013-01-01T14:00:00Z")
    joined, counts = training_features(
        flights(
            ("EWR", "2013-01-01T13:30:00Z", "N1"),
            ("EWR", "2013-01-01T14:00:00Z", "N1"),
            ("EWR", "2013-01-01T13:30:00Z", "N999"),
        ),
        sources,
    )
    assert math.isnan(joined.seats[0]) and joined.seats[1] == 150.0 and math.isnan(joined.seats[2])
    assert joined.manufacturer.tolist() == [MISSING_CATEGORY, "BOEING", MISSING_CATEGORY]  # the documented default
    assert counts.planes_missing == 2


def test_bad_entity_values_name_the_feature_and_value(tmp_path):
    sources = crafted_sources(tmp_path, [("EWR", "2013-01-01T13:00:00Z", 10.0)])
    with pytest.raises(DataError, match="span=x: feature 'sched_dep': .*ISO-8601 .*value '2013-01-01 13:30'"):
        training_features(flights(("EWR", "2013-01-01 13:30", "N1")), sources, where="span=x")
    with pytest.raises(DataError, match="'sched_dep': .*not a date and time of the calendar .*'2013-02-30T10:00:00Z'"):
        training_features(flights(("EWR", "2013-02-30T10:00:00Z", "N1")), sources, where="span=x")
    with pytest.raises(DataError, match="feature 'tailnum': entity column is missing"):
        training_features(flights(("EWR", "2013-01-01T13:30:00Z", "N1")).drop(columns=["tailnum"]), sources)


def test_training_reads_the_same_tables_from_object_storage(object_storage, feature_sources, flight_months):
    january = flight_months["2013-01"].head(500)
    from_bucket, counts = training_features(january, object_storage)
    from_folder, _ = training_features(january, feature_sources)
    pd.testing.assert_frame_equal(from_bucket, from_folder)
    assert counts.rows == 500
