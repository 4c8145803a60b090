import pyarrow.parquet as pq
import pytest

from components.common.spans import ShardWriter
from components.common.tfdv_io import load_schema, load_statistics
from components.statistics import logic
from components.statistics.logic import BEAM, MEMORY, compute_statistics, keep_statistics, statistics_html


def feature_counts(statistics):
    counts = {}
    for feature in statistics.datasets[0].features:
        common = feature.num_stats.common_stats if feature.HasField("num_stats") else feature.string_stats.common_stats
        counts[feature.path.step[0]] = (common.num_non_missing, common.num_missing)
    return counts


def test_memory_and_beam_paths_agree(splits, tmp_path, flights):
    schema = load_schema(flights.schema_path)
    memory = compute_statistics(splits[0], tmp_path / "memory.pb", schema, MEMORY)
    beam = compute_statistics(splits[0], tmp_path / "beam.pb", schema, BEAM, ["--runner=DirectRunner"])
    assert memory.rows == beam.rows > 2000
    assert memory.features == beam.features == 22  # key, 20 features, label
    assert feature_counts(load_statistics(tmp_path / "memory.pb")) == feature_counts(
        load_statistics(tmp_path / "beam.pb")
    )


def test_integer_categoricals_get_value_counts_from_the_schema(splits, tmp_path, flights):
    compute_statistics(splits[0], tmp_path / "s.pb", load_schema(flights.schema_path))
    hour = next(
        f for f in load_statistics(tmp_path / "s.pb").datasets[0].features if f.path.step[0] == "sched_dep_hour"
    )
    assert hour.HasField("string_stats") and len(hour.string_stats.top_values) > 10


def test_html_view_shows_both_splits(splits, tmp_path):
    compute_statistics(splits[0], tmp_path / "train.pb")
    compute_statistics(splits[1], tmp_path / "eval.pb")
    html = statistics_html(load_statistics(tmp_path / "train.pb"), load_statistics(tmp_path / "eval.pb"))
    assert html.count("<facets-overview proto-input=") == 1


def test_unknown_engine_is_rejected(splits, tmp_path):
    with pytest.raises(ValueError, match="statistics_engine='spark'"):
        compute_statistics(splits[0], tmp_path / "s.pb", engine="spark")


def test_statistics_are_kept_on_the_home_volume_whole(splits, tmp_path):
    compute_statistics(splits[0], tmp_path / "train.pb")
    kept = keep_statistics(tmp_path / "train.pb", tmp_path / "home" / "statistics", "flights", "run-1", "train")
    assert kept == tmp_path / "home" / "statistics" / "flights" / "run-1" / "train.pb"
    assert kept.read_bytes() == (tmp_path / "train.pb").read_bytes()
    assert [p.name for p in kept.parent.iterdir()] == ["train.pb"]  # no partial file left behind


def test_in_process_statistics_over_shards_and_batches_are_those_of_one_batch(splits, tmp_path, flights, monkeypatch):
    schema = load_schema(flights.schema_path)
    whole = compute_statistics(splits[0], tmp_path / "whole.pb", schema)
    table = pq.read_table(splits[0])
    writer = ShardWriter(tmp_path / "shards", table.schema, shard_rows=700)
    writer.write(table)
    writer.close()
    monkeypatch.setattr(logic, "BATCH_ROWS", 300)
    assert compute_statistics(tmp_path / "shards", tmp_path / "batched.pb", schema) == whole
    one, batched = (load_statistics(tmp_path / name).datasets[0] for name in ("whole.pb", "batched.pb"))
    assert len(list((tmp_path / "shards").iterdir())) == -(-whole.rows // 700) > 2
    for a, b in zip(one.features, batched.features, strict=True):
        if a.HasField("num_stats"):  # sums in another order: equal up to round-off
            assert b.num_stats.mean == pytest.approx(a.num_stats.mean, rel=1e-12)
            assert b.num_stats.std_dev == pytest.approx(a.num_stats.std_dev, rel=1e-12)
            a.num_stats.ClearField("mean"), a.num_stats.ClearField("std_dev")
            b.num_stats.ClearField("mean"), b.num_stats.ClearField("std_dev")
        assert a == b  # counts, histograms, quantiles, top values
