import dataclasses
import re

import pandas as pd
import pyarrow.parquet as pq
import pytest

from components.common.datasets import load_dataset
from components.common.errors import ConfigError, DataError
from components.common.spans import complete_spans, data_location
from components.ingest import logic
from components.ingest.logic import examples_with_features, ingest
from pipelines.demo.sample_data import Span, penguin_spans, write_span
from tests.support.object_storage import s3_on_loopback
from tests.support.spans import feature_tables_folder, write_month


def run(data_root, tmp_path, window=1, key="flight_id"):
    return ingest(data_root, window, 20, key, tmp_path / "train.parquet", tmp_path / "eval.parquet")


def test_split_is_deterministic_and_complete(data_root, tmp_path, flight_months):
    first = run(data_root, tmp_path)
    train = pd.read_parquet(tmp_path / "train.parquet")
    eval_ = pd.read_parquet(tmp_path / "eval.parquet")
    assert first.train_rows + first.eval_rows == len(flight_months["2013-01"])
    assert 0.15 < first.eval_rows / len(flight_months["2013-01"]) < 0.25
    assert not set(train.flight_id) & set(eval_.flight_id)
    again = run(data_root, tmp_path)
    assert again == first
    assert pd.read_parquet(tmp_path / "eval.parquet").equals(eval_)


def test_window_takes_the_latest_complete_spans_and_skips_unfinished_ones(data_root, tmp_path, flight_months):
    write_month(data_root, "2013-02", flight_months["2013-02"])
    unfinished = write_month(data_root, "2013-07", flight_months["2013-07"])
    (unfinished / "_SUCCESS").unlink()
    assert run(data_root, tmp_path, window=1).spans == ("2013-02",)
    both = run(data_root, tmp_path, window=5)
    assert both.spans == ("2013-01", "2013-02")
    assert both.train_rows + both.eval_rows == 2 * len(flight_months["2013-01"])


def test_fingerprint_changes_with_the_data(data_root, tmp_path, flight_months):
    before = run(data_root, tmp_path).fingerprint
    write_month(data_root, "2013-01", flight_months["2013-01"].head(100))
    assert run(data_root, tmp_path).fingerprint != before


def test_csv_spans_are_read(tmp_path, flight_months):
    root = tmp_path / "data"
    write_month(root, "2013-01", flight_months["2013-01"], file_format="csv")
    result = run(root, tmp_path)
    assert result.files[0].endswith("part-0.csv")
    assert result.train_rows + result.eval_rows == len(flight_months["2013-01"])


def test_missing_data_root_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: data root does not exist"):
        run(tmp_path / "nowhere", tmp_path)


def test_no_complete_span_is_an_error(tmp_path, flight_months):
    (tmp_path / "data" / "span=2013-01").mkdir(parents=True)
    with pytest.raises(DataError, match="no complete span"):
        run(tmp_path / "data", tmp_path)


def test_empty_span_is_named(tmp_path, flight_months):
    folder = write_month(tmp_path / "data", "2013-01", flight_months["2013-01"].head(0))
    with pytest.raises(DataError, match=f"{folder}: span is empty"):
        run(tmp_path / "data", tmp_path)


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_truncated_file_is_named(tmp_path, flight_months, file_format):
    folder = write_month(tmp_path / "data", "2013-01", flight_months["2013-01"], file_format)
    data_file = folder / f"part-0.{file_format}"
    if file_format == "parquet":
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    else:
        data_file.write_bytes(b'flight_id,carrier\n"2013-01-01/UA1545,UA\n')
    with pytest.raises(DataError, match=f"{data_file}: cannot read {file_format} file"):
        run(tmp_path / "data", tmp_path)


