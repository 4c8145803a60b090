"""The prediction service under load, over loopback, with the load generator in another process.

Trains a flights model on a real month, publishes it, starts `ct serve` in a child
process, and measures from this process:
  1. single-row predict at a fixed 200 requests/s (open loop: latency counted from each
     request's scheduled time, so a stall is not hidden) -> p50/p99, errors;
  2. peak sustained throughput with 8 keep-alive connections (closed loop);
  3. batch predict of 100 rows -> p50/p99;
  4. hot swap: 20 new versions published while serving 200 requests/s (canary share 100%,
     so every publish switches all traffic) -> failed requests, versions seen;
  5. trigger reaction: from a new span's `_SUCCESS` marker, a manual request, and the
     feedback that pushes the online AUC under the floor, to the controller starting a run.
The baseline for 1-3 is the same model called in this process without HTTP.

    .venv/bin/python bench/serving_load.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from http_load import Client, open_loop

from components.common import model_io, model_repository
from components.common.datasets import load_dataset
from components.common.home import Home
from components.common.metadata import MetadataStore
from components.common.model_io import frame_to_instances
from components.ingest.logic import ingest
from components.materialize.logic import materialize_window
from components.train.logic import Hyperparameters, train
from features.joins import request_columns
from features.sources import FEATURES_FOLDER, write_sources
from features.store import apply as apply_features
from pipelines.demo.sample_data import Span, flight_spans, write_span
from pipelines.demo.serving_process import free_port, start_serving
from pipelines.triggers.config import NewDataSettings, PerformanceSettings, TriggerConfig
from pipelines.triggers.controller import build_controller
from pipelines.triggers.sources import request_manual_run
from serving.credentials import serving_token

RATE = 200
P99_TARGET_MS = 10.0


def closed_loop(port: int, path: str, bodies: list[dict], seconds: float, connections: int = 8) -> float:
    deadline = time.perf_counter() + seconds
    counts = [0] * connections

    def worker(k):
        client = Client(port)
        while time.perf_counter() < deadline:
            client.post(path, bodies[counts[k] % len(bodies)])
            counts[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def percentiles(values) -> str:
    return (
        f"p50 {np.percentile(values, 50):6.2f} ms  p99 {np.percentile(values, 99):6.2f} ms  max {values.max():7.2f} ms"
    )


def reaction(controller, event, started_at_least: int) -> float:
    """Seconds from `event()` until the controller has started its `started_at_least`-th run."""
    event_at = time.perf_counter()
    event()
    while sum(e.kind == "started" for e in controller.events) < started_at_least:
        controller.tick()
        time.sleep(controller.config.poll_seconds)
    return time.perf_counter() - event_at


class RecordingLauncher:
    """Starts nothing: the bench measures when the controller decides to start."""

    def start(self, run_id, trigger, reason):
        pass

    def finished(self):
        return 0

    def close(self):
        pass


def publish_recorded(home: Home, model_name: str, model_dir: Path) -> None:
    """Publishes the next version and records its push, as the pipeline's push step does (the
    service serves only versions recorded in ML Metadata)."""
    published = model_repository.publish(model_dir, home.model_repository, model_name, {})
    run_id = f"bench-{published.version}"
    with MetadataStore(home.metadata_connection).step(run_id, "push", {}) as step:
        step.pushed_model(model_name, published.version, str(published.path), published.digest)


@dataclasses.dataclass(frozen=True)
class ServingHome:
    """A home serving a flights model trained on January, its online store filled, and requests."""

    home: Home
    model_name: str
    model_dir: Path
    span: Span  # the month it was trained on
    single: list[dict]  # one-row requests with every feature
    facts: list[dict]  # one-row requests with flight facts only (features looked up online)
    hundred_facts: list[dict]  # 100-row requests with flight facts only
    batch: list[dict]  # 100-row requests with every feature

    @property
    def path(self) -> str:
        return f"/v1/models/{self.model_name}:predict"


def prepare_serving_home(folder: Path) -> ServingHome:
    dataset = load_dataset("flights")
    home = Home(folder / "home").create()
    span = next(flight_spans(["2013-01"]))
    write_span(folder / "data", span)
    write_sources(folder / "data" / FEATURES_FOLDER)
    ingest(folder / "data", 1, 20, dataset.key, folder / "train.parquet", folder / "eval.parquet", dataset)
    train(folder / "train.parquet", dataset, Hyperparameters(epochs=2), folder / "model", folder / "vocabularies.json")
    (home.model_repository / dataset.model_name).mkdir(parents=True)
    publish_recorded(home, dataset.model_name, folder / "model")
    rows = frame_to_instances(pd.read_parquet(folder / "eval.parquet").head(2000), dataset.features)
    # The same kind of flights as a client sends them to the feature store's service: facts and entities.
    flights = span.frame.sample(2000, random_state=0)
    fact_rows = frame_to_instances(flights, request_columns(flights.columns, dataset.features))
    apply_features(home.feature_repo, folder / "data" / FEATURES_FOLDER)
    materialize_window(
        home.feature_repo,
        folder / "data" / FEATURES_FOLDER,
        (span.frame.sched_dep.min(), span.frame.sched_dep.max()),
    )
    return ServingHome(
        home,
        dataset.model_name,
        folder / "model",
        span,
        [{"instances": [row]} for row in rows],
        [{"instances": [row]} for row in fact_rows],
        [{"instances": fact_rows[i : i + 100]} for i in range(0, 2000, 100)],
        [{"instances": rows[i : i + 100]} for i in range(0, 1000, 100)],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        prepared = prepare_serving_home(folder)
        home, single, facts, batch, path = prepared.home, prepared.single, prepared.facts, prepared.batch, prepared.path
        model_name, span = prepared.model_name, prepared.span

        model = model_io.SavedModel(prepared.model_dir)
        signature = model.signature
        in_process_single, in_process_batch = [], []
        for body in single[:500]:
            started = time.perf_counter()
            model.predict(model_io.instances_to_columns(signature, body["instances"]))
            in_process_single.append((time.perf_counter() - started) * 1000)
        for body in batch * 10:
            started = time.perf_counter()
            model.predict(model_io.instances_to_columns(signature, body["instances"]))
            in_process_batch.append((time.perf_counter() - started) * 1000)

        port = free_port()
        server = start_serving(home.root, port, ["--request-log-sample", "1.0"], wait_for="/v2/health/ready")
        try:
            open_loop(port, path, single, RATE, 2)  # warm-up
            latencies, errors, _ = open_loop(port, path, single, RATE, args.seconds)
            open_loop(port, path, facts, RATE, 2)  # warm-up
            fact_latencies, fact_errors, _ = open_loop(port, path, facts, RATE, args.seconds)
            peak = closed_loop(port, path, single, args.seconds / 2)
            client, batch_latencies = Client(port), []
            for body in batch * 10:
                started = time.perf_counter()
                client.post(path, body)
                batch_latencies.append((time.perf_counter() - started) * 1000)
        finally:
            server.terminate()
            server.wait()
        print(
            f"single-row predict at {RATE} requests/s for {args.seconds:g} s, {len(latencies)} requests over loopback:"
        )
        met = np.percentile(latencies, 99) <= P99_TARGET_MS and not errors
        print(
            f"  HTTP (ct serve)   {percentiles(latencies)}  errors {len(errors)}  "
            f"(target p99 <= {P99_TARGET_MS:g} ms: {'met' if met else 'MISSED'})"
        )
        print(f"  in-process        {percentiles(np.array(in_process_single))}  (baseline: no HTTP)")
        print(
            f"  HTTP, flight facts only (features looked up online): {percentiles(fact_latencies)}  "
            f"errors {len(fact_errors)}; extra p50 "
            f"{np.percentile(fact_latencies, 50) - np.percentile(latencies, 50):.2f} ms, extra p99 "
            f"{np.percentile(fact_latencies, 99) - np.percentile(latencies, 99):.2f} ms (goal: under 2 ms at p99)"
        )
        print(f"peak sustained throughput, 8 connections: {peak:,.0f} single-row requests/s")
        print(f"batch predict, 100 rows: HTTP {percentiles(np.array(batch_latencies))}")
        print(f"                         in-process {percentiles(np.array(in_process_batch))}")

        port = free_port()
        server = start_serving(
            home.root, port, ["--canary-percent", "100", "--request-log-sample", "0"], wait_for="/v2/health/ready"
        )
        try:
            swaps = 20
            result = {}
            load = threading.Thread(
                target=lambda: result.update(
                    zip(("latencies", "errors", "versions"), open_loop(port, path, single, RATE, swaps * 1.0 + 3))
                )
            )
            load.start()
            for _ in range(swaps):
                time.sleep(1.0)
                publish_recorded(home, model_name, folder / "model")
            load.join()
        finally:
            server.terminate()
            server.wait()
        print(
            f"hot swap: {swaps} versions published while serving {RATE} requests/s: "
            f"{len(result['latencies'])} requests, {len(result['errors'])} failed, "
            f"{len(result['versions'])} versions answered, {percentiles(result['latencies'])}"
        )

        port = free_port()
        trigger_home = Home(folder / "trigger-home").create()
        shutil.copytree(home.model_repository, trigger_home.model_repository, dirs_exist_ok=True)
        shutil.copy(home.metadata_path, trigger_home.metadata_path)  # their pushes, recorded: they may be served
        server = start_serving(
            trigger_home.root, port, ["--canary-percent", "0"], wait_for="/v2/health/ready"
        )  # all traffic to stable: the performance trigger watches it
        try:
            config = TriggerConfig(
                home=trigger_home.root,
                data_root=folder / "arriving",
                cooldown_seconds=0,
                poll_seconds=0.1,
                new_data=NewDataSettings(),
                performance=PerformanceSettings(f"http://127.0.0.1:{port}", min_auc=0.6, min_samples=200),
            )
            controller = build_controller(config, RecordingLauncher())
            controller.tick()
            new_data = reaction(controller, lambda: write_span(folder / "arriving", span), 1)
            manual = reaction(controller, lambda: request_manual_run(trigger_home.triggers, "bench", force=True), 2)

            client = Client(port)
            answers = [client.post(path, body)[1] for body in single[:200]]
            median = float(np.median([a["predictions"][0] for a in answers]))
            labels = [{"request_id": a["request_ids"][0], "label": int(a["predictions"][0] < median)} for a in answers]
            performance = reaction(
                controller,
                lambda: client.post(
                    f"/v1/models/{model_name}:feedback",
                    {"feedback": labels},
                    {"Authorization": serving_token(trigger_home.serving_token).authorization},
                ),
                3,
            )
        finally:
            server.terminate()
            server.wait()
        print(
            f"trigger reaction, event to run start (controller polling every {config.poll_seconds:g} s): "
            f"new span {new_data:.2f} s, manual {manual:.2f} s, feedback crossing the AUC floor {performance:.2f} s"
        )


if __name__ == "__main__":
    main()
