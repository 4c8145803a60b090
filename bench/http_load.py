"""The bench's light processes: the floor server and the open-loop load (standard library and
numpy only, so each starts in a fraction of a second), and the open loop itself, which
bench/serving_load.py runs in its own process. Used by bench/serving_floor.py.

The open loop is one thread on a `select` loop over its connections, its requests encoded
before it starts: the load shares the servers' two cores, so the less it spends a request
(about 0.1 ms of CPU, against 0.2 for a thread a connection with `http.client`), the more of
each server is measured and the less of the load.

    python bench/http_load.py floor PORT
    python bench/http_load.py load PORT PATH BODIES.json RATE SECONDS   # prints p50, p99, errors, versions seen
"""

from __future__ import annotations

import collections
import http.client
import http.server
import json
import re
import selectors
import socket
import sys
import time
from pathlib import Path

import numpy as np

CONNECTIONS = 16
TIMEOUT_SECONDS = 30  # a connection's wait for an answer
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)")


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
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_SECONDS)

    def post(self, path: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
        self.connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
        response = self.connection.getresponse()
        return response.status, json.loads(response.read())


class _Connection:
    """One keep-alive connection of the open loop, opened at its first request: a request
    sent, its response read as it comes."""

    def __init__(self, port: int):
        self.port = port
        self.socket: socket.socket | None = None
        self.received = b""
        self.scheduled = 0.0

    def send(self, request: bytes, scheduled: float) -> None:
        self.received, self.scheduled = b"", scheduled
        if self.socket is None:
            self.socket = socket.create_connection(("127.0.0.1", self.port), timeout=TIMEOUT_SECONDS)
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket.sendall(request)

    def response(self) -> tuple[int, bytes, bool] | None:
        """Reads what arrived: the status, the body and whether the server keeps the
        connection, once the whole response is here; None before."""
        data = self.socket.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.received += data
        head, separator, body = self.received.partition(b"\r\n\r\n")
        if not separator:
            return None
        headers = head.lower()
        length = _CONTENT_LENGTH.search(headers)
        if length is None:
            raise ConnectionError(f"a response without Content-Length: {head[:200]!r}")
        if len(body) < int(length.group(1)):
            return None
        if len(body) > int(length.group(1)):
            raise ConnectionError(f"{len(body)} bytes after the head, {length.group(1)} announced")
        return int(head[9:12]), body, b"\r\nconnection: close" not in headers

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None


def open_loop(port: int, path: str, bodies: list[dict], rate: float, seconds: float, connections: int = CONNECTIONS):
    """Sends at a fixed rate over `connections` keep-alive connections, one request at a time
    each, from one thread (requests prepared beforehand, responses parsed only as far as
    their status, length and version, so the load costs the servers' cores as little as it
    can); returns latencies (ms, from the scheduled time), errors and versions seen.

    A request due while every connection waits for a response waits for the first free one,
    its latency counted from its scheduled time still. A failed connection counts its
    request as an error and is opened anew for the next."""
    total = int(rate * seconds)
    encoded = [json.dumps(body).encode() for body in bodies]
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
    requests = [
        f"{head}X-Request-Key: k{i}\r\nContent-Length: {len(encoded[i % len(encoded)])}\r\n\r\n".encode()
        + encoded[i % len(encoded)]
        for i in range(total)
    ]
    latencies, errors, versions = [], [], set()
    selector = selectors.SelectSelector()  # select(2): its timeout in microseconds, epoll's in milliseconds
    idle = collections.deque(_Connection(port) for _ in range(connections))
    start = time.perf_counter() + 0.2

    def finished(connection: _Connection, answer: tuple[int, bytes, bool] | OSError | ValueError) -> None:
        latencies.append((time.perf_counter() - connection.scheduled) * 1000)
        if connection.socket is not None and connection.socket in selector.get_map():
            selector.unregister(connection.socket)
        if isinstance(answer, Exception):
            errors.append(repr(answer))
            connection.close()
        else:
            status, payload, keep = answer
            if status != 200:
                errors.append(payload)
            else:
                try:
                    versions.add(json.loads(payload).get("model_version"))
                except ValueError as error:
                    errors.append(f"an answer that is not JSON: {error!r}")
            if not keep:
                connection.close()
        idle.append(connection)

    sent = 0
    while sent < total or len(idle) < connections:
        now = time.perf_counter()
        while sent < total and idle and start + sent / rate <= now:
            connection = idle.popleft()
            try:
                connection.send(requests[sent], start + sent / rate)
                selector.register(connection.socket, selectors.EVENT_READ, connection)
            except OSError as error:
                finished(connection, error)
            sent += 1
        wait = max(0.0, start + sent / rate - now) if sent < total and idle else TIMEOUT_SECONDS
        ready = selector.select(wait)
        for key, _ in ready:
            try:
                answer = key.data.response()
            except (OSError, ValueError) as error:
                answer = error
            if answer is not None:
                finished(key.data, answer)
        if not ready and wait == TIMEOUT_SECONDS:
            for key in list(selector.get_map().values()):
                finished(key.data, TimeoutError(f"no response in {TIMEOUT_SECONDS} s"))
    for connection in idle:
        connection.close()
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
