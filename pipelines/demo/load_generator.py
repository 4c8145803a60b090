"""Sends spans' rows to the prediction service as live traffic, then their true outcomes as feedback.

Runs as its own process (as real clients are), one for the whole demo: it reads the path of
a Parquet file of rows from each line of its input and sends them, one single-row TF
Serving predict per row over keep-alive connections, the row's key as `X-Request-Key` (a
caller keeps its model version during a canary), then the labels in batches to
`:feedback`. For each file it prints one line of JSON: requests, errors, latency, and per
model version the online AUC of its answers.

    echo FILE.parquet | python -m pipelines.demo.load_generator --url http://127.0.0.1:8501 --token-file TOKEN
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from components.common.classification_metrics import auc
from components.common.datasets import load_dataset
from components.common.model_io import frame_to_instances
from features.joins import request_columns
from serving.credentials import serving_token

FEEDBACK_BATCH = 500


def send(url: str, dataset_name: str, rows: pd.DataFrame, authorization: str, connections: int = 4) -> dict:
    """Sends each row as one prediction request, then the true labels as feedback (with the
    serving token's `authorization` header); returns counts, latencies and online AUC per version."""
    dataset = load_dataset(dataset_name)
    address = urlparse(url)
    # With the feature store a client sends flight facts and entity keys; the service looks up the rest.
    bodies = frame_to_instances(
        rows, request_columns(rows.columns, dataset.features) if dataset.feature_store else dataset.features
    )
    keys = rows[dataset.key].astype(str).tolist() if dataset.key else [str(i) for i in range(len(rows))]
    labels = (rows[dataset.label] == dataset.positive_label).astype(int).tolist()
    answers: list[tuple | None] = [None] * len(rows)
    latencies: list[float] = []
    errors: list[str] = []
    next_index = iter(range(len(rows)))
    lock = threading.Lock()
    path = f"/v1/models/{dataset.model_name}:predict"

    def worker():
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        for i in next_index:
            started = time.perf_counter()
            connection.request(
                "POST",
                path,
                json.dumps({"instances": [bodies[i]]}),
                {"Content-Type": "application/json", "X-Request-Key": keys[i]},
            )
            response = connection.getresponse()
            payload = json.loads(response.read())
            with lock:
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status == 200:
                    answers[i] = (payload["request_ids"][0], payload["model_version"], payload["predictions"][0])
                else:
                    errors.append(payload.get("error", str(response.status)))

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    answered = [(a, label) for a, label in zip(answers, labels) if a is not None]
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    labelled = 0
    for start in range(0, len(answered), FEEDBACK_BATCH):
        feedback = [{"request_id": a[0], "label": label} for a, label in answered[start : start + FEEDBACK_BATCH]]
        connection.request(
            "POST",
            f"/v1/models/{dataset.model_name}:feedback",
            json.dumps({"feedback": feedback}),
            {"Content-Type": "application/json", "Authorization": authorization},
        )
        response = connection.getresponse()
        payload = json.loads(response.read())
        if response.status == 200:
            labelled += payload.get("logged", payload["accepted"])
        else:
            errors.append(f"feedback: {payload.get('error', response.status)}")
    by_version: dict[str, dict] = {}
    for version in sorted({a[1] for a, _ in answered}, key=int):
        scores = np.array([a[2] for a, _ in answered if a[1] == version])
        truth = np.array([label for a, label in answered if a[1] == version])
        by_version[version] = {"requests": len(scores), "auc": auc(truth, scores)}
    return {
        "requests": len(rows),
        "labelled": labelled,  # labels the service took (wrote to its feedback log, when it has one)
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
        "versions": by_version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--dataset", default="flights")
    parser.add_argument("--token-file", type=Path, required=True, help="the serving token `ct serve` keeps")
    args = parser.parse_args()
    authorization = serving_token(args.token_file).authorization
    for line in sys.stdin:  # a Parquet file of rows with their labels
        summary = send(args.url, args.dataset, pd.read_parquet(line.strip()), authorization)
        print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
