"""A full local run on one month of flights (about 27k rows), and where its time goes.

Runs the pipeline once through kfp.local (SubprocessRunner) in a fresh home. For each
step it reports the step process's wall time (from kfp.local's own log) and the step's
work (from ML Metadata: the adapter records start and end around the stage's logic);
the difference is the process start and imports (TensorFlow and TFDV take 3-4 s to
import; TensorFlow is imported lazily, so train's and evaluate's import of it counts
as work). What is left of the run's wall time is kfp.local's orchestration.

    .venv/bin/python bench/local_run.py [--month 2013-01] [--dataset flights|penguins]
"""

from __future__ import annotations

import argparse
import datetime
import re
import tempfile
import time
from pathlib import Path

from components.common.home import Home
from features.sources import FEATURES_FOLDER, write_sources
from pipelines.demo.sample_data import flight_spans, penguin_spans, write_span
from pipelines.local_run import run_locally

TARGET_SECONDS = 60.0
TASK_LINE = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) - INFO - (?:Executing task|Task) \S*'([a-z-]+)'")


def step_walls(log: Path) -> dict[str, float]:
    """Step name -> seconds from kfp.local's 'Executing task' to its 'finished' line."""
    started: dict[str, datetime.datetime] = {}
    walls: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = TASK_LINE.match(line)
        if match:
            moment = datetime.datetime.strptime(match.group(1), "%H:%M:%S.%f")
            step = match.group(2).replace("-", "_")
            if step in started:
                walls[step] = (moment - started[step]).total_seconds()
            else:
                started[step] = moment
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--month", default="2013-01")
    parser.add_argument("--dataset", default="flights", choices=("flights", "penguins"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_root, home = Path(folder) / "data", Home(Path(folder) / "home")
        spans = list(flight_spans([args.month]) if args.dataset == "flights" else penguin_spans())
        parameters = {} if args.dataset == "flights" else {"dataset": "penguins", "window_spans": len(spans)}
        for span in spans:
            write_span(data_root, span)
        if args.dataset == "flights":
            write_sources(data_root / FEATURES_FOLDER)  # the feature store's tables, as `ct data flights` writes them
        started = time.perf_counter()
        run = run_locally(home, data_root, parameters)
        wall = time.perf_counter() - started
        walls = step_walls(home.logs / f"{run.run_id}.log")

    rows = sum(len(s.frame) for s in spans)
    print(f"{args.dataset}: {rows} rows, one local run through kfp.local; decision: {run.decision}")
    print(f"{'step':<16}{'process s':>10}{'work s':>8}{'start+imports s':>17}")
    for step in run.steps:
        print(f"{step.step:<16}{walls[step.step]:>10.2f}{step.seconds:>8.2f}{walls[step.step] - step.seconds:>17.2f}")
    process = sum(walls[s.step] for s in run.steps)
    work = sum(s.seconds for s in run.steps)
    print(f"{'total':<16}{process:>10.2f}{work:>8.2f}{process - work:>17.2f}")
    print(
        f"wall {wall:.1f} s = work {work:.1f} s + process start and imports {process - work:.1f} s "
        f"+ kfp.local orchestration {wall - process:.1f} s"
    )
    print(
        f"target: under {TARGET_SECONDS:.0f} s; this run took {wall / TARGET_SECONDS:.2f} of it "
        f"({'met' if wall < TARGET_SECONDS else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
