"""How often the automatic decisions are right, old rules against new, on real flights.

Two models are trained on January 2013 (the pipeline's own train code, seeds 1 and 2) and
score every flight of February: those rows, their labels and scores are the population
every simulated request or eval set is drawn from (with replacement), so the data has the
real class balance, score distribution and slices. A model made worse by a known amount
is the first model's scores plus Gaussian noise, its spread found by bisection so that its
AUC on the whole population is exactly 0.05 lower.

Canaries (serving/canary/judge.py): the canary takes 20% of the requests, every answer is
labelled, and the judge looks after every 100 canary labels. Three cases: the same model
as its own canary (as good: rolling it back is a false rollback), a canary worse by 0.05
(it must be caught), and a canary better by 0.05 (stable is the worse model). The old rule
judged once both versions had 200 labels: promoted when the canary's AUC was at least
stable's minus 0.02. The fixed-size line is the labels a one-sided test with the new rule's
error rates needs (SequentialTest.fixed_size_labels, with the variance seen here).

Blessings (components/validate_model/logic.py): eval sets of a month's out-of-time split
(5,000 rows) scored by candidate and production. Cases: an equally good candidate (the
second seed against the first; its true difference on the population is printed), one worse
by 0.05 and one better by 0.05. The old rule compared point estimates: overall change at
least -0.01 and each slice with 200 rows at least -0.05. The floor (min_auc) is left out of
both, to compare the comparisons.

    .venv/bin/python bench/decisions.py [--canaries 200] [--blessings 200] [--seed 0]

The last line reads `false rollback X%, worse caught Y%, mean labels N` for the new canary
rule (mean labels over every canary simulated).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from components.common import model_io
from components.common.classification_metrics import auc
from components.common.datasets import load_dataset
from components.common.metadata import PROMOTED, ROLLED_BACK
from components.common.spans import complete_spans, read_spans
from components.evaluate.logic import OVERALL, Evaluation, evaluation_of_scores
from components.ingest.logic import examples_with_features
from components.train.logic import Hyperparameters, binary_labels, train
from components.validate_model.logic import Thresholds, validate_model
from features.sources import tables_root
from pipelines.demo.sample_data import write_dataset
from serving.canary.judge import SequentialTest, VersionOutcomes, judge_canary

WORSE_BY = 0.05
CANARY_SHARE = 0.2
LOOK_EVERY = 100
EVAL_ROWS = 5000
OLD_CANARY_LABELS, OLD_CANARY_TOLERANCE = 200, 0.02
OLD_AUC_DROP, OLD_SLICE_DROP, MIN_SLICE_EXAMPLES = 0.01, 0.05, 200


@dataclasses.dataclass(frozen=True)
class Population:
    """February's flights scored by the models trained on January."""

    frame: pd.DataFrame
    labels: np.ndarray
    first: np.ndarray
    second: np.ndarray
    worse: np.ndarray


def scored_population(work: Path) -> Population:
    dataset = load_dataset("flights")
    write_dataset("flights", work / "data", months="2013-01..2013-02")
    january, february = complete_spans(work / "data")
    tables = tables_root(work / "data", "")
    months = {}
    for span in (january, february):
        frame = read_spans([span])
        months[span.span_id] = examples_with_features(frame, dataset, tables, str(span.path))[0]
    train_path = work / "january.parquet"
    months[january.span_id].to_parquet(train_path, index=False)
    frame = months[february.span_id]
    scores = []
    for seed in (1, 2):
        model_dir = work / f"model-{seed}"
        train(train_path, dataset, Hyperparameters(seed=seed), model_dir, work / f"vocabularies-{seed}.json")
        model = model_io.SavedModel(model_dir)
        scores.append(model.predict(model_io.frame_to_columns(model.signature, frame)))
    labels = binary_labels(frame, dataset, work / "february")
    return Population(frame, labels, scores[0], scores[1], made_worse(labels, scores[0], WORSE_BY))


