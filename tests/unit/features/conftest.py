"""Fixtures of the feature store's tests: object storage on loopback."""

from __future__ import annotations

import pytest

from features.sources import write_sources
from tests.support.object_storage import bucket_on_loopback


@pytest.fixture(scope="module", params=["s3", "gs"])
def object_storage(request, tmp_path_factory):
    """The feature tables of 2013 in a bucket on loopback, `<scheme>://ct-features/2013`: S3
    (moto's server) or Cloud Storage (fake-gcs-server)."""
    with bucket_on_loopback(request.param, tmp_path_factory.mktemp("object-storage"), ("ct-features",)):
        write_sources(f"{request.param}://ct-features/2013")
        yield f"{request.param}://ct-features/2013"
