"""Ours against TFX on TFX's own penguin pipeline: the same rows, run alternately, clean state each run.

TFX: the penguin example of TFX 1.16 (`tfx/examples/penguin/penguin_pipeline_local.py`:
CsvExampleGen, StatisticsGen, SchemaGen, ExampleValidator, Transform, Trainer, Evaluator,
Pusher) on LocalDagRunner, in its own virtual environment. `--tfx-baseline DIR` is a folder
with that pipeline as `penguin_pipeline.py`, its environment in `venv/` and its data in
`data/` (the 334 rows of TFX's penguin CSV), as the TFX baseline kit makes them with
`run.sh install` and `run.sh data`.

Ours: `ct run` on the same table as `ct data penguins` writes it (three yearly spans, 333 of
the 334 rows: TFX's file keeps one row whose sex is unknown), all three spans in one window,
every step as the chosen runner runs it (default: warm).

Each run starts from nothing (a new TFX pipeline root and metadata store; a new home) and is
timed from the command's start to its exit, both sides alike. Prints each pair, the medians,
our last run's steps, and last the line `ours X s, TFX Y s, ratio R`.

    .venv/bin/python bench/versus_tfx.py --tfx-baseline DIR [--runs 3] [--runner warm|subprocess|docker]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.local_run import RUNNERS, WARM


def timed(command: list[str], log: Path) -> tuple[float, str]:
    """Runs a command to its end; its wall time and output.

    Raises:
        SystemExit: the command failed (its output's end is shown).
    """
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    log.write_text(completed.stdout + completed.stderr)
    if completed.returncode != 0:
        tail = "\n".join((completed.stdout + completed.stderr).splitlines()[-20:])
        raise SystemExit(f"{command[0]} ... failed (exit code {completed.returncode}); the end of {log}:\n{tail}")
    return seconds, completed.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tfx-baseline", type=Path, required=True, help="penguin_pipeline.py, venv/ and data/")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runner", default=WARM, choices=RUNNERS)
    args = parser.parse_args()
    baseline = args.tfx_baseline.resolve()
    tfx_python, tfx_pipeline = baseline / "venv" / "bin" / "python", baseline / "penguin_pipeline.py"
    for needed in (tfx_python, tfx_pipeline, baseline / "data" / "labelled"):
        if not needed.exists():
            raise SystemExit(f"{needed}: missing; make it with the TFX baseline kit (run.sh install, run.sh data)")
    ct = [sys.executable, "-m", "pipelines.cli"]
    ours_seconds, tfx_seconds = [], []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        subprocess.run([*ct, "data", "penguins", "--dest", str(folder / "spans")], check=True, capture_output=True)
        print(f"{'pair':<6}{'ours s':>8}{'TFX s':>8}")
        for index in range(args.runs):
            ours, output = timed(
                [
                    *ct,
                    "run",
                    "--home",
                    str(folder / f"home-{index}"),
                    "--data-root",
                    str(folder / "spans"),
                    "--param",
                    "dataset=penguins",
                    "--param",
                    "window_spans=3",
                    "--runner",
                    args.runner,
                ],
                folder / f"ours-{index}.log",
            )
            tfx, _ = timed(
                [
                    str(tfx_python),
                    str(tfx_pipeline),
                    f"--work={folder / f'tfx-{index}'}",
                    f"--data_root={baseline / 'data'}",
                ],
                folder / f"tfx-{index}.log",
            )
            ours_seconds.append(ours)
            tfx_seconds.append(tfx)
            print(f"{index + 1:<6}{ours:>8.1f}{tfx:>8.1f}", flush=True)
    print(f"\nour last run ({args.runner} runner):\n{output.strip()}")
    ours, tfx = statistics.median(ours_seconds), statistics.median(tfx_seconds)
    print(
        f"\nmedians of {args.runs}: ours {ours:.1f} s ({min(ours_seconds):.1f}-{max(ours_seconds):.1f}), "
        f"TFX {tfx:.1f} s ({min(tfx_seconds):.1f}-{max(tfx_seconds):.1f})"
    )
    print(f"ours {ours:.1f} s, TFX {tfx:.1f} s, ratio {tfx / ours:.1f}")


if __name__ == "__main__":
    main()
