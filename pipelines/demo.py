"""The main job on bundled data: monthly spans arrive one by one; the last one arrives corrupted.

The first span trains and pushes the first model; each later good span trains a
candidate that is compared with the model in production; the corrupted span is stopped
by data validation and production is left as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from components.common.metadata import MetadataStore
from pipelines.config import Home, load_dataset
from pipelines.local_run import EXIT_COMPLETED, EXIT_STOPPED_BY_DATA, describe, exit_code, run_locally
from pipelines.sample_data import Span, flight_spans, parse_months, write_span

UNSEEN_CARRIER = "ZZ"


def corrupt(span: Span) -> Span:
    """What an upstream change could do: distances arrive as text, and a third of the rows
    carry a carrier code the schema has never seen."""
    frame = span.frame.copy()
    frame["distance"] = frame["distance"].map(lambda miles: f"{miles:.0f} mi")
    frame.loc[frame.index % 3 == 0, "carrier"] = UNSEEN_CARRIER
    return Span(span.span_id, frame, span.dropped, span.dropped_reason)


def run_demo(home_path: Path, months_text: str) -> int:
    """Runs the demo in a fresh home folder; returns 0 when every run ended as expected."""
    months = parse_months(months_text)
    if len(months) < 2:
        raise ValueError(f"--months {months_text!r}: the demo needs at least two months (the last one is corrupted)")
    shutil.rmtree(home_path, ignore_errors=True)
    home = Home(home_path).create()
    data_root = home.root / "data"
    model_name = load_dataset("flights").model_name
    store = MetadataStore(home.metadata_connection)
    expected, outcomes = [], []
    for index, span in enumerate(flight_spans(months)):
        last = index == len(months) - 1
        arriving = corrupt(span) if last else span
        write_span(data_root, arriving)
        before = store.production_model(model_name)
        print(f"\n== span {span.span_id} arrives{' (corrupted: distance as text, unseen carrier ' + UNSEEN_CARRIER + ')' if last else ''}: "
              f"{len(arriving.frame)} rows; in production: "
              f"{'version ' + str(before.properties['version']) if before else 'nothing'}")
        run = run_locally(home, data_root, {}, trigger="new data", reason=f"span {span.span_id} arrived")
        print(describe(run))
        after = store.production_model(model_name)
        print(f"in production now: {'version ' + str(after.properties['version']) if after else 'nothing'}")
        expected.append(EXIT_STOPPED_BY_DATA if last else EXIT_COMPLETED)
        outcomes.append(exit_code(run))
        if last and (before and after) and before.id != after.id:
            print("UNEXPECTED: the corrupted span changed the production model")
            return 1
    print(f"\nlineage: ct lineage --home {home_path}    runs: ct runs --home {home_path}")
    if outcomes != expected:
        print(f"UNEXPECTED: exit codes {outcomes}, expected {expected}")
        return 1
    return 0
