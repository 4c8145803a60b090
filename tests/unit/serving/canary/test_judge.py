"""The canary's sequential test: its error rates and labels by simulation (fixed seeds), its
decisions and its settings."""

from __future__ import annotations

import math
import os
import time
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from components.common.errors import ConfigError
from components.common.metadata import PROMOTED, ROLLED_BACK
from serving.canary import judge
from serving.canary.judge import (
    FIRST_SPAN_SECONDS,
    SPAN_GROWTH,
    SequentialTest,
    VersionOutcomes,
    judge_canary,
    recent_logged_outcomes,
)

CANARY_SHARE = 0.2  # the canary answers 20% of requests; both versions' answers are labelled
POSITIVES = 0.2


def binormal(rng: np.random.Generator, rows: int, auc: float) -> VersionOutcomes:
    """Labelled predictions of a model whose AUC is `auc` (binormal scores, 20% positives)."""
    labels = rng.random(rows) < POSITIVES
    scores = labels * math.sqrt(2) * NormalDist().inv_cdf(auc) + rng.normal(0, 1, rows)
    return VersionOutcomes(0, rows, 0, tuple(scores), tuple(labels.astype(int)))


def first(outcomes: VersionOutcomes, rows: int, version: int) -> VersionOutcomes:
    return VersionOutcomes(version, rows, 0, outcomes.scores[:rows], outcomes.labels[:rows])


def canary_run(rng, test: SequentialTest, canary_auc: float, stable_auc: float = 0.70, look_every: int = 100):
    """Labels arrive; the judge looks after every `look_every` canary labels. Returns the verdict."""
    canary = binormal(rng, test.max_labelled, canary_auc)
    stable = binormal(rng, int(test.max_labelled * (1 - CANARY_SHARE) / CANARY_SHARE), stable_auc)
    labelled = look_every
    while True:
        labelled = min(labelled, test.max_labelled)
        both = int(labelled * (1 - CANARY_SHARE) / CANARY_SHARE)
        verdict = judge_canary(first(stable, both, 1), first(canary, labelled, 2), test, max_error_rate=1.0)
        if verdict is not None:
            return verdict
        labelled += look_every


def test_error_rates_and_labels_by_simulation():
    """200 canaries as good as stable, 200 worse by 0.05 AUC (AUC 0.70, 20% positives, 20% of
    traffic): rolled back at most about 5% and caught at least 90% of the time, with fewer
    canary labels on average than the fixed-size test of the same error rates."""
    rng = np.random.default_rng(12)
    test = SequentialTest()
    equal = [canary_run(rng, test, 0.70) for _ in range(200)]
    worse = [canary_run(rng, test, 0.65) for _ in range(200)]
    false_rollbacks = sum(v.decision == ROLLED_BACK for v in equal) / 200
    caught = sum(v.decision == ROLLED_BACK for v in worse) / 200
    assert false_rollbacks <= 0.06
    assert caught >= 0.92
    verdicts = equal + worse
    mean_labels = np.mean([v.numbers["canary_labelled"] for v in verdicts])
    variance_per_label = np.mean(
        [v.numbers["auc_difference_standard_error"] ** 2 * v.numbers["canary_labelled"] for v in verdicts]
    )
    fixed = test.fixed_size_labels(variance_per_label)
    assert 2000 < fixed < 3500  # about (1.645 + 1.645)^2 * 0.6 / 0.05^2
    assert mean_labels < 0.7 * fixed
    assert not any("inconclusive" in v.numbers for v in verdicts)


def test_a_clearly_better_canary_is_promoted_early():
    rng = np.random.default_rng(13)
    verdicts = [canary_run(rng, SequentialTest(), 0.78) for _ in range(20)]
    assert all(v.decision == PROMOTED for v in verdicts)
    assert np.mean([v.numbers["canary_labelled"] for v in verdicts]) < 600


def test_within_noise_it_waits_then_applies_the_configured_default_and_says_so():
    """Halfway between as good and worse by 0.05: the test waits, and at a low maximum it is inconclusive."""
    rng = np.random.default_rng(14)
    canary, stable = binormal(rng, 300, 0.675), binormal(rng, 1200, 0.70)
    assert judge_canary(first(stable, 800, 1), first(canary, 200, 2), SequentialTest(), 1.0) is None  # waits
    for default in (ROLLED_BACK, PROMOTED):
        test = SequentialTest(min_labelled=200, max_labelled=300, when_inconclusive=default)
        verdict = judge_canary(first(stable, 1200, 1), first(canary, 300, 2), test, 1.0)
        assert verdict.decision == default and verdict.numbers["inconclusive"] == 1.0
        assert f"inconclusive at the maximum of 300 labels; {default} as configured" in verdict.reason
        numbers = verdict.numbers
        assert numbers["roll_back_at"] < numbers["log_likelihood_ratio"] < numbers["promote_at"]


def test_the_verdict_carries_the_evidence():
    rng = np.random.default_rng(15)
    verdict = judge_canary(
        first(binormal(rng, 4000, 0.70), 4000, 1), first(binormal(rng, 1000, 0.50), 1000, 2), SequentialTest(), 1.0
    )
    assert verdict.decision == ROLLED_BACK
    assert verdict.reason.startswith("online AUC 0.")
    assert "worse than stable, sequential test" in verdict.reason
    numbers = verdict.numbers
    assert numbers["auc_difference"] == pytest.approx(numbers["canary_auc"] - numbers["stable_auc"])
    assert numbers["auc_difference_standard_error"] == pytest.approx(
        math.hypot(numbers["canary_auc_standard_error"], numbers["stable_auc_standard_error"])
    )
    assert numbers["promote_at"] == pytest.approx(math.log(0.95 / 0.05))
    assert numbers["roll_back_at"] == pytest.approx(math.log(0.05 / 0.95))


