"""Prometheus metrics in the text exposition format: requests, errors and latency per version.

Every metric is a counter (a histogram's buckets, sum and count included), so the metrics of
workers serving one port (`ct serve --workers`, serving/workers.py) add up: each worker
publishes its series to a folder they share (`MetricsPeers`), and whichever worker a scrape
reaches publishes its own, then answers with the sum of every worker's. Each file only grows,
so each sum does: a counter never falls between scrapes that reach different workers.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import json
import operator
import os
import threading
from pathlib import Path
from typing import Iterable, Mapping

LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)

# (family, type, help), in the order they are rendered
FAMILIES = (
    ("ct_requests_total", "counter", "Prediction requests answered, by model version and API."),
    ("ct_request_errors_total", "counter", "Requests refused or failed, by model version and HTTP status."),
    ("ct_request_latency_ms", "histogram", "Prediction latency in milliseconds, by model version."),
    ("ct_model_load_failures_total", "counter", "Model versions that failed to load."),
    ("ct_canary_decisions_total", "counter", "Canary verdicts, by decision."),
    ("ct_canary_checks_total", "counter", "Times the canary test weighed the evidence, decided or not."),
    ("ct_requests_shed_total", "counter", "Requests and connections refused with 503 for lack of capacity."),
    (
        "ct_log_write_failures_total",
        "counter",
        "Failed writes of the request and feedback logs (rows kept to retry).",
    ),
    ("ct_log_rows_dropped_total", "counter", "Log rows dropped after failed writes filled the retry buffer."),
    ("ct_feature_missing_total", "counter", "Flights with no online feature row (defaults used), by feature view."),
    ("ct_feature_stale_total", "counter", "Flights scheduled after the online store's last materialization."),
)

# Every worker loads every version and applies every canary verdict: a pod counts these once.
COUNTED_BY_EVERY_WORKER = ("ct_model_load_failures_total", "ct_canary_decisions_total")

Series = dict[str, float]  # 'name{labels}' -> value, in the order they are rendered


class Metrics:
    def __init__(self, model_name: str):
        self.model_name = model_name
        self._requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self._errors: collections.Counter[tuple[str, str]] = collections.Counter()
        self._buckets: dict[str, list[int]] = collections.defaultdict(lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
        self._sums: collections.Counter[str] = collections.Counter()
        self._load_failures = 0
        self._canary: collections.Counter[str] = collections.Counter()
        self._canary_checks = 0
        self._shed: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def observe(self, version: str, api: str, milliseconds: float) -> None:
        with self._lock:
            self._requests[(version, api)] += 1
            self._buckets[version][bisect.bisect_left(LATENCY_BUCKETS_MS, milliseconds)] += 1
            self._sums[version] += milliseconds

    def error(self, version: str, code: int) -> None:
        with self._lock:
            self._errors[(version, str(code))] += 1

    def load_failed(self) -> None:
        with self._lock:
            self._load_failures += 1

    def shed(self, reason: str) -> None:
        """A request or connection refused for lack of capacity (503)."""
        with self._lock:
            self._shed[reason] += 1

    def canary_decision(self, decision: str) -> None:
        with self._lock:
            self._canary[decision] += 1

    def canary_checked(self) -> None:
        """The canary test weighed the evidence (whatever it decided)."""
        with self._lock:
            self._canary_checks += 1

    def series(self, features=None, logs=()) -> Series:
        """Every series with its value; with `features` (OnlineFeatures), its missing and stale
        counts too, and for each `(name, ParquetLog)` in `logs` its failed writes and dropped rows."""
        model = f'model="{self.model_name}"'
        found: Series = {}
        with self._lock:
            for (v, api), n in sorted(self._requests.items()):
                found[f'ct_requests_total{{{model},version="{v}",api="{api}"}}'] = n
            for (v, c), n in sorted(self._errors.items()):
                found[f'ct_request_errors_total{{{model},version="{v}",code="{c}"}}'] = n
            for version, counts in sorted(self._buckets.items()):
                cumulative = 0
                for bound, count in zip(LATENCY_BUCKETS_MS + (float("inf"),), counts):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    found[f'ct_request_latency_ms_bucket{{{model},version="{version}",le="{le}"}}'] = cumulative
                found[f'ct_request_latency_ms_sum{{{model},version="{version}"}}'] = float(self._sums[version])
                found[f'ct_request_latency_ms_count{{{model},version="{version}"}}'] = cumulative
            found[f"ct_model_load_failures_total{{{model}}}"] = self._load_failures
            for d, n in sorted(self._canary.items()):
                found[f'ct_canary_decisions_total{{{model},decision="{d}"}}'] = n
            found[f"ct_canary_checks_total{{{model}}}"] = self._canary_checks
            for r, n in sorted(self._shed.items()):
                found[f'ct_requests_shed_total{{{model},reason="{r}"}}'] = n
        for name, log in logs:
            found[f'ct_log_write_failures_total{{{model},log="{name}"}}'] = log.failed_writes
            found[f'ct_log_rows_dropped_total{{{model},log="{name}"}}'] = log.dropped_rows
        if features is not None:
            for v, n in sorted(features.missing.items()):
                found[f'ct_feature_missing_total{{{model},view="{v}"}}'] = n
            found[f"ct_feature_stale_total{{{model}}}"] = features.stale
        return found

    def render(self, features=None, logs=()) -> str:
        """The Prometheus text of `series(features, logs)`."""
        return exposition(self.series(features, logs))


def summed(all_series: Iterable[Series]) -> Series:
    """The series of several workers as one pod's: added up, but for the events every worker
    counts (`COUNTED_BY_EVERY_WORKER`), whose largest count is taken."""
    total: Series = {}
    for series in all_series:
        for key, value in series.items():
            combine = max if key.startswith(COUNTED_BY_EVERY_WORKER) else operator.add
            total[key] = combine(total[key], value) if key in total else value
    return total


def exposition(series: Series) -> str:
    """The series in the text exposition format, each family under its HELP and TYPE lines."""
    by_family: dict[str, list[str]] = {family: [] for family, _, _ in FAMILIES}
    for key, value in series.items():
        name = key.split("{", 1)[0]
        family = name if name in by_family else name.rsplit("_", 1)[0]  # a histogram's _bucket, _sum, _count
        by_family[family].append(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}")
    lines = []
    for family, kind, help_text in FAMILIES:
        lines += [f"# HELP {family} {help_text}", f"# TYPE {family} {kind}", *by_family[family]]
    return "\n".join(lines) + "\n"


class MetricsPeers:
    """The series of the workers serving one port, in `folder`: a file per worker process (named
    by `worker`, a name no other worker is given), replaced whole at each `publish`. A worker
    that died leaves its last series behind, so the sums never fall when one is started in its
    place."""

    SUFFIX = ".json"

    def __init__(self, folder: Path, worker: str):
        self.folder = folder
        self._own = self._file(folder, worker)
        self._lock = threading.Lock()  # the watcher's tick and a scrape's thread both publish

    @classmethod
    def published(cls, folder: Path, worker: str) -> bool:
        """Whether `worker` published at least once (it began serving)."""
        return cls._file(folder, worker).exists()

    @classmethod
    def _file(cls, folder: Path, worker: str) -> Path:
        return folder / f"{worker}{cls.SUFFIX}"

    def publish(self, series: Mapping[str, float]) -> None:
        with self._lock:
            temporary = self._own.with_name(f".{self._own.name}.tmp")
            temporary.write_bytes(json.dumps(series).encode())
            os.replace(temporary, self._own)

    def every_workers(self) -> list[Series]:
        """Every worker's last published series, this one's included; a file that vanished or
        is not JSON is skipped."""
        found = []
        for path in sorted(self.folder.glob(f"*{self.SUFFIX}")):
            with contextlib.suppress(OSError, ValueError):
                found.append(json.loads(path.read_bytes()))
        return found