def made_worse(labels: np.ndarray, scores: np.ndarray, by: float) -> np.ndarray:
    """`scores` plus fixed Gaussian noise whose spread (found by bisection) lowers their AUC by `by`."""
    noise = np.random.default_rng(99).normal(0, 1, len(scores))
    target = auc(labels, scores) - by
    low, high = 0.0, 10.0
    for _ in range(50):
        spread = (low + high) / 2
        low, high = (spread, high) if auc(labels, scores + spread * noise) > target else (low, spread)
    return scores + (low + high) / 2 * noise


@dataclasses.dataclass(frozen=True)
class CanaryOutcome:
    decision: str
    labels: int
    old_decision: str
    variance_per_label: float


def canary(rng, population: Population, stable: np.ndarray, canary_scores: np.ndarray, test) -> CanaryOutcome:
    """One canary: requests drawn from the population, labels for every answer; the new judge
    looks every LOOK_EVERY canary labels, the old rule once at OLD_CANARY_LABELS."""
    most = test.max_labelled
    canary_rows = rng.integers(0, len(population.labels), most)
    stable_rows = rng.integers(0, len(population.labels), int(most * (1 - CANARY_SHARE) / CANARY_SHARE))

    def outcomes(version: int, scores: np.ndarray, rows: np.ndarray, count: int) -> VersionOutcomes:
        chosen = rows[:count]
        return VersionOutcomes(version, count, 0, tuple(scores[chosen]), tuple(population.labels[chosen].astype(int)))

    def stable_count(canary_count: int) -> int:
        return int(canary_count * (1 - CANARY_SHARE) / CANARY_SHARE)

    old_stable = outcomes(1, stable, stable_rows, stable_count(OLD_CANARY_LABELS))
    old_canary = outcomes(2, canary_scores, canary_rows, OLD_CANARY_LABELS)
    old_promoted = (
        auc(np.array(old_canary.labels), np.array(old_canary.scores))
        >= auc(np.array(old_stable.labels), np.array(old_stable.scores)) - OLD_CANARY_TOLERANCE
    )
    labelled = LOOK_EVERY
    while True:
        labelled = min(labelled, most)
        verdict = judge_canary(
            outcomes(1, stable, stable_rows, stable_count(labelled)),
            outcomes(2, canary_scores, canary_rows, labelled),
            test,
            max_error_rate=1.0,
        )
        if verdict is not None:
            numbers = verdict.numbers
            return CanaryOutcome(
                verdict.decision,
                labelled,
                PROMOTED if old_promoted else ROLLED_BACK,
                numbers["auc_difference_standard_error"] ** 2 * labelled,
            )
        labelled += LOOK_EVERY


def old_blessing(evaluation: Evaluation) -> bool:
    """The rule before: point estimates only, overall and per slice."""
    overall, *slices = evaluation.comparisons
    return overall.difference >= -OLD_AUC_DROP and all(
        c.difference >= -OLD_SLICE_DROP for c in slices if c.examples >= MIN_SLICE_EXAMPLES
    )


def blessing(rng, population: Population, candidate: np.ndarray, production: np.ndarray) -> tuple[bool, bool, float]:
    """(new rule blessed, old rule blessed, standard error of the overall change) on one eval set
    drawn from the population."""
    rows = rng.integers(0, len(population.labels), EVAL_ROWS)
    evaluation = evaluation_of_scores(
        population.labels[rows],
        population.frame.iloc[rows].reset_index(drop=True),
        load_dataset("flights"),
        candidate[rows],
        production[rows],
        production_version=1,
        min_slice_examples=MIN_SLICE_EXAMPLES,
    )
    return (
        validate_model(evaluation, Thresholds(min_auc=0.0)).blessed,
        old_blessing(evaluation),
        evaluation.comparisons[0].standard_error,
    )


