"""Fixtures of the feature store's tests: a local S3 API."""

from __future__ import annotations

import pytest

from features.sources import (
    write_sources,
)


@pytest.fixture(scope="module")
def object_storage(tmp_path_factory):
    """A local S3 API (moto's server on loopback: no cloud is reachable here), configured as a
    cluster pod is: an AWS config file naming the endpoint, a credentials file."""
    import boto3
    from moto.server import ThreadedMotoServer
    from s3fs import S3FileSystem

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    folder = tmp_path_factory.mktemp("aws")
    (folder / "config").write_text(f"[default]\nendpoint_url = http://{host}:{port}\nregion = us-east-1\n")
    (folder / "credentials").write_text("[default]\naws_access_key_id = test\naws_secret_access_key = test\n")
    S3FileSystem.clear_instance_cache()  # fsspec keeps file systems, and their endpoints, across modules
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_CONFIG_FILE", str(folder / "config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(folder / "credentials"))
        # A new session: boto3's default one keeps the endpoint of the first module's server.
        boto3.session.Session().client("s3").create_bucket(Bucket="ct-features")
        write_sources("s3://ct-features/2013")
        yield "s3://ct-features/2013"
    server.stop()
