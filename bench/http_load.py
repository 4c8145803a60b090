"""The bench's light processes: the floor server and the open-loop load (standard library and
numpy only, so each starts in a fraction of a second), and the open loop itself, which
bench/serving_load.py runs in its own process. Used by bench/serving_floor.py.

    python bench/http_load.py floor PORT
    python bench/http_load.py load PORT PATH BODIES.json RATE SECONDS   # prints p50, p99, errors, versions seen
"""

from __future__ import annotations

import http.client
import http.server
import json
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np

CONNECTIONS = 16


class FloorHandler(http.server.BaseHTTPRequestHandler):
    """Reads the body and answers one constant prediction: nothing but HTTP."""

    protocol_version = "HTTP/1.1"
    answer = json.dumps({"predictions": [0.5], "model_version": "1"}).encode()

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.answer)))
        self.end_headers()
        self.wfile.write(self.answer)

    def log_message(self, *args) -> None:
        pass


def serve_floor(port: int) -> None:
    http.server.ThreadingHTTPServer(("127.0.0.1", port), FloorHandler).serve_forever()


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, path: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
        self.connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        response = self.connection.getresponse()
        return response.status, json.loads(response.read())


def open_loop(port: int, path: str, bodies: list[dict], rate: float, seconds: float, workers: int = 16):
    """Sends at a fixed rate; returns latencies (ms, from the scheduled time), errors and versions seen."""
    total = int(rate * seconds)
    start = time.perf_counter() + 0.2
    latencies, errors, versions, lock = [], [], set(), threading.Lock()
    next_index = iter(range(total))

    def worker():
        client = Client(port)
        for i in next_index:
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                status, payload = client.post(path, bodies[i % len(bodies)], {"X-Request-Key": f"k{i}"})
            except (OSError, http.client.HTTPException) as error:
                status, payload = 0, {"error": repr(error)}
                client = Client(port)
            elapsed = (time.perf_counter() - scheduled) * 1000
            with lock:
                latencies.append(elapsed)
                if status != 200:
                    errors.append(payload)
                else:
                    versions.add(payload.get("model_version"))

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return np.array(latencies), errors, versions


def send_open_loop(port: int, path: str, bodies_file: Path, rate: float, seconds: float) -> dict:
    """In the load process: requests at `rate` over CONNECTIONS keep-alive connections."""
    latencies, errors, versions = open_loop(port, path, json.loads(bodies_file.read_text()), rate, seconds, CONNECTIONS)
    return {
        "requests": len(latencies),
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "errors": len(errors),
        "versions": len(versions),
    }


if __name__ == "__main__":
    if sys.argv[1] == "floor":
        serve_floor(int(sys.argv[2]))
    else:
        port, path, bodies_file, rate, seconds = sys.argv[2:7]
        print(json.dumps(send_open_loop(int(port), path, Path(bodies_file), float(rate), float(seconds))))
