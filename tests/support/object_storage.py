"""Object storage on loopback (no cloud is reachable here): an S3 API (moto's server),
configured as a cluster pod is, by an AWS config file naming the endpoint and a credentials
file; and a Cloud Storage JSON API (fake-gcs-server, built by scripts/gcs.sh), reached as
Google's clients reach an emulator, by `STORAGE_EMULATOR_HOST`."""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from pipelines.demo.serving_process import free_port
from tests.support.processes import logged_process

GCS_EMULATOR = Path(__file__).resolve().parents[2] / ".cache" / "gcs" / "fake-gcs-server"
START_SECONDS = 30


@contextlib.contextmanager
def s3_on_loopback(folder: Path, buckets: tuple[str, ...]) -> Iterator[str]:
    """Starts the server, points AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE at files under
    `folder` (boto3, s3fs and Beam's S3 file system all read them), makes `buckets`, and yields
    the endpoint's URL."""
    import boto3
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        # moto keeps its buckets in this process, across servers: each use starts with none
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).close()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config").write_text(f"[default]\nendpoint_url = {endpoint}\nregion = us-east-1\n")
        (folder / "credentials").write_text("[default]\naws_access_key_id = test\naws_secret_access_key = test\n")
        S3FileSystem.clear_instance_cache()  # fsspec keeps file systems, and their endpoints, across modules
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AWS_CONFIG_FILE", str(folder / "config"))
            patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "credentials"))
            # A new session: boto3's default one keeps the endpoint of an earlier server.
            client = boto3.session.Session().client("s3")
            for bucket in buckets:
                client.create_bucket(Bucket=bucket)
            yield endpoint
    finally:
        server.stop()


@contextlib.contextmanager
def gcs_on_loopback(folder: Path, buckets: tuple[str, ...]) -> Iterator[str]:
    """Starts fake-gcs-server (objects in memory, its log in `folder`), points
    STORAGE_EMULATOR_HOST at it (gcsfs and Google's storage client both read it), makes
    `buckets` through its JSON API, and yields the endpoint's URL. Skips (in CI, fails) where
    scripts/gcs.sh has not built it."""
    from gcsfs import GCSFileSystem

    if not GCS_EMULATOR.exists():
        message = f"no {GCS_EMULATOR.name} in {GCS_EMULATOR.parent} (bash scripts/gcs.sh)"
        (pytest.fail if os.environ.get("CI") else pytest.skip)(message)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    folder.mkdir(parents=True, exist_ok=True)
    command = [GCS_EMULATOR, "-scheme", "http", "-host", "127.0.0.1", "-port", port, "-backend", "memory"]
    with logged_process(folder / "fake-gcs-server.log", *command, "-public-host", f"127.0.0.1:{port}") as server:
        _wait_for(endpoint, server)
        for bucket in buckets:
            request = urllib.request.Request(
                f"{endpoint}/storage/v1/b?project=test",
                data=json.dumps({"name": bucket}).encode(),
                headers={"Content-Type": "application/json"},
            )
            urllib.request.urlopen(request, timeout=10).close()
        GCSFileSystem.clear_instance_cache()  # fsspec keeps file systems, and their endpoints, across modules
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("STORAGE_EMULATOR_HOST", endpoint)
            yield endpoint
        GCSFileSystem.clear_instance_cache()


def _wait_for(endpoint: str, server) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/storage/v1/b", timeout=1).close()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fake-gcs-server did not start at {endpoint}") from None
            time.sleep(0.05)


@contextlib.contextmanager
def bucket_on_loopback(scheme: str, folder: Path, buckets: tuple[str, ...]):
    """`buckets` on loopback in `s3` (moto) or `gs` (fake-gcs-server) object storage, as above;
    yields fsspec's file system of that storage."""
    if scheme == "s3":
        from s3fs import S3FileSystem

        with s3_on_loopback(folder, buckets):
            yield S3FileSystem()
    else:
        from gcsfs import GCSFileSystem

        with gcs_on_loopback(folder, buckets):
            yield GCSFileSystem()
