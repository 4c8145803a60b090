"""The canary's judge: one verdict from online outcomes, whoever collected them (the
service's own journal, or the shared request and feedback logs for KServe).

The online metric is the AUC of each version's labelled predictions since the canary
arrived; the two versions answer different requests, so their difference has the sum of
their DeLong variances (components/common/auc_inference.py). On that difference runs
Wald's sequential probability ratio test (A. Wald, "Sequential tests of statistical
hypotheses", Annals of Mathematical Statistics 16(2), 1945), in the normal form used for
sequential trials (J. Whitehead, "The Design and Analysis of Sequential Clinical Trials",
1997): "as good as stable" (difference 0) against "worse by `worse_auc`". With the
estimate D and its information I (one over its variance) the log likelihood ratio is
I * worse_auc * (D + worse_auc / 2). The canary is promoted when it reaches
log((1 - false_rollback) / missed_worse), rolled back when it falls to
log(false_rollback / (1 - missed_worse)), and waits in between: a clearly better or worse
canary is decided early, one within noise of the boundary waits for more labels, up to
`max_labelled` of the canary's; inconclusive then means `when_inconclusive` (keep stable
by default), recorded as such. Checking after every label keeps the error rates, since
the test is built for continuous monitoring; bench/decisions.py measures them on flights.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from components.common.auc_inference import (
    MIN_PER_CLASS,
    STANDARD_NORMAL,
    AucEstimate,
    auc_estimate,
    independent_difference,
)
from components.common.classification_metrics import compute
from components.common.errors import ConfigError
from components.common.metadata import PROMOTED, ROLLED_BACK
from serving.request_log import STAMP, first_written, read_log

if TYPE_CHECKING:  # imported where frames are made, as in components/common/spans.py
    import pandas as pd


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

    def auc_estimate(self) -> AucEstimate:
        """Online AUC with its DeLong standard error (NaN before both classes were labelled)."""
        return auc_estimate(np.array(self.labels, dtype=bool), np.array(self.scores, dtype=np.float64))

    def summary(self) -> dict[str, float]:
        metrics = compute(np.array(self.labels), np.array(self.scores)) if self.labels else None
        estimate = self.auc_estimate() if self.labels else None
        return {
            "version": self.version,
            "requests": self.requests,
            "errors": self.errors,
            "labelled": self.labelled,
            "auc": metrics.auc if metrics else math.nan,
            "auc_standard_error": estimate.standard_error if estimate else math.nan,
            "log_loss": metrics.log_loss if metrics else math.nan,
            "accuracy": metrics.accuracy if metrics else math.nan,
        }


@dataclasses.dataclass(frozen=True)
class SequentialTest:
    """The canary test's settings (see the module's docstring); checked when made.

    Attributes:
        min_labelled: Labelled predictions each version needs before the first look (the
            normal approximation needs a few dozen of each class).
        max_labelled: The canary's labelled predictions after which an undecided test is
            inconclusive.
        worse_auc: How much lower an online AUC must be caught as worse.
        false_rollback: Chance of rolling back a canary as good as stable (before the maximum).
        missed_worse: Chance of promoting a canary worse by `worse_auc`.
        when_inconclusive: The decision at the maximum: rolled back (keep stable) or promoted.
    """

    min_labelled: int = 200
    max_labelled: int = 10_000
    worse_auc: float = 0.05
    false_rollback: float = 0.05
    missed_worse: float = 0.05
    when_inconclusive: str = ROLLED_BACK

    def __post_init__(self):
        if self.min_labelled < 1:
            raise ConfigError(f"min_labelled={self.min_labelled}: must be at least 1")
        if self.max_labelled < self.min_labelled:
            raise ConfigError(f"max_labelled={self.max_labelled}: must be at least min_labelled ({self.min_labelled})")
        if not 0 < self.worse_auc < 1:  # also refuses NaN
            raise ConfigError(f"worse_auc={self.worse_auc}: expected between 0 and 1")
        for name in ("false_rollback", "missed_worse"):
            if not 0 < getattr(self, name) < 0.5:
                raise ConfigError(f"{name}={getattr(self, name)}: expected between 0 and 0.5")
        if self.when_inconclusive not in (PROMOTED, ROLLED_BACK):
            raise ConfigError(f"when_inconclusive={self.when_inconclusive!r}: expected {ROLLED_BACK} or {PROMOTED}")

    def fixed_size_labels(self, variance_per_label: float) -> int:
        """The canary labels a fixed-size test with the same error rates would need (a one-sided
        z-test of the AUC difference between 0 and -worse_auc), when the difference's variance is
        `variance_per_label` over the canary's labels (stable's share of traffic included)."""
        z = STANDARD_NORMAL.inv_cdf(1 - self.false_rollback) + STANDARD_NORMAL.inv_cdf(1 - self.missed_worse)
        return math.ceil(z * z * variance_per_label / self.worse_auc**2)

    @property
    def promote_at(self) -> float:
        return math.log((1 - self.false_rollback) / self.missed_worse)

    @property
    def roll_back_at(self) -> float:
        return math.log(self.false_rollback / (1 - self.missed_worse))


@dataclasses.dataclass(frozen=True)
class CanaryVerdict:
    decision: str
    reason: str
    numbers: dict[str, float]


def judge_canary(
    stable: VersionOutcomes,
    canary: VersionOutcomes,
    test: SequentialTest,
    max_error_rate: float,
    min_requests_for_errors: int = 50,
) -> CanaryVerdict | None:
    """Promote, roll back, or wait (None).

    Rolled back at once when the canary's error rate exceeds `max_error_rate` (after enough
    requests to tell); otherwise by the sequential test on the online AUC difference, once
    both versions have `test.min_labelled` labelled predictions, MIN_PER_CLASS of each class.
    """
    numbers: dict[str, float] = {
        "stable_version": stable.version,
        "canary_version": canary.version,
        "stable_labelled": stable.labelled,
        "canary_labelled": canary.labelled,
        "canary_requests": canary.requests,
        "canary_error_rate": canary.error_rate,
        "stable_error_rate": stable.error_rate,
        "max_error_rate": max_error_rate,
        "worse_auc": test.worse_auc,
        "false_rollback": test.false_rollback,
        "missed_worse": test.missed_worse,
    }
    if canary.requests >= min_requests_for_errors and canary.error_rate > max_error_rate:
        return CanaryVerdict(
            ROLLED_BACK, f"canary error rate {canary.error_rate:.3f} above {max_error_rate:g}", numbers
        )
    if min(stable.labelled, canary.labelled) < test.min_labelled:
        return None
    stable_auc, canary_auc = stable.auc_estimate(), canary.auc_estimate()
    if min(stable_auc.positives, stable_auc.negatives, canary_auc.positives, canary_auc.negatives) < MIN_PER_CLASS:
        return None  # DeLong's variance needs some of each class: one positive ranked first would look certain
    difference = independent_difference(canary_auc, stable_auc)
    information = math.inf if difference.standard_error == 0 else difference.standard_error**-2
    # 0 * inf is NaN: with no noise and a difference exactly at the midpoint, neither hypothesis is favoured.
    ratio = np.nan_to_num(information * test.worse_auc * (difference.difference + test.worse_auc / 2))
    numbers.update(
        stable_auc=stable_auc.auc,
        canary_auc=canary_auc.auc,
        stable_auc_standard_error=stable_auc.standard_error,
        canary_auc_standard_error=canary_auc.standard_error,
        auc_difference=difference.difference,
        auc_difference_standard_error=difference.standard_error,
        log_likelihood_ratio=float(ratio),
        promote_at=test.promote_at,
        roll_back_at=test.roll_back_at,
    )
    evidence = (
        f"online AUC {canary_auc.auc:.4f} vs stable {stable_auc.auc:.4f} "
        f"(difference {difference.difference:+.4f} ± {difference.standard_error:.4f}) "
        f"over {canary.labelled}/{stable.labelled} labels"
    )
    if ratio >= test.promote_at:
        return CanaryVerdict(
            PROMOTED, f"{evidence}: as good as stable (not worse by {test.worse_auc:g}), sequential test", numbers
        )
    if ratio <= test.roll_back_at:
        return CanaryVerdict(ROLLED_BACK, f"{evidence}: worse than stable, sequential test", numbers)
    if canary.labelled >= test.max_labelled:
        numbers["inconclusive"] = 1.0
        return CanaryVerdict(
            test.when_inconclusive,
            f"{evidence}: inconclusive at the maximum of {test.max_labelled} labels; {test.when_inconclusive} "
            "as configured",
            numbers,
        )
    return None


def logged_outcomes(
    requests: pd.DataFrame, feedback: pd.DataFrame, versions: Iterable[int]
) -> dict[int, VersionOutcomes]:
    """Each version's outcomes from the shared logs (serving/request_log.py): its logged
    predictions in the order they were logged, and the labels that came back for them (the
    first one per request: a label counts once, however often it is sent)."""
    import pandas as pd

    if requests.empty:
        return {version: VersionOutcomes(version, 0, 0, (), ()) for version in versions}
    labels = (
        feedback.drop_duplicates("request_id", keep="first").set_index("request_id").label
        if not feedback.empty
        else pd.Series(name="label", dtype="int64", index=pd.Index([], dtype=object, name="request_id"))
    )

    def outcomes(version: int) -> VersionOutcomes:
        predictions = requests[requests.model_version == version].sort_values(STAMP, kind="stable")  # files interleave
        joined = predictions.join(labels, on="request_id", how="inner")
        return VersionOutcomes(
            version, len(predictions), 0, tuple(joined.prediction.astype(float)), tuple(joined.label.astype(int))
        )

    return {version: outcomes(version) for version in versions}


def read_logs(request_log: Path, feedback_log: Path, since: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shared logs' rows since `since`: every replica's (or revision's) logged predictions,
    and the labels that came back to any of them."""
    requests = read_log(request_log, since=since, columns=("model_version", "request_id", "prediction"))
    return requests, read_log(feedback_log, since=since, columns=("request_id", "label"))


