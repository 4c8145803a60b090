"""Which model versions serve traffic: loading, warming, hot swap, canary routing.

A request takes one `Routing` snapshot and uses it to the end; a swap builds a new
snapshot and replaces the reference in one assignment. So no request ever sees a
half-loaded model, and a model being replaced stays alive until its last request ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from components.common import model_io
from components.common.model_repository import published_versions, pushed_at, version_path

log = logging.getLogger(__name__)

STABLE = "stable"
CANARY = "canary"
WARMUP_ROWS = 8


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
    version: int
    path: Path
    serving_fn: object
    signature: model_io.Signature
    loaded_at: float
    pushed_at: float

    def predict(self, columns) -> np.ndarray:
        return model_io.predict(self.serving_fn, columns)


def load_model(path: Path, version: int) -> LoadedModel:
    """Loads a SavedModel and warms it with one batch, so its first real request is not slow."""
    serving_fn = model_io.load(path)
    model = LoadedModel(version, path, serving_fn, model_io.signature_of(serving_fn), time.time(), pushed_at(path))
    model.predict(_warmup_columns(model.signature))
    return model


def _warmup_columns(signature: model_io.Signature) -> dict[str, np.ndarray]:
    samples = {"string": "", "int64": 0, "float32": 0.0}
    return model_io.instances_to_columns(
        signature, [{name: samples[dtype] for name, dtype in signature.inputs.items()}] * WARMUP_ROWS
    )


@dataclasses.dataclass(frozen=True)
class Routing:
    """An immutable view of what serves: the stable model, maybe a canary and its share."""

    stable: LoadedModel | None = None
    canary: LoadedModel | None = None
    canary_percent: int = 0

    def choose(self, request_key: str) -> LoadedModel | None:
        """The canary for `canary_percent` of request keys (the same key, the same answer), else stable."""
        if self.canary is None:
            return self.stable
        bucket = int.from_bytes(hashlib.blake2b(request_key.encode(), digest_size=8).digest(), "big") % 100
        return self.canary if bucket < self.canary_percent else self.stable

    def by_version(self, version: int) -> LoadedModel | None:
        return next((m for m in (self.stable, self.canary) if m is not None and m.version == version), None)

    def by_label(self, label: str) -> LoadedModel | None:
        return {STABLE: self.stable, CANARY: self.canary}.get(label)

    @property
    def models(self) -> list[LoadedModel]:
        return [m for m in (self.stable, self.canary) if m is not None]


class ModelRegistry:
    """Watches `<repository>/<model_name>/` and keeps `routing` current.

    A new version is loaded and warmed in the background; the first ever becomes
    stable, later ones become the canary (replacing an undecided canary). A version
    that fails to load is remembered with its error and never receives traffic.
    `excluded` versions (rolled back earlier) are never loaded. A `pinned_version` is the
    only version ever loaded (one KServe revision per version; KServe splits the traffic).
    At start-up, stable is the newest `settled` version (promoted, or the oldest when none
    was) and a newer one is the canary again: a restart does not promote an undecided canary.
    """

    def __init__(
        self,
        repository: Path,
        model_name: str,
        canary_percent: int,
        excluded: Callable[[], set[int]] = set,
        on_loaded: Callable[[LoadedModel, str], None] = lambda m, role: None,
        pinned_version: int | None = None,
        settled: Callable[[int], bool] = lambda version: True,
    ):
        self.repository = repository
        self.model_name = model_name
        self.canary_percent = canary_percent
        self.pinned_version = pinned_version
        self.routing = Routing()
        self.failed: dict[int, str] = {}
        self._excluded = excluded
        self._on_loaded = on_loaded
        self._settled = settled
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Loads the newest version not seen yet, if any (at start-up, see the class doc)."""
        published = published_versions(self.repository, self.model_name)
        if self.pinned_version is not None:
            candidates = [v for v in published if v == self.pinned_version and v not in self._seen]
        else:
            excluded = self._excluded()
            candidates = [v for v in published if v not in self._seen and v not in excluded]
        newest_known = max(self._seen, default=0)
        if not candidates or max(candidates) <= newest_known:
            return
        newest = max(candidates)
        self._seen.update(candidates)
        if self.routing.stable is None and self.pinned_version is None:
            settled = [v for v in candidates if self._settled(v)]
            stable = max(settled) if settled else min(candidates)
            if stable != newest:
                self._load(stable)
        self._load(newest)

    def _load(self, version: int) -> None:
        """Loads a version as stable (nothing serves yet) or as the canary."""
        try:
            model = load_model(version_path(self.repository, self.model_name, version), version)
        except Exception as error:  # any load failure keeps the version out of traffic
            self.failed[version] = f"{type(error).__name__}: {error}"
            log.error("model %s version %s failed to load: %s", self.model_name, version, self.failed[version])
            return
        with self._lock:
            current = self.routing
            if current.stable is None:
                self.routing = Routing(stable=model)
                role = STABLE
            else:
                self.routing = Routing(stable=current.stable, canary=model, canary_percent=self.canary_percent)
                role = CANARY
        log.info("model %s version %s loaded as %s", self.model_name, version, role)
        self._on_loaded(model, role)

    def promote(self, version: int) -> bool:
        """Makes the canary stable; False if `version` is no longer the canary."""
        return self._end_canary(version, promoted=True)

    def roll_back(self, version: int) -> bool:
        """Drops the canary; False if `version` is no longer the canary."""
        return self._end_canary(version, promoted=False)

    def _end_canary(self, version: int, promoted: bool) -> bool:
        with self._lock:
            current = self.routing
            if current.canary is None or current.canary.version != version:
                return False
            self.routing = Routing(stable=current.canary if promoted else current.stable)
            return True
