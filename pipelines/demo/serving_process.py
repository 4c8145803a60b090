"""`ct serve` as a child process on a free loopback port, for the demo and the benchmarks."""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Sequence

from components.common.process_lifetime import die_with_parent


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open while chosen, so none repeats)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_serving(
    home: Path,
    port: int,
    options: Sequence[str] = (),
    output: IO | int = subprocess.DEVNULL,
    wait_for: str = "/v2/health/live",
    timeout: float = 120,
    grpc_port: int = 0,
) -> subprocess.Popen:
    """Starts `ct serve` and returns once `wait_for` answers 200 (`/v2/health/ready`: a model is loaded).

    `grpc_port`: also serve gRPC there; 0 (not `ct serve`'s 8500, which two at once would share): none.

    Raises:
        RuntimeError: the service exited, or did not answer in time (it is stopped then).
    """
    process = launch_serving(home, port, options, output, grpc_port)
    wait_for_serving(process, port, wait_for, timeout)
    return process


def launch_serving(
    home: Path, port: int, options: Sequence[str] = (), output: IO | int = subprocess.DEVNULL, grpc_port: int = 0
) -> subprocess.Popen:
    """Starts `ct serve` and returns at once, while it imports and loads (see `wait_for_serving`)."""
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--home", str(home), "--port", str(port)]
    return subprocess.Popen(
        [*command, "--grpc-port", str(grpc_port), *options],
        stdout=output,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,  # a demo or test killed leaves no service behind
    )


def wait_for_serving(
    process: subprocess.Popen, port: int, wait_for: str = "/v2/health/live", timeout: float = 120
) -> None:
    """Returns once the launched service answers 200 on `wait_for`.

    Raises:
        RuntimeError: the service exited, or did not answer in time (it is stopped then).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ct serve exited with code {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", wait_for)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    process.terminate()
    process.wait()
    raise RuntimeError(f"ct serve did not answer {wait_for} within {timeout:g} s")
