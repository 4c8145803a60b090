"""Which model versions serve traffic: loading, warming, hot swap, canary routing.

A request takes one `Routing` snapshot and uses it to the end; a swap builds a new
snapshot and replaces the reference in one assignment. So no request ever sees a
half-loaded model, and a model being replaced stays alive until its last request ends;
then its session is closed, freeing its variables at once rather than at a garbage
collection.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Callable

import numpy as np

from components.common import model_io
from components.common.model_repository import published_versions, pushed_at, version_path
from serving.batching import MAX_ROWS, MAX_WAIT_SECONDS, DynamicBatcher

log = logging.getLogger(__name__)

STABLE = "stable"
CANARY = "canary"
WARMUP_ROWS = 8


@dataclasses.dataclass(frozen=True, eq=False)
class LoadedModel:
    version: int
    path: Path
    signature: model_io.Signature
    loaded_at: float
    pushed_at: float
    batcher: DynamicBatcher = dataclasses.field(repr=False)

    def predict(self, columns) -> np.ndarray:
        """This request's scores, computed in one model call with concurrent requests' rows."""
        return self.batcher(columns)


@dataclasses.dataclass(frozen=True)
class Batching:
    """How concurrent requests are batched into one model call (serving/batching.py)."""

    max_rows: int = MAX_ROWS
    max_wait_seconds: float = MAX_WAIT_SECONDS


def load_model(path: Path, version: int, batching: Batching = Batching()) -> LoadedModel:
    """Loads a SavedModel and warms it with one batch, so its first real request is not slow."""
    saved_model = model_io.SavedModel(path, in_caller_thread=True)
    batcher = DynamicBatcher(saved_model.predict, batching.max_rows, batching.max_wait_seconds)
    model = LoadedModel(version, path, saved_model.signature, time.time(), pushed_at(path), batcher)
    weakref.finalize(model, saved_model.close)  # once no routing snapshot, request or canary holds it
    model.predict(_warmup_columns(model.signature))
    return model


def _warmup_columns(signature: model_io.Signature) -> dict[str, np.ndarray]:
    samples = {"string": "", "int64": 0, "float32": 0.0}
    return model_io.instances_to_columns(
        signature, [{name: samples[dtype] for name, dtype in signature.inputs.items()}] * WARMUP_ROWS
    )


def _public_bucket(request_key: str) -> int:
    """0..99 by an unkeyed hash: for services without a serving token (tests, benchmarks)."""
    return int.from_bytes(hashlib.blake2b(request_key.encode(), digest_size=8).digest(), "big") % 100


@dataclasses.dataclass(frozen=True)
class Routing:
    """An immutable view of what serves: the stable model, maybe a canary and its share."""

    stable: LoadedModel | None = None
    canary: LoadedModel | None = None
    canary_percent: int = 0
    bucket: Callable[[str], int] = dataclasses.field(default=lambda key: _public_bucket(key), repr=False)

    def choose(self, request_key: str) -> LoadedModel | None:
        """The canary for `canary_percent` of request keys (the same key, the same answer), else stable."""
        if self.canary is None:
            return self.stable
        return self.canary if self.bucket(request_key) < self.canary_percent else self.stable

    def by_version(self, version: int) -> LoadedModel | None:
        return next((m for m in (self.stable, self.canary) if m is not None and m.version == version), None)

    def by_label(self, label: str) -> LoadedModel | None:
        return {STABLE: self.stable, CANARY: self.canary}.get(label)

    @property
    def models(self) -> list[LoadedModel]:
        return [m for m in (self.stable, self.canary) if m is not None]


@dataclasses.dataclass(frozen=True)
class Vetting:
    """Whether a published version may be served: `refusal` says why not; a `pending` one is
    asked about again later (its push is not recorded yet)."""

    refusal: str = ""
    pending: bool = False


SERVABLE = Vetting()


class ModelRegistry:
    """Watches `<repository>/<model_name>/` and keeps `routing` current.

    A new version is vetted (`vet`: recorded in ML Metadata with the digest it has on disk),
    loaded and warmed in the background; the first ever becomes stable, later ones become
    the canary (replacing an undecided canary). A version refused or failing to load is
    remembered with its error and never receives traffic. `excluded` versions (rolled back
    earlier) are never loaded. A `pinned_version` is the only version ever loaded (one KServe
    revision per version; KServe splits the traffic). At start-up, stable is the newest
    `settled` version (promoted, or the oldest when none was) that vets and loads, falling
    back to older ones, and a newer one is the canary again: a restart does not promote an
    undecided canary, and one broken version does not leave nothing served.
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
        vet: Callable[[int, Path], Vetting] = lambda version, path: SERVABLE,
        bucket: Callable[[str], int] | None = None,
        batching: Batching = Batching(),
    ):
        self.repository = repository
        self.batching = batching
        self.model_name = model_name
        self.canary_percent = canary_percent
        self.pinned_version = pinned_version
        self.routing = Routing(bucket=bucket or _public_bucket)
        self.failed: dict[int, str] = {}
        self._excluded = excluded
        self._on_loaded = on_loaded
        self._settled = settled
        self._vet = vet
        self._seen: set[int] = set()
        self._pending: set[int] = set()
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Loads the newest version not seen yet, if any (at start-up, see the class doc)."""
        published = published_versions(self.repository, self.model_name)
        if self.pinned_version is not None:
            candidates = [v for v in published if v == self.pinned_version and v not in self._seen]
        else:
            excluded = self._excluded()
            candidates = [v for v in published if v not in self._seen and v not in excluded]
        if not candidates or max(candidates) <= max(self._seen, default=0):
            return
        newest = max(candidates)
        if self.routing.stable is None and self.pinned_version is None:
            for version in self._stable_order(candidates):
                if self._vet_and_load(version):
                    break
        stable = self.routing.stable
        if (stable is None or newest > stable.version) and newest not in self.failed:
            self._vet_and_load(newest)
        self._seen.update(v for v in candidates if v <= newest and v not in self._pending)

    def _stable_order(self, candidates: list[int]) -> list[int]:
        """Which version to serve as stable at start-up, in order of preference: the promoted
        ones, newest first; then those they superseded, newest first; then undecided newer
        ones, oldest first (with no verdict at all, the first version pushed)."""
        settled = sorted((v for v in candidates if self._settled(v)), reverse=True)
        last = settled[0] if settled else 0
        rest = [v for v in candidates if v not in settled]
        return settled + sorted((v for v in rest if v < last), reverse=True) + sorted(v for v in rest if v > last)

    def _vet_and_load(self, version: int) -> bool:
        """Loads a version if it vets; False when it was refused, is pending, or failed to load."""
        self._pending.discard(version)
        path = version_path(self.repository, self.model_name, version)
        vetting = self._vet(version, path)
        if vetting.pending:
            self._pending.add(version)
            return False
        if vetting.refusal:
            self._fail(version, vetting.refusal)
            return False
        return self._load(version, path)

    def _fail(self, version: int, error: str) -> None:
        self.failed[version] = error
        log.error("model %s version %s is not served: %s", self.model_name, version, error)

    def _load(self, version: int, path: Path) -> bool:
        """Loads a version as stable (nothing serves yet) or as the canary."""
        try:
            model = load_model(path, version, self.batching)
        except Exception as error:  # any load failure keeps the version out of traffic
            self._fail(version, f"failed to load: {type(error).__name__}: {error}")
            return False
        with self._lock:
            current = self.routing
            if current.stable is None:
                self.routing = dataclasses.replace(current, stable=model)
                role = STABLE
            else:
                self.routing = dataclasses.replace(current, canary=model, canary_percent=self.canary_percent)
                role = CANARY
        log.info("model %s version %s loaded as %s", self.model_name, version, role)
        self._on_loaded(model, role)
        return True

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
            self.routing = Routing(stable=current.canary if promoted else current.stable, bucket=current.bucket)
            return True
