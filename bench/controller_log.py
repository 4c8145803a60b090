"""What one check of the distribution-shift trigger costs on a large request log.

Writes a request log of `--rows` served flights (3 M by default: about 4 hours at 200
requests/s) through serving.request_log.RequestLog, as the service writes it, into a
temporary folder; then, each in a fresh process (so its peak resident memory is its own):

- `whole log`: what the check did before it read incrementally: every row of every file
  (read_log since 0), all columns, then the last window.
- `first check`: the trigger's check on a fresh controller (the log's newest files only).
- `next check`: one more check after one more file arrived (only that file is read).

TFDV's comparison of the window is left out (the same work before and after): the figures
are the log reading's.

    .venv/bin/python bench/controller_log.py [--rows 3000000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROTATE_ROWS = 20_000  # serving/config.py's default


def write_log(folder: Path, rows: int) -> None:
    """`rows` served flights of January 2013 (features as the service logs them), in files of ROTATE_ROWS."""
    from components.common.datasets import load_dataset
    from pipelines.demo.sample_data import flight_spans
    from serving.request_log import RequestLog

    dataset = load_dataset("flights")
    [span] = flight_spans(["2013-01"])
    frame = span.frame
    rng = np.random.default_rng(0)
    for feature in dataset.features:  # the store's features, as the service looks them up
        if feature not in frame.columns:
            frame[feature] = rng.normal(size=len(frame)) if feature in dataset.numeric_features else "x"
    frame = frame[list(dataset.features)]
    columns = {name: frame[name].to_numpy() for name in frame.columns}
    log = RequestLog(folder, sample=1.0, rotate_rows=ROTATE_ROWS, max_bytes=1 << 40)
    for start in range(0, rows, ROTATE_ROWS):
        count = min(ROTATE_ROWS, rows - start)
        taken = (start + np.arange(count)) % len(frame)
        batch = {name: values[taken] for name, values in columns.items()}
        scores = rng.random(count).tolist()
        log.append(batch, scores, 1, [f"{start + i:012d}-{rng.integers(1 << 60):x}" for i in range(count)])
    log.flush()


def measure(folder: Path, what: str, window_rows: int) -> dict[str, float]:
    """Runs one reading in a fresh process; its seconds and peak resident MiB."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", what, "--folder", str(folder), "--window-rows", str(window_rows)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(what: str, folder: Path, window_rows: int) -> None:
    from components.common.datasets import load_dataset
    from pipelines.triggers.config import ShiftSettings
    from pipelines.triggers.sources import DistributionShiftTrigger
    from serving.request_log import read_log

    class Reading(DistributionShiftTrigger):
        """The trigger as the controller runs it, without TFDV's comparison."""

        def _compare(self, window, now):
            self.compared = len(window)
            return []

    dataset = load_dataset("flights")
    trigger = Reading(ShiftSettings(window_rows=window_rows, check_seconds=0), folder, dataset, store=None)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if what == "next":
        trigger.check(time.time())  # the first check, then one more file arrives
        _more_rows(folder)
        baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    if what == "whole":
        rows = len(read_log(folder, 0.0).tail(window_rows))
    else:
        trigger.check(time.time())
        rows = trigger.compared
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mib": peak, "before_mib": baseline, "window_rows": rows}))


def _more_rows(folder: Path) -> None:
    from serving.request_log import PREFIX

    newest = sorted(folder.glob(f"{PREFIX}*.parquet"))[-1]
    frame = pd.read_parquet(newest)
    frame["logged_at"] = time.time()
    frame.to_parquet(folder / f"{PREFIX}99999999T999999-bench-more.parquet", index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--window-rows", type=int, default=2000, help="ShiftSettings.window_rows")
    parser.add_argument("--folder", type=Path, default=None, help="keep the request log here (written if missing)")
    parser.add_argument("--child", choices=("whole", "first", "next"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.folder, args.window_rows)
        return
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.folder or Path(temporary) / "request_log"
        if not folder.is_dir():
            started = time.perf_counter()
            write_log(folder, args.rows)
            print(f"wrote {args.rows} rows in {time.perf_counter() - started:.0f} s to {folder}", flush=True)
        size = sum(p.stat().st_size for p in folder.iterdir()) / 2**20
        print(f"request log: {len(list(folder.iterdir()))} files, {size:.0f} MiB")
        for what, label in (("whole", "whole log"), ("first", "first check"), ("next", "next check")):
            result = measure(folder, what, args.window_rows)
            print(
                f"{label:<12} {result['seconds']:6.2f} s  peak {result['peak_mib']:6.0f} MiB "
                f"(imports {result['before_mib']:.0f} MiB)  window {result['window_rows']} rows",
                flush=True,
            )


if __name__ == "__main__":
    main()
