"""The five retraining triggers. Each `check(now)` returns what fired since the last check, with why."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import pandas as pd
import pyarrow
import pyarrow.parquet as pq

from components.common.auc_inference import STANDARD_NORMAL
from components.common.datasets import DatasetConfig
from components.common.errors import DataError
from components.common.metadata import FAILED, MetadataStore
from components.common.spans import Location, complete_spans
from pipelines.triggers.calibration import (
    NoiseThresholds,
    ParametricReference,
    Statistics,
    drift_noise,
    skew_noise,
)
from pipelines.triggers.config import PerformanceSettings, ShiftSettings
from pipelines.triggers.cron import parse_cron
from pipelines.triggers.statistics_workers import StatisticsWorkers
from serving.request_log import PREFIX

log = logging.getLogger(__name__)

MANUAL = "manual"
SCHEDULE = "schedule"
NEW_DATA = "new data"
PERFORMANCE = "performance"
DISTRIBUTION_SHIFT = "distribution shift"
# The distribution-shift trigger's resampling starts from this seed.
RESAMPLING_SEED = 0


@dataclasses.dataclass(frozen=True)
class Firing:
    trigger: str
    reason: str
    at: float
    force: bool = False


class Trigger(Protocol):
    name: str

    def check(self, now: float) -> list[Firing]: ...


def request_manual_run(folder: Path, reason: str, force: bool = False) -> Path:
    """What `ct trigger` does: drops a request file the controller picks up on its next check."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{time.time():.6f}-{uuid.uuid4().hex[:6]}.json"
    temporary = folder / f".{name}.tmp"
    temporary.write_text(json.dumps({"reason": reason, "force": force, "at": time.time()}))
    os.rename(temporary, folder / name)
    return folder / name


class ManualTrigger:
    name = MANUAL

    def __init__(self, folder: Path):
        self.folder = folder

    def check(self, now: float) -> list[Firing]:
        firings = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                request = json.loads(path.read_text())
                firings.append(
                    Firing(MANUAL, str(request.get("reason") or "requested by hand"), now, bool(request.get("force")))
                )
            except (OSError, ValueError) as error:
                log.warning("ignoring unreadable manual trigger %s: %s", path, error)
            path.unlink(missing_ok=True)
        return firings