def percent(values) -> str:
    return f"{100 * np.mean(values):.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=200, help="simulated canaries per case")
    parser.add_argument("--blessings", type=int, default=200, help="simulated blessings per case")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ct-decisions-") as work:
        population = scored_population(Path(work))
    rng = np.random.default_rng(args.seed)
    labels, first, worse = population.labels, population.first, population.worse
    print(
        f"population: {len(labels):,} February flights, {labels.mean():.1%} late; AUC of the January models "
        f"{auc(labels, first):.4f} (seed 1), {auc(labels, population.second):.4f} (seed 2), "
        f"made worse {auc(labels, worse):.4f}"
    )

    test = SequentialTest()
    cases = {
        "as good": (first, first),
        f"worse by {WORSE_BY:g}": (first, worse),
        f"better by {WORSE_BY:g}": (worse, first),
    }
    results = {
        name: [canary(rng, population, stable, scores, test) for _ in range(args.canaries)]
        for name, (stable, scores) in cases.items()
    }
    equal, bad, good = results.values()
    everything = [outcome for outcomes in results.values() for outcome in outcomes]
    fixed = test.fixed_size_labels(float(np.mean([o.variance_per_label for o in everything])))
    print(
        f"\ncanaries: {args.canaries} per case, canary {CANARY_SHARE:.0%} of traffic, judged every {LOOK_EVERY} "
        f"canary labels (new) or once at {OLD_CANARY_LABELS} (old)"
    )
    print(f"{'rule':<44}{'false rollback':>15}{'worse caught':>14}{'better rolled back':>20}{'mean labels':>13}")
    for name, decision_of, mean_labels in (
        (
            f"old: AUC >= stable - {OLD_CANARY_TOLERANCE:g} at {OLD_CANARY_LABELS} labels",
            lambda o: o.old_decision,
            OLD_CANARY_LABELS,
        ),
        (
            f"new: sequential test (worse_auc {test.worse_auc:g}, errors {test.false_rollback:g}/"
            f"{test.missed_worse:g})",
            lambda o: o.decision,
            np.mean([o.labels for o in everything]),
        ),
    ):
        print(
            f"{name:<44}{percent([decision_of(o) == ROLLED_BACK for o in equal]):>15}"
            f"{percent([decision_of(o) == ROLLED_BACK for o in bad]):>14}"
            f"{percent([decision_of(o) == ROLLED_BACK for o in good]):>20}{mean_labels:>13,.0f}"
        )
    print(f"{'fixed-size test with the new error rates':<44}{'':>15}{'':>14}{'':>20}{fixed:>13,}")
    for name, outcomes in results.items():
        print(
            f"  new rule, {name}: mean labels {np.mean([o.labels for o in outcomes]):,.0f}, "
            f"90th percentile {np.percentile([o.labels for o in outcomes], 90):,.0f}"
        )

    blessing_cases = {
        f"equally good (true change {auc(labels, population.second) - auc(labels, first):+.4f})": (
            population.second,
            first,
        ),
        f"worse by {WORSE_BY:g}": (worse, first),
        f"better by {WORSE_BY:g}": (first, worse),
    }
    print(f"\nblessings: {args.blessings} eval sets of {EVAL_ROWS:,} rows per case (share blessed)")
    print(f"{'candidate':<40}{'old: point estimates':>22}{'new: DeLong, Holm':>20}{'standard error':>16}")
    for name, (candidate, production) in blessing_cases.items():
        verdicts = [blessing(rng, population, candidate, production) for _ in range(args.blessings)]
        print(
            f"{name:<40}{percent([old for _, old, _ in verdicts]):>22}{percent([new for new, _, _ in verdicts]):>20}"
            f"{np.mean([error for _, _, error in verdicts]):>16.4f}"
        )
    print(f"  ({OVERALL} margin {OLD_AUC_DROP:g}, slice margin {OLD_SLICE_DROP:g}, confidence 95%)")

    print(
        f"\nfalse rollback {percent([o.decision == ROLLED_BACK for o in equal])}, "
        f"worse caught {percent([o.decision == ROLLED_BACK for o in bad])}, "
        f"mean labels {np.mean([o.labels for o in everything]):.0f}"
    )


if __name__ == "__main__":
    main()
