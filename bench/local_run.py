"""A full local run on one month of flights (about 27k rows), and where its time goes.

Runs the pipeline once through kfp.local in a fresh home, with each step as a process forked
from the warm host (`warm`, the default), as a new process here (`subprocess`, kfp.local's
own way), in its own container of the project's image (`docker`, as on a cluster: bash
images/build.sh --local first), or all in turn on the same data. For each step it reports
the step's wall time (from kfp.local's own log), its work (from ML Metadata: the adapter
records start and end around the stage's logic) and its peak memory; the difference between
wall and work is the process or container start and imports (TensorFlow and TFDV take 3-4 s
to import in a new process; TensorFlow is imported lazily, so train's and evaluate's import
of it counts as work; with the warm runner the first step's wait for the host's imports
counts here). What is left of the run's wall time is kfp.local's orchestration.

    .venv/bin/python bench/local_run.py [--month 2013-01] [--dataset flights|penguins]
                                        [--runner warm|subprocess|docker|all]
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
from pipelines.local_run import DOCKER, RUNNERS, SUBPROCESS, WARM, run_locally

TARGET_SECONDS = 12.0
RUNNER_WORDS = {
    WARM: "forked from the warm host",
    SUBPROCESS: "as new processes",
    DOCKER: "in containers",
}
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


def measure(runner: str, spans: list, dataset: str, folder: Path):
    """One run on fresh data and home; the run, its wall time, and each step's wall time."""
    data_root, home = folder / runner / "data", Home(folder / runner / "home")
    parameters = {} if dataset == "flights" else {"dataset": "penguins", "window_spans": len(spans)}
    for span in spans:
        write_span(data_root, span)
    if dataset == "flights":
        write_sources(data_root / FEATURES_FOLDER)  # the feature store's tables, as `ct data flights` writes them
    started = time.perf_counter()
    run = run_locally(home, data_root, parameters, runner=runner)
    wall = time.perf_counter() - started
    return run, wall, step_walls(home.logs / f"{run.run_id}.log")


def report(runner: str, rows: int, dataset: str, run, wall: float, walls: dict[str, float]) -> None:
    print(f"\n{dataset}: {rows} rows, one local run through kfp.local, steps as {runner}; decision: {run.decision}")
    print(f"{'step':<16}{'step s':>8}{'work s':>8}{'start+imports s':>17}{'peak MiB':>10}")
    for step in run.steps:
        start = walls[step.step] - step.seconds
        print(f"{step.step:<16}{walls[step.step]:>8.2f}{step.seconds:>8.2f}{start:>17.2f}{step.peak_memory_mib:>10.0f}")
    process = sum(walls[s.step] for s in run.steps)
    work = sum(s.seconds for s in run.steps)
    print(f"{'total':<16}{process:>8.2f}{work:>8.2f}{process - work:>17.2f}")
    print(
        f"wall {wall:.1f} s = work {work:.1f} s + step start and imports {process - work:.1f} s "
        f"+ kfp.local orchestration {wall - process:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--month", default="2013-01")
    parser.add_argument("--dataset", default="flights", choices=("flights", "penguins"))
    parser.add_argument("--runner", default=WARM, choices=(*RUNNERS, "all"))
    args = parser.parse_args()
    spans = list(flight_spans([args.month]) if args.dataset == "flights" else penguin_spans())
    rows = sum(len(s.frame) for s in spans)
    runners = RUNNERS if args.runner == "all" else (args.runner,)
    walls = {}
    with tempfile.TemporaryDirectory() as folder:
        for runner in runners:
            run, walls[runner], steps = measure(runner, spans, args.dataset, Path(folder))
            report(runner, rows, args.dataset, run, walls[runner], steps)
    print()
    for runner, wall in walls.items():
        print(
            f"{args.dataset}, steps {RUNNER_WORDS[runner]}: {wall:.1f} s"
            + (f" ({wall / walls[WARM]:.2f}x warm)" if WARM in walls and runner != WARM else "")
        )
    if WARM in walls and args.dataset == "flights":
        met = walls[WARM] < TARGET_SECONDS
        print(f"target for one month with the warm runner: under {TARGET_SECONDS:.0f} s ({'met' if met else 'MISSED'})")


if __name__ == "__main__":
    main()
