"""`ct serve --workers N` (serving/workers.py): the workers answer on one port as one service,
their metrics add up, a worker killed is started again, a stop loses nothing acknowledged, and
a worker that cannot start stops the service with its error."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import tritonclient.grpc as triton

from components.common.home import Home
from components.common.metadata import MetadataStore
from pipelines.demo.serving_process import free_ports, launch_serving, start_serving
from serving.request_log import read_log
from tests.support.serving_helpers import MODEL, call, metrics_text, publish, wait_for

WORKERS = 2
OPTIONS = ["--workers", str(WORKERS), "--poll-seconds", "0.1", "--request-log-flush-seconds", "0.1"]


def _workers(process: subprocess.Popen) -> list[int]:
    """The supervisor's children: its workers' pids."""
    return [int(pid) for pid in Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]


def _listening(output: Path) -> int:
    """How many times a worker said it listens (each start of one, restarts included)."""
    return output.read_text().count("; worker ")


def _requests_total(server) -> int:
    return sum(
        int(line.rsplit(" ", 1)[1])
        for line in metrics_text(server).splitlines()
        if line.startswith("ct_requests_total{")
    )


def _predict(server, rows) -> list[str]:
    """One request per row, eight at once, each on a connection of its own; the request ids."""

    def one(row):
        status, payload = call(server, f"/v1/models/{MODEL}:predict", {"instances": [row]})
        assert status == 200, payload
        return payload["request_ids"][0]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, rows))


def _writers(home: Home) -> set[str]:
    """The pids in the request log's file names (part-<time>-<host>-<pid>-<writer>-<n>.parquet)."""
    return {path.name.split("-")[-3] for path in home.request_log.glob("part-*.parquet")}


def test_workers_serve_one_port_as_one_service_and_a_killed_one_is_started_again(tmp_path, trained_model, rows):
    home = Home(tmp_path / "home").create()
    publish(home.model_repository, trained_model, 1, MetadataStore(home.metadata_connection))
    port, grpc_port = free_ports(2)
    output = tmp_path / "serve.log"
    with output.open("w") as sink:
        process = start_serving(home.root, port, OPTIONS, sink, "/v2/health/ready", grpc_port=grpc_port)
    server = SimpleNamespace(url=f"http://127.0.0.1:{port}")
    try:
        assert wait_for(lambda: _listening(output) == WORKERS, 60), output.read_text()
        first = _workers(process)
        ids: list[str] = []
        for start in range(0, 400, 40):  # until both workers have answered: the kernel picks who accepts
            ids.extend(_predict(server, rows[start : start + 40]))
            assert wait_for(lambda: len(read_log(home.request_log)) == len(ids), 10)
            if len(_writers(home)) == WORKERS:
                break
        assert triton.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_model_ready(MODEL)  # gRPC's port is shared
        assert len(_writers(home)) == WORKERS  # both workers answered
        assert wait_for(lambda: _requests_total(server) == len(ids), 10)  # every worker's, whichever is asked

        os.kill(first[0], signal.SIGKILL)
        ids += _predict(server, rows[:20])  # the other worker answers meanwhile
        assert wait_for(lambda: _listening(output) == WORKERS + 1, 60), output.read_text()
        assert len(set(_workers(process)) - set(first)) == 1
        assert "was killed by signal 9; starting it again" in output.read_text()
        assert wait_for(lambda: _requests_total(server) == len(ids), 10)  # the killed worker's counts stay

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
    assert set(ids) <= set(read_log(home.request_log).request_id)
    with socket.create_server(("127.0.0.1", port)):  # no worker is left holding the port
        pass


def _live(connection: socket.socket) -> int:
    """The status of a keep-alive liveness request on `connection`, which stays open."""
    connection.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: ct\r\n\r\n")
    received = b""
    while b"\r\n\r\n" not in received or not received.endswith(b"}"):
        chunk = connection.recv(4096)
        assert chunk, received  # closed: the server refused the connection
        received += chunk
    return int(received.split()[1])


def test_a_connection_goes_to_a_worker_with_room_and_a_503_means_all_are_full(tmp_path, trained_model):
    home = Home(tmp_path / "home").create()
    publish(home.model_repository, trained_model, 1, MetadataStore(home.metadata_connection))
    [port] = free_ports(1)
    limit = 3
    output = tmp_path / "serve.log"
    with output.open("w") as sink:
        process = start_serving(home.root, port, [*OPTIONS, "--max-connections", str(limit)], sink)
    connections: list[socket.socket] = []
    try:
        assert wait_for(lambda: _listening(output) == WORKERS, 60), output.read_text()
        # Every worker is woken by each connection and the kernel lets any take it: without the
        # hand-over, a full worker would take one about half the time while the other had room.
        for _ in range(WORKERS * limit):
            connections.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            assert _live(connections[-1]) == 200
        with socket.create_connection(("127.0.0.1", port), timeout=10) as refused:
            refused.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: ct\r\n\r\n")
            answer = refused.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503") and answer.endswith(b'{"error": "too many connections open"}')
    finally:
        for connection in connections:
            connection.close()
        process.kill()


def test_a_worker_killed_before_it_serves_stops_the_service(tmp_path, trained_model):
    home = Home(tmp_path / "home").create()
    publish(home.model_repository, trained_model, 1, MetadataStore(home.metadata_connection))
    [port] = free_ports(1)
    output = tmp_path / "serve.log"
    with output.open("w") as sink:
        process = launch_serving(home.root, port, OPTIONS, sink)
    try:
        assert wait_for(lambda: len(_workers(process)) == WORKERS, 30)
        os.kill(_workers(process)[0], signal.SIGKILL)  # while it imports: a worker that cannot start
        assert process.wait(timeout=60) == 1  # not started again and again
    finally:
        process.kill()
    assert "was killed by signal 9 before it served; stopping the others" in output.read_text()


def _ct_serve(home: Path, port: int, grpc_port: int) -> tuple[int, str]:
    """`ct serve` with the workers, run to its end: its exit status and what it printed."""
    process = launch_serving(home, port, OPTIONS, subprocess.PIPE, grpc_port)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output.decode()


def test_a_worker_that_cannot_start_stops_the_service_with_its_error(tmp_path):
    home = Home(tmp_path / "home").create()
    home.serving_token.write_text("a-token-long-enough-for-the-service-0123456789")
    home.serving_token.chmod(0o644)
    [port] = free_ports(1)
    status, output = _ct_serve(home.root, port, 0)
    assert status == 1
    assert f"ct serve: {home.serving_token}: the serving token is readable by others" in output
    with socket.create_server(("127.0.0.1", port)):  # nothing is left holding the port
        pass


def test_ports_in_use_are_named_before_any_worker_starts(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        [free] = free_ports(1)
        in_use = taken.getsockname()[1]
        http = _ct_serve(tmp_path / "home", in_use, 0)
        grpc = _ct_serve(tmp_path / "home", free, in_use)
    assert http == (1, f"ct serve: cannot listen on 127.0.0.1:{in_use}: Address already in use\n")
    assert grpc == (1, f"ct serve: cannot listen for gRPC on 127.0.0.1:{in_use}: Address already in use\n")
    assert not (tmp_path / "home").exists()  # refused before a worker made the home
