"""The project's image as Beam's Python workers for a real Flink and a real Spark
(tests/support/job_servers.py), in both ways a cluster runs them. Each worker is Beam's boot
program fetching the job's options, then Beam's Python worker. The workers read the split's
shards from an S3 API on loopback (moto's server, the only S3 here) and write the statistics
there, with no other way to reach the data.

- EXTERNAL: the job server asks Beam's worker pool, in a container of the image
  (`boot --worker_pool`, as a sidecar of a Flink TaskManager or a Spark executor runs it), to
  start the workers.
- DOCKER, Beam's default environment: the job server starts containers of the image's Beam
  worker variant itself, the image the statistics step names for such runners."""

import contextlib
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from components.common.tfdv_io import load_schema, load_statistics
from components.image import BEAM_WORKER_IMAGE, PIPELINE_IMAGE
from components.statistics.logic import BEAM, compute_statistics, with_worker_image
from tests.support.containers import require_the_image
from tests.support.job_servers import RUNNERS, beam_arguments
from tests.support.object_storage import s3_on_loopback
from tests.support.statistics import feature_counts

WORKERS = 2
WORKER_POOL_PORT = 50000  # the port `boot --worker_pool` serves on, as in a TaskManager's pod
# Workers kept between the job's tasks: by default (0) a runner lets a stage's workers go once
# no task holds them, and Spark, whose tasks end one by one, asked the pool for 21 workers of
# 19 environments for one statistics job, each a Python process importing TFDV.
KEEP_WORKERS = ["--environment_cache_millis=60000"]


@contextlib.contextmanager
def worker_pool(aws: Path) -> Iterator[tuple[str, Callable[[], str]]]:
    """A container of the image serving Beam's worker pool on the host's network, with `aws`'s
    config files as a pod's: its address and a reader of its log."""
    assert not listening(WORKER_POOL_PORT), f"port {WORKER_POOL_PORT} is taken: the pool could not serve there"
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


@contextlib.contextmanager
def split_on_s3(split: Path, aws: Path) -> Iterator[str]:
    """The split's shards at s3://ct-artifacts/run-1/train_examples; yields the S3 endpoint."""
    from s3fs import S3FileSystem

    with s3_on_loopback(aws, ("ct-artifacts",)) as endpoint:
        storage = S3FileSystem()
        storage.put(f"{split}/", "ct-artifacts/run-1/train_examples", recursive=True)
        yield endpoint
        # what the workers wrote is read back and removed
        assert storage.ls("ct-artifacts/run-1") == ["ct-artifacts/run-1/train_examples"]


def statistics_on_runner(tmp_path: Path, schema, arguments: list[str]):
    return compute_statistics(
        tmp_path / "no local copy",
        tmp_path / "runner.pb",
        schema,
        BEAM,
        arguments,
        beam_data="s3://ct-artifacts/run-1/train_examples",
        beam_output="s3://ct-artifacts/run-1/train_statistics.beam-statistics",
    )


def assert_statistics_equal(on_runner, in_process, tmp_path: Path) -> None:
    assert on_runner.rows == in_process.rows and on_runner.features == in_process.features
    assert feature_counts(load_statistics(tmp_path / "runner.pb")) == feature_counts(
        load_statistics(tmp_path / "local.pb")
    )


@pytest.mark.parametrize("runner", RUNNERS)
def test_the_runner_runs_the_statistics_in_workers_of_the_projects_image(runner, request, splits, tmp_path, flights):
    require_the_image()
    endpoint = request.getfixturevalue(runner)
    schema = load_schema(flights.schema_path)
    in_process = compute_statistics(splits[0], tmp_path / "local.pb", schema)
    with split_on_s3(splits[0], tmp_path / "aws"), worker_pool(tmp_path / "aws") as (address, log):
        external = [
            "--environment_type=EXTERNAL",
            f"--environment_config={address}",
            f"--sdk_worker_parallelism={WORKERS}",
            *KEEP_WORKERS,
        ]
        on_runner = statistics_on_runner(tmp_path, schema, beam_arguments(RUNNERS[runner], endpoint, *external))
        started = re.findall(r"Starting worker with command \['/opt/apache/beam/boot', '--id=(\d+)-\d+'", log())
    # The runner asked the pool for WORKERS workers of one environment and kept them for the job.
    assert len(started) == WORKERS and len(set(started)) == 1
    assert_statistics_equal(on_runner, in_process, tmp_path)


@pytest.mark.parametrize("runner", RUNNERS)
def test_the_runner_starts_the_projects_worker_image_where_the_options_name_none(
    runner, request, splits, tmp_path, flights
):
    """The runner's containers get nothing but Beam's options, so S3's settings are Beam's options."""
    require_the_image(BEAM_WORKER_IMAGE)
    endpoint = request.getfixturevalue(runner)
    schema = load_schema(flights.schema_path)
    in_process = compute_statistics(splits[0], tmp_path / "local.pb", schema)
    with split_on_s3(splits[0], tmp_path / "aws") as s3_endpoint:
        s3 = [
            f"--s3_endpoint_url={s3_endpoint}",
            "--s3_access_key_id=test",
            "--s3_secret_access_key=test",
            "--s3_region_name=us-east-1",
        ]
        arguments = with_worker_image(
            beam_arguments(RUNNERS[runner], endpoint, *s3, *KEEP_WORKERS, "--retain_docker_containers"),
            BEAM_WORKER_IMAGE,
        )
        assert arguments[-1] == f"--environment_config={BEAM_WORKER_IMAGE}"
        try:
            on_runner = statistics_on_runner(tmp_path, schema, arguments)
        finally:
            workers = docker("ps", "--all", "--quiet", f"--filter=ancestor={BEAM_WORKER_IMAGE}").split()
            if workers:
                docker("rm", "--force", *workers)
    assert workers  # the job server started them, and kept them for this count
    assert_statistics_equal(on_runner, in_process, tmp_path)


def docker(*arguments: str) -> str:
    return subprocess.run(["docker", *arguments], capture_output=True, text=True, check=True).stdout
