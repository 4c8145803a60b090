"""The canary's judge: one verdict from online outcomes, whoever collected them (the
service's own journal, or the shared request and feedback logs for KServe)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from components.common.classification_metrics import auc, compute
from components.common.metadata import PROMOTED, ROLLED_BACK
from serving.request_log import read_log


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
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "labelled": self.labelled,
            "auc": metrics.auc if metrics else math.nan,
            "log_loss": metrics.log_loss if metrics else math.nan,
            "accuracy": metrics.accuracy if metrics else math.nan,
        }


@dataclasses.dataclass(frozen=True)
class CanaryVerdict:
    decision: str
    reason: str
    numbers: dict[str, float]


def judge_canary(
    stable: VersionOutcomes,
    canary: VersionOutcomes,
    min_labelled: int,
    auc_tolerance: float,
    max_error_rate: float,
    min_requests_for_errors: int = 50,
) -> CanaryVerdict | None:
    """Promote, roll back, or wait (None).

    Rolled back at once when the canary's error rate exceeds `max_error_rate` (after
    enough requests to tell); otherwise judged once both versions have `min_labelled`
    labelled predictions: promoted when its online AUC is at least stable's minus
    `auc_tolerance`, rolled back when lower.
    """
    numbers = {
        "stable_version": stable.version,
        "canary_version": canary.version,
        "stable_auc": stable.auc,
        "canary_auc": canary.auc,
        "stable_labelled": stable.labelled,
        "canary_labelled": canary.labelled,
        "canary_requests": canary.requests,
        "canary_error_rate": canary.error_rate,
        "stable_error_rate": stable.error_rate,
        "auc_tolerance": auc_tolerance,
        "max_error_rate": max_error_rate,
    }
    if canary.requests >= min_requests_for_errors and canary.error_rate > max_error_rate:
        return CanaryVerdict(
            ROLLED_BACK, f"canary error rate {canary.error_rate:.3f} above {max_error_rate:g}", numbers
        )
    if min(stable.labelled, canary.labelled) < min_labelled:
        return None
    if math.isnan(canary.auc) or math.isnan(stable.auc):
        return None  # one class only so far: wait for both
    if canary.auc >= stable.auc - auc_tolerance:
        return CanaryVerdict(
            PROMOTED,
            f"online AUC {canary.auc:.4f} vs stable {stable.auc:.4f} "
            f"(tolerance {auc_tolerance:g}) over {canary.labelled}/{stable.labelled} labels",
            numbers,
        )
    return CanaryVerdict(
        ROLLED_BACK,
        f"online AUC {canary.auc:.4f} below stable {stable.auc:.4f} minus tolerance {auc_tolerance:g}",
        numbers,
    )


def logged_outcomes(requests: pd.DataFrame, feedback: pd.DataFrame, version: int) -> VersionOutcomes:
    """One version's outcomes from the shared logs (serving/request_log.py): its logged
    predictions, and the labels that came back for them (the first one per request: a label
    counts once, however often it is sent)."""
    if requests.empty:
        return VersionOutcomes(version, 0, 0, (), ())
    predictions = requests[requests.model_version == version]
    if feedback.empty:
        return VersionOutcomes(version, len(predictions), 0, (), ())
    labels = feedback.drop_duplicates("request_id", keep="first").set_index("request_id").label
    joined = predictions.join(labels, on="request_id", how="inner")
    return VersionOutcomes(
        version, len(predictions), 0, tuple(joined.prediction.astype(float)), tuple(joined.label.astype(int))
    )


def logged_versions(
    request_log: Path, feedback_log: Path, since: float, stable: int, canary: int
) -> tuple[VersionOutcomes, VersionOutcomes]:
    """Stable's and the canary's outcomes from the shared logs since `since`: every replica's
    (or revision's) logged predictions, and the labels that came back for them to any of them."""
    requests = read_log(request_log, since=since, columns=("model_version", "request_id", "prediction"))
    feedback = read_log(feedback_log, since=since, columns=("request_id", "label"))
    return logged_outcomes(requests, feedback, stable), logged_outcomes(requests, feedback, canary)