class ScheduleTrigger:
    """Fires once in each minute its cron expression matches (local time)."""

    name = SCHEDULE

    def __init__(self, expression: str):
        self.cron = parse_cron(expression)
        self._last_minute: int | None = None

    def check(self, now: float) -> list[Firing]:
        minute = int(now // 60)
        if minute == self._last_minute:
            return []
        self._last_minute = minute
        moment = datetime.datetime.fromtimestamp(minute * 60)
        if not self.cron.matches(moment):
            return []
        return [Firing(SCHEDULE, f"cron '{self.cron.expression}' at {moment:%Y-%m-%d %H:%M}", now)]


class NewDataTrigger:
    """Fires when `min_new_spans` complete spans (with their `_SUCCESS` marker) no run has read yet are there."""

    name = NEW_DATA

    def __init__(self, data_root: Location, dataset: str, store: MetadataStore, min_new_spans: int):
        self.data_root = data_root
        self.dataset = dataset
        self.store = store
        self.min_new_spans = min_new_spans
        self._announced: set[str] = set()
        self._read_for_good: set[str] = set()  # read by a run that decided other than failed: never asked again

    def check(self, now: float) -> list[Firing]:
        """Asks ML Metadata about the spans not known to be read (the new ones, and those only a
        run still going or a failed run read): after the first check, a few per poll whatever
        the history's length. A span whose only readers failed (a run killed, or crashed) is
        new again."""
        try:
            arrived = {span.span_id for span in complete_spans(self.data_root)}
        except DataError:  # no data root (yet)
            return []
        unknown = sorted(arrived - self._announced - self._read_for_good)
        readers = self.store.span_readers(self.dataset, unknown)
        self._read_for_good.update(span for span, decisions in readers.items() if decisions - {"", FAILED})
        new = [span for span in unknown if not readers.get(span, set()) - {FAILED}]  # no reader but failed ones
        if len(new) < self.min_new_spans:
            return []
        self._announced.update(new)
        return [Firing(NEW_DATA, f"new complete span{'s' if len(new) > 1 else ''} {', '.join(new)}", now)]


class PerformanceDropTrigger:
    """Fires when the production version's online AUC, from the service's feedback, is below the
    floor with confidence: the upper one-sided bound of its last `window` labelled predictions'
    AUC at `confidence` (DeLong standard error, components/common/auc_inference.py) is below
    `min_auc`. A model whose true AUC is at the floor fires on a given check with chance at
    most 1 - confidence, one above it less; a point estimate under the floor by less than its
    noise does not fire.

    Fires once per production version: a new version (or a restart) re-arms it.
    """

    name = PERFORMANCE

    def __init__(self, config: PerformanceSettings, model_name: str):
        self.config = config
        self.model_name = model_name
        self._fired_for: set[str] = set()
        self._warned = False

    def check(self, now: float) -> list[Firing]:
        url = f"{self.config.serving_url}/v1/models/{self.model_name}/performance?last={self.config.window}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                stable = json.loads(response.read()).get("stable")
        except (urllib.error.URLError, OSError, ValueError) as error:
            log.debug("performance not available from %s: %s", url, error)
            return []
        if not stable or stable["labelled"] < self.config.min_samples:
            return []
        if stable["auc"] is None:
            return []
        if stable.get("auc_standard_error") is None:
            if not self._warned:
                log.warning("%s gives no auc_standard_error (an older service?): no performance check", url)
                self._warned = True
            return []
        version = str(stable["version"])
        bound = stable["auc"] + STANDARD_NORMAL.inv_cdf(self.config.confidence) * stable["auc_standard_error"]
        if bound >= self.config.min_auc or version in self._fired_for:
            return []
        self._fired_for.add(version)
        return [
            Firing(
                PERFORMANCE,
                f"online AUC {stable['auc']:.4f} of version {version} below {self.config.min_auc:g} with "
                f"{self.config.confidence:.0%} confidence (upper bound {bound:.4f}) over its last "
                f"{stable['labelled']} labelled predictions",
                now,
            )
        ]


class LogTail:
    """The newest rows of a Parquet log (serving/request_log.py) not read yet: a check costs
    what is new, whatever the size of the log.

    A log file appears whole and never changes, so files read once are not read again (the
    cursor forgets those the log deleted). Of the files not read yet only the newest holding
    `max_rows` rows are read (their row counts come from the Parquet footers), and only
    `columns`; older unread rows would be dropped anyway, so they are skipped, not read.
    """

    def __init__(self, folder: Path, columns: Sequence[str], max_rows: int):
        self.folder = folder
        self.columns = list(columns)
        self.max_rows = max_rows
        self._read: set[str] = set()

    def read_new(self) -> pd.DataFrame:
        """The newest rows written since the last call, oldest first: `max_rows` of them, or up to
        one file more (the caller keeps the tail it needs)."""
        names = sorted(path.name for path in self.folder.glob(f"{PREFIX}*.parquet")) if self.folder.is_dir() else []
        self._read &= set(names)
        unread = [name for name in names if name not in self._read]
        self._read.update(unread)
        chosen: list[tuple[Path, pq.ParquetFile]] = []
        rows = 0
        for name in reversed(unread):  # newest first; names start with the time they were written
            if rows >= self.max_rows:
                break
            opened = self._open(self.folder / name)
            if opened is not None:
                chosen.append((self.folder / name, opened))
                rows += opened.metadata.num_rows
        frames = [self._columns_of(path, opened) for path, opened in reversed(chosen)]
        frames = [frame for frame in frames if frame is not None and len(frame)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=self.columns)

    @staticmethod
    def _open(path: Path) -> pq.ParquetFile | None:
        try:
            return pq.ParquetFile(path)
        except FileNotFoundError:  # deleted by the log's size bound since it was listed
            return None
        except (OSError, pyarrow.ArrowException) as error:
            log.warning("skipping unreadable log file %s: %s", path, error)
            return None

    def _columns_of(self, path: Path, opened: pq.ParquetFile) -> pd.DataFrame | None:
        present = [column for column in self.columns if column in opened.schema_arrow.names]
        try:
            return opened.read(columns=present).to_pandas()
        except (OSError, pyarrow.ArrowException) as error:
            log.warning("skipping unreadable log file %s: %s", path, error)
            return None
        finally:
            opened.close()


class DistributionShiftTrigger:
    """Compares logged serving traffic with the production model's training data (skew) and recent
    traffic with the traffic before it (drift), with TFDV, every `check_seconds`.

    Each window is the newest `window_rows` requests logged since the previous window; a check
    reads only the request log's files written since the last check, and only the features
    compared, so its cost and memory are bounded by the window, not by the log (LogTail).

    A feature fires when its distance is above its configured threshold and above the noise
    threshold for the window's size, calibrated by resampling (calibration.py) so that a check
    of a steady stream fires falsely with probability at most `false_alarm_rate`. Calibrating
    costs `resamples` statistics of a window (skew) or twice that (drift), so it runs only when
    a feature is above its configured threshold; skew's is kept per production version and
    window size. Resampling is seeded: the same traffic gives the same firings.
    """

    name = DISTRIBUTION_SHIFT

    def __init__(self, config: ShiftSettings, request_log: Path, dataset: DatasetConfig, store: MetadataStore):
        self.config = config
        self.request_log = request_log
        self.dataset = dataset
        self.store = store
        features = [f for f in dataset.features if f not in config.ignore_features]
        self._tail = LogTail(request_log, features, config.window_rows)
        self._pending: pd.DataFrame | None = None  # rows since the last window, at most a window of them
        self._last_check = 0.0
        self._previous: tuple[pd.DataFrame, Statistics] | None = None  # the last window's rows and statistics
        self._random = np.random.default_rng(RESAMPLING_SEED)
        self._skew_noise: tuple[tuple, NoiseThresholds] | None = None  # its key and skew's noise thresholds
        self._workers = StatisticsWorkers(config.calibration_processes)

    def check(self, now: float) -> list[Firing]:
        if now - self._last_check < self.config.check_seconds:
            return []
        self._last_check = now
        new = self._tail.read_new()
        if not new.empty:
            pending = new if self._pending is None else pd.concat([self._pending, new], ignore_index=True)
            self._pending = pending.tail(self.config.window_rows)
        if self._pending is None or len(self._pending) < self.config.window_rows:
            return []
        window, self._pending = self._pending.reset_index(drop=True), None
        return self._compare(window, now)

    def _compare(self, window, now: float) -> list[Firing]:
        # TFDV takes seconds to import: only when there is traffic to compare.
        from components.common.tfdv_io import load_schema, load_statistics
        from components.statistics.logic import statistics_of_dataframe
        from components.validate_data.logic import measure_drift, measure_skew

        schema = load_schema(self.dataset.schema_path)
        features = [f for f in self.dataset.features if f in window.columns and f not in self.config.ignore_features]
        window = window[features]
        current = statistics_of_dataframe(window, schema)
        thresholds = (
            self.dataset.categorical_features,
            self.config.categorical_threshold,
            self.config.numeric_threshold,
        )
        resampling = (self.config.resamples, self.config.false_alarm_rate, self._random)

        def statistics(frames):
            return self._workers.statistics(frames, schema)

        def drift(first, second):
            return measure_drift(first, second, schema, *thresholds)

        reasons = []
        production = self.store.production_model(self.dataset.model_name)
        training = self.store.training_statistics(production) if production else None
        if training is not None:
            reference = load_statistics(Path(training.uri))
            version = production.properties["version"]

            def skew(sample):
                return measure_skew(reference, sample, schema, *thresholds)

            def calibrate_skew():
                sampler = ParametricReference(reference, schema, features)
                return skew_noise(sampler, len(window), *resampling, statistics, skew)

            skewed = _above_noise(
                skew(current), lambda: self._skew_noise_of((version, len(window), tuple(features)), calibrate_skew)
            )
            if skewed:
                reasons.append(f"serving traffic skewed from version {version}'s training data: {skewed}")
        if self._previous is not None:
            previous_rows, previous_statistics = self._previous
            drifted = _above_noise(
                drift(current, previous_statistics),
                lambda: _timed(
                    f"drift noise at {len(window)} rows",
                    lambda: drift_noise(previous_rows, window, *resampling, statistics, drift),
                ),
            )
            if drifted:
                reasons.append(f"recent traffic drifted from the {len(window)} requests before: {drifted}")
        self._previous = (window, current)
        return [Firing(DISTRIBUTION_SHIFT, "; ".join(reasons), now)] if reasons else []

    def close(self) -> None:
        """Stops the calibration's statistics workers, if any run."""
        self._workers.close()

    def _skew_noise_of(self, key: tuple, calibrate: Callable[[], NoiseThresholds]) -> NoiseThresholds:
        """Skew's noise thresholds, calibrated once per key: production version, window size, features."""
        if self._skew_noise is None or self._skew_noise[0] != key:
            self._skew_noise = (key, _timed(f"skew noise of version {key[0]} at {key[1]} rows", calibrate))
        return self._skew_noise[1]


def _timed(what: str, calibrate: Callable[[], NoiseThresholds]) -> NoiseThresholds:
    """Calibrates, and logs how long it took (`what` calibrated in S s)."""
    started = time.monotonic()
    noise = calibrate()
    log.info("%s calibrated in %.1f s", what, time.monotonic() - started)
    return noise


def _above_noise(distances: Sequence, calibrate: Callable[[], NoiseThresholds]) -> str:
    """The features above their configured threshold and above noise at the window's size, as a
    reason; calibrates the noise only when some feature is above its configured threshold."""
    over = [d for d in distances if d.drifted]
    if not over:
        return ""
    noise = calibrate()
    # A feature no resample measured (absent from all of them) has no noise to clear.
    return ", ".join(
        f"{d.feature} {d.measure} {d.value:.3f} > {d.threshold:g} (noise at {noise.rows} rows: {level:.3f})"
        for d in over
        if d.value > (level := noise.by_feature.get(d.feature, 0.0))
    )
