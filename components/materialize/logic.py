"""Materialize: load the features a run's flights need into the online store (Feast).

The window is the scheduled hours of the run's flights, from the first to the hour after
the last, so the prediction service finds every feature the model was trained with for
flights like these. The definitions are applied first (idempotent), so the registry always
matches the code that runs.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from features import store
from features.joins import DEPARTURE_TIME_FORMAT
from features.store import Materialized


def materialize_window(
    feature_repo: Path, feature_root: str | Path, departures: tuple[str, str], redis: str = ""
) -> list[Materialized]:
    """Materializes every feature view for the hours of `departures` (first, last; ISO-8601 UTC)
    into the online store: Redis at `redis` (host:port), or SQLite in the repo.

    Raises:
        FeatureStoreError, DataError: an unknown feature view, a missing or corrupt source.
    """
    store.apply(feature_repo, feature_root, redis)
    first, last = (
        dt.datetime.strptime(value, DEPARTURE_TIME_FORMAT).replace(tzinfo=dt.timezone.utc) for value in departures
    )
    start = first.replace(minute=0, second=0)
    end = last.replace(minute=0, second=0) + dt.timedelta(hours=1)
    return store.materialize(feature_repo, feature_root, start, end)
