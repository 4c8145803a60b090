"""Small crafted feature tables and flights, for point-in-time tests."""

from __future__ import annotations

import pandas as pd

from features.sources import (
    PLANES_FILE,
    TIMESTAMP,
    WEATHER_FEATURES,
    WEATHER_FILE,
    hourly_weather,
)


def observations(*rows: tuple[str, str, float]) -> pd.DataFrame:
    """Weather observations (origin, time, temp); other weather values 1.0."""
    frame = pd.DataFrame(rows, columns=["origin", TIMESTAMP, "temp"])
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame.assign(**{name: 1.0 for name in WEATHER_FEATURES if name != "temp"})


def crafted_sources(folder, weather_rows, plane_timestamp="2013-01-01T00:00:00Z"):
    folder.mkdir(parents=True, exist_ok=True)
    hourly_weather(observations(*weather_rows)).to_parquet(folder / WEATHER_FILE)
    pd.DataFrame(
        {
            "tailnum": ["N1"],
            TIMESTAMP: pd.to_datetime([plane_timestamp], utc=True),
            "plane_year": [2001.0],
            "seats": [150.0],
            "engines": ["2"],
            "manufacturer": ["BOEING"],
        }
    ).to_parquet(folder / PLANES_FILE)
    return folder


def flights(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["origin", "sched_dep", "tailnum"])
