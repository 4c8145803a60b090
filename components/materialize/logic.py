"""Materialize: load the features a run's flights need into the online store (Feast).

The window is the scheduled hours of the run's flights, from the first to the hour after
the last, so the prediction service finds every feature the model was trained with for
flights like these. A feature repository not applied yet gets the definitions first.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from features import store
from features.joins import DEPARTURE_TIME_FORMAT
from features.store import Materialized


def materialize_window(feature_repo: Path, feature_root: Path, departures: tuple[str, str]) -> list[Materialized]:
    """Materializes every feature view for the hours of `departures` (first, last; ISO-8601 UTC).

    Raises:
        FeatureStoreError, DataError: an unknown feature view, a missing or corrupt source.
    """
    if not (feature_repo / store.CONFIG_FILE).is_file():
        store.apply(feature_repo, feature_root)
    first, last = (dt.datetime.strptime(value, DEPARTURE_TIME_FORMAT).replace(tzinfo=dt.timezone.utc)
                   for value in departures)
    start = first.replace(minute=0, second=0)
    end = last.replace(minute=0, second=0) + dt.timedelta(hours=1)
    return store.materialize(feature_repo, feature_root, start, end)
