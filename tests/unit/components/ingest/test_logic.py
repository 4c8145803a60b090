import pandas as pd
import pytest

from components.common.errors import ConfigError, DataError
from components.ingest.logic import ingest
from tests.support.spans import write_month


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
