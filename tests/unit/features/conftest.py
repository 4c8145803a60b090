"""Fixtures of the feature store's tests: a local S3 API."""

from __future__ import annotations

import pytest

from features.sources import write_sources
from tests.support.object_storage import s3_on_loopback


@pytest.fixture(scope="module")
def object_storage(tmp_path_factory):
    """The feature tables of 2013 in a bucket of an S3 API on loopback."""
    with s3_on_loopback(tmp_path_factory.mktemp("aws"), ("ct-features",)):
        write_sources("s3://ct-features/2013")
        yield "s3://ct-features/2013"
