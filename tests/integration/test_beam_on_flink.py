"""The project's image as Beam's Python workers for a real Flink, as on a cluster: Flink's job
server (tests/support/flink.py) asks the worker pool in a container of the image (Beam's boot
program as `boot --worker_pool`, the command a Flink TaskManager's sidecar runs) to start SDK
workers; each is Beam's boot fetching the job's options, then Beam's Python worker. They read
the split's shards from an S3 API on loopback (moto's server, the only S3 here) and write the
statistics there, with no other way to reach the data."""

import contextlib
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

from components.common.tfdv_io import load_schema, load_statistics
from components.image import PIPELINE_IMAGE
from components.statistics.logic import BEAM, compute_statistics
from tests.support.containers import require_the_image
from tests.support.flink import flink_arguments
from tests.support.object_storage import s3_on_loopback
from tests.unit.components.statistics.test_logic import feature_counts

WORKERS = 2
WORKER_POOL_PORT = 50000  # the port `boot --worker_pool` serves on, as in a TaskManager's pod


@contextlib.contextmanager
def worker_pool(aws: Path) -> Iterator[tuple[str, Callable[[], str]]]:
    """A container of the image serving Beam's worker pool on the host's network, with `aws`'s
    config files as a pod's: its address and a reader of its log."""
    container = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--network=host",
            "--read-only",
            "--tmpfs=/tmp",
            f"--volume={aws}:/aws:ro",
            "--env=AWS_CONFIG_FILE=/aws/config",
            "--env=AWS_SHARED_CREDENTIALS_FILE=/aws/credentials",
            "--entrypoint=/opt/apache/beam/boot",
            PIPELINE_IMAGE,
            "--worker_pool",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    def log() -> str:
        return subprocess.run(["docker", "logs", container], capture_output=True, text=True).stderr

    try:
        deadline = time.monotonic() + 60
        while not listening(WORKER_POOL_PORT):
            assert time.monotonic() < deadline, f"the worker pool did not start: {log()}"
            time.sleep(0.2)
        yield f"localhost:{WORKER_POOL_PORT}", log
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True)


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def test_flink_runs_the_statistics_in_workers_of_the_projects_image(splits, tmp_path, flights, flink):
    require_the_image()
    from s3fs import S3FileSystem

    schema = load_schema(flights.schema_path)
    in_process = compute_statistics(splits[0], tmp_path / "local.pb", schema)
    with s3_on_loopback(tmp_path / "aws", ("ct-artifacts",)):
        storage = S3FileSystem()
        storage.put(f"{splits[0]}/", "ct-artifacts/run-1/train_examples", recursive=True)
        with worker_pool(tmp_path / "aws") as (address, log):
            on_flink = compute_statistics(
                tmp_path / "no local copy",
                tmp_path / "flink.pb",
                schema,
                BEAM,
                flink_arguments(
                    flink,
                    "--environment_type=EXTERNAL",
                    f"--environment_config={address}",
                    f"--sdk_worker_parallelism={WORKERS}",
                ),
                beam_data="s3://ct-artifacts/run-1/train_examples",
                beam_output="s3://ct-artifacts/run-1/train_statistics.beam-statistics",
            )
            started = re.findall(r"Starting worker with command \['/opt/apache/beam/boot', '--id=(\d+)-(\d+)'", log())
        left = storage.ls("ct-artifacts/run-1")
    # Flink asked the pool for the workers of each stage's environment: WORKERS boots each.
    environments = {environment for environment, _ in started}
    assert environments and sorted(started) == sorted((e, str(i)) for e in environments for i in range(1, WORKERS + 1))
    assert on_flink.rows == in_process.rows and on_flink.features == in_process.features
    assert feature_counts(load_statistics(tmp_path / "flink.pb")) == feature_counts(
        load_statistics(tmp_path / "local.pb")
    )
    assert left == ["ct-artifacts/run-1/train_examples"]  # what the workers wrote is read back and removed