def test_files_that_disagree_on_a_column_type_are_named(tmp_path, flight_months):
    root = tmp_path / "data"
    write_month(root, "2013-01", flight_months["2013-01"])
    changed = flight_months["2013-02"].assign(distance=flight_months["2013-02"].distance.astype(str))
    second = write_month(root, "2013-02", changed)
    with pytest.raises(
        DataError, match=rf"{second}/part-0.parquet: feature 'distance': type object differs .* \(value '\d+\.0'\)"
    ):
        run(root, tmp_path, window=2)


def test_missing_split_key_is_named(data_root, tmp_path):
    with pytest.raises(DataError, match="feature 'trip_id': split key column is missing"):
        run(data_root, tmp_path, key="trip_id")


def test_bad_window_and_percent_are_rejected(data_root, tmp_path):
    with pytest.raises(ConfigError, match="window_spans=0: must be at least 1"):
        run(data_root, tmp_path, window=0)
    with pytest.raises(ConfigError, match="eval_percent=100: must be between 1 and 99"):
        ingest(data_root, 1, 100, "flight_id", tmp_path / "t", tmp_path / "e")


def test_a_column_the_span_should_not_have_reaches_validation(tmp_path, flight_months, flights):
    root = tmp_path / "data"
    write_month(root, "2013-01", flight_months["2013-01"].assign(actual_delay=12.0))
    ingest(root, 1, 20, flights.key, tmp_path / "train.parquet", tmp_path / "eval.parquet", flights)
    columns = list(pd.read_parquet(tmp_path / "train.parquet").columns)
    assert columns == [flights.key, *flights.features, flights.label, "actual_delay"]  # entity columns consumed


def test_duplicated_keys_are_named(tmp_path, flight_months):
    month = flight_months["2013-01"]
    folder = write_month(tmp_path / "data", "2013-01", pd.concat([month, month.head(3)], ignore_index=True))
    with pytest.raises(
        DataError,
        match=rf"{folder}/part-0.parquet: feature 'flight_id': the same key on 2 rows \(3 keys repeated\) "
        rf"\(value '{month.flight_id[0]}'\)",
    ):
        run(tmp_path / "data", tmp_path)


def _departures(frame: pd.DataFrame, months: dict[str, pd.DataFrame]) -> pd.Series:
    """The scheduled departure of each row of a split, from the spans (the join drops the column)."""
    source = pd.concat(months.values()).set_index("flight_id").sched_dep
    return source.loc[frame.flight_id]


def test_time_split_puts_exactly_the_newest_rows_in_eval(data_root, tmp_path, flight_months, flights):
    result = ingest(data_root, 1, 20, flights.key, tmp_path / "train.parquet", tmp_path / "eval.parquet", flights)
    train = pd.read_parquet(tmp_path / "train.parquet")
    eval_ = pd.read_parquet(tmp_path / "eval.parquet")
    assert (result.train_rows, result.eval_rows) == (len(train), len(eval_)) == (2400, 600)  # ceil(3000 * 20%)
    train_times, eval_times = _departures(train, flight_months), _departures(eval_, flight_months)
    assert train_times.max() <= eval_times.min() == result.eval_cut
    assert result.split_rule == "newest 20% by sched_dep"
    # The joined features stayed with their flights: the same as joining the eval flights alone.
    month = flight_months["2013-01"]
    alone = examples_with_features(month[month.flight_id.isin(eval_.flight_id)], flights, feature_tables_folder(), "")
    assert alone[0].set_index("flight_id").loc[eval_.flight_id].reset_index().equals(eval_)


