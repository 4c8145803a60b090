"""The Feast feature store: definitions, registry, materialization and online lookup.

Feast holds the definitions (entities, feature views) in its registry, materializes the
offline tables into the online store (SQLite here, Redis in the cluster) and answers
online lookups. Training does not go through Feast's file offline store: its
`get_historical_features` merges on the key before filtering by time and ran out of 24 GiB
for 100,000 rows when this stack was checked; features/joins.py joins the same tables by
key instead (bench/feature_retrieval.py measures it against a plain pandas as-of merge).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import random
import threading
import time
from pathlib import Path
from typing import Sequence

import yaml

from components.common.errors import CtError
from features.joins import DEFAULTS, DEPARTURE_TIME_FORMAT, entity_keys
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
    table_location,
)

PROJECT = "continuous_training"
WEATHER_VIEW, PLANES_VIEW = "weather", "planes"
# Each feature view: its offline file, entity key and features.
VIEWS = {
    WEATHER_VIEW: (WEATHER_FILE, WEATHER_KEY, WEATHER_FEATURES),
    PLANES_VIEW: (PLANES_FILE, PLANE_KEY, PLANE_FEATURES),
}
CONFIG_FILE = "feature_store.yaml"


class FeatureStoreError(CtError):
    """The feature store is not set up, lacks a feature view, or is behind the data."""


class _FeastNotice(logging.Filter):
    """Feast 0.40 logs a deprecation notice on the root logger at every lookup; drop just that one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("_list_feature_views will make breaking changes")


_FEAST_NOTICE = _FeastNotice()


def _quiet_feast_notice() -> None:
    """Installed when the store is opened, not at import: importing this module changes no logging."""
    logging.getLogger().addFilter(_FEAST_NOTICE)  # adding the same filter twice keeps one


def write_config(repo: Path, redis: str = "") -> Path:
    """Writes `repo/feature_store.yaml`: the registry in the repo, the online store on Redis
    at `redis` (host:port) or, without one, SQLite in the repo."""
    repo.mkdir(parents=True, exist_ok=True)
    repo = repo.resolve()  # Feast reads relative paths in the config relative to the repo: keep them absolute
    online = (
        {"type": "redis", "connection_string": redis} if redis else {"type": "sqlite", "path": str(repo / "online.db")}
    )
    config = {
        "project": PROJECT,
        "provider": "local",
        "registry": str(repo / "registry.db"),
        "online_store": online,
        "offline_store": {"type": "file"},
        "entity_key_serialization_version": 2,
    }
    path = repo / CONFIG_FILE
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def open_store(repo: Path):
    """The Feast store of `repo` (its feature_store.yaml).

    Raises:
        FeatureStoreError: no feature_store.yaml there.
    """
    from feast import FeatureStore

    if not (repo / CONFIG_FILE).is_file():
        raise FeatureStoreError(f"{repo}: no {CONFIG_FILE} (run `ct features apply` first)")
    _quiet_feast_notice()
    return FeatureStore(repo_path=str(repo.resolve()))


def definitions(feature_root: str | Path) -> list:
    """The entities and feature views, reading the offline tables under `feature_root`."""
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Float64, String

    origin_hour = Entity(
        name=WEATHER_KEY,
        join_keys=[WEATHER_KEY],
        value_type=ValueType.STRING,
        description="origin airport and scheduled departure hour (UTC), e.g. EWR@2013-01-01T10",
    )
    tailnum = Entity(
        name=PLANE_KEY, join_keys=[PLANE_KEY], value_type=ValueType.STRING, description="aircraft tail number"
    )
    weather = FeatureView(
        name=WEATHER_VIEW,
        entities=[origin_hour],
        ttl=dt.timedelta(days=3650),
        schema=[Field(name=name, dtype=Float64) for name in WEATHER_FEATURES],
        source=FileSource(
            name="weather_hourly", path=table_location(feature_root, WEATHER_FILE), timestamp_field=TIMESTAMP
        ),
        description="the origin's latest weather observation at the scheduled hour (at most 3 hours old)",
    )
    planes = FeatureView(
        name=PLANES_VIEW,
        entities=[tailnum],
        ttl=dt.timedelta(days=3650),
        schema=[Field(name=name, dtype=String if name in PLANE_CATEGORICAL else Float64) for name in PLANE_FEATURES],
        source=FileSource(name="planes", path=table_location(feature_root, PLANES_FILE), timestamp_field=TIMESTAMP),
        description="aircraft attributes by tail number (FAA registry)",
    )
    return [origin_hour, tailnum, weather, planes]


