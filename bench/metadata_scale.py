"""What ML Metadata's queries cost once a home holds a long history.

Fills a SQLite store with `--runs` runs (10,000 by default) recorded through
components.common.metadata exactly as the pipeline's steps record themselves: ingest reads
three daily spans (shared with the neighbouring runs) and writes train and eval examples,
statistics, data validation with the previous run's statistics as its baseline, features,
training, evaluation against the production model, infra validation and, for three runs in
four, a push; one push in ten is then rolled back by its canary. Then times, `--repeat`
times each:

- `runs`: what `ct runs` shows (pipelines.history.runs_table: the newest runs).
- `lineage`: `ct lineage` of the production model (pipelines.history.lineage_table).
- `poll`: what the trigger controller asks ML Metadata on each poll and before a start:
  the new-data trigger's unread spans, the drift trigger's production model and its
  training statistics, the window's fingerprint already trained on, the running run's
  decision.
- `step`: what the pipeline's steps ask before they record (the production model,
  the previous statistics).

The store is written on a RAM-backed folder when there is one (/dev/shm), so filling it
costs the recording's own work and not the disk's flushes; the queries read it the same
way either way.

    .venv/bin/python bench/metadata_scale.py [--runs 10000] [--repeat 50]

Last line: `p95 runs X ms, lineage Y ms, poll Z ms`.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.common import metadata  # noqa: E402
from components.common.metadata import MetadataStore  # noqa: E402

DATASET = "flights"
MODEL = "flights"
WINDOW = 3


def span_id(day: int) -> str:
    return (datetime.date(2000, 1, 1) + datetime.timedelta(days=day)).isoformat()


def record_run(store: MetadataStore, index: int, version: int) -> int:
    """One run as the pipeline records it; returns the next model version."""
    run_id = f"run-{index:06d}"
    spans = [span_id(index + day) for day in range(WINDOW)]
    root = f"/home/pipeline_root/{run_id}"
    store.update_run(run_id, trigger="new data", reason=f"new complete span {spans[-1]}", launcher="bench:1")
    with store.step(run_id, "ingest", {"window_spans": WINDOW}) as step:
        for span in spans:
            step.input(metadata.SPAN, f"/home/data/flights/span={span}", dataset=DATASET, span=span)
        step.update_run(split_rule="newest 20% by sched_dep", eval_cut=spans[-1])
        for split in ("train", "eval"):
            step.output(
                metadata.EXAMPLES,
                f"{root}/ingest/{split}",
                split=split,
                dataset=DATASET,
                rows=25_000,
                spans=",".join(spans),
                last_span=spans[-1],
                fingerprint=f"{index:064x}",
            )
    with store.step(run_id, "statistics", {"engine": "tfdv"}) as step:
        for split in ("train", "eval"):
            step.input(metadata.EXAMPLES, f"{root}/ingest/{split}")
            step.output(
                metadata.STATISTICS,
                f"/home/statistics/{run_id}/{split}",
                dataset=DATASET,
                split=split,
                rows=25_000,
                spans=",".join(spans),
                last_span=spans[-1],
            )
    with store.step(run_id, "validate_data", {}) as step:
        step.input(metadata.SCHEMA, f"{root}/schema", dataset=DATASET, source="schemas/flights.pbtxt")
        step.inputs(metadata.STATISTICS, [f"/home/statistics/{run_id}/{s}" for s in ("train", "eval")])
        baseline = step.store.previous_statistics(DATASET, before_span=spans[-1])
        if baseline is not None:
            step.input(metadata.STATISTICS, baseline.uri)
        step.output(metadata.ANOMALIES, f"{root}/anomalies", count=0, spans=",".join(spans), drifted="")
        step.output(metadata.DRIFT, f"{root}/drift", drifted="", baseline="", spans=",".join(spans), measures="{}")
    with store.step(run_id, "materialize", {}) as step:
        step.input(metadata.EXAMPLES, f"{root}/ingest/train")
        step.output(metadata.FEATURES, "/home/features#weather", view="weather", start=spans[0], end=spans[-1], rows=9)
    with store.step(run_id, "train", {"epochs": 3}) as step:
        step.input(metadata.EXAMPLES, f"{root}/ingest/train")
        step.input(metadata.SCHEMA, f"{root}/schema")
        step.input(metadata.ANOMALIES, f"{root}/anomalies")
        step.output(metadata.MODEL, f"{root}/model", model_name=MODEL, final_loss=0.5, rows=25_000)
        step.output(metadata.VOCABULARIES, f"{root}/vocabularies", sizes="{}")
    with store.step(run_id, "evaluate", {}) as step:
        step.input(metadata.MODEL, f"{root}/model")
        step.input(metadata.EXAMPLES, f"{root}/ingest/eval")
        production = step.store.production_model(MODEL)
        if production is not None:
            step.input(metadata.PUSHED_MODEL, production.uri)
        step.output(metadata.EVALUATION, f"{root}/evaluation", production_version=version - 1, auc=0.7)
        step.output(metadata.BLESSING, f"{root}/blessing", blessed=1)
    with store.step(run_id, "infra_validate", {}) as step:
        step.input(metadata.MODEL, f"{root}/model")
        step.store.production_model(MODEL)
        step.output(metadata.INFRA_BLESSING, f"{root}/infra_blessing", blessed=1)
    with store.step(run_id, "push", {}) as step:
        step.input(metadata.MODEL, f"{root}/model")
        step.input(metadata.BLESSING, f"{root}/blessing")
        step.input(metadata.INFRA_BLESSING, f"{root}/infra_blessing")
        if index % 4:
            step.pushed_model(MODEL, version, f"/home/models/{MODEL}/{version}", f"{version:064x}")
            step.update_run(decision=metadata.PUSHED, version=version, reasons="")
        else:
            step.update_run(decision=metadata.NOT_BLESSED, reasons="auc below production's")
    if index % 4 and index % 10 == 3:
        store.record_canary_decision(MODEL, version, metadata.ROLLED_BACK, "worse online", {"labels": 400})
    return version + 1 if index % 4 else version


def fill(store: MetadataStore, runs: int) -> None:
    version, started = 1, time.monotonic()
    for index in range(runs):
        version = record_run(store, index, version)
        if (index + 1) % 1000 == 0:
            print(f"  {index + 1} runs recorded, {time.monotonic() - started:.0f} s", flush=True)


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(what: Callable[[], object], repeat: int) -> list[float]:
    """Milliseconds of each of `repeat` calls, after one call not counted (a new process's first
    query pays for opening the file and for the compiled spec `ct runs` reads)."""
    what()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        what()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def poll(store: MetadataStore, runs: int) -> None:
    """One poll's ML Metadata queries, with a run going and a new span arrived: the new-data
    trigger's spans not known to be read (the last run's, as if still going, and a new one), the drift trigger's
    production model and its training statistics, the running run's decision, and before a
    start whether the window was trained on already."""
    store.span_readers(DATASET, [span_id(runs - 1 + day) for day in range(WINDOW + 1)])
    production = store.production_model(MODEL)
    store.training_statistics(production)
    store.run(f"run-{runs - 1:06d}")
    store.trained_on(DATASET, f"{runs:064x}")


def step_queries(store: MetadataStore, runs: int) -> None:
    """What a run's steps ask: evaluate's and infra validation's production model, data
    validation's baseline statistics."""
    store.production_model(MODEL)
    store.previous_statistics(DATASET, before_span=span_id(runs + WINDOW))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    from components.common.home import Home
    from pipelines.history import lineage_table, runs_table

    ram = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=ram if ram.is_dir() else None) as folder:
        connection = f"sqlite://{Path(folder) / 'metadata.sqlite'}"
        store = MetadataStore(connection)
        started = time.monotonic()
        fill(store, args.runs)
        print(f"{args.runs} runs recorded in {time.monotonic() - started:.0f} s")
        home = Home(Path(folder), connection)
        assert str(args.runs - 1) in runs_table(home, 20).splitlines()[-1]  # the newest run is shown
        assert "span=" in lineage_table(home, MODEL, None)  # back to the spans
        measured = {
            "runs": timed(lambda: runs_table(home, 20), args.repeat),
            "lineage": timed(lambda: lineage_table(home, MODEL, None), args.repeat),
            "poll": timed(lambda: poll(store, args.runs), args.repeat),
            "step": timed(lambda: step_queries(store, args.runs), args.repeat),
        }
    print(f"{'query':<10}{'p50 ms':>10}{'p95 ms':>10}{'max ms':>10}")
    for name, samples in measured.items():
        print(f"{name:<10}{percentile(samples, 0.5):>10.1f}{percentile(samples, 0.95):>10.1f}{max(samples):>10.1f}")
    p95 = {name: percentile(samples, 0.95) for name, samples in measured.items()}
    print(f"p95 runs {p95['runs']:.1f} ms, lineage {p95['lineage']:.1f} ms, poll {p95['poll']:.1f} ms")


if __name__ == "__main__":
    main()
