"""Scale: the whole pipeline on about 1 M, 3 M and 10 M rows of flights, on this machine.

Makes 31 years of flights from the bundled one once (`ct data flights --scale 31`: 10.1 M
rows in 372 monthly spans, with the feature tables of those years), then runs the pipeline
through kfp.local, steps forked from the warm host, with the window set to the latest 36,
108 and 372 spans, each run in a fresh home with the pipeline's default parameters. For each
size it prints every step's wall time and peak resident memory (its process and children, as
ML Metadata records it) and the run's wall time; then one line per size (wall time per step,
rows per second, the largest peak and its step) and how the time grew with the rows; its last
line is `10M rows: wall W s, peak P GiB`.

A step forked from the warm host starts with the host's pages (TensorFlow, TFDV and Feast
imported, about 0.3 GiB): they count in its peak.

    .venv/bin/python bench/scale.py [--spans 36,108,372] [--data DIR]

`--data DIR` keeps the generated years in DIR (made there if missing) for another run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.local_run import step_walls  # noqa: E402
from components.common.home import Home  # noqa: E402
from components.common.spans import complete_spans  # noqa: E402
from pipelines.demo.sample_data import write_dataset  # noqa: E402
from pipelines.local_run import WARM, run_locally  # noqa: E402

YEARS = 31
MIB_PER_GIB = 1024


def window_rows(data_root: Path, spans: int) -> int:
    """Rows of the latest `spans` spans, from their files' Parquet footers."""
    window = complete_spans(data_root)[-spans:]
    return sum(pq.ParquetFile(path).metadata.num_rows for span in window for path in span.files)


def measure(data_root: Path, spans: int, home: Home) -> tuple[float, list[tuple[str, float, float]], str]:
    """One run on the latest `spans` spans: its wall time, each step's (name, wall s, peak MiB),
    and its decision."""
    started = time.perf_counter()
    run = run_locally(home, data_root, {"window_spans": spans}, runner=WARM)
    wall = time.perf_counter() - started
    walls = step_walls(home.logs / f"{run.run_id}.log")
    steps = [(step.step, walls.get(step.step, step.seconds or 0.0), step.peak_memory_mib or 0.0) for step in run.steps]
    return wall, steps, str(run.properties.get("decision", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", default="36,108,372", help="window sizes in monthly spans, smallest first")
    parser.add_argument("--data", type=Path, help="where the generated years are kept (default: a temporary folder)")
    args = parser.parse_args()
    sizes = [int(part) for part in args.spans.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        data_root = args.data or Path(scratch) / "data"
        if len(complete_spans(data_root) if data_root.is_dir() else []) < max(sizes):
            started = time.perf_counter()
            write_dataset("flights", data_root, scale=YEARS)
            print(f"made {YEARS} years of flights in {time.perf_counter() - started:.0f} s", flush=True)
        results = []
        for spans in sizes:
            rows = window_rows(data_root, spans)
            wall, steps, decision = measure(data_root, spans, Home(Path(scratch) / f"home-{spans}"))
            print(f"\n{rows / 1e6:.2f} M rows ({spans} spans); decision: {decision}")
            print(f"{'step':<16}{'wall s':>9}{'peak MiB':>10}")
            for name, seconds, peak in steps:
                print(f"{name:<16}{seconds:>9.1f}{peak:>10.0f}")
            print(f"{'run':<16}{wall:>9.1f}")
            results.append((rows, wall, steps))
            sys.stdout.flush()
    print()
    for size_rows, size_wall, steps in results:
        name, _, peak = max(steps, key=lambda step: step[2])
        stages = ", ".join(f"{step} {seconds:.0f}" for step, seconds, _ in steps)
        print(
            f"{size_rows / 1e6:5.2f} M rows: wall {size_wall:.0f} s ({stages}), {size_rows / size_wall:,.0f} rows/s, "
            f"peak {peak / MIB_PER_GIB:.2f} GiB ({name})"
        )
    (small_rows, small_wall, _), (rows, wall, steps) = results[0], results[-1]
    peak = max(step[2] for step in steps)
    print(f"time grew {wall / small_wall:.1f}x for {rows / small_rows:.1f}x the rows")
    print(f"{rows / 1e6:.0f}M rows: wall {wall:.0f} s, peak {peak / MIB_PER_GIB:.1f} GiB")


if __name__ == "__main__":
    main()
