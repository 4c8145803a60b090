"""Online outcomes: which version answered each request, the true labels that arrive later,
and the canary verdict they lead to."""

from __future__ import annotations

import collections
import dataclasses
import math
import threading

import numpy as np
import pandas as pd

from components.common.classification_metrics import auc, compute
from components.common.metadata import PROMOTED, ROLLED_BACK


@dataclasses.dataclass(frozen=True)
class VersionOutcomes:
    """What is known of one version since tracking started."""

    version: int
    requests: int
    errors: int
    scores: tuple[float, ...]
    labels: tuple[int, ...]

    @property
    def labelled(self) -> int:
        return len(self.labels)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def auc(self) -> float:
        return auc(np.array(self.labels), np.array(self.scores)) if self.labels else math.nan

    def summary(self) -> dict[str, float]:
        metrics = compute(np.array(self.labels), np.array(self.scores)) if self.labels else None
        return {"version": self.version, "requests": self.requests, "errors": self.errors, "labelled": self.labelled,
                "auc": metrics.auc if metrics else math.nan, "log_loss": metrics.log_loss if metrics else math.nan,
                "accuracy": metrics.accuracy if metrics else math.nan}


@dataclasses.dataclass(frozen=True)
class CanaryVerdict:
    decision: str
    reason: str
    numbers: dict[str, float]


def judge_canary(stable: VersionOutcomes, canary: VersionOutcomes, min_labelled: int, auc_tolerance: float,
                 max_error_rate: float, min_requests_for_errors: int = 50) -> CanaryVerdict | None:
    """Promote, roll back, or wait (None).

    Rolled back at once when the canary's error rate exceeds `max_error_rate` (after
    enough requests to tell); otherwise judged once both versions have `min_labelled`
    labelled predictions: promoted when its online AUC is at least stable's minus
    `auc_tolerance`, rolled back when lower.
    """
    numbers = {"stable_version": stable.version, "canary_version": canary.version,
               "stable_auc": stable.auc, "canary_auc": canary.auc, "stable_labelled": stable.labelled,
               "canary_labelled": canary.labelled, "canary_requests": canary.requests,
               "canary_error_rate": canary.error_rate, "stable_error_rate": stable.error_rate,
               "auc_tolerance": auc_tolerance, "max_error_rate": max_error_rate}
    if canary.requests >= min_requests_for_errors and canary.error_rate > max_error_rate:
        return CanaryVerdict(ROLLED_BACK, f"canary error rate {canary.error_rate:.3f} above {max_error_rate:g}", numbers)
    if min(stable.labelled, canary.labelled) < min_labelled:
        return None
    if math.isnan(canary.auc) or math.isnan(stable.auc):
        return None  # one class only so far: wait for both
    if canary.auc >= stable.auc - auc_tolerance:
        return CanaryVerdict(PROMOTED, f"online AUC {canary.auc:.4f} vs stable {stable.auc:.4f} "
                                      f"(tolerance {auc_tolerance:g}) over {canary.labelled}/{stable.labelled} labels", numbers)
    return CanaryVerdict(ROLLED_BACK, f"online AUC {canary.auc:.4f} below stable {stable.auc:.4f} "
                                    f"minus tolerance {auc_tolerance:g}", numbers)


def logged_outcomes(requests: pd.DataFrame, feedback: pd.DataFrame, version: int) -> VersionOutcomes:
    """One version's outcomes from the shared logs (serving/request_log.py): its logged
    predictions, and the labels that came back for them (the last one per request)."""
    if requests.empty:
        return VersionOutcomes(version, 0, 0, (), ())
    predictions = requests[requests.model_version == version]
    if feedback.empty:
        return VersionOutcomes(version, len(predictions), 0, (), ())
    labels = feedback.drop_duplicates("request_id", keep="last").set_index("request_id").label
    joined = predictions.join(labels, on="request_id", how="inner")
    return VersionOutcomes(version, len(predictions), 0, tuple(joined.prediction.astype(float)),
                           tuple(joined.label.astype(int)))


class OutcomeJournal:
    """Remembers recent predictions by request id, so that feedback can be matched to them.

    Bounded: beyond `capacity` predictions the oldest are forgotten (feedback for them is
    reported as unknown). Per-version tallies restart with `reset()`, when a canary starts,
    so that canary and stable are compared over the same period; the last `RECENT`
    labelled predictions of each version are kept apart from that, for the online metric.
    """

    RECENT = 10_000

    def __init__(self, capacity: int):
        self._capacity = capacity
        self._recent: dict[int, collections.deque[tuple[float, int]]] = collections.defaultdict(
            lambda: collections.deque(maxlen=self.RECENT))
        self._predictions: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self._requests: collections.Counter[int] = collections.Counter()
        self._errors: collections.Counter[int] = collections.Counter()
        self._labelled: dict[int, list[tuple[float, int]]] = collections.defaultdict(list)
        self._lock = threading.Lock()

    def predicted(self, version: int, request_ids: list[str], scores: list[float]) -> None:
        with self._lock:
            self._requests[version] += 1
            for request_id, score in zip(request_ids, scores):
                self._predictions[request_id] = (version, score)
            while len(self._predictions) > self._capacity:
                self._predictions.popitem(last=False)

    def failed(self, version: int) -> None:
        with self._lock:
            self._requests[version] += 1
            self._errors[version] += 1

    def feedback(self, request_id: str, label: int) -> int | None:
        """Records the true label; returns the version that answered, or None for an unknown id."""
        with self._lock:
            found = self._predictions.pop(request_id, None)
            if found is None:
                return None
            version, score = found
            self._labelled[version].append((score, label))
            self._recent[version].append((score, label))
            return version

    def outcomes(self, version: int) -> VersionOutcomes:
        """The version's tallies since its last reset."""
        with self._lock:
            return self._tally(version, list(self._labelled.get(version, [])))

    def recent(self, version: int, last: int) -> VersionOutcomes:
        """The version's most recent `last` labelled predictions, across resets."""
        with self._lock:
            return self._tally(version, list(self._recent.get(version, []))[-last:])

    def _tally(self, version: int, labelled: list[tuple[float, int]]) -> VersionOutcomes:
        return VersionOutcomes(version, self._requests[version], self._errors[version],
                               tuple(s for s, _ in labelled), tuple(label for _, label in labelled))

    def reset(self, versions: list[int]) -> None:
        """Starts the tallies of these versions afresh (a canary compares like with like)."""
        with self._lock:
            for version in versions:
                self._requests.pop(version, None)
                self._errors.pop(version, None)
                self._labelled.pop(version, None)