def apply(repo: Path, feature_root: str | Path, redis: str = "") -> list[str]:
    """Writes the config (online store on Redis at `redis`, else SQLite in the repo) and
    registers the definitions; returns the feature views' names. Applying again is harmless."""
    from feast import FeatureView

    for file_name, key, names in VIEWS.values():
        read_source(feature_root, file_name, key, names)  # a clear error now, not at the first materialization
    write_config(repo, redis)
    objects = definitions(feature_root)
    open_store(repo).apply(objects)
    return [o.name for o in objects if isinstance(o, FeatureView)]


@dataclasses.dataclass(frozen=True)
class Materialized:
    view: str
    start: dt.datetime
    end: dt.datetime
    rows: int  # offline rows in the window


def materialize(
    repo: Path, feature_root: str | Path, start: dt.datetime, end: dt.datetime, views: Sequence[str] = tuple(VIEWS)
) -> list[Materialized]:
    """Loads each view's rows with timestamps in [start, end) into the online store.

    Planes are attributes with no time window of their own: their view is loaded from its
    earliest row, so a run whose window starts later still serves every aircraft.

    Raises:
        FeatureStoreError: an unknown feature view (nothing materialized).
        DataError: a missing or corrupt source file.
    """
    store = open_store(repo)
    known = {view.name for view in store.list_batch_feature_views()}
    unknown = [view for view in views if view not in known]
    if unknown:
        raise FeatureStoreError(f"{repo}: no feature view {unknown[0]!r} (known: {', '.join(sorted(known))})")
    windows = []
    for view in views:
        stamps = read_source(feature_root, *VIEWS[view])[TIMESTAMP]  # a clear error before Feast reads it
        view_start = min(start, stamps.min().to_pydatetime()) if view == PLANES_VIEW else start
        windows.append(Materialized(view, view_start, end, int(((stamps >= view_start) & (stamps < end)).sum())))
    for window in windows:
        store.materialize(window.start, window.end, [window.view])
    return windows


