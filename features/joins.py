"""Flight features by entity key: one piece of code for training rows and serving requests.

A flight names its entities with `origin`, `sched_dep` (the scheduled departure, ISO-8601
UTC, `2013-01-01T10:15:00Z`) and `tailnum`. `entity_keys` turns them into the feature
tables' keys; `apply_defaults` fills what no table has. Training joins the offline tables
on those keys (`training_features`); the prediction service asks the online store for the
same keys (features/store.py). Point in time: a feature row whose timestamp is after the
flight's scheduled departure is never used.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from components.common.errors import DataError
from features.sources import (
    PLANE_CATEGORICAL,
    PLANE_FEATURES,
    PLANE_KEY,
    PLANES_FILE,
    TIMESTAMP,
    WEATHER_FEATURES,
    WEATHER_FILE,
    WEATHER_KEY,
    read_source,
)

DEPARTURE = "sched_dep"
ENTITY_COLUMNS = ("origin", DEPARTURE, PLANE_KEY)
DEPARTURE_FORMAT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", re.ASCII)
DEPARTURE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # what DEPARTURE_FORMAT matches, for strftime and strptime
MISSING_CATEGORY = "UNKNOWN"
DEFAULTS: dict[str, float | str] = {
    **{name: math.nan for name in WEATHER_FEATURES + PLANE_FEATURES},
    **{name: MISSING_CATEGORY for name in PLANE_CATEGORICAL},
}


@dataclasses.dataclass(frozen=True)
class JoinCounts:
    """Rows joined, per table the rows with no feature row at their point in time (defaults
    used), and the first and last scheduled departure."""

    rows: int
    weather_missing: int
    planes_missing: int
    departures: tuple[str, str]

    def merged(self, other: JoinCounts) -> JoinCounts:
        """The counts of both joins' rows together."""
        departures = [pair for pair in (self.departures, other.departures) if pair[0]]
        return JoinCounts(
            self.rows + other.rows,
            self.weather_missing + other.weather_missing,
            self.planes_missing + other.planes_missing,
            (min(p[0] for p in departures), max(p[1] for p in departures)) if departures else ("", ""),
        )


def entity_keys(origins: Iterable[str], departures: Iterable[str], tailnums: Iterable[str]) -> dict[str, list[str]]:
    """The feature tables' keys of flights: weather by origin and scheduled hour, planes by tail number."""
    return {
        WEATHER_KEY: [f"{origin}@{departure[:13]}" for origin, departure in zip(origins, departures)],
        PLANE_KEY: [str(tailnum) for tailnum in tailnums],
    }


def request_columns(columns: Iterable[str], features: Iterable[str]) -> list[str]:
    """What a client sends when the feature store supplies the rest: of `columns`, the
    model's features it has itself and the entity columns."""
    wanted = set(features) | set(ENTITY_COLUMNS)
    return [column for column in columns if column in wanted]


def check_departures(departures: Iterable[str], where: str) -> None:
    """Raises DataError naming the first scheduled departure that is not `YYYY-MM-DDTHH:MM:SSZ`
    or not a moment of the calendar (2013-02-30T10:00:00Z)."""
    for value in departures:
        if not isinstance(value, str) or not DEPARTURE_FORMAT.fullmatch(value):
            raise DataError(
                "scheduled departure is not ISO-8601 UTC like 2013-01-01T10:15:00Z",
                path=where,
                feature=DEPARTURE,
                value=value,
            )
        try:
            datetime.datetime.fromisoformat(value[:-1])  # the format is checked; is it a moment of the calendar?
        except ValueError:
            raise DataError(
                "scheduled departure is not a date and time of the calendar", path=where, feature=DEPARTURE, value=value
            ) from None


def apply_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Fills every feature no table had for the row with its documented default."""
    return frame.fillna({name: value for name, value in DEFAULTS.items() if name in frame and not _is_nan(value)})


def training_features(
    flights: pd.DataFrame, feature_root: str | Path, where: str = ""
) -> tuple[pd.DataFrame, JoinCounts]:
    """The flights with their weather and plane features, point-in-time correct (the feature
    tables under `feature_root` are read for this one join; see FeatureJoin)."""
    return FeatureJoin(feature_root).join(flights, where)


class FeatureJoin:
    """The offline feature tables under `feature_root` (a folder or URI), read once and joined
    to any number of batches of flights.

    Raises:
        DataError: a missing or corrupt feature source file.
    """

    features = WEATHER_FEATURES + PLANE_FEATURES  # the columns a join adds (or replaces)

    def __init__(self, feature_root: str | Path):
        self._tables = [
            (read_source(feature_root, file, key, names).drop_duplicates(key, keep="last").set_index(key), key, names)
            for file, key, names in (
                (WEATHER_FILE, WEATHER_KEY, WEATHER_FEATURES),
                (PLANES_FILE, PLANE_KEY, PLANE_FEATURES),
            )
        ]

    def join(self, flights: pd.DataFrame, where: str = "") -> tuple[pd.DataFrame, JoinCounts]:
        """The flights with their weather and plane features, point-in-time correct. A numeric
        feature is a float whatever the batch, so batches of one window agree on its type.

        Raises:
            DataError: a missing entity column or a malformed departure (`where` names the span).
        """
        for column in ENTITY_COLUMNS:
            if column not in flights.columns:
                raise DataError("entity column is missing from the span", path=where, feature=column)
        check_departures(flights[DEPARTURE], where)
        keys = entity_keys(flights["origin"], flights[DEPARTURE], flights[PLANE_KEY])
        # Checked above, so pandas' ISO-8601 fast path parses them (4x faster than an explicit format).
        departure = _utc_numpy(pd.to_datetime(flights[DEPARTURE], utc=True))
        looked_up, missing = [], {}
        for table, key, names in self._tables:
            rows = table.reindex(keys[key])
            usable = (
                rows[TIMESTAMP].notna() & (_utc_numpy(pd.to_datetime(rows[TIMESTAMP], utc=True)) <= departure)
            ).to_numpy()
            values = rows[list(names)].reset_index(drop=True)
            values = values.astype({name: "float64" for name in names if pd.api.types.is_integer_dtype(values[name])})
            usable &= values.notna().any(axis=1).to_numpy()  # a grid hour with no recent observation is empty
            values.loc[~usable] = np.nan  # no row, an empty row, or a row from after the departure
            looked_up.append(apply_defaults(values))
            missing[key] = int((~usable).sum())
        features = [name for frame in looked_up for name in frame.columns]
        joined = pd.concat([flights.reset_index(drop=True).drop(columns=features, errors="ignore"), *looked_up], axis=1)
        departures = (str(flights[DEPARTURE].min()), str(flights[DEPARTURE].max())) if len(flights) else ("", "")
        return joined, JoinCounts(len(joined), missing[WEATHER_KEY], missing[PLANE_KEY], departures)


def _utc_numpy(times: pd.Series) -> np.ndarray:
    """UTC times as datetime64 (not an object array of Timestamps, which is 10x slower to compare)."""
    return times.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
