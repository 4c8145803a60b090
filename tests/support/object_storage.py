"""An S3 API on loopback (moto's server: no cloud is reachable here), configured as a cluster
pod is: an AWS config file naming the endpoint, a credentials file."""

from __future__ import annotations

import contextlib
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest


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
