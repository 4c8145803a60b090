"""The feature store's side of a prediction request: a client sends flight facts and the
entities, and gets the prediction of the full row, its features looked up online by the
same keys as training (features/joins.py).

The store is opened again when its registry changes (a run applied or materialized), and
the counts of missing and stale lookups carry over.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from components.common.errors import DataError
from components.common.model_io import RequestError
from features.joins import DEPARTURE, ENTITY_COLUMNS, check_departures
from features.sources import PLANE_KEY
from features.store import FeatureStoreError, OnlineFeatures

log = logging.getLogger(__name__)

# Entities a client sends that are not model inputs themselves (origin is both).
ENTITY_ONLY = frozenset(ENTITY_COLUMNS) - {"origin"}
REGISTRY_FILE = "registry.db"


class RequestFeatures:
    """Adds the online features to requests that name their entities; others pass unchanged."""

    def __init__(self, feature_repo: Path):
        self.feature_repo = feature_repo
        self.online: OnlineFeatures | None = None
        self._registry_mtime: float | None = None

    def refresh(self) -> None:
        """Opens the feature store again when its registry changed."""
        registry = self.feature_repo / REGISTRY_FILE
        if not registry.is_file() or registry.stat().st_mtime == self._registry_mtime:
            return
        try:
            online = OnlineFeatures(self.feature_repo)
        except FeatureStoreError as error:
            log.warning("feature store not usable yet: %s", error)
            return
        except Exception as error:  # a registry read while Feast rewrites it in place: tried again next time
            log.warning("feature store registry %s not readable yet: %s", registry, error)
            return
        if self.online is not None:  # keep the counts across reopenings
            online.missing, online.stale = self.online.missing, self.online.stale
        self.online, self._registry_mtime = online, registry.stat().st_mtime

    def add_to_instances(self, instances: list[dict]) -> list[dict]:
        """Rows (TF Serving `instances`) that name their entities get their online features."""
        if self.online is None or not any(DEPARTURE in row for row in instances):
            return instances
        for index, row in enumerate(instances):
            self._check_entities(row, f"instance {index}")
        looked_up = self._lookup({name: [row[name] for row in instances] for name in ENTITY_COLUMNS})
        return [
            {**_facts(row), **{name: values[i] for name, values in looked_up.items()}}
            for i, row in enumerate(instances)
        ]

    def add_to_columns(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Columns (TF Serving `inputs`, Open Inference Protocol tensors) that name the entities
        get their online feature columns."""
        if self.online is None or DEPARTURE not in inputs:
            return inputs
        self._check_entities(inputs, "inputs")
        lengths = {len(inputs[name]) if isinstance(inputs[name], list) else -1 for name in ENTITY_COLUMNS}
        if len(lengths) > 1 or -1 in lengths:
            raise RequestError(f"entities {', '.join(ENTITY_COLUMNS)}: expected lists of the same length")
        return {**_facts(inputs), **self._lookup({name: inputs[name] for name in ENTITY_COLUMNS})}

    def _check_entities(self, given: Mapping[str, Any], where: str) -> None:
        missing = [name for name in ENTITY_COLUMNS if name not in given]
        if missing:
            raise RequestError(
                f"{where}: entity '{missing[0]}' is missing (send "
                f"{', '.join(ENTITY_COLUMNS)}; the features come from the feature store)"
            )
        sent = [name for name in self.online.feature_names if name in given]
        if sent:
            raise RequestError(
                f"{where}: feature '{sent[0]}' comes from the feature store; send only flight facts and entities"
            )

    def _lookup(self, entities: Mapping[str, list]) -> dict[str, list]:
        try:
            check_departures(entities[DEPARTURE], "request")
        except DataError as error:
            raise RequestError(str(error)) from None
        return self.online.lookup(entities["origin"], entities[DEPARTURE], entities[PLANE_KEY])


def _facts(given: Mapping[str, Any]) -> dict[str, Any]:
    """What the client sent that is a model input (entities that are not inputs dropped)."""
    return {k: v for k, v in given.items() if k not in ENTITY_ONLY}
