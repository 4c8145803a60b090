"""Statistics of 1,000,000 rows x 20 columns: our in-memory path against TFDV's CSV path on Beam.

Both compute TFDV statistics of the same generated rows (10 numeric, 10 categorical
columns, some values missing), in the same process run:
  - baseline: `tfdv.generate_statistics_from_csv` on Beam's DirectRunner (TFDV's own
    path for files, as TFX's StatisticsGen runs it on one machine);
  - ours: the statistics stage's in-memory path, which reads the Parquet split into one
    DataFrame and calls `generate_statistics_from_dataframe`, file reading included;
  - for reference, the stage's Beam path over the same Parquet file.

    .venv/bin/python bench/statistics_speed.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from components.common.tfdv_io import load_statistics
from components.statistics.logic import BEAM, MEMORY, compute_statistics

TARGET_RATIO = 10.0


def generated_rows(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns = {}
    for i in range(10):
        values = rng.normal(i, 1 + i, rows)
        values[rng.random(rows) < 0.02] = np.nan
        columns[f"numeric_{i}"] = values
    for i in range(10):
        vocabulary = np.array([f"value_{i}_{v}" for v in range(5 + 10 * i)])
        columns[f"categorical_{i}"] = vocabulary[rng.zipf(1.5, rows) % len(vocabulary)]
    return pd.DataFrame(columns)


def timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        frame = generated_rows(args.rows)
        frame.to_csv(folder / "rows.csv", index=False)
        frame.to_parquet(folder / "rows.parquet", index=False)
        del frame
        baseline_s, baseline = timed(
            lambda: tfdv.generate_statistics_from_csv(
                str(folder / "rows.csv"), pipeline_options=PipelineOptions(["--runner=DirectRunner"])
            )
        )
        ours_s, _ = timed(lambda: compute_statistics(folder / "rows.parquet", folder / "memory.pb", engine=MEMORY))
        beam_s, _ = timed(
            lambda: compute_statistics(
                folder / "rows.parquet", folder / "beam.pb", engine=BEAM, beam_pipeline_args=["--runner=DirectRunner"]
            )
        )
        ours = load_statistics(folder / "memory.pb")
    assert ours.datasets[0].num_examples == baseline.datasets[0].num_examples == args.rows
    print(f"{args.rows:,} rows x 20 columns, TFDV statistics")
    print(f"  baseline  TFDV generate_statistics_from_csv, DirectRunner   {baseline_s:8.2f} s")
    met = baseline_s / ours_s >= TARGET_RATIO
    print(
        f"  ours      in-memory path (Parquet read included)            {ours_s:8.2f} s   "
        f"{baseline_s / ours_s:6.1f}x faster (target {TARGET_RATIO:.0f}x: {'met' if met else 'MISSED'})"
    )
    print(
        f"  ours      Beam path over Parquet, DirectRunner              {beam_s:8.2f} s   {baseline_s / beam_s:6.1f}x"
    )


if __name__ == "__main__":
    main()
