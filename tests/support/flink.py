"""Apache Flink running Beam pipelines: Beam's Flink job server over a Flink cluster in one JVM
(`--flink-master [local]`: a JobManager and TaskManager slots, Flink's own scheduler and
network shuffle), from Maven Central's jars (scripts/flink.sh copies them into .cache/flink).

Flink runs the pipeline's Python code in Beam SDK workers, which the job server asks a worker
pool to start: the test's own process (`--environment_type=LOOPBACK`) or a container of the
project's image running Beam's worker pool (`EXTERNAL`), as a Flink TaskManager's sidecar does
on a cluster. Where Java or the jars are missing, these tests are skipped, except in CI, whose
test command fetches the jars first (scripts/test.sh): there they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from pipelines.demo.serving_process import free_ports
from tests.support.processes import logged_process

JARS = Path(__file__).resolve().parents[2] / ".cache" / "flink"
START_SECONDS = 60


def require_flink() -> None:
    """Skips (or, in CI, fails) the calling test unless Java and the job server's jars are here."""
    missing = (
        "no java on PATH"
        if shutil.which("java") is None
        else f"no Flink job server in {JARS} (bash scripts/flink.sh)"
        if not any(JARS.glob("beam-runners-flink-*.jar"))
        else ""
    )
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(missing)


@contextlib.contextmanager
def flink_job_server(log: Path) -> Iterator[str]:
    """Starts the job server (its output into `log`) and yields its job endpoint, `host:port`."""
    require_flink()
    job_port, artifact_port = free_ports(2)
    command = [
        "java",
        "-cp",
        f"{JARS}/*",
        "org.apache.beam.runners.flink.FlinkJobServerDriver",
        f"--job-port={job_port}",
        f"--artifact-port={artifact_port}",
        "--expansion-port=0",
        "--flink-master=[local]",
    ]
    with logged_process(log, *command) as server:
        _wait_for_port(job_port, server, log)
        yield f"localhost:{job_port}"


def flink_arguments(job_endpoint: str, *options: str, parallelism: int = 2) -> list[str]:
    """Beam's options for a pipeline on that job server, where Flink runs each stage in
    `parallelism` tasks, followed by `options` (where the Python workers run, for one)."""
    return ["--runner=PortableRunner", f"--job_endpoint={job_endpoint}", f"--parallelism={parallelism}", *options]


def _wait_for_port(port: int, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"Flink's job server exited with {server.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"Flink's job server did not listen on {port} in {START_SECONDS} s: see {log}")