def test_time_split_takes_the_newest_span_first_across_several_spans(data_root, tmp_path, flight_months, flights):
    write_month(data_root, "2013-02", flight_months["2013-02"])
    write_month(data_root, "2013-07", flight_months["2013-07"])
    result = ingest(data_root, 3, 30, flights.key, tmp_path / "train.parquet", tmp_path / "eval.parquet", flights)
    train = pd.read_parquet(tmp_path / "train.parquet")
    eval_ = pd.read_parquet(tmp_path / "eval.parquet")
    assert result.eval_rows == 2700  # 30% of 9000: all of July's 3000 rows but the oldest 300 are eval
    assert set(eval_.flight_id) <= set(flight_months["2013-07"].flight_id)
    assert _departures(train, flight_months).max() <= _departures(eval_, flight_months).min() == result.eval_cut
    # Spans come first: a span's rows count as newer than any of an older span, whatever their times.
    root = tmp_path / "shuffled"
    write_month(root, "2013-01", flight_months["2013-07"])
    write_month(root, "2013-02", flight_months["2013-01"])
    ingest(root, 2, 30, flights.key, tmp_path / "train.parquet", tmp_path / "eval.parquet", flights)
    assert set(pd.read_parquet(tmp_path / "eval.parquet").flight_id) <= set(flight_months["2013-01"].flight_id)


def test_time_split_breaks_ties_by_the_hash_of_the_key_whatever_the_row_order(tmp_path, flight_months, flights):
    month = flight_months["2013-01"].assign(sched_dep="2013-01-15T12:00:00Z")  # every row at the same time
    hashed = pd.util.hash_pandas_object(month.flight_id, index=False)
    expected = set(month.flight_id[hashed.sort_values().index[-600:]])
    for order, rows in enumerate((month, month.sample(frac=1, random_state=1))):
        root = tmp_path / f"data-{order}"
        write_month(root, "2013-01", rows)
        ingest(root, 1, 20, flights.key, tmp_path / "train.parquet", tmp_path / "eval.parquet", flights)
        assert set(pd.read_parquet(tmp_path / "eval.parquet").flight_id) == expected


