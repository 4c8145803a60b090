import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from components.common.errors import ConfigError
from components.common.spans import ShardWriter
from components.common.tfdv_io import load_schema, load_statistics
from components.statistics import logic
from components.statistics.logic import BEAM, MEMORY, compute_statistics, keep_statistics, statistics_html
from tests.support.job_servers import RUNNERS, beam_arguments
from tests.support.object_storage import s3_on_loopback
from tests.support.statistics import feature_counts


def test_memory_and_beam_paths_agree(splits, tmp_path, flights):
    schema = load_schema(flights.schema_path)
    memory = compute_statistics(splits[0], tmp_path / "memory.pb", schema, MEMORY)
    beam = compute_statistics(splits[0], tmp_path / "beam.pb", schema, BEAM, ["--runner=DirectRunner"])
    assert memory.rows == beam.rows > 2000
    assert memory.features == beam.features == 22  # key, 20 features, label
    assert feature_counts(load_statistics(tmp_path / "memory.pb")) == feature_counts(
        load_statistics(tmp_path / "beam.pb")
    )


@pytest.mark.parametrize("runner", RUNNERS)
def test_statistics_on_a_real_runner_are_those_computed_in_process(runner, request, splits, tmp_path, flights):
    """Beam on a real Flink and a real Spark: the shards read and the statistics combined by
    two of the runner's tasks, whose Python code runs in Beam's workers in this process (LOOPBACK)."""
    schema = load_schema(flights.schema_path)
    in_process = compute_statistics(splits[0], tmp_path / "local.pb", schema)
    arguments = beam_arguments(RUNNERS[runner], request.getfixturevalue(runner), "--environment_type=LOOPBACK")
    on_runner = compute_statistics(splits[0], tmp_path / f"{runner}.pb", schema, BEAM, arguments)
    assert on_runner.rows == in_process.rows > 2000 and on_runner.features == in_process.features
    assert feature_counts(load_statistics(tmp_path / f"{runner}.pb")) == feature_counts(
        load_statistics(tmp_path / "local.pb")
    )


IMAGE = "registry/ct-pipeline:0.1.0-abc-beam"


@pytest.mark.parametrize(
    "arguments, added",
    [
        ([], None),  # the DirectRunner: workers in this process
        (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], None),
        (["--runner=DataflowRunner", "--project=p", "--region=r"], f"--sdk_container_image={IMAGE}"),
        (["--runner=apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"], f"--sdk_container_image={IMAGE}"),
        (["--runner=DataflowRunner", "--sdk_container_image=theirs:1"], None),
        (["--runner=DataflowRunner", "--worker_harness_container_image=theirs:1"], None),
        (["--runner", "PortableRunner", "--job_endpoint=flink:8099"], f"--environment_config={IMAGE}"),
        (["--runner=PortableRunner", "--environment_type=DOCKER"], f"--environment_config={IMAGE}"),
        (["--runner=PortableRunner", "--environment_type=beam:env:docker:v1"], f"--environment_config={IMAGE}"),
        (["--runner=FlinkRunner", "--flink_master=flink:8081"], f"--environment_config={IMAGE}"),
        (["--runner=FlinkRunner"], None),  # a Flink of its own in this process: LOOPBACK, as Beam decides
        (["--runner=PortableRunner", "--environment_config=theirs:1"], None),
        (["--runner=PortableRunner", "--environment_option=docker_container_image=theirs:1"], None),
        (["--runner=PortableRunner", "--environment_type=EXTERNAL", "--environment_config=localhost:50000"], None),
        (["--runner=PortableRunner", "--environment_type=LOOPBACK"], None),
    ],
)
def test_runners_that_start_workers_get_the_projects_worker_image(arguments, added):
    assert logic.with_worker_image(arguments, IMAGE) == (arguments + [added] if added else arguments)


@pytest.mark.parametrize(
    "arguments, named",
    [(["--runner=NoSuchRunner"], "NoSuchRunner"), (["--runner=PortableRunner", "--environment_type=docker"], "docker")],
)
def test_options_beam_refuses_are_named(arguments, named):
    with pytest.raises(ConfigError, match=f"beam_pipeline_args: .*{named}"):
        logic.with_worker_image(arguments, IMAGE)


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
            assert a == b  # counts, histograms, quantiles
        else:  # values as frequent as each other (a key's, all once) are top values in any order
            assert [v.frequency for v in a.string_stats.top_values] == [v.frequency for v in b.string_stats.top_values]
            a.string_stats.ClearField("top_values"), a.string_stats.ClearField("rank_histogram")
            b.string_stats.ClearField("top_values"), b.string_stats.ClearField("rank_histogram")
            assert a == b  # counts, distinct values, lengths


def test_beam_workers_read_the_shards_from_object_storage_and_write_the_statistics_there(splits, tmp_path, flights):
    """Beam's multi-process DirectRunner: two worker processes read the split's shards from an
    S3 API on loopback (moto's server, the only S3 here) through Beam's own S3 file system,
    configured as a pod is (AWS config and credentials files), and write the statistics there."""
    from s3fs import S3FileSystem

    schema = load_schema(flights.schema_path)
    in_process = compute_statistics(splits[0], tmp_path / "local.pb", schema)
    with s3_on_loopback(tmp_path / "aws", ("ct-artifacts",)):
        storage = S3FileSystem()
        storage.put(f"{splits[0]}/", "ct-artifacts/run-1/train_examples", recursive=True)
        workers = ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]
        on_beam = compute_statistics(
            tmp_path / "no local copy",
            tmp_path / "beam.pb",
            schema,
            BEAM,
            workers,
            beam_data="s3://ct-artifacts/run-1/train_examples",
            beam_output="s3://ct-artifacts/run-1/train_statistics.beam-statistics",
        )
        left = storage.ls("ct-artifacts/run-1")
    assert on_beam.rows == in_process.rows and on_beam.features == in_process.features
    assert feature_counts(load_statistics(tmp_path / "beam.pb")) == feature_counts(
        load_statistics(tmp_path / "local.pb")
    )
    assert left == ["ct-artifacts/run-1/train_examples"]  # what the workers wrote is read back and removed


def test_in_process_statistics_take_what_tfdvs_dataframe_path_takes(tmp_path):
    """Against TFDV's own DataFrame path on the same rows: timestamps left out as it leaves
    them out, booleans counted, a dictionary-encoded column as its strings; an empty split
    keeps its features."""
    frame = pd.DataFrame(
        {
            "when": pd.to_datetime(["2013-01-01T10:00", None, "2013-01-02T11:00"]),
            "late": [True, False, True],
            "carrier": ["UA", "AA", None],
            "seats": [150, 200, 180],
        }
    )
    table = pa.Table.from_pandas(frame.astype({"carrier": "category"}), preserve_index=False)
    assert pa.types.is_dictionary(table.schema.field("carrier").type)
    writer = ShardWriter(tmp_path / "split", table.schema, shard_rows=2)
    writer.write(table)
    writer.close()
    result = compute_statistics(tmp_path / "split", tmp_path / "s.pb")
    assert (result.rows, result.features) == (3, 3)
    assert feature_counts(load_statistics(tmp_path / "s.pb")) == feature_counts(logic.statistics_of_dataframe(frame))
    empty = ShardWriter(tmp_path / "empty", table.schema, shard_rows=2)
    empty.close()
    assert compute_statistics(tmp_path / "empty", tmp_path / "e.pb").features == 3
