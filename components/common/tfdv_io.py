"""TFDV's files: schemas as text protos, statistics as binary protos."""

from __future__ import annotations

from pathlib import Path

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2


def load_schema(path: Path) -> schema_pb2.Schema:
    return tfdv.load_schema_text(str(path))


def load_statistics(path: Path) -> statistics_pb2.DatasetFeatureStatisticsList:
    return tfdv.load_stats_binary(str(path))
