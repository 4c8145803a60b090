"""What the statistics tests compare between two computations of TFDV statistics."""

from __future__ import annotations

from tensorflow_metadata.proto.v0 import statistics_pb2


def feature_counts(statistics: statistics_pb2.DatasetFeatureStatisticsList) -> dict[str, tuple[int, int]]:
    """Each feature's count of present and of missing values."""
    counts = {}
    for feature in statistics.datasets[0].features:
        common = feature.num_stats.common_stats if feature.HasField("num_stats") else feature.string_stats.common_stats
        counts[feature.path.step[0]] = (common.num_non_missing, common.num_missing)
    return counts