def test_it_waits_for_both_classes_and_the_minimum():
    few = VersionOutcomes(2, 300, 0, (0.5,) * 300, (0,) * 300)  # one class only
    many = VersionOutcomes(1, 1000, 0, tuple(np.linspace(0, 1, 1000)), (0, 1) * 500)
    assert judge_canary(many, few, SequentialTest(), 1.0) is None
    # One positive, ranked first: its AUC of 1.0 has a DeLong standard error of 0, which would
    # decide at once; with fewer than 20 of a class the test waits.
    single = VersionOutcomes(2, 300, 0, (1.0,) + (0.0,) * 299, (1,) + (0,) * 299)
    assert judge_canary(many, single, SequentialTest(), 1.0) is None
    assert judge_canary(many, first(many, 100, 2), SequentialTest(min_labelled=200), 1.0) is None


def test_a_failing_canary_is_rolled_back_on_errors_before_any_label():
    stable = VersionOutcomes(1, 100, 0, (), ())
    verdict = judge_canary(stable, VersionOutcomes(2, 100, 5, (), ()), SequentialTest(), max_error_rate=0.01)
    assert verdict.decision == ROLLED_BACK and verdict.reason == "canary error rate 0.050 above 0.01"


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"min_labelled": 0}, "^min_labelled=0: must be at least 1"),
        ({"max_labelled": 100}, r"^max_labelled=100: must be at least min_labelled \(200\)"),
        ({"worse_auc": 0.0}, "^worse_auc=0.0: expected between 0 and 1"),
        ({"false_rollback": 0.5}, "^false_rollback=0.5: expected between 0 and 0.5"),
        ({"missed_worse": float("nan")}, "^missed_worse=nan"),
        ({"when_inconclusive": "keep"}, "^when_inconclusive='keep': expected rolled back or promoted"),
    ],
)
def test_settings_out_of_range_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        SequentialTest(**settings)


def _log_file(folder, name: str, written: float, rows: list[dict]) -> None:
    """A log file as replicas write them (serving/request_log.py): its rows logged before it
    was `written`, up to the flush interval."""
    folder.mkdir(exist_ok=True)
    path = folder / f"part-{name}.parquet"
    pd.DataFrame([{**row, "logged_at": written - 5} for row in rows]).to_parquet(path)
    os.utime(path, (written, written))


def _reads(monkeypatch) -> list[float]:
    """Where each read of the logs began, as `recent_logged_outcomes` reads them."""
    starts = []
    read_logs = judge.read_logs

    def reading(request_log, feedback_log, since):
        starts.append(since)
        return read_logs(request_log, feedback_log, since)

    monkeypatch.setattr(judge, "read_logs", reading)
    return starts


def test_recent_logged_outcomes_read_back_until_they_have_enough_or_reach_the_push(tmp_path, monkeypatch):
    now = time.time()
    for name, written, ids in (("old", now - 3 * 3600, range(0, 10)), ("new", now - 60, range(10, 20))):
        _log_file(
            tmp_path / "requests",
            name,
            written,
            [dict(model_version=1, request_id=f"r{i}", prediction=i / 20) for i in ids],
        )
        _log_file(
            tmp_path / "feedback", name, written + 1, [dict(request_id=f"r{i}", label=int(i % 10 >= 5)) for i in ids]
        )
    starts = _reads(monkeypatch)

    def recent(last: int, pushed: float = 0.0) -> VersionOutcomes:
        starts.clear()
        return recent_logged_outcomes(tmp_path / "requests", tmp_path / "feedback", {1: pushed}, last, now)[1]

    newest = recent(4)
    assert newest.scores == (0.8, 0.85, 0.9, 0.95) and newest.labels == (1, 1, 1, 1)
    assert starts == [now - FIRST_SPAN_SECONDS]  # the newest files held them: nothing older was read
    assert recent(15).labelled == 15 and recent(15).scores[0] == 0.25  # the old file's newest five too
    # Read back over growing spans; the one that would pass the oldest file reads all since the push.
    spans = [FIRST_SPAN_SECONDS * SPAN_GROWTH**n for n in range(3)]
    assert spans[-1] < 3 * 3600 < spans[-1] * SPAN_GROWTH and starts == [now - span for span in spans] + [0.0]
    assert recent(100).labelled == 20
    assert recent(100, pushed=now - 600).labelled == 10  # pushed after the old ones: never read back past it


def test_a_young_canary_short_of_labels_does_not_make_stable_read_back(tmp_path, monkeypatch):
    now = time.time()
    old = [dict(model_version=1, request_id=f"o{i}", prediction=0.5) for i in range(5)]
    stable = [dict(model_version=1, request_id=f"s{i}", prediction=i / 10) for i in range(10)]
    canary = [dict(model_version=2, request_id=f"c{i}", prediction=i / 2) for i in range(2)]
    _log_file(tmp_path / "requests", "old", now - 3 * 3600, old)
    _log_file(tmp_path / "requests", "new", now - 60, stable + canary)
    labels = [dict(request_id=row["request_id"], label=int(row["prediction"] >= 0.5)) for row in old + stable + canary]
    _log_file(tmp_path / "feedback", "all", now - 30, labels)
    starts = _reads(monkeypatch)
    found = recent_logged_outcomes(tmp_path / "requests", tmp_path / "feedback", {1: 0.0, 2: now - 300}, 4, now)
    assert (found[1].labelled, found[2].labelled) == (4, 2) and found[1].scores == (0.6, 0.7, 0.8, 0.9)
    assert starts == [now - FIRST_SPAN_SECONDS]  # the canary's push is in the first span: read no further
