"""Prometheus metrics in the text exposition format: requests, errors and latency per version."""

from __future__ import annotations

import bisect
import collections
import threading

LATENCY_BUCKETS_MS = (0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)


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

    def render(self, features=None, logs=()) -> str:
        """The Prometheus text; with `features` (OnlineFeatures), its missing and stale counts too,
        and for each `(name, ParquetLog)` in `logs` its failed writes and dropped rows."""
        model = f'model="{self.model_name}"'
        lines = [
            "# HELP ct_requests_total Prediction requests answered, by model version and API.",
            "# TYPE ct_requests_total counter",
        ]
        with self._lock:
            lines += [
                f'ct_requests_total{{{model},version="{v}",api="{api}"}} {n}'
                for (v, api), n in sorted(self._requests.items())
            ]
            lines += [
                "# HELP ct_request_errors_total Requests refused or failed, by model version and HTTP status.",
                "# TYPE ct_request_errors_total counter",
            ]
            lines += [
                f'ct_request_errors_total{{{model},version="{v}",code="{c}"}} {n}'
                for (v, c), n in sorted(self._errors.items())
            ]
            lines += [
                "# HELP ct_request_latency_ms Prediction latency in milliseconds, by model version.",
                "# TYPE ct_request_latency_ms histogram",
            ]
            for version, counts in sorted(self._buckets.items()):
                cumulative = 0
                for bound, count in zip(LATENCY_BUCKETS_MS + (float("inf"),), counts):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else f"{bound:g}"
                    lines.append(f'ct_request_latency_ms_bucket{{{model},version="{version}",le="{le}"}} {cumulative}')
                lines.append(f'ct_request_latency_ms_sum{{{model},version="{version}"}} {self._sums[version]:.3f}')
                lines.append(f'ct_request_latency_ms_count{{{model},version="{version}"}} {cumulative}')
            lines += [
                "# HELP ct_model_load_failures_total Model versions that failed to load.",
                "# TYPE ct_model_load_failures_total counter",
                f"ct_model_load_failures_total{{{model}}} {self._load_failures}",
                "# HELP ct_canary_decisions_total Canary verdicts, by decision.",
                "# TYPE ct_canary_decisions_total counter",
            ]
            lines += [
                f'ct_canary_decisions_total{{{model},decision="{d}"}} {n}' for d, n in sorted(self._canary.items())
            ]
            lines += [
                "# HELP ct_canary_checks_total Times the canary test weighed the evidence, decided or not.",
                "# TYPE ct_canary_checks_total counter",
                f"ct_canary_checks_total{{{model}}} {self._canary_checks}",
            ]
            lines += [
                "# HELP ct_requests_shed_total Requests and connections refused with 503 for lack of capacity.",
                "# TYPE ct_requests_shed_total counter",
            ]
            lines += [f'ct_requests_shed_total{{{model},reason="{r}"}} {n}' for r, n in sorted(self._shed.items())]
        lines += [
            "# HELP ct_log_write_failures_total Failed writes of the request and feedback logs (rows kept to retry).",
            "# TYPE ct_log_write_failures_total counter",
        ]
        lines += [f'ct_log_write_failures_total{{{model},log="{name}"}} {log.failed_writes}' for name, log in logs]
        lines += [
            "# HELP ct_log_rows_dropped_total Log rows dropped after failed writes filled the retry buffer.",
            "# TYPE ct_log_rows_dropped_total counter",
        ]
        lines += [f'ct_log_rows_dropped_total{{{model},log="{name}"}} {log.dropped_rows}' for name, log in logs]
        if features is not None:
            lines += [
                "# HELP ct_feature_missing_total Flights with no online feature row (defaults used), by feature view.",
                "# TYPE ct_feature_missing_total counter",
            ]
            lines += [
                f'ct_feature_missing_total{{{model},view="{v}"}} {n}' for v, n in sorted(features.missing.items())
            ]
            lines += [
                "# HELP ct_feature_stale_total Flights scheduled after the online store's last materialization.",
                "# TYPE ct_feature_stale_total counter",
                f"ct_feature_stale_total{{{model}}} {features.stale}",
            ]
        return "\n".join(lines) + "\n"
