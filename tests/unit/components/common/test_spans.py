import pandas as pd
import pytest

from components.common.errors import DataError
from components.common.spans import read_parquet_batches


def test_a_parquet_file_is_read_a_batch_at_a_time_with_only_the_columns_asked_for(tmp_path):
    path = tmp_path / "part-0.parquet"
    pd.DataFrame({"a": range(10), "b": list("abcdefghij"), "c": 0.5}).to_parquet(path, row_group_size=4)
    batches = list(read_parquet_batches(path, 3, {"a", "c", "not in the file"}))
    assert [len(b) for b in batches] == [3, 3, 3, 1]  # never more than asked, across row groups
    assert all(list(b.columns) == ["a", "c"] for b in batches)
    assert pd.concat(batches).a.tolist() == list(range(10))
    assert [list(b.columns) for b in read_parquet_batches(path, 100)] == [["a", "b", "c"]]


def test_an_empty_file_gives_one_empty_batch_and_a_corrupt_one_is_named(tmp_path):
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({"a": pd.Series([], dtype="int64")}).to_parquet(empty)
    [batch] = read_parquet_batches(empty, 10)
    assert batch.empty and list(batch.columns) == ["a"]
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match=f"{corrupt}.*cannot read parquet file"):
        list(read_parquet_batches(corrupt, 10))