class OnlineFeatures:
    """Fills flight requests with their online features, by the same keys as training.

    A flight whose entity has no row in the online store gets the documented defaults
    (features/joins.py DEFAULTS) and is counted as missing; one scheduled after the end of
    the last materialization is counted as stale as well (the store is behind the data).

    Reads go straight to Feast's online store (`Provider.online_read`, one query per view
    for the keys not read yet) rather than through `FeatureStore.get_online_features`: that
    call spends about 0.45 ms of Python per row resolving references and converting protos,
    and with the service's request threads competing for the GIL it turned into a p99 of
    over 50 ms (bench/serving_load.py).

    What a key read is kept, up to `CACHED_KEYS` a view, for at most `CACHED_SECONDS`: many
    flights share an hour's weather and a plane, and the online store changes when it is
    materialized, which opens a new `OnlineFeatures` (features/requests.py); the age bound
    covers a store changed otherwise (a push, a store restored). A 100-row request of flights
    already seen then costs dictionary lookups, not 900 protos parsed. Each key is kept for a
    random time between half and all of `CACHED_SECONDS`, so keys read together are not read
    again together: a cache emptied whole every minute had every request of the next second
    read the store, a burst of slow requests under load.
    """

    CACHED_KEYS = 100_000
    CACHED_SECONDS = 60.0

    def __init__(self, repo: Path):
        from feast.infra.provider import get_provider

        self.store = open_store(repo)
        known = {view.name: view for view in self.store.list_batch_feature_views()}
        for view in VIEWS:
            if view not in known:
                raise FeatureStoreError(f"{repo}: no feature view {view!r}; run `ct features apply`")
        self._views = {view: known[view] for view in VIEWS}
        self._provider = get_provider(self.store.config)
        self.materialized_until = max((end for _, end in known[WEATHER_VIEW].materialization_intervals), default=None)
        # Departures are ISO-8601 UTC strings, which compare as times do.
        self._stale_from = self.materialized_until.strftime(DEPARTURE_TIME_FORMAT) if self.materialized_until else None
        self.missing = {WEATHER_VIEW: 0, PLANES_VIEW: 0}
        self.stale = 0
        self._lock = threading.Lock()
        # Per view: key -> (its values as `_rows` gives them, when they are to be read again)
        self._cache: dict[str, dict[str, tuple[tuple | None, float]]] = {view: {} for view in VIEWS}
        self._random = random.Random()

    @property
    def feature_names(self) -> tuple[str, ...]:
        return WEATHER_FEATURES + PLANE_FEATURES

    def lookup(self, origins: Sequence[str], departures: Sequence[str], tailnums: Sequence[str]) -> dict[str, list]:
        """Feature columns for the flights, defaults where the store has nothing."""
        keys = entity_keys(origins, departures, tailnums)
        columns: dict[str, list] = {}
        missing = {}
        for view, (_, key, names) in VIEWS.items():
            rows = self._rows(view, keys[key])
            # As in training: no row, or a row with no value (an hour with no recent observation).
            missing[view] = sum(row is None or all(value is None for value in row) for row in rows)
            for index, name in enumerate(names):
                default = DEFAULTS[name]
                columns[name] = [default if row is None or row[index] is None else row[index] for row in rows]
        stale = sum(departure >= self._stale_from for departure in departures) if self._stale_from else 0
        with self._lock:
            for view, count in missing.items():
                self.missing[view] += count
            self.stale += stale
        return columns

    def _rows(self, view: str, keys: list[str]) -> list[tuple | None]:
        """Each key's values of the view's features (None for a value the row lacks), or None
        for a key with no row; from the cache, the keys not in it read in one `online_read`."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        _, key, names = VIEWS[view]
        now = time.monotonic()
        cache = self._cache[view]
        known = {k: row for k in keys if (row := cache.get(k, _EXPIRED))[1] > now}
        unread = [k for k in dict.fromkeys(keys) if k not in known]
        if unread:
            entities = [EntityKey(join_keys=[key], entity_values=[Value(string_val=k)]) for k in unread]
            read = self._provider.online_read(self.store.config, self._views[view], entities, list(names))
            expiries = [now + self.CACHED_SECONDS * (1 - self._random.random() / 2) for _ in unread]
            found = {
                k: (tuple(_python(values.get(name)) for name in names) if values else None, expiry)
                for k, (_, values), expiry in zip(unread, read, expiries)
            }
            if len(cache) + sum(k not in cache for k in found) > self.CACHED_KEYS:
                for expired in [k for k, (_, expiry) in cache.items() if expiry <= now]:
                    del cache[expired]  # keys whose time was up: `found`'s own, and those no request asked for again
                if len(cache) + len(found) > self.CACHED_KEYS:
                    cache.clear()
            if len(found) <= self.CACHED_KEYS:
                cache.update(found)
            known.update(found)
        return [known[k][0] for k in keys]


_EXPIRED = (None, float("-inf"))  # a key not in the cache, as one whose time is up


def _python(value) -> object:
    """A Feast value as Python (None when absent or null)."""
    kind = value.WhichOneof("val") if value is not None else None
    return None if kind in (None, "null_val") else getattr(value, kind)