def logged_versions(
    request_log: Path, feedback_log: Path, since: float, stable: int, canary: int
) -> tuple[VersionOutcomes, VersionOutcomes]:
    """Stable's and the canary's outcomes from the shared logs since `since`."""
    found = logged_outcomes(*read_logs(request_log, feedback_log, since), (stable, canary))
    return found[stable], found[canary]


# The first span of time `recent_logged_outcomes` reads back, multiplied by SPAN_GROWTH until it
# holds enough labels: a busy version costs the newest files, not its history.
FIRST_SPAN_SECONDS = 600.0
SPAN_GROWTH = 4


def recent_logged_outcomes(
    request_log: Path, feedback_log: Path, pushed: Mapping[int, float], last: int, now: float
) -> dict[int, VersionOutcomes]:
    """Each version's most recent `last` labelled predictions in the shared logs (`pushed`:
    each version and when it was pushed, before which it logged nothing). Read back from
    `now` over a span of time that grows until each version has `last` of them or the span
    reaches its push; a span that would pass the log's oldest file reads everything since the
    earliest push instead, once (the file's rows may have been logged before it was written)."""
    since = min(pushed.values())
    oldest = first_written(request_log)
    span = FIRST_SPAN_SECONDS
    while True:
        start = max(since, now - span)
        if oldest is None or start <= oldest:  # every file would be read: all of them, once
            start = since
        requests, feedback = read_logs(request_log, feedback_log, start)
        found = logged_outcomes(requests, feedback, pushed)
        if all(outcomes.labelled >= last or start <= pushed[version] for version, outcomes in found.items()):
            return {
                version: dataclasses.replace(outcomes, scores=outcomes.scores[-last:], labels=outcomes.labels[-last:])
                for version, outcomes in found.items()
            }
        span *= SPAN_GROWTH
