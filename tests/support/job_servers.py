"""Apache Flink and Apache Spark running Beam pipelines: Beam's job server for each, from Maven
Central's jars (scripts/job_servers.sh copies them into .cache/<runner>), over a cluster in the
job server's JVM: Flink's `--flink-master [local]` (a JobManager and TaskManager slots, Flink's
own scheduler and network shuffle) and Spark's `local[2]` master (a driver and two executor
threads, Spark's own scheduler and shuffle).

Each runs the pipeline's Python code in Beam SDK workers, which the job server asks a worker
pool to start: the test's own process (`--environment_type=LOOPBACK`) or a container of the
project's image running Beam's worker pool (`EXTERNAL`), as a sidecar does on a cluster, or
starts containers of the image itself (`DOCKER`). Where Java or the jars are missing, these
tests are skipped, except in CI, whose test command fetches the jars first (scripts/test.sh):
there they fail.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from pipelines.demo.serving_process import free_ports
from tests.support.processes import logged_process

CACHE = Path(__file__).resolve().parents[2] / ".cache"
START_SECONDS = 60
TASKS = 2  # parallel tasks of each stage: Flink's task slots, Spark's executor threads
# The JVM options Spark's own launcher adds on Java 17 (Spark's JavaModuleOptions), which a
# job server started with plain `java` must add itself.
SPARK_ON_JAVA_17 = [
    "-XX:+IgnoreUnrecognizedVMOptions",
    *(
        f"--add-opens=java.base/{package}=ALL-UNNAMED"
        for package in (
            "java.lang",
            "java.lang.invoke",
            "java.lang.reflect",
            "java.io",
            "java.net",
            "java.nio",
            "java.util",
            "java.util.concurrent",
            "java.util.concurrent.atomic",
            "jdk.internal.ref",
            "sun.nio.ch",
            "sun.nio.cs",
            "sun.security.action",
            "sun.util.calendar",
        )
    ),
    "-Djdk.reflect.useDirectMethodHandle=false",
]


class Runner(NamedTuple):
    """How to start a runner's job server and what a pipeline on it is told."""

    name: str
    jar: str  # the runner's jar, as a glob in .cache/<name>
    jvm_options: list[str]
    driver: str
    cluster: list[str]  # the job server's arguments that make the cluster in its JVM
    pipeline: list[str]  # Beam options of a pipeline on it

    @property
    def jars(self) -> Path:
        return CACHE / self.name


FLINK = Runner(
    "flink",
    "beam-runners-flink-*.jar",
    [],
    "org.apache.beam.runners.flink.FlinkJobServerDriver",
    ["--flink-master=[local]"],
    [f"--parallelism={TASKS}"],
)
SPARK = Runner(
    "spark",
    "beam-runners-spark-3-*.jar",
    SPARK_ON_JAVA_17,
    "org.apache.beam.runners.spark.SparkJobServerDriver",
    [f"--spark-master-url=local[{TASKS}]"],
    [],
)
RUNNERS = {runner.name: runner for runner in (FLINK, SPARK)}


def require_job_server(runner: Runner) -> None:
    """Skips (or, in CI, fails) the calling test unless Java and the runner's jars are here."""
    missing = (
        "no java on PATH"
        if shutil.which("java") is None
        else f"no {runner.name} job server in {runner.jars} (bash scripts/job_servers.sh)"
        if not any(runner.jars.glob(runner.jar))
        else ""
    )
    if missing:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(missing)


@contextlib.contextmanager
def job_server(runner: Runner, log: Path) -> Iterator[str]:
    """Starts the runner's job server (its output into `log`) and yields its job endpoint, `host:port`."""
    require_job_server(runner)
    job_port, artifact_port = free_ports(2)
    command = [
        "java",
        *runner.jvm_options,
        "-cp",
        f"{runner.jars}/*",
        runner.driver,
        f"--job-port={job_port}",
        f"--artifact-port={artifact_port}",
        "--expansion-port=0",
        *runner.cluster,
    ]
    with logged_process(log, *command) as server:
        _wait_for_port(job_port, server, log, runner)
        yield f"localhost:{job_port}"


def beam_arguments(runner: Runner, job_endpoint: str, *options: str) -> list[str]:
    """Beam's options for a pipeline on that runner's job server, followed by `options` (where
    the Python workers run, for one)."""
    return ["--runner=PortableRunner", f"--job_endpoint={job_endpoint}", *runner.pipeline, *options]


def _wait_for_port(port: int, server: subprocess.Popen, log: Path, runner: Runner) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"{runner.name}'s job server exited with {server.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{runner.name}'s job server did not listen on {port} in {START_SECONDS} s: see {log}")
