"""What the distribution-shift trigger's size-aware thresholds cost per check.

Windows of `--window-rows` January 2013 flights (features as ingest joins them, month left
out as the cluster's configuration ignores it) are logged as the service logs them and
checked against training statistics of `--reference-rows` other January flights:

- `one resample`: a window's TFDV statistics (statistics_of_dataframe) and its skew and
  drift measures, what each resample costs (median of 10);
- `no calibration`: a check whose distances pass no configured threshold (thresholds 1);
- `skew calibration`: the first check with thresholds 0, which calibrates skew's noise
  (`--resamples` windows drawn from the training statistics, kept until the next push);
- `drift calibration`: the next check, which calibrates drift's noise (`--resamples`
  permutations of the two windows, two statistics each) and reuses skew's.

With `--calibration-processes 2` the resamples' statistics are shared with a worker process,
started by the skew calibration (whose time includes its start and imports).

    .venv/bin/python bench/shift_calibration.py [--window-rows 2000] [--resamples 99] [--calibration-processes 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window-rows", type=int, default=2000, help="ShiftSettings.window_rows")
    parser.add_argument("--reference-rows", type=int, default=16_000, help="of January's 26,398")
    parser.add_argument("--resamples", type=int, default=None, help="ShiftSettings.resamples (default: its default)")
    parser.add_argument("--calibration-processes", type=int, default=1, help="ShiftSettings.calibration_processes")
    args = parser.parse_args()

    from components.common import metadata
    from components.common.datasets import load_dataset
    from components.common.metadata import MetadataStore
    from components.common.tfdv_io import load_schema
    from components.ingest.logic import examples_with_features
    from components.statistics.logic import statistics_of_dataframe
    from components.validate_data.logic import measure_drift, measure_skew
    from features.sources import write_sources
    from pipelines.demo.sample_data import flight_spans
    from pipelines.triggers.config import ShiftSettings
    from pipelines.triggers.sources import DistributionShiftTrigger
    from serving.request_log import RequestLog

    dataset = load_dataset("flights")
    schema = load_schema(dataset.schema_path)
    features = [f for f in dataset.features if f != "month"]
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        write_sources(folder / "features")
        [span] = flight_spans(["2013-01"])
        examples = examples_with_features(span.frame, dataset, folder / "features", span.span_id)[0]
        examples = examples.sample(frac=1.0, random_state=0).reset_index(drop=True)
        reference = examples.head(args.reference_rows)
        windows = [
            examples.iloc[args.reference_rows + i * args.window_rows :].head(args.window_rows).reset_index(drop=True)
            for i in range(4)
        ]
        training = statistics_of_dataframe(reference, schema)
        (folder / "train.pb").write_bytes(training.SerializeToString())
        store = MetadataStore(f"sqlite:///{folder / 'metadata.sqlite'}")
        with store.step("run-1", "statistics", {}) as step:
            path = str(folder / "train.pb")
            step.output(metadata.STATISTICS, path, dataset="flights", split="train", spans="2013-01")
        with store.step("run-1", "push", {}) as step:
            step.output(metadata.PUSHED_MODEL, "/m/1", model_name=dataset.model_name, version=1, run_id="run-1")

        previous = statistics_of_dataframe(windows[0][features], schema)
        resample_seconds = []
        for _ in range(10):
            started = time.perf_counter()
            current = statistics_of_dataframe(windows[1][features], schema)
            measure_skew(training, current, schema, dataset.categorical_features, 0.1, 0.3)
            measure_drift(current, previous, schema, dataset.categorical_features, 0.1, 0.3)
            resample_seconds.append(time.perf_counter() - started)
        print(f"one resample       {statistics.median(resample_seconds) * 1000:6.0f} ms  ({len(features)} features)")

        def trigger_at(threshold: float, log_folder: Path) -> DistributionShiftTrigger:
            settings = ShiftSettings(
                categorical_threshold=threshold,
                numeric_threshold=threshold,
                window_rows=args.window_rows,
                check_seconds=0,
                ignore_features=("month",),
                calibration_processes=args.calibration_processes,
                **({"resamples": args.resamples} if args.resamples else {}),
            )
            return DistributionShiftTrigger(settings, log_folder, dataset, store)

        def seconds_to_check(trigger: DistributionShiftTrigger, window) -> float:
            """One check of the window, logged first as the service logs requests."""
            log = RequestLog(trigger.request_log, 1.0, 1 << 20, 1 << 40)
            count = len(window)
            log.append({f: window[f].to_numpy() for f in features}, [0.5] * count, 1, [str(i) for i in range(count)])
            log.flush()
            started = time.perf_counter()
            trigger.check(time.time())
            return time.perf_counter() - started

        print(f"no calibration     {seconds_to_check(trigger_at(1.0, folder / 'quiet'), windows[1]):6.2f} s")
        trigger = trigger_at(0.0, folder / "log")
        try:
            skew_seconds = seconds_to_check(trigger, windows[2])
            print(f"skew calibration   {skew_seconds:6.2f} s  ({trigger.config.resamples} resamples)")
            print(f"drift calibration  {seconds_to_check(trigger, windows[3]):6.2f} s")
        finally:
            trigger.close()


if __name__ == "__main__":
    main()