def test_without_an_event_time_the_newest_span_is_eval_ordered_by_a_hash_of_the_row(tmp_path):
    penguins = load_dataset("penguins")
    root = tmp_path / "data"
    folders = [write_span(root, span) for span in penguin_spans()]
    result = ingest(root, 3, 20, penguins.key, tmp_path / "train.parquet", tmp_path / "eval.parquet", penguins)
    newest = pd.read_parquet(folders[-1] / "part-0.parquet")
    hashed = pd.util.hash_pandas_object(newest, index=False)
    expected = newest.loc[hashed.sort_values().index[-result.eval_rows :]]
    eval_ = pd.read_parquet(tmp_path / "eval.parquet")
    assert result.eval_rows == -(-(result.train_rows + result.eval_rows) * 20 // 100)
    assert eval_.equals(expected.sort_index().reset_index(drop=True))
    assert (result.split_rule, result.eval_cut) == ("newest 20% by span, then hash of the row", "")


def test_hash_split_is_unchanged(data_root, tmp_path, flight_months, flights):
    result = ingest(
        data_root, 1, 20, flights.key, tmp_path / "train.parquet", tmp_path / "eval.parquet", flights, "", "hash"
    )
    month = flight_months["2013-01"]
    in_eval = pd.util.hash_pandas_object(month.flight_id, index=False) % 100 < 20
    assert list(pd.read_parquet(tmp_path / "eval.parquet").flight_id) == list(month.flight_id[in_eval])
    assert list(pd.read_parquet(tmp_path / "train.parquet").flight_id) == list(month.flight_id[~in_eval])
    assert (result.split_rule, result.eval_cut) == ("hash of flight_id, 20 of 100 buckets", "")


@pytest.mark.parametrize(
    "value, message",
    [
        ("soon", r"event time is not ISO-8601 like 2013-01-01T10:15:00Z \(value 'soon'\)"),
        ("2013-02-30T10:00:00Z", r"event time is not ISO-8601 .*\(value '2013-02-30T10:00:00Z'\)"),
        (None, "event time is missing$"),
    ],
)
def test_a_bad_event_time_is_named_with_its_file(tmp_path, flight_months, flights, value, message):
    month = flight_months["2013-01"]
    folder = write_month(tmp_path / "data", "2013-01", month.head(1000))
    later = month.iloc[1000:].reset_index(drop=True)
    later.loc[7, "sched_dep"] = value
    later.to_parquet(folder / "part-1.parquet", index=False)
    with pytest.raises(DataError, match=rf"^{re.escape(str(folder))}/part-1.parquet: feature 'sched_dep': {message}"):
        ingest(tmp_path / "data", 1, 20, flights.key, tmp_path / "t", tmp_path / "e", flights)


def test_an_unknown_eval_split_is_refused(data_root, tmp_path):
    with pytest.raises(ConfigError, match="^eval_split='random': must be time or hash$"):
        ingest(data_root, 1, 20, "flight_id", tmp_path / "t", tmp_path / "e", eval_split="random")


def _two_months(tmp_path, flight_months):
    root = tmp_path / "data"
    for month in ("2013-01", "2013-02"):
        write_month(root, month, flight_months[month])
    february = root / "span=2013-02"
    later = pd.read_parquet(february / "part-0.parquet")
    later.head(700).to_parquet(february / "part-0.parquet", index=False)  # the span in two files
    later.iloc[700:].to_parquet(february / "part-1.parquet", index=False)
    return root


def test_a_window_streamed_in_batches_and_shards_is_the_window_read_in_one(
    tmp_path, flight_months, flights, monkeypatch
):
    root = _two_months(tmp_path, flight_months)
    whole = ingest(root, 2, 20, flights.key, tmp_path / "whole-train", tmp_path / "whole-eval", flights)
    read, joined = [], []
    file_batches, join = logic.file_batches, logic.FeatureJoin.join
    monkeypatch.setattr(
        logic,
        "file_batches",
        lambda path, rows, columns=None: read.append(columns) or file_batches(path, rows, columns),
    )
    monkeypatch.setattr(
        logic.FeatureJoin, "join", lambda self, rows, where: joined.append(len(rows)) or join(self, rows, where)
    )
    streamed = ingest(
        root, 2, 20, flights.key, tmp_path / "train", tmp_path / "eval", flights, batch_rows=300, shard_rows=700
    )
    assert streamed == whole
    assert max(joined) == 300 and sum(joined) == whole.train_rows + whole.eval_rows  # never more rows at once
    assert read == [["flight_id", "sched_dep"]] * 3 + [None] * 3  # the first pass reads the split's columns only
    for split, rows in (("train", whole.train_rows), ("eval", whole.eval_rows)):
        shards = sorted((tmp_path / split).iterdir())
        assert [pq.ParquetFile(shard).metadata.num_rows for shard in shards] == [700] * (rows // 700) + [rows % 700]
        assert pd.read_parquet(tmp_path / split).equals(pd.read_parquet(tmp_path / f"whole-{split}"))


def test_a_key_repeated_across_spans_and_batches_is_named_with_both_files(tmp_path, flight_months):
    root = tmp_path / "data"
    january = write_month(root, "2013-01", flight_months["2013-01"])
    repeated = flight_months["2013-01"].iloc[[900, 950, 990]]
    february = write_month(root, "2013-02", pd.concat([flight_months["2013-02"], repeated], ignore_index=True))
    with pytest.raises(
        DataError,
        match=rf"{january}/part-0.parquet, {february}/part-0.parquet: feature 'flight_id': "
        rf"the same key on 2 rows \(3 keys repeated\) \(value '{repeated.flight_id.iloc[0]}'\)",
    ):
        ingest(root, 2, 20, "flight_id", tmp_path / "train", tmp_path / "eval", batch_rows=256)


def test_a_window_that_fails_midway_leaves_no_split_behind(tmp_path, flight_months, flights):
    root = _two_months(tmp_path, flight_months)
    bad = pd.read_parquet(root / "span=2013-02" / "part-1.parquet")
    bad.loc[5, "sched_dep"] = "tomorrow"
    bad.to_parquet(root / "span=2013-02" / "part-1.parquet", index=False)
    train, eval_ = tmp_path / "train", tmp_path / "eval"
    with pytest.raises(
        DataError, match=r"span=2013-02: feature 'sched_dep': scheduled departure .* \(value 'tomorrow'\)"
    ):
        ingest(root, 2, 20, flights.key, train, eval_, flights, eval_split="hash", batch_rows=300)  # fails in the join
    assert not train.exists() and not eval_.exists()


def test_an_integer_key_is_hashed_alike_in_batches_with_and_without_a_missing_value(tmp_path):
    """pandas reads an integer column as floats in a batch holding a missing value: the key's
    hash, and so its split and the check for repeated keys, must not depend on that."""
    root = tmp_path / "data"
    rows = pd.DataFrame({"trip": pd.array([*range(1000), None, 5], dtype="Int64"), "x": 1.0})
    folder = write_span(root, Span("2013-01", rows, 0, ""))
    with pytest.raises(
        DataError, match=rf"{folder}/part-0.parquet: feature 'trip': the same key on 2 rows .*\(value 5\)"
    ):
        ingest(root, 1, 20, "trip", tmp_path / "train", tmp_path / "eval", eval_split="hash", batch_rows=600)
    unique = rows.iloc[:-1]
    write_span(root, Span("2013-01", unique, 0, ""))
    result = ingest(root, 1, 20, "trip", tmp_path / "train", tmp_path / "eval", eval_split="hash", batch_rows=600)
    in_eval = pd.util.hash_pandas_object(unique.trip, index=False) % 100 < 20
    written = pd.read_parquet(tmp_path / "eval").trip.astype("Int64")
    assert written.equals(unique.trip[in_eval].reset_index(drop=True))  # the missing key's row too
    assert result.eval_rows == int(in_eval.sum())


def test_an_empty_file_among_a_spans_files_changes_nothing(tmp_path, flight_months, flights):
    root = _two_months(tmp_path, flight_months)
    without = ingest(root, 2, 20, flights.key, tmp_path / "t0", tmp_path / "e0", flights, batch_rows=300)
    pd.read_parquet(root / "span=2013-02" / "part-0.parquet").head(0).to_parquet(
        root / "span=2013-02" / "part-00.parquet", index=False
    )
    with_empty = ingest(root, 2, 20, flights.key, tmp_path / "t1", tmp_path / "e1", flights, batch_rows=300)
    assert dataclasses.replace(with_empty, files=without.files, fingerprint="") == dataclasses.replace(
        without, fingerprint=""
    )
    assert pd.read_parquet(tmp_path / "t1").equals(pd.read_parquet(tmp_path / "t0"))


def test_a_span_rewritten_between_the_two_passes_stops_ingest_and_leaves_no_split(
    tmp_path, flight_months, flights, monkeypatch
):
    root = _two_months(tmp_path, flight_months)
    first_pass = logic.read_keys

    def then_rewritten(*args):
        keys = first_pass(*args)
        more = pd.read_parquet(root / "span=2013-02" / "part-1.parquet")
        pd.concat([more, more.head(10)]).to_parquet(root / "span=2013-02" / "part-1.parquet", index=False)
        return keys

    monkeypatch.setattr(logic, "read_keys", then_rewritten)
    with pytest.raises(DataError, match=r"part-1.parquet: the window's files changed while ingest read them"):
        ingest(root, 2, 20, flights.key, tmp_path / "train", tmp_path / "eval", flights, batch_rows=300)
    assert not (tmp_path / "train").exists() and not (tmp_path / "eval").exists()


# --- spans in object storage ----------------------------------------------------------------


@pytest.fixture
def bucket(tmp_path):
    """An S3 bucket on loopback (moto's server, the only S3 here), reached as a pod reaches one."""
    from s3fs import S3FileSystem

    with s3_on_loopback(tmp_path / "aws", ("ct-data",)):
        yield S3FileSystem()


def test_spans_in_object_storage_are_ingested_as_the_same_spans_in_a_folder(tmp_path, flight_months, flights, bucket):
    """The feature tables too are read from the bucket: `<data root>/features` by default."""
    root = _two_months(tmp_path, flight_months)
    write_month(root, "2013-07", flight_months["2013-07"], file_format="csv")
    (root / "span=2013-07" / "_SUCCESS").unlink()  # still being written
    bucket.put(f"{root}/", "ct-data/spans", recursive=True)
    from_folder = ingest(root, 2, 20, flights.key, tmp_path / "folder-train", tmp_path / "folder-eval", flights)
    from_bucket = ingest(
        data_location("s3://ct-data/spans"),
        2,
        20,
        flights.key,
        tmp_path / "train",
        tmp_path / "eval",
        flights,
        batch_rows=300,
    )
    assert from_bucket.spans == from_folder.spans == ("2013-01", "2013-02")
    assert from_bucket.files == tuple(f.replace(str(root), "s3://ct-data/spans") for f in from_folder.files)
    assert from_bucket.span_folders == {
        "2013-01": "s3://ct-data/spans/span=2013-01",
        "2013-02": "s3://ct-data/spans/span=2013-02",
    }
    assert (from_bucket.fingerprint, from_bucket.split_rule, from_bucket.eval_cut) == (
        from_folder.fingerprint,
        from_folder.split_rule,
        from_folder.eval_cut,
    )
    for split in ("train", "eval"):
        assert pd.read_parquet(tmp_path / split).equals(pd.read_parquet(tmp_path / f"folder-{split}"))


def test_spans_in_object_storage_are_seen_as_they_are_at_each_look(tmp_path, flight_months, bucket):
    write_month(tmp_path / "data", "2013-01", flight_months["2013-01"])
    bucket.put(f"{tmp_path / 'data'}/", "ct-data/spans", recursive=True)
    root = data_location("s3://ct-data/spans")
    assert [span.span_id for span in complete_spans(root)] == ["2013-01"]
    write_month(tmp_path / "later", "2013-02", flight_months["2013-02"])
    bucket.put(f"{tmp_path / 'later'}/", "ct-data/spans", recursive=True)
    [january, february] = complete_spans(root)
    assert [january.span_id, february.span_id] == ["2013-01", "2013-02"]
    assert [path.name for path in february.files] == ["part-0.parquet"]
    bucket.rm("ct-data/spans/span=2013-01/_SUCCESS")  # taken back, to be rewritten
    bucket.pipe("ct-data/spans/span=2013-02/part-1.parquet", bucket.cat("ct-data/spans/span=2013-02/part-0.parquet"))
    [february] = complete_spans(root)
    assert february.span_id == "2013-02" and [path.name for path in february.files] == [
        "part-0.parquet",
        "part-1.parquet",
    ]


def test_a_bad_file_in_object_storage_is_named_by_its_uri(tmp_path, flight_months, bucket):
    write_month(tmp_path / "data", "2013-01", flight_months["2013-01"])
    bucket.put(f"{tmp_path / 'data'}/", "ct-data/spans", recursive=True)
    bucket.pipe("ct-data/spans/span=2013-01/part-0.parquet", b"PAR1 not parquet at all")
    with pytest.raises(DataError, match=r"s3://ct-data/spans/span=2013-01/part-0.parquet: cannot read parquet file"):
        run(data_location("s3://ct-data/spans"), tmp_path)


def test_a_missing_bucket_folder_and_an_unknown_scheme_are_named(tmp_path, bucket):
    with pytest.raises(DataError, match=r"s3://ct-data/nothing: data root does not exist"):
        run(data_location("s3://ct-data/nothing"), tmp_path)
    with pytest.raises(ConfigError, match=r"gs://b/spans: a data root is a folder or an s3:// URI"):
        data_location("gs://b/spans")
