"""The prediction service under a hostile mix, and a replica restarted during a canary.

1. One `ct serve` process; its peak resident memory (VmHWM) after start-up, then under a
   mix no client should be able to use to take it down: idle connections held open,
   concurrent largest-allowed bodies, oversized v2 ids, unauthenticated feedback, and a
   burst of new connections whose health checks are timed.
2. Two replicas sharing a home with an undecided canary; traffic to both while one is
   stopped (SIGTERM) and started again: requests answered and failed during and after, and
   whether the restarted replica still serves the canary as the canary.

    .venv/bin/python bench/serving_hostile.py
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from components.common import model_repository
from components.common.datasets import load_dataset
from components.common.home import Home
from components.common.metadata import MetadataStore
from components.common.model_io import frame_to_instances
from components.train.logic import Hyperparameters, train
from pipelines.demo.sample_data import penguin_spans
from pipelines.demo.serving_process import free_port, free_ports, start_serving
from serving.config import ServingConfig

DATASET = load_dataset("penguins")


def post(port: int, path: str, body: bytes, headers: dict | None = None, timeout: float = 30) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        connection.close()


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def health_burst(port: int, connections: int = 100) -> str:
    """`connections` new connections at once, each asking /v2/health/live: their latency."""
    latencies: list[float] = []

    def check():
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/v2/health/live")
        connection.getresponse().read()
        connection.close()
        latencies.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=check) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return f"p50 {np.percentile(latencies, 50):.1f} ms, max {max(latencies):.1f} ms"


def publish_recorded(home: Home, model_dir: Path) -> int:
    published = model_repository.publish(model_dir, home.model_repository, DATASET.model_name, {})
    with MetadataStore(home.metadata_connection).step(f"bench-{published.version}", "push", {}) as step:
        step.pushed_model(DATASET.model_name, published.version, str(published.path), published.digest)
    return published.version


def hostile_mix(home: Home, instances: list[dict]) -> None:
    port = free_port()
    process = start_serving(home.root, port, ["--dataset", "penguins"], wait_for="/v2/health/ready")
    predict = f"/v1/models/{DATASET.model_name}:predict"
    try:
        for row in instances[:50]:
            post(port, predict, json.dumps({"instances": [row]}).encode())
        baseline = peak_mib(process.pid)
        quiet = health_burst(port)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        per_row = len(json.dumps(instances[0])) + 2
        many = (instances * (ServingConfig.max_body_bytes // per_row // len(instances) + 1))[
            : int(0.95 * ServingConfig.max_body_bytes / per_row)
        ]
        body = json.dumps({"instances": many})  # just under the largest body accepted
        oversized_id = json.dumps({"id": "x" * 3_000_000, "inputs": []}).encode()
        junk = json.dumps({"feedback": [{"request_id": f"{i:032x}", "label": 0} for i in range(5000)]}).encode()
        statuses: list[int] = []
        with ThreadPoolExecutor(32) as pool:
            jobs = [pool.submit(post, port, predict, body.encode()) for _ in range(24)]
            jobs += [pool.submit(post, port, f"/v2/models/{DATASET.model_name}/infer", oversized_id) for _ in range(60)]
            jobs += [pool.submit(post, port, f"/v1/models/{DATASET.model_name}:feedback", junk) for _ in range(100)]
            during = health_burst(port)
            statuses = [job.result() for job in jobs]
        for connection in idle:
            connection.close()
        answered = {code: statuses.count(code) for code in sorted(set(statuses))}
        print(
            f"hostile mix: peak memory {baseline:.0f} MiB after start-up, "
            f"{peak_mib(process.pid):.0f} MiB after the mix "
            f"(pod limit 2048 MiB); 24 bodies of {len(body) / 2**20:.2f} MiB, 60 ids of 3 MB, 100 junk feedback posts "
            f"with 200 idle connections open: answers {answered}; a burst of 100 new connections' health checks "
            f"on the idle service {quiet}, during the mix {during}"
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait()


def restart_in_canary(home: Home, model_dir: Path, instances: list[dict]) -> None:
    ports = free_ports(2)
    options = ["--dataset", "penguins", "--canary-percent", "50"]
    replicas = [start_serving(home.root, port, options, wait_for="/v2/health/ready") for port in ports]
    version = publish_recorded(home, model_dir)
    status = f"/v1/models/{DATASET.model_name}"
    predict = f"{status}:predict"

    def labels(port: int) -> dict[str, str]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", status)
        answer = json.loads(connection.getresponse().read())
        return {s["version"]: s.get("label", s["state"]) for s in answer["model_version_status"]}

    while any(labels(port).get(str(version)) != "canary" for port in ports):
        time.sleep(0.2)
    phase = ["before"]
    results: list[tuple[str, int, int]] = []  # (phase, replica, status)
    stop = threading.Event()

    def traffic():
        index = 0
        while not stop.is_set():
            replica = index % 2
            body = json.dumps({"instances": [instances[index % len(instances)]]}).encode()
            results.append((phase[0], replica, post(ports[replica], predict, body, {"X-Request-Key": f"k{index}"}, 5)))
            index += 1
            time.sleep(0.01)

    client = threading.Thread(target=traffic)
    client.start()
    time.sleep(3)
    phase[0] = "stopping"
    replicas[0].send_signal(signal.SIGTERM)
    replicas[0].wait()
    replicas[0] = start_serving(home.root, ports[0], options, wait_for="/v2/health/ready")
    phase[0] = "after"
    kept = labels(ports[0]).get(str(version))
    time.sleep(5)
    stop.set()
    client.join()
    for replica in replicas:
        replica.send_signal(signal.SIGTERM)
        replica.wait()
    frame = pd.DataFrame(results, columns=["phase", "replica", "status"])
    summary = "; ".join(
        f"{name}: {len(part)} requests, {int((part.status == 200).sum())} answered "
        f"({int(((part.status == 200) & (part.replica == 1)).sum())} by the other replica)"
        for name, part in frame.groupby("phase", sort=False)
    )
    print(f"replica restarted during a canary: {summary}; version {version} after the restart: {kept}")


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        frame = pd.concat([span.frame for span in penguin_spans()])
        frame.to_parquet(folder / "train.parquet")
        train(folder / "train.parquet", DATASET, Hyperparameters(epochs=1), folder / "model", folder / "v.json")
        instances = frame_to_instances(frame, DATASET.features)
        home = Home(folder / "home").create()
        publish_recorded(home, folder / "model")
        hostile_mix(home, instances)
        restart_in_canary(home, folder / "model", instances)


if __name__ == "__main__":
    main()
